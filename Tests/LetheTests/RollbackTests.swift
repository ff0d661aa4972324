import Foundation
import LetheEvents
@testable import LetheJournal
import LetheRetention
import LetheViews
import Testing

/// What an attacker with write access to the journal file (not to the key store, nor the master
/// key) tries: put back an older head, empty the journal, roll the file back to an older copy,
/// alter what a retention run acts on, plant an erasure, damage the indexes. Each must be caught
/// by `verify`, refused by the writer, and refused before a retention run destroys anything.
@Suite struct RollbackTests {
    /// The rows of `meta` that make a head, as an attacker would save them with `sqlite3`.
    func savedHead(_ path: String) throws -> [String: [UInt8]] {
        let db = try SQLiteDatabase(path: path, readOnly: true)
        defer { db.close() }
        let s = try db.statement("SELECT key, value FROM meta WHERE key IN ('head_link', 'head_mac')")
        var out: [String: [UInt8]] = [:]
        while try s.step() { out[s.text(0)!] = s.blob(1) }
        s.reset()
        return out
    }

    func putBack(_ head: [String: [UInt8]], seq: Int64, _ path: String) throws {
        let db = try SQLiteDatabase(path: path)
        defer { db.close() }
        try db.statement("UPDATE meta SET value = ? WHERE key = 'head_seq'").bind(1, seq).run()
        for (key, value) in head { try db.statement("UPDATE meta SET value = ? WHERE key = ?").bind(1, value).bind(2, key).run() }
    }

    func openFailure(_ dir: TempDir) -> String? {
        do {
            _ = try openJournal(dir, blockEvents: 4)
            return nil
        } catch let e as JournalError {
            return e.message
        } catch {
            return "\(error)"
        }
    }

    func fill(_ j: Journal, _ range: Range<Int>) throws {
        for i in range {
            try j.append(event("acc_\(i % 3)", at: "2026-01-01T00:00:\(String(format: "%02d", i))Z", id: "e\(i)"))
        }
    }

