import Crypto
import Foundation
import LetheEvents
import LetheJournal
import Synchronization
import Testing

@Suite struct JournalTests {
    @Test(arguments: TestBackend.allCases)
    func appendsAndReadsBackAcrossBlocksAndTail(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 8)
        var expected: [(String, String)] = []
        for i in 0..<21 {
            let account = "acc_\(i % 3)"
            let path = "/page/\(i)"
            try j.append(event(account, at: "2026-01-01T00:00:\(String(format: "%02d", i))Z", id: "e\(i)", data: ["path": .string(path), "visitor": "v"]))
            expected.append((account, path))
        }
        let events = try allEvents(j)
        #expect(events.map(\.header.seq) == Array(1...21))
        #expect(events.map(\.header.account) == expected.map(\.0))
        #expect(try events.map { try data($0)["path"]?.string } == expected.map(\.1))
        // Per-account versions count from 1 without gaps.
        #expect(events.filter { $0.header.account == "acc_1" }.map(\.header.version) == Array(1...7))
        // 21 events with 8 per block: two sealed blocks and 5 in the tail.
        let report = try verified(j)
        #expect(report.blocks == 2 && report.tailEvents == 5 && report.events == 21 && report.accounts == 3)
    }

    @Test func parallelTransformsArriveInOrderAndFailInOrder() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 300)
        _ = try j.append((0..<1000).map { event("acc_\($0 % 7)", at: "2026-01-01T00:00:00Z", data: ["path": .string("/\($0)")]) })
        var paths: [String] = []
        try j.read { reader in
            try reader.events(transform: { e in try data(e)["path"]!.string! }) { paths.append($0) }
        }
        #expect(paths == (0..<1000).map { "/\($0)" })
        struct Boom: Error {}
        var seen: [Int64] = []
        #expect(throws: Boom.self) {
            try j.read { reader in
                try reader.events(transform: { e -> Int64 in
                    if e.header.seq == 450 || e.header.seq == 700 { throw Boom() }
                    return e.header.seq
                }) { seen.append($0) }
            }
        }
        // The block holding the failure is not delivered; everything before it is, in order.
        #expect(seen == Array(1...300))
    }

    @Test(arguments: TestBackend.allCases)
    func oneAccountsEventsComeFromItsOwnBlocks(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        var batch: [NewEvent] = []
        for i in 0..<40 { batch.append(event(i % 10 == 0 ? "rare" : "busy_\(i % 4)", at: "2026-01-01T00:00:\(String(format: "%02d", i))Z")) }
        _ = try j.append(batch)
        var seqs: [Int64] = []
        try j.read { try $0.events(account: "rare") { seqs.append($0.header.seq) } }
        #expect(seqs == [1, 11, 21, 31])
        var none = 0
        try j.read { try $0.events(account: "nobody") { _ in none += 1 } }
        #expect(none == 0)
    }

    @Test(arguments: TestBackend.allCases)
    func anAccountsBlocksAreFoundWhileTheIndexMovesToItsMainTable(_ backend: TestBackend) throws {
        // Postings move from the recent table to the main one every 5: reads find an account's
        // events in either table, and in both at once, before and after every move.
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4, recentPostingsLimit: 5)
        var expected: [String: [Int64]] = [:]
        var rng = SplitMix(seed: 3)
        var seq: Int64 = 0
        var sawBothTables = false
        for round in 0..<25 {
            var batch: [NewEvent] = []
            for _ in 0..<(1 + Int(rng.next() % 7)) {
                let account = "acc_\(rng.next() % 6)"
                seq += 1
                batch.append(event(account, at: String(format: "2026-01-01T00:%02d:%02dZ", seq / 60, seq % 60)))
                expected[account, default: []].append(seq)
            }
            _ = try j.append(batch)
            for (account, seqs) in expected {
                var found: [Int64] = []
                try j.read { try $0.events(account: account) { found.append($0.header.seq) } }
                #expect(found == seqs, "round \(round), \(account)")
            }
            let (main, recent) = (try place.scalar("SELECT count(*) FROM account_block_runs") ?? 0,
                                  try place.scalar("SELECT count(*) FROM recent_account_blocks") ?? 0)
            #expect(recent < 5, "round \(round): the recent postings were not moved")
            if main > 0 && recent > 0 { sawBothTables = true }
        }
        #expect(sawBothTables)
        #expect(try JournalReader.verify(backend: place.journalBackend).events == seq)
    }

    @Test(arguments: TestBackend.allCases)
    func survivesReopenAndKeepsTheChainGoing(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        do {
            let j = try place.open(blockEvents: 4, seed: 1)
            for i in 0..<6 { try j.append(event("a", at: "2026-01-01T00:00:0\(i)Z")) }
        }
        let j = try place.open(blockEvents: 4, seed: 2)
        #expect(j.headSeq == 6)
        #expect(try j.version(of: "a") == 6)
        for i in 0..<6 { try j.append(event("a", at: "2026-01-01T00:01:0\(i)Z")) }
        let report = try verified(j)
        #expect(report.events == 12 && report.blocks == 3)
        #expect(try allEvents(j).count == 12)
    }

    @Test(arguments: TestBackend.allCases)
    func optimisticConcurrencyRefusesAStaleVersion(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        try j.append(event("a", at: "2026-01-01T00:00:00Z", expected: 0))
        try j.append(event("a", at: "2026-01-01T00:00:01Z", expected: 1))
        #expect {
            try j.append(event("a", at: "2026-01-01T00:00:02Z", expected: 1))
        } throws: { ($0 as? JournalError)?.code == .versionConflict }
        #expect {
            try j.append(event("b", at: "2026-01-01T00:00:02Z", expected: 3))
        } throws: { ($0 as? JournalError)?.code == .versionConflict }
        // A conflict in a batch rejects that event only.
        let outcomes = try j.append([
            event("a", at: "2026-01-01T00:00:03Z", expected: 2),
            event("a", at: "2026-01-01T00:00:04Z", expected: 2),
            event("a", at: "2026-01-01T00:00:05Z", expected: 3),
        ])
        #expect(outcomes.map(kind) == ["appended", "rejected", "appended"])
        #expect(try j.version(of: "a") == 4 && j.version(of: "b") == 0)
        #expect(try verified(j).events == 4)
    }

    @Test(arguments: TestBackend.allCases)
    func anEventIdMakesARepeatANoOp(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        let first = try j.append(event("a", at: "2026-01-01T00:00:00Z", id: "x1"))
        let again = try j.append(event("a", at: "2026-01-01T00:00:09Z", id: "x1", data: ["path": "/other"]))
        #expect(first == again)
        let outcomes = try j.append([event("b", at: "2026-01-01T00:00:00Z", id: "x2"), event("b", at: "2026-01-01T00:00:01Z", id: "x2")])
        #expect(outcomes.map(kind) == ["appended", "duplicate"])
        #expect(j.headSeq == 2)
        #expect(try data(allEvents(j)[0])["path"] == "/pricing")
        // A refused event leaves its id free, in the same batch too; a repeat names the seq it repeats.
        _ = try j.append(event("c", at: "2026-01-01T00:00:05Z"))
        let retried = try j.append([event("c", at: "2026-01-01T00:00:01Z", id: "x3"), event("c", at: "2026-01-01T00:00:06Z", id: "x3"),
                                    event("c", at: "2026-01-01T00:00:07Z", id: "x3")])
        #expect(retried.map(kind) == ["rejected", "appended", "duplicate"])
        if case .duplicate(let seq) = retried[2] { #expect(seq == 4) }
        let repeated = try j.append([event("d", at: "2026-01-01T00:00:00Z", id: "x2")])
        #expect(repeated.map(kind) == ["duplicate"])
        if case .duplicate(let seq) = repeated[0] { #expect(seq == 2) }
    }

    @Test(arguments: TestBackend.allCases)
    func timeNeverGoesBackwardsWithinAnAccount(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        try j.append(event("a", at: "2026-01-02T00:00:00Z"))
        try j.append(event("a", at: "2026-01-02T00:00:00Z"))  // equal is fine
        #expect { try j.append(event("a", at: "2026-01-01T23:59:59.999Z")) } throws: { ($0 as? JournalError)?.code == .timeOrder }
        try j.append(event("b", at: "2026-01-01T00:00:00Z"))  // other accounts have their own clocks
        #expect(j.headSeq == 3)
    }

    @Test(arguments: TestBackend.allCases)
    func aDestroyedKeyMakesPayloadsUnreadableAndTheAccountClosed(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        for i in 0..<6 { try j.append(event(i % 2 == 0 ? "gone" : "kept", at: "2026-01-01T00:00:0\(i)Z", data: ["path": .string("/secret-\(i)")])) }
        try j.destroyKeys(of: "gone", at: ts("2026-02-01T00:00:00Z"))
        let events = try allEvents(j)
        #expect(events.filter { $0.header.account == "gone" }.allSatisfy { $0.payload == .shredded })
        #expect(events.filter { $0.header.account == "kept" }.allSatisfy { if case .plaintext = $0.payload { true } else { false } })
        #expect { try j.append(event("gone", at: "2026-03-01T00:00:00Z")) } throws: { ($0 as? JournalError)?.code == .accountShredded }
        #expect(try verified(j).events == 6)
    }

    @Test(arguments: TestBackend.allCases)
    func theWrongMasterKeyIsRefusedAtOpen(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        _ = try place.open().append(event("a", at: "2026-01-01T00:00:00Z"))
        let wrong = MasterKeySource.key(String(repeating: "cd", count: 32))
        #expect { try Journal(backend: place.journalBackend, keys: place.keyStore, master: wrong) } throws: { ($0 as? JournalError)?.code == .keys }
        #expect { try Journal(backend: place.journalBackend, keys: place.keyStore, master: MasterKeySource(environment: [:])) } throws: {
            ($0 as? JournalError)?.message.contains("no master key") == true
        }
    }

    @Test(arguments: TestBackend.allCases)
    func nothingPersonalIsStoredInPlainText(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        for i in 0..<10 {
            try j.append(event("acc_\(i)", .supportMessageReceived, at: "2026-01-01T00:00:0\(i)Z",
                               data: ["ticket": "t", "from_email": .string("person\(i)@example.org"), "body": "Please help with my invoice"]))
        }
        // The files of the journal and of its key store, as a copy of the folder holds them (on
        // the server: their tables' files, with TOAST and indexes, after a checkpoint).
        let files = try place.storedFiles()
        #expect(files.count >= 2 && files.contains { $0.count > 0 })
        for bytes in files {
            #expect(bytes.range(of: Data("example.org".utf8)) == nil)
            #expect(bytes.range(of: Data("invoice".utf8)) == nil)
        }
        // (The search finds what is there: the account ids are stored in clear.)
        #expect(files.contains { $0.range(of: Data("acc_7".utf8)) != nil })
    }

    @Test(arguments: TestBackend.allCases)
    func noTwoPayloadsEverShareANonce(_ backend: TestBackend) throws {
        // Sessions (reopenings) with their own random ids, batches and single appends, and a
        // rejected event in between: every stored nonce is distinct.
        let place = try TestPlace(backend)
        for session in 1...3 as ClosedRange<UInt64> {
            let j = try place.open(blockEvents: 4, seed: session)
            for i in 0..<5 { try j.append(event("a", at: "2026-01-0\(session)T00:00:0\(i)Z")) }
            _ = try j.append((0..<7).map { event("b\($0 % 2)", at: "2026-01-0\(session)T00:01:0\($0)Z") })
            _ = try? j.append(event("a", at: "2025-01-01T00:00:00Z"))  // refused: its nonce is simply never used
        }
        let j = try place.open(blockEvents: 4, seed: 4)
        var nonces: [NonceID] = []
        try j.read { try $0.scan { nonces.append($0.nonce) } }
        #expect(nonces.count == 36 && Set(nonces).count == 36)
        #expect(Set(nonces.map(\.session)).count == 3)
    }

    @Test func aPayloadOpensOnlyWithItsNonceAccountAndKey() throws {
        let key = SymmetricKey(data: [UInt8](repeating: 7, count: 32))
        let (one, two) = (Session(high: 1, low: 1), Session(high: 2, low: 1))
        for kind in [KeyRef.Kind.account, .records] {
            // A key that seals many payloads seals under its session's key; a single-use one itself.
            let k1 = KeyDerivation.sealingKey(key, kind: kind, session: one)
            #expect((k1 == key) == kind.isSingleUse)
            let nonce = NonceID(session: one, counter: 1)
            let a = Sealing.seal([1, 2, 3], key: k1, nonce: nonce, kind: kind, account: "a")
            #expect(a != Sealing.seal([1, 2, 3], key: KeyDerivation.sealingKey(key, kind: kind, session: two), nonce: NonceID(session: two, counter: 1), kind: kind, account: "a"))
            #expect(a != Sealing.seal([1, 2, 3], key: k1, nonce: NonceID(session: one, counter: 2), kind: kind, account: "a"))
            #expect(try Sealing.open(a, key: k1, nonce: nonce, kind: kind, account: "a", seq: 1) == [1, 2, 3])
            #expect(throws: JournalError.self) { try Sealing.open(a, key: k1, nonce: NonceID(session: one, counter: 2), kind: kind, account: "a", seq: 1) }
            #expect(throws: JournalError.self) { try Sealing.open(a, key: k1, nonce: nonce, kind: kind, account: "b", seq: 1) }
            let other = SymmetricKey(data: [UInt8](repeating: 8, count: 32))
            #expect(throws: JournalError.self) { try Sealing.open(a, key: other, nonce: nonce, kind: kind, account: "a", seq: 1) }
            // Large payloads are compressed before they are encrypted.
            let big = [UInt8](repeating: 65, count: 4000)
            let sealedBig = Sealing.seal(big, key: k1, nonce: NonceID(session: one, counter: 3), kind: kind, account: "a")
            #expect(sealedBig.count < 200)
            #expect(try Sealing.open(sealedBig, key: k1, nonce: NonceID(session: one, counter: 3), kind: kind, account: "a", seq: 1) == big)
        }
        // A single-use key's nonce holds the session's first 64 bits: the same key used in two
        // sessions (a restored journal written on) never repeats a nonce.
        #expect(Sealing.nonce(NonceID(session: one, counter: 1), kind: .records) != Sealing.nonce(NonceID(session: two, counter: 1), kind: .records))
    }

    @Test func derivedKeysMatchTheirKnownAnswers() throws {
        // Computed outside Swift (Python's hashlib and hmac): a faster implementation, or a
        // changed label, cannot silently orphan stored payloads, fields or record chains.
        let key = SymmetricKey(data: [UInt8](repeating: 1, count: 32))
        func hex(_ k: SymmetricKey) -> String { k.withUnsafeBytes { Hex.encode($0) } }
        // The next key of a record chain: SHA-256("lethe chain step v1" ‖ key).
        #expect(hex(KeyDerivation.step(ChainKey(key)).symmetricKey) == "cb0d7f5e99b9006e7cd49361f25059e00822b7d395499367c4d60115ebec3a45")
        #expect(hex(ChainKey(key).advanced(by: 2).symmetricKey) == "4d5d87677fa9c7c3eb8a6e86c88bd2435e75e9fb9035251308d55b40a7db3ee7")
        // A session's key: HMAC-SHA256(key, "lethe seal v2" ‖ session high ‖ session low, little-endian).
        #expect(hex(KeyDerivation.sessionKey(key, Session(high: 1, low: 2))) == "3317eb996cb6a81e8ea6f86e5126a9dc5ae90b7916980e089816e9ff969c9203")
        // The read models' field key: HMAC-SHA256(key, "lethe fields v1").
        #expect(hex(KeyDerivation.fieldKey(key)) == "52d284539371d5511bd438f171d7be01926600b699f83c6a94c9c91106b5714b")
        // A read-model cell's key: HMAC-SHA256(field key, "lethe cell v1" ‖ session high ‖ session low).
        #expect(hex(KeyDerivation.cellKey(key, session: Session(high: 1, low: 2))) == "16fdbfda069e0877fc728007d3bd23ea853a7506ea7c3cd214f3c50889e2957d")
    }
}

