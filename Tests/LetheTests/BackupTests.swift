import Foundation
import LetheEvents
import LetheViews
@testable import LetheJournal
import Testing

/// Encrypted backups: consistent under concurrent appends, tamper-evident, free of plaintext,
/// and never bringing purged data back.
@Suite struct BackupTests {
    let fixture = fixturesDirectory.appendingPathComponent("small.ndjson").path

    @Test(arguments: TestBackend.allCases)
    func aBackupTakenDuringAppendsRestoresToAConsistentJournal(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let path = place.url ?? place.dir.path("j.lethe")  // (where `journalBackend` puts a file journal)
        // The key store: a file, or (on PostgreSQL) a database of its own, from which the restores
        // into either backend, and their scratch files, take the keys.
        let keys = try place.keyStore
        let dir = place.dir
        // A writer appends in another process while the backups are taken.
        let writer = try start("lethe-crash-writer", [path, "7", "16", place.keysArgument])
        defer { writer.send(SIGKILL); _ = try? writer.finish() }
        // A writer that fails at once must fail the test, not keep it waiting for events.
        try waitUntil("the writer's first 200 events", timeLimit: .seconds(60)) {
            guard writer.isRunning else {
                let r = try writer.finish()
                throw TestFailure("the writer exited with \(r.status) before writing 200 events: \(r.stderr)")
            }
            return (try? place.verify().events) ?? 0 >= 200
        }
        let journal = try Journal(backend: place.journalBackend, keys: keys, master: testMaster)
        var restoredCounts: [Int64] = []
        var targets: [TestPlace] = []  // (their schemas are dropped with them)
        for n in 0..<3 {
            let file = dir.path("b\(n).backup")
            let manifest = try Backup.create(journal, to: file, now: ts("2026-06-01T00:00:00Z")).manifest
            // Into a file; from PostgreSQL, every other one into PostgreSQL too.
            let restored: Journal
            if backend == .postgres && n % 2 == 1 {
                let target = try TestPlace(.postgres)
                targets.append(target)
                try Backup.restore(file, into: target.journalBackend, keys: keys, master: testMaster)
                let report = try JournalReader.verify(backend: target.journalBackend, keys: keys, master: testMaster)
                #expect(report.anchored && report.events == manifest.lastSeq)
                restored = try Journal(backend: target.journalBackend, keys: keys, master: testMaster)
            } else {
                let target = dir.path("restored\(n).lethe")
                try Backup.restore(file, to: target, keys: keys, master: testMaster)
                let report = try JournalReader.verify(backend: SQLiteBackend(path: target), keys: keys, master: testMaster)
                #expect(report.anchored && report.events == manifest.lastSeq)
                restored = try Journal(backend: SQLiteBackend(path: target), keys: keys, master: testMaster)
            }
            // Every event decrypts with the live key store.
            var count: Int64 = 0
            try restored.read { try $0.events { if case .plaintext = $0.payload { count += 1 } } }
            #expect(count == manifest.lastSeq)
            restoredCounts.append(count)
            usleep(50_000)
        }
        #expect(restoredCounts.count == 3 && restoredCounts[2] > restoredCounts[0], "the writer was writing throughout: \(restoredCounts)")
    }

    func backupOfTheFixture(_ dir: TempDir) throws -> (journal: String, backup: String) {
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", fixture, "--journal", journal])
        let backup = dir.path("j.backup")
        let r = try run("lethe", ["backup", "create", backup, "--journal", journal, "--now", "2027-01-01T00:00:00Z"])
        #expect(r.status == 0 && r.stdout.hasPrefix("backed up: \(backup): journal "), "\(r.stderr)")
        return (journal, backup)
    }