    @Test func anEmptyJournalIsAuthenticatedLikeAnyOther() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        let report = try verified(j)
        #expect(report.events == 0 && report.anchored && report.anchoredSeq == 0)
        // Its head has a MAC: removing it is seen.
        try tamper(j.path, "DELETE FROM meta WHERE key = 'head_mac'")
        #expect(verifyFailure(j.path)?.contains("not authenticated by the journal's anchor key") == true)
    }

    @Test func aJournalEmptiedWithItsFirstHeadPutBackIsCaught() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        let empty = try savedHead(j.path)
        try fill(j, 0..<10)
        // Every row removed and the head of the empty journal (with its valid MAC) put back.
        try tamper(j.path, """
            DELETE FROM blocks; DELETE FROM tail; DELETE FROM accounts; DELETE FROM event_ids;
            DELETE FROM account_block_runs; DELETE FROM recent_account_blocks;
            """)
        try putBack(empty, seq: 0, j.path)
        let message = try #require(verifyFailure(j.path))
        #expect(message.contains("rolled back: it ends at event 0, but the key store's anchor saw it reach event 10 (events 1–10 removed"), "\(message)")
        // Without the master key too: the anchor is read from the key store all the same.
        let unauthenticated = try #require(verifyFailure(j.path, master: nil))
        #expect(unauthenticated == message)
        // And no writer builds on it.
        let refused = try #require(openFailure(dir))
        #expect(refused.contains("rolled back"), "\(refused)")
    }

    @Test func eventsCutOffTheEndWithTheirOldHeadPutBackAreCaught() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        try fill(j, 0..<6)  // block 1 (1–4), tail 5–6
        let old = try savedHead(j.path)
        try tamper(j.path, "CREATE TABLE saved_tail AS SELECT * FROM tail; CREATE TABLE saved_accounts AS SELECT * FROM accounts")
        try fill(j, 6..<10)  // block 2 (5–8), tail 9–10
        // Back to event 6, consistently: the tail and the accounts as they were, the old head.
        try tamper(j.path, """
            DELETE FROM blocks WHERE first_seq > 4; DELETE FROM event_ids WHERE seq > 6;
            DELETE FROM recent_account_blocks WHERE block_id > 1;
            DELETE FROM tail; INSERT INTO tail SELECT * FROM saved_tail; DROP TABLE saved_tail;
            DELETE FROM accounts; INSERT INTO accounts SELECT * FROM saved_accounts; DROP TABLE saved_accounts;
            """)
        try putBack(old, seq: 6, j.path)
        // Structure alone cannot tell; the key store can, with or without the master key.
        #expect(try JournalReader.verify(path: j.path).events == 6)
        let message = try #require(verifyFailure(j.path))
        #expect(message.contains("it ends at event 6, but the key store's anchor saw it reach event 10 (events 7–10 removed"), "\(message)")
        let cli = try run("/usr/bin/env", ["-u", MasterKeySource.environmentVariable, productsDirectory.appendingPathComponent("lethe").path,
                                            "verify", "--journal", j.path, "--unauthenticated"])
        #expect(cli.status != 0 && cli.stderr.contains("events 7–10 removed"), "\(cli)")
    }

    @Test func anOlderCopyOfTheFilePutBackIsCaught() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        try fill(j, 0..<5)
        let saved = try TempDir()
        try copyJournal(j.path, to: saved.path("old.lethe"))
        try fill(j, 5..<9)
        _ = j
        for suffix in ["", "-wal", "-shm"] { unlink(j.path + suffix) }
        try copyJournal(saved.path("old.lethe"), to: j.path)
        let message = try #require(verifyFailure(j.path))
        #expect(message.contains("ends at event 5, but the key store's anchor saw it reach event 9"), "\(message)")
        #expect(openFailure(dir)?.contains("rolled back") == true)
    }

    @Test func anotherHistoryOfTheSameLengthIsCaught() throws {
        // Two journals under one key store cannot swap: each file has its own instance and anchor.
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        try fill(j, 0..<6)
        let head = try savedHead(j.path)
        // A forged tail: another event 6 chained from event 5 (the attacker can compute links,
        // not the MAC, so the old MAC stays): the head link then differs from the anchor's.
        try tamper(j.path, "UPDATE tail SET account = 'acc_9' WHERE seq = 6")
        try putBack(head, seq: 6, j.path)
        let message = try #require(verifyFailure(j.path))
        #expect(message.contains("unsealed event 6: hash chain broken"), "\(message)")
    }

    @Test func anAlteredTailIsRefusedByTheWriterAndNothingIsPurged() throws {
        let dir = try TempDir()
        var options = Journal.Options()
        options.blockEvents = 64
        options.entropy = .seeded(3)
        options.synchronous = .normal
        options.rules = ContractRules()
        let path = dir.path("r.lethe")
        do {
            let journal = try Journal(path: path, master: testMaster, options: options)
            try journal.append(NewEvent(.accountSignedUp, account: "a", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ada", "email": "ada@example.com"]))
            try journal.append(NewEvent(.accountCancelled, account: "a", at: ts("2026-01-02T00:00:00Z"), data: [:]))
            // The read models have seen the signup only.
            _ = journal
        }
        try tamper(path, "UPDATE tail SET type = 'ErasureRequested' WHERE type = 'AccountCancelled'")
        // The writer will not open on it...
        #expect(throws: JournalError.self) { try Journal(path: path, master: testMaster, options: options) }
        // ...and a retention run (through the CLI, 2 days later: 28 days before the cancellation's
        // purge is due) refuses before destroying anything.
        let r = try run("lethe", ["retention", "run", "--journal", path, "--now", "2026-01-04T00:00:00Z"])
        #expect(r.status != 0 && r.stderr.contains("unsealed event 2: hash chain broken"), "\(r)")
        try tamper(path, "UPDATE tail SET type = 'AccountCancelled' WHERE type = 'ErasureRequested'")
        let journal = try Journal(path: path, master: testMaster, options: options)
        #expect(try journal.accountsWithDestroyedKeys().isEmpty)
        #expect(try verified(journal).events == 2)
    }

    @Test func theReadModelsRefuseEventsThatDoNotChainToTheAuthenticatedHead() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        try fill(j, 0..<3)
        let views = try ReadModels(journal: j)
        try views.catchUp()
        try fill(j, 3..<10)  // block 1 (1–4) and 2 (5–8) sealed after the checkpoint at 3
        // Block 2 made again with an event's type altered and the chain recomputed inside it
        // (an attacker can compute links): the block then ends on another link than the tail expects.
        let db = try SQLiteDatabase(path: j.path)
        let s = try db.statement("SELECT frame FROM blocks WHERE id = 2")
        _ = try s.step()
        var block = try Block.decode(try LZ4.decompressFrame(s.blob(0), limit: 1 << 24), where: "test")
        s.reset()
        block.events[1].header.type = "ErasureRequested"
        var link = block.previousLink
        var scratch: [UInt8] = []
        for e in block.events { link = Chain.link(previous: link, header: e.header, digest: e.digest, scratch: &scratch) }
        block.lastLink = link
        try db.statement("UPDATE blocks SET frame = ? WHERE id = 2").bind(1, try LZ4.compressFrame(block.encode())).run()
        db.close()
        let error = try #require(throws: JournalError.self) { try views.catchUp() }
        #expect(error.message.contains("unsealed event 9: hash chain broken"), "\(error.message)")
        #expect(try views.checkpoint == 3)
    }

    @Test func aPlantedErasureIsNeverActedOn() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", "-", "--journal", journal], stdin: """
            {"type":"AccountSignedUp","account":"victim","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
            """)
        try tamper(journal, "INSERT INTO erasures(account, kind, keeping, mac) VALUES('victim', 0, 'access-log', x'00')")
        let r = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2026-01-03T00:00:00Z"])
        #expect(r.status != 0 && r.stderr.contains("erasure record 1 (of account victim) is not authenticated"), "\(r)")
        let v = try run("lethe", ["verify", "--journal", journal])
        #expect(v.status != 0 && v.stderr.contains("erasure record 1"), "\(v)")
        // Nor is the account treated as being erased: the writer refuses to decide from the row.
        let refused = try run("lethe", ["state", "--account", "victim", "--journal", journal, "--actor", "t", "--reason", "test"])
        #expect(refused.status != 0 && refused.stderr.contains("erasure record 1"), "\(refused)")
        // Once the operator removes it, nothing was lost.
        try tamper(journal, "DELETE FROM erasures")
        let state = try run("lethe", ["state", "--account", "victim", "--journal", journal, "--actor", "t", "--reason", "test"])
        #expect(state.stdout.contains("\"active\"") && state.stdout.contains("Ada"), "\(state)")
    }

    @Test func verifyNamesAMissingOrExtraIndexRow() throws {
        let cases: [(sql: String, expected: String)] = [
            ("DELETE FROM recent_account_blocks WHERE block_id = 2 AND account_id = 1",
             "block index: block 2 holds events of account acc_0 but the index has no entry for it"),
            ("INSERT INTO recent_account_blocks VALUES(2, 9)", "block index: an extra entry lists block 9, which the journal does not hold"),
            ("INSERT INTO recent_account_blocks VALUES(4, 1)", "block index: an extra entry lists block 1 for account id 4, which has no events there"),
            ("INSERT INTO account_block_runs VALUES(4, 2, x'0102')", "block index: an extra entry lists block 2 for account id 4, which has no events there"),
            ("INSERT INTO account_block_runs VALUES(3, 1, x'0201')", "block index: the run of account id 3 from block 1 is truncated"),
            ("DELETE FROM event_ids WHERE seq = 5", "event id index: event 5 has an id but no entry for it"),
            ("INSERT INTO event_ids VALUES('planted', 3)", "event id index: an extra entry maps an id to event 3, which does not carry it"),
            ("UPDATE event_ids SET seq = 4 WHERE seq = 5", "event id index: the id of event 5 is indexed as event 4"),
            ("UPDATE accounts SET version = 2 WHERE name = 'acc_1'", "account table: acc_1 is at version 2 but its events end at 3"),
            ("UPDATE accounts SET last_at = 0 WHERE name = 'acc_1'", "account table: acc_1's latest event time does not match"),
            ("DELETE FROM accounts WHERE name = 'acc_2'", "account table: acc_2 has events (event 3"),
            ("UPDATE accounts SET id = 1 WHERE name = 'acc_2'", "account table: accounts acc_"),
            ("UPDATE accounts SET id = 7 WHERE name = 'acc_2'", "account table: account acc_2 has id 7, outside the ids given (1 to 3)"),
        ]
        for c in cases {
            let dir = try TempDir()
            let j = try openJournal(dir, blockEvents: 4)
            try fill(j, 0..<10)
            #expect(try verified(j).events == 10)
            try tamper(j.path, c.sql)
            let message = try #require(verifyFailure(j.path), "\(c.sql) went unnoticed")
            #expect(message.contains(c.expected), "\(c.sql): \(message)")
        }
    }

    @Test func aPurgeRefusesWhenTheIndexMissesABlockOfTheAccount() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", "-", "--journal", journal], stdin: (0..<2100).map { i in
            i == 0 ? #"{"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}"#
                : #"{"type":"PageViewed","account":"a","at":"2026-01-01T00:\#(String(format: "%02d", i / 60)):\#(String(format: "%02d", i % 60))Z","data":{"path":"/","visitor":"v"}}"#
        }.joined(separator: "\n") + "\n" + #"{"type":"ErasureRequested","account":"a","at":"2026-01-02T00:00:00Z","data":{}}"#)
        // The import settled its posting into the runs (`Journal.settle`).
        #expect(try sqliteScalar(journal, "SELECT count(*) FROM recent_account_blocks") == 0)
        #expect(try sqliteScalar(journal, "SELECT count(*) FROM account_block_runs") == 1)
        // The account's blocks lose their index rows: the purge would leave their payloads behind.
        try tamper(journal, "DELETE FROM account_block_runs WHERE account_id = 1; DELETE FROM recent_account_blocks WHERE account_id = 1")
        let r = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2026-01-03T00:00:00Z"])
        #expect(r.status != 0 && r.stderr.contains("the block index misses events of account a"), "\(r)")
    }

    @Test func aRestoredJournalHasItsOwnAnchorAndTheLiveOneKeepsItsOwn() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        try fill(j, 0..<6)
        let backup = dir.path("b.backup")
        _ = try Backup.create(j, to: backup, now: ts("2026-06-01T00:00:00Z"))
        try fill(j, 6..<10)
        let restored = dir.path("restored.lethe")
        try Backup.restore(backup, to: restored, keysPath: j.keysPath, master: testMaster)
        let report = try JournalReader.verify(path: restored, keysPath: j.keysPath, master: testMaster)
        #expect(report.events == 6 && report.anchored && report.anchoredSeq == 6)
        #expect(try verified(j).anchoredSeq == 10)
        // A restored file is a history of its own (the operator chose it, with the master key):
        // put in the live one's place it verifies as itself, and `verify` names the other file
        // of the journal that went further.
        for suffix in ["", "-wal", "-shm"] { unlink(j.path + suffix) }
        try copyJournal(restored, to: j.path)
        let swapped = try JournalReader.verify(path: j.path, keysPath: j.keysPath, master: testMaster)
        #expect(swapped.anchoredSeq == 6 && swapped.otherFiles.map(\.seq) == [10])
        // Its own older copy is caught like any other.
        let restoredJournal = try Journal(path: restored, keysPath: j.keysPath, master: testMaster)
        try restoredJournal.append(event("acc_0", at: "2026-01-02T00:00:00Z"))
        #expect(verifyFailure(j.path)?.contains("ends at event 6, but the key store's anchor saw it reach event 7") == true)
    }
}