func kind(_ o: AppendOutcome) -> String {
    switch o {
    case .appended: "appended"
    case .duplicate: "duplicate"
    case .rejected: "rejected"
    }
}

@Suite struct SharedJournalTests {
    @Test func switchingANewFileToWriteAheadLoggingWaitsForAnotherWriter() throws {
        // Two processes opening a journal (or its read models) that does not exist yet race to
        // switch it to WAL. While the other holds the write lock of the new file, SQLite answers
        // busy at once, without calling the busy handler; the switch must wait its turn instead.
        let dir = try TempDir()
        let path = dir.path("new.db")
        let held = DispatchSemaphore(value: 0), released = DispatchSemaphore(value: 0)
        let otherFailed = Mutex<String?>(nil)
        // The other connection's errors are kept for the test to report (a `try!` here would
        // crash the whole test process); `held` is signalled on every path, so the wait for it ends.
        Thread.detachNewThread {
            defer { released.signal() }
            var holding = false
            do {
                let other = try SQLiteDatabase(path: path)
                try other.execute("BEGIN IMMEDIATE")
                holding = true
                held.signal()
                Thread.sleep(forTimeInterval: 0.2)
                try other.execute("COMMIT")
            } catch {
                otherFailed.withLock { $0 = "\(error)" }
                if !holding { held.signal() }
            }
        }
        try #require(held.wait(timeout: dispatchDeadline(.seconds(30))) == .success, "the other connection never took the lock")
        try #require(otherFailed.withLock { $0 } == nil, "the other connection failed: \(otherFailed.withLock { $0 } ?? "")")
        let db = try SQLiteDatabase(path: path)
        try db.enableWAL()
        try #require(released.wait(timeout: dispatchDeadline(.seconds(30))) == .success, "the other connection never let go")
        #expect(otherFailed.withLock { $0 } == nil, "the other connection failed: \(otherFailed.withLock { $0 } ?? "")")
        let mode = try db.statement("PRAGMA journal_mode")
        #expect(try mode.step() && mode.text(0) == "wal")
        mode.reset()
    }