    @Test func aFlippedBitAnywhereIsRefusedAndNothingIsWritten() throws {
        let dir = try TempDir()
        let (journal, backup) = try backupOfTheFixture(dir)
        let original = try Data(contentsOf: URL(fileURLWithPath: backup))
        var rng = SplitMix(seed: 99)
        // Every byte of the header, then bytes all over the chunks.
        let headerEnd = original.range(of: Data("\n\n".utf8))!.upperBound
        let offsets = Array(0..<headerEnd) + (0..<60).map { _ in headerEnd + Int(rng.next() % UInt64(original.count - headerEnd)) }
        for offset in offsets {
            var damaged = original
            damaged[offset] ^= UInt8(1 << (rng.next() % 8))
            let file = dir.path("damaged.backup")
            try damaged.write(to: URL(fileURLWithPath: file))
            let target = dir.path("never.lethe")
            let r = try run("lethe", ["backup", "restore", file, "--journal", target, "--keys", journal + ".keys"])
            #expect(r.status != 0, "a flip at byte \(offset) went unnoticed")
            #expect(!FileManager.default.fileExists(atPath: target) && r.stderr.hasPrefix("lethe backup restore: "))
        }
        // Cut short, or restored over an existing journal without saying so: refused too.
        try original.prefix(original.count - 7).write(to: URL(fileURLWithPath: dir.path("short.backup")))
        #expect(try run("lethe", ["backup", "restore", dir.path("short.backup"), "--journal", dir.path("x.lethe"), "--keys", journal + ".keys"]).status != 0)
        let over = try run("lethe", ["backup", "restore", backup, "--journal", journal])
        #expect(over.status != 0 && over.stderr.contains("refuses to overwrite"))
        // Another master key cannot open the key store that holds the backup's key.
        let foreign = try run("lethe", ["backup", "restore", backup, "--journal", dir.path("y.lethe"), "--keys", journal + ".keys"],
                              environment: [MasterKeySource.environmentVariable: String(repeating: "cd", count: 32)])
        #expect(foreign.status != 0 && foreign.stderr.contains("does not open the key store"), "\(foreign.stderr)")
        // Nor can another journal's key store.
        _ = try run("lethe", ["import", "-", "--journal", dir.path("other.lethe")], stdin: #"{"type":"AccountSignedUp","account":"x","at":"2026-01-01T00:00:00Z","data":{"name":"X","email":"x@example.com"}}"#)
        let alien = try run("lethe", ["backup", "restore", backup, "--journal", dir.path("z.lethe"), "--keys", dir.path("other.lethe.keys")])
        #expect(alien.status != 0 && alien.stderr.contains("has no keys for journal"), "\(alien.stderr)")
    }

    @Test func noPersonalDataOfTheFixtureIsInTheBackupAndItSaysWhatItHolds() throws {
        let dir = try TempDir()
        let (_, backup) = try backupOfTheFixture(dir)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: backup))
        let lines = try String(contentsOfFile: fixture, encoding: .utf8).split(separator: "\n")
        var values = Set<String>()
        for line in lines {
            guard let object = try? JSONParser.parse(String(line)).object, case .object(let data)? = object["data"] else { continue }
            for field in data.fields { if let s = field.value.string, s.count >= 10 { values.insert(s) } }
        }
        #expect(values.count > 500)
        #expect(values.filter { bytes.range(of: Data($0.utf8)) != nil }.isEmpty)
        let inspect = try JSONParser.parse(try run("lethe", ["backup", "inspect", backup]).stdout.trimmingCharacters(in: .newlines)).object
        #expect(inspect?["first_seq"] == 1 && inspect?["last_seq"] == 3012 && inspect?["created"] == "2027-01-01T00:00:00Z")
        #expect(try run("lethe", ["backup", "list", dir.path("")]).stdout.contains("events 1–3012"))
    }

    @Test(arguments: TestBackend.allCases)
    func aPurgeAfterTheBackupStaysPurgedAfterTheRestore(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let live = ["--journal", place.journalArgument, "--keys", place.keysArgument]
        #expect(try run("lethe", ["import", fixture] + live).stdout.hasPrefix("imported "))  // (the fixture has rejected lines too)
        let backup = place.dir.path("j.backup")
        let created = try run("lethe", ["backup", "create", backup] + live + ["--now", "2027-01-01T00:00:00Z"])
        #expect(created.status == 0 && created.stdout.hasPrefix("backed up: \(backup): journal "), "\(created.stderr)")
        // After the backup: an erasure request the backup does not hold, then the retention run
        // purges accounts (that request, and the erasure requests and cancellations it holds).
        let request = #"{"type":"ErasureRequested","account":"acc_1","at":"2027-01-02T00:00:00Z","data":{"channel":"support"}}"#
        #expect(try run("lethe", ["import", "-"] + live, stdin: request).status == 0)
        let run1 = try run("lethe", ["retention", "run"] + live + ["--now", "2027-06-01T00:00:00Z"])
        #expect(run1.status == 0, "\(run1.stderr)")
        let exported = try run("lethe", ["export"] + live).stdout
        let purged = Set(exported.split(separator: "\n").filter { $0.contains(#""type":"AccountPurged""#) }.map {
            String($0.split(separator: ",").first { $0.hasPrefix(#""account":"#) }!.dropFirst(11).dropLast())
        })
        #expect(purged.count >= 5)
        // Restored (into a file, or a schema of its own on the server) with the live key store:
        // what was purged since the backup stays purged.
        let target = try TestPlace(backend)
        let restored = ["--journal", target.journalArgument, "--keys", place.keysArgument]
        let r = try run("lethe", ["backup", "restore", backup] + restored + ["--now", "2027-06-02T00:00:00Z"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(purged.contains("acc_1") && r.stdout.contains("(\(purged.count) whose keys were destroyed after it, 0 due now)"), "\(r.stdout)")
        for account in purged {
            let state = try run("lethe", ["state"] + restored + ["--account", account, "--now", "2027-06-03T00:00:00Z"]).stdout
            #expect(state.contains(#""status":"purged","profile":{"name":null,"company":null,"email":null}"#), "\(account): \(state)")
            let lines = try run("lethe", ["export"] + restored + ["--account", account, "--now", "2027-06-03T00:00:00Z"]).stdout.split(separator: "\n")
            // What stays readable: the engine's records, and the access log, which outlives the account.
            let kept = EventType.allCases.filter { $0.keyScope == .journal || $0.recordChain.map(EventType.chainsOutlivingAccount.contains) == true }
            #expect(lines.filter { !$0.contains(#""redacted":true"#) }.allSatisfy { line in
                kept.contains { line.contains("\"type\":\"\($0.rawValue)\"") }
            }, "\(account)")
            // And the processors were asked again to erase it, in the restored history too.
            #expect(lines.contains { $0.contains(#""type":"ProcessorErasureRequested""#) }, "\(account)")
        }
        #expect(try run("lethe", ["verify"] + restored).status == 0)
    }

    /// Where a backup of `place`'s journal is restored: a file beside it, or a schema of its own
    /// on the server; either way with `place`'s (live) key store. Keep the place: its schemas go with it.
    func restore(_ backup: String, of place: TestPlace) throws -> (Journal, JournalReader.VerifyReport, TestPlace?) {
        let keys = try place.keyStore
        var target: TestPlace?
        let backend: any JournalBackend
        switch place.backend {
        case .sqlite:
            backend = SQLiteBackend(path: place.dir.path("restored.lethe"))
        case .postgres:
            target = try TestPlace(.postgres)
            backend = try target!.journalBackend
        }
        try Backup.restore(backup, into: backend, keys: keys, master: testMaster)
        let report = try JournalReader.verify(backend: backend, keys: keys, master: testMaster)
        return (try Journal(backend: backend, keys: keys, master: testMaster), report, target)
    }

    @Test(arguments: TestBackend.allCases)
    func itemsAndRecordsErasedAfterTheBackupStayUnreadableInTheRestoredJournal(_ backend: TestBackend) throws {
        // An item purge and a record expiry after the backup destroy their keys: the restored
        // journal still holds their payloads, and they do not open. No ledger of erasures is
        // needed: the live key store is the memory.
        let place = try TestPlace(backend)
        let journal = try place.open(blockEvents: 4)
        try journal.append(NewEvent(.accountSignedUp, account: "a", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ada", "email": "ada@example.com"]))
        try journal.append(NewEvent(.itemCreated, account: "a", at: ts("2026-01-01T00:00:01Z"), data: ["item": "doc", "kind": "file", "label": "Secret plans"]))
        for i in 2..<8 { try journal.append(event("a", at: "2026-01-01T00:00:0\(i)Z", data: ["path": .string("/secret-\(i)"), "visitor": "v"])) }
        try Backup.create(journal, to: place.dir.path("b.backup"), now: ts("2026-02-01T00:00:00Z"))
        try journal.append([NewEvent(.itemPurged, account: "a", at: ts("2026-03-01T00:00:00Z"), data: ["item": "doc", "rule": "trash-30d"])],
                           erasing: [.event(account: "a", seq: 2)])
        try journal.append([NewEvent(.recordsExpired, account: "a", at: ts("2026-03-01T00:00:00Z"),
                                     data: ["category": "page-views", "rule": "page-views-90d", "through": "2026-01-01T00:00:04Z"])],
                           erasing: [.records(account: "a", category: "page-views", through: ts("2026-01-01T00:00:04Z"))])
        let (restored, report, target) = try restore(place.dir.path("b.backup"), of: place)
        defer { withExtendedLifetime(target) {} }
        let payloads = try allEvents(restored).map(\.payload)
        // Events 2 (the item) and 3–5 (page views up to 00:00:04) are shredded; 6–8 and the signup open.
        #expect(payloads.count == 8)
        for (k, p) in payloads.enumerated() {
            let shredded = (1...4).contains(k)
            #expect(shredded ? p == .shredded : { if case .plaintext = p { true } else { false } }(), "event \(k + 1): \(p)")
        }
        #expect(report.anchored && report.events == 8)
    }

    @Test(arguments: TestBackend.allCases)
    func recordsLargerThanAChunkSpanChunksAndRestore(_ backend: TestBackend) throws {
        // Payloads that do not compress (sealed), larger than a 4 MiB chunk, in a sealed block
        // and in the tail: each chunk stays at most 4 MiB, and the restore joins them again.
        let place = try TestPlace(backend)
        let journal = try place.open(blockEvents: 2)
        var rng = SplitMix(seed: 5)
        for i in 0..<3 {
            let big = String((0..<(5 << 20)).map { _ in Character(UnicodeScalar(UInt8(97 + rng.next() % 26))) })
            try journal.append(NewEvent(account: "a", type: "Blob", at: ts("2026-01-01T00:00:0\(i)Z"), payload: Array(big.utf8)))
        }
        try journal.append(event("a", at: "2026-01-01T00:00:09Z"))
        let summary = try Backup.create(journal, to: place.dir.path("b.backup"), now: ts("2026-02-01T00:00:00Z"))
        #expect(summary.chunks >= 4)
        let (restored, report, target) = try restore(place.dir.path("b.backup"), of: place)
        defer { withExtendedLifetime(target) {} }
        #expect(try allEvents(restored).map(\.payload) == allEvents(journal).map(\.payload))
        #expect(report.events == 4)
    }

    @Test func aRestoredJournalWrittenOnSealsNoReadModelCellUnderAKeyAndNonceTheOldOnesUsed() throws {
        // An investigator holding the read models of a journal, and of the same journal restored
        // from a backup and written on: the same sequence number, account and column, two values.
        // Were they sealed under one key and nonce, their ciphertexts would XOR to their plaintexts'.
        let dir = try TempDir()
        let path = dir.path("j.lethe")
        let journal = try openJournal(dir, name: "j.lethe")
        try journal.append(NewEvent(.accountSignedUp, account: "a", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ann", "email": "a@example.com"]))
        try Backup.create(journal, to: dir.path("b.backup"), now: ts("2026-01-02T00:00:00Z"))
        try journal.append(NewEvent(.profileUpdated, account: "a", at: ts("2026-01-03T00:00:00Z"), data: ["name": "Xavier"]))
        _ = try ReadModels(journal: journal).catchUp()

        let target = dir.path("restored.lethe")
        try Backup.restore(dir.path("b.backup"), to: target, keysPath: path + ".keys", master: testMaster)
        var options = Journal.Options()
        options.entropy = .seeded(2)  // another process: another draw of its sessions
        let restored = try Journal(path: target, keysPath: path + ".keys", master: testMaster, options: options)
        try restored.append(NewEvent(.profileUpdated, account: "a", at: ts("2026-01-03T00:00:00Z"), data: ["name": "Yvonne"]))
        _ = try ReadModels(journal: restored).catchUp()

        func cell(_ views: String) throws -> [UInt8] {
            let hex = try run("/usr/bin/sqlite3", [views, "SELECT hex(name) FROM accounts WHERE account='a'"]).stdout
            return Hex.decode(hex.trimmingCharacters(in: .whitespacesAndNewlines).lowercased())!
        }
        let (old, new) = (try cell(path + ".views"), try cell(target + ".views"))
        #expect(old != new)
        // The ciphertext sits just before the 16-byte tag.
        let (x, y) = (Array("Xavier".utf8), Array("Yvonne".utf8))
        let ct1 = old[(old.count - 16 - x.count)..<(old.count - 16)], ct2 = new[(new.count - 16 - y.count)..<(new.count - 16)]
        #expect(zip(ct1, ct2).map { $0 ^ $1 } != zip(x, y).map { $0 ^ $1 }, "a key and nonce were used twice")
    }
}
