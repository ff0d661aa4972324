import Foundation
import LetheEvents
@testable import LetheJournal
import Testing

/// Erasures destroy keys first, then remove what they sealed from the journal's rows, while the
/// chain still verifies; a copy taken before reveals nothing they erased. On both backends: the
/// copy is the file copied, or the schema's tables copied on the server.
@Suite struct ErasureTests {
    /// Whether any of `needles` (their first 24 bytes) appears in the journal's file or its WAL.
    func anyInFiles(_ path: String, _ needles: [[UInt8]]) throws -> Bool {
        for file in [path, path + "-wal"] where FileManager.default.fileExists(atPath: file) {
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
        // A record that outlives the account's keys: the access log's chain is kept.
        try j.append(event("gone", .accountAccessed, at: "2026-01-02T00:00:00Z", data: ["actor": "staff_1", "ip": "203.0.113.1", "reason": "support"]))
    }

    @Test(arguments: TestBackend.allCases)
    func anAccountErasureDestroysItsKeysRemovesItsPayloadsKeepsWhatOutlivesItAndTheChain(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        let live = try place.journalBackend
        try history(j)
        let before = try place.storedCiphertexts(live, account: "gone")
        let kept = try place.storedCiphertexts(live, account: "kept")
        #expect(before.count == 6 && kept.count == 5)
        // A copy of the journal taken before the purge.
        let copy = try place.copy("copy")
        #expect(try place.storedCiphertexts(copy, account: "gone") == before)
        if backend == .sqlite { #expect(try anyInFiles(j.path, before)) }  // the search finds them while they are there

        let purge = NewEvent(.accountPurged, account: "gone", at: ts("2026-02-01T00:00:00Z"), data: ["rule": "erasure-request"], id: "purge-gone")
        let outcomes = try j.append([purge], erasing: [.account("gone", keeping: ["access-log"])])
        #expect(outcomes.count == 1 && j.headSeq == 12)

        let events = try allEvents(j)
        let gone = events.filter { $0.header.account == "gone" }
        #expect(gone.filter { $0.header.type == "SupportMessageReceived" }.allSatisfy { $0.payload == .purged })
        #expect(try data(gone.first { $0.header.type == "AccountAccessed" }!)["actor"] == "staff_1")
        #expect(try data(gone.last!)["rule"] == "erasure-request")
        #expect(events.filter { $0.header.account == "kept" }.allSatisfy { if case .plaintext = $0.payload { true } else { false } })
        // Gone from the rows (what a dump taken now holds); the other account's payloads are
        // untouched; the chain still verifies.
        let left = try place.storedCiphertexts(live, account: "gone")
        #expect(left.count == 2)  // the access record and the purge event
        #expect(Set(before).intersection(left).count == 1)  // the access record's, kept
        #expect(try place.storedCiphertexts(live, account: "kept") == kept)
        if backend == .sqlite {
            // Physically gone from the database file and its WAL (checkpointed and truncated).
            // (On the server, dead row versions keep ciphertext under the destroyed keys until
            // their space is reused: see the README's bound.)
            #expect(try !anyInFiles(j.path, before.filter { !left.contains($0) }))
            for wal in [j.path + "-wal", j.keysPath + "-wal"] {
                #expect((try? FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int) ?? 0 == 0, "\(wal)")
            }
        }
        let report = try verified(j)
        #expect(report.events == 12 && report.purgedEvents == 5 && report.anchored)
        // The copy taken before still holds the payloads, and they no longer open: the keys are
        // gone. A journal will not open on the copy at all (it is behind the key store's anchor).
        #expect(try place.storedCiphertexts(copy, account: "gone") == before)
        #expect { try Journal(backend: copy, keys: place.keyStore, master: testMaster) } throws: {
            ($0 as? JournalError)?.message.contains("the journal was rolled back") == true
        }
        let old = try readCopy(copy, keys: place.keyStore).filter { $0.header.account == "gone" && $0.header.type == "SupportMessageReceived" }
        #expect(old.count == 5 && old.allSatisfy { $0.payload == .shredded })
        // The account takes nothing sealed under its keys any more; the engine can still write.
        #expect { try j.append(event("gone", at: "2026-03-01T00:00:00Z")) } throws: { ($0 as? JournalError)?.code == .accountShredded }
        // Running it again does nothing more, and a repeated purge event is a duplicate.
        #expect(try j.finishErasures() == 0)
        #expect(try j.append([purge], erasing: [.account("gone")]).count == 1 && j.headSeq == 12)
    }

    @Test(arguments: TestBackend.allCases)
    func anItemErasureDestroysThatItemsKeyAlone(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        try j.append(NewEvent(.accountSignedUp, account: "a", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ada", "email": "ada@example.com"]))
        for (i, item) in ["doc", "pic", "zip"].enumerated() {
            try j.append(NewEvent(.itemCreated, account: "a", at: ts("2026-01-01T00:00:0\(i + 1)Z"), data: ["item": .string(item), "kind": "file", "label": .string("label of \(item)")]))
        }
        let copy = try place.copy("copy")
        try j.append([NewEvent(.itemPurged, account: "a", at: ts("2026-02-01T00:00:00Z"), data: ["item": "pic", "rule": "trash-30d"])],
                     erasing: [.event(account: "a", seq: 3)])
        let labels = try allEvents(j).filter { $0.header.type == "ItemCreated" }.map { e -> String in
            e.payload == .purged ? "purged" : (try? data(e)["label"]?.string) ?? "?"
        }
        #expect(labels == ["label of doc", "purged", "label of zip"])
        // In the copy taken before: only that item's payload is unreadable.
        #expect(try readCopy(copy, keys: place.keyStore).filter { $0.header.type == "ItemCreated" }.map(\.payload).map { $0 == .shredded } == [false, true, false])
        #expect(try verified(j).purgedEvents == 1)
    }

    @Test(arguments: TestBackend.allCases)
    func anEventUnderASharedKeyIsNotErasedAloneAndNothingOfTheBatchIsWritten(_ backend: TestBackend) throws {
        // Scrubbing the payload of an event sealed under the account's key would leave it in every
        // copy taken before: refused, naming the event, with the batch that asked for it.
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        try j.append(NewEvent(.accountSignedUp, account: "a", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ada", "email": "ada@example.com"]))
        try j.append(NewEvent(.profileUpdated, account: "a", at: ts("2026-01-01T00:00:01Z"), data: ["company": "Engines"]))
        for (seq, why) in [(Int64(2), "sealed under a key it shares"), (9, "no such event")] {
            #expect {
                try j.append([NewEvent(.itemPurged, account: "a", at: ts("2026-02-01T00:00:00Z"), data: ["item": "x", "rule": "trash-30d"])],
                             erasing: [.event(account: "a", seq: seq)])
            } throws: { e in
                let e = e as? JournalError
                return e?.code == .invalidEvent && e?.message.contains("event \(seq)") == true && e?.message.contains(why) == true
            }
        }
        #expect(try allEvents(j).map(\.header.type) == ["AccountSignedUp", "ProfileUpdated"])
        #expect(try allEvents(j).allSatisfy { if case .plaintext = $0.payload { true } else { false } })
    }

    @Test(arguments: TestBackend.allCases)
    func aRecordExpiryDestroysExactlyTheExpiredRecordsKeys(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        for i in 0..<9 {
            try j.append(event(i % 2 == 0 ? "a" : "b", at: "2026-01-01T00:00:0\(i)Z", data: ["path": .string("/p\(i)"), "visitor": "v"]))
        }
        let copy = try place.copy("copy")
        // a's page views at seconds 0, 2 and 4 expire; those at 6 and 8 stay, as do b's.
        try j.append([NewEvent(.recordsExpired, account: "a", at: ts("2026-02-01T00:00:00Z"),
                               data: ["category": "page-views", "rule": "page-views-90d", "through": "2026-01-01T00:00:04Z"])],
                     erasing: [.records(account: "a", category: "page-views", through: ts("2026-01-01T00:00:04Z"))])
        let expired: Set<Int64> = [1, 3, 5]
        for e in try allEvents(j) where e.header.type == "PageViewed" {
            #expect((e.payload == .purged) == expired.contains(e.header.seq), "event \(e.header.seq)")
        }
        for e in try readCopy(copy, keys: place.keyStore) {
            #expect((e.payload == .shredded) == expired.contains(e.header.seq), "event \(e.header.seq) of the copy")
        }
        // The records that stay still open, and new ones take the chain's next keys.
        try j.append(event("a", at: "2026-02-02T00:00:00Z", data: ["path": "/new", "visitor": "v"]))
        #expect(try data(allEvents(j).last!)["path"] == "/new")
        #expect(try verified(j).purgedEvents == 3)
    }

    @Test(arguments: TestBackend.allCases)
    func anExpiryThatWouldSkipAKeptRecordIsRefusedAndDestroysNothing(_ backend: TestBackend) throws {
        // Indices grow with time along a chain; an erasure through a time that leaves an earlier
        // record standing can only come from a damaged journal: nothing is destroyed.
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 8)
        for i in 0..<4 { try j.append(event("a", at: "2026-01-01T00:00:0\(i)Z")) }
        // Swap two records' indices behind the engine's back (in the tail).
        try place.tamper("UPDATE tail SET key_index = 9 WHERE seq = 1")
        try place.tamper("UPDATE tail SET key_index = 0 WHERE seq = 4")
        // The key reference is part of each event's chain link: no writer opens on it, so no
        // erasure can be decided from it.
        #expect { try place.open(blockEvents: 8, seed: 2) } throws: {
            ($0 as? JournalError)?.message.contains("unsealed event 1: hash chain broken") == true
        }
    }

    @Test(arguments: TestBackend.allCases)
    func anErasureRecordedBeforeACrashIsFinishedLater(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        do {
            let j = try place.open(blockEvents: 4)
            try history(j)
            // What a crash right after the purge event's commit leaves: the erasure recorded, not done.
            try j.append([], erasing: [.account("kept")], finish: false)
        }
        let j = try place.open(blockEvents: 4, seed: 2)
        #expect(try j.finishErasures() == 1)
        #expect(try allEvents(j).filter { $0.header.account == "kept" }.allSatisfy { $0.payload == .purged })
        #expect(try j.finishErasures() == 0)
        #expect(try verified(j).purgedEvents == 5)
    }

    @Test(arguments: TestBackend.allCases)
    func anotherWritersTailDoesNotBringErasedPayloadsBack(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let a = try place.open(blockEvents: 4)
        for i in 0..<11 { try a.append(event(i == 9 ? "gone" : "kept", at: "2026-01-01T00:00:\(10 + i)Z")) }  // two blocks, three in the tail
        let b = try place.open(blockEvents: 4, seed: 3)
        try b.append([], erasing: [.records(account: "gone", category: "page-views", through: ts("2026-01-01T00:00:19Z"))])  // event 10, in the tail
        // Writer `a` seals its (stale) tail into a block: it must reload it first.
        for i in 0..<4 { try a.append(event("kept", at: "2026-01-03T00:00:0\(i)Z")) }
        #expect(try allEvents(a).first { $0.header.seq == 10 }?.payload == .purged)
        #expect(try verified(a).purgedEvents == 1)
    }
}
