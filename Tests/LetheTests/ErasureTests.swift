import Foundation
import LetheEvents
@testable import LetheJournal
import Testing

/// Purges that leave nothing behind in the journal's files, while the chain still verifies.
@Suite struct ErasureTests {
    /// Every sealed payload stored for `account` (blocks and tail), as the file holds them.
    func storedCiphertexts(_ j: Journal, account: String) throws -> [[UInt8]] {
        let db = try SQLiteDatabase(path: j.path, readOnly: true)
        var out: [[UInt8]] = []
        let s = try db.statement("SELECT id, first_seq, last_seq, frame FROM blocks")
        while try s.step() {
            let block = try JournalReader.decodeFrame(s.blob(3), id: s.int(0), first: s.int(1), last: s.int(2))
            for e in block.events where e.header.account == account { if case .sealed(let b, _) = e.body { out.append(b) } }
        }
        s.reset()
        for e in try JournalReader.tailRows(db).0 where e.header.account == account { if case .sealed(let b, _) = e.body { out.append(b) } }
        return out
    }

    /// Whether any of `needles` (their first 24 bytes) appears in the journal's files, WAL included.
    func anyInFiles(_ j: Journal, _ needles: [[UInt8]]) throws -> Bool {
        for file in [j.path, j.path + "-wal"] where FileManager.default.fileExists(atPath: file) {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
            for n in needles where bytes.range(of: Data(n.prefix(24))) != nil { return true }
        }
        return false
    }

    func history(_ j: Journal) throws {
        for i in 0..<10 {
            let account = i % 2 == 0 ? "gone" : "kept"
            try j.append(event(account, .supportMessageReceived, at: "2026-01-01T00:00:0\(i)Z",
                               data: ["ticket": .string("T-\(i)"), "from_email": "x@example.com", "body": .string("secret \(i)")]))
        }
        // A record that must outlive the account's key: sealed under the engine key.
        try j.append(NewEvent(account: "gone", type: "AccountAccessed", at: ts("2026-01-02T00:00:00Z"),
                              payload: codec.encode(type: "AccountAccessed", data: ["actor": "staff_1", "ip": "203.0.113.1", "reason": "support"]),
                              scope: .journal))
    }

    @Test func anAccountErasureRemovesItsPayloadsKeepsTheEnginesAndTheChain() throws {
        let dir = TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        try history(j)
        let before = try storedCiphertexts(j, account: "gone")
        let kept = try storedCiphertexts(j, account: "kept")
        #expect(before.count == 6 && kept.count == 5)
        #expect(try anyInFiles(j, before))  // the search finds them while they are there

        let purge = NewEvent(id: "purge-gone", account: "gone", type: "AccountPurged", at: ts("2026-02-01T00:00:00Z"),
                             payload: codec.encode(type: "AccountPurged", data: ["rule": "erasure-request"]), scope: .journal)
        let outcomes = try j.append([purge], erasing: [.account("gone")])
        #expect(outcomes.count == 1 && j.headSeq == 12)

        let events = try allEvents(j)
        let gone = events.filter { $0.header.account == "gone" }
        #expect(gone.filter { $0.header.type == "SupportMessageReceived" }.allSatisfy { $0.payload == .purged })
        #expect(try data(gone.first { $0.header.type == "AccountAccessed" }!)["actor"] == "staff_1")
        #expect(try data(gone.last!)["rule"] == "erasure-request")
        #expect(events.filter { $0.header.account == "kept" }.allSatisfy { if case .plaintext = $0.payload { true } else { false } })
        // Physically gone from the database file and its WAL (checkpointed and truncated); the
        // other account's payloads are untouched; the chain still verifies.
        #expect(try storedCiphertexts(j, account: "gone").count == 2)  // the access record and the purge event
        #expect(try !anyInFiles(j, before.filter { b in try! storedCiphertexts(j, account: "gone").contains(b) == false }))
        #expect(try storedCiphertexts(j, account: "kept") == kept)
        #expect((try? FileManager.default.attributesOfItem(atPath: j.path + "-wal")[.size] as? Int) ?? 0 == 0)
        let report = try JournalReader.verify(path: j.path, master: testMaster(j.keysPath))
        #expect(report.events == 12 && report.purgedEvents == 5 && report.anchored)
        // The key is gone: the account's own data cannot come back; the engine can still write.
        #expect { try j.append(event("gone", at: "2026-03-01T00:00:00Z")) } throws: { ($0 as? JournalError)?.code == .accountShredded }
        // Running it again does nothing more, and a repeated purge event is a duplicate.
        #expect(try j.finishErasures() == 0)
        #expect(try j.append([purge], erasing: [.account("gone")]).count == 1 && j.headSeq == 12)
    }

    @Test func anEventErasureRemovesOnlyThoseEvents() throws {
        let dir = TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        try history(j)
        let target: [Int64] = [1, 9]  // one in a sealed block, one in the tail
        let before = try allEvents(j)
        let victims = try storedCiphertexts(j, account: "gone")
        try j.append([], erasing: [.events(account: "gone", seqs: target)])
        let after = try allEvents(j)
        for (b, a) in zip(before, after) {
            #expect(a.payload == (target.contains(b.header.seq) ? .purged : b.payload), "event \(b.header.seq)")
        }
        #expect(try storedCiphertexts(j, account: "gone").count == victims.count - 2)
        #expect(try JournalReader.verify(path: j.path).purgedEvents == 2)
    }

    @Test func anErasureRecordedBeforeACrashIsFinishedLater() throws {
        let dir = TempDir()
        do {
            let j = try openJournal(dir, blockEvents: 4)
            try history(j)
        }
        // What a crash right after the purge event's commit leaves: the erasure recorded, not done.
        try tamper(dir.path("j.lethe"), "INSERT INTO erasures(account, seqs) VALUES('kept', '2,4')")
        let j = try openJournal(dir, blockEvents: 4, seed: 2)
        #expect(try j.finishErasures() == 1)
        #expect(try allEvents(j).filter { [2, 4].contains($0.header.seq) }.allSatisfy { $0.payload == .purged })
        #expect(try j.finishErasures() == 0)
        #expect(try JournalReader.verify(path: j.path).purgedEvents == 2)
    }

    @Test func anotherWritersTailDoesNotBringErasedPayloadsBack() throws {
        let dir = TempDir()
        let a = try openJournal(dir, blockEvents: 4)
        try history(a)  // 11 events: two blocks, three in the tail
        let b = try openJournal(dir, blockEvents: 4, seed: 3)
        try b.append([], erasing: [.events(account: "gone", seqs: [9])])  // in the tail
        // Writer `a` seals its (stale) tail into a block: it must reload it first.
        for i in 0..<4 { try a.append(event("kept", at: "2026-01-03T00:00:0\(i)Z")) }
        #expect(try allEvents(a).first { $0.header.seq == 9 }?.payload == .purged)
        #expect(try JournalReader.verify(path: a.path).purgedEvents == 1)
    }
}