    @Test(arguments: TestBackend.allCases)
    func twoWritersOnOneFileTakeTurnsWithoutLosingOrForkingAnything(_ backend: TestBackend) throws {
        // Two engines on the same files, as two processes would be: each notices the other's appends.
        let place = try TestPlace(backend)
        let a = try place.open(blockEvents: 5, seed: 1)
        let b = try place.open(blockEvents: 5, seed: 2)
        var rng = SplitMix(seed: 9)
        var expectedVersion: [String: Int64] = [:]
        for i in 0..<120 {
            let writer = rng.next() % 2 == 0 ? a : b
            let account = "acc_\(rng.next() % 4)"
            let at = String(format: "2026-01-01T00:%02d:%02dZ", i / 60, i % 60)
            let header = try writer.append(event(account, at: at, id: "e\(i)", expected: expectedVersion[account] ?? 0))
            expectedVersion[account, default: 0] += 1
            #expect(header.seq == Int64(i + 1) && header.version == expectedVersion[account])
        }
        // A stale expectation from either side is refused.
        #expect { try a.append(event("acc_0", at: "2026-01-01T01:00:00Z", expected: 0)) } throws: { ($0 as? JournalError)?.code == .versionConflict }
        let report = try place.verify()
        #expect(report.events == 120 && report.anchored)
        #expect(try allEvents(b).map(\.header.id) == (0..<120).map { "e\($0)" })
        // Records both wrote on one chain were sealed again under the next index where they
        // clashed: every one opens, each under a key of its own.
        let records = try allEvents(a)
        #expect(records.allSatisfy { if case .plaintext = $0.payload { true } else { false } })
        let refs = records.map { "\($0.header.account) \($0.key.number) \($0.key.index)" }
        #expect(Set(refs).count == 120)
    }
}
