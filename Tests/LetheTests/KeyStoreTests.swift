import Crypto
import Foundation
import LetheEvents
@testable import LetheJournal
import LetheViews
@testable import LethePostgres
import Testing

/// Where a key store lives in a test: a file, or a PostgreSQL database of its own.
enum TestKeys: String, CaseIterable, CustomStringConvertible, Sendable {
    case file
    case postgres

    var description: String { rawValue }

    /// The test server's database for key stores (`Tools/pg.sh` makes `lethe_keys` beside `lethe`).
    static func serverURL() throws -> String {
        let url = try TestBackend.serverURL()
        let database = try #require(url.range(of: "/lethe", options: .backwards), "LETHE_TEST_POSTGRES does not name the database lethe")
        return url.replacingCharacters(in: database, with: "/lethe_keys")
    }
}

/// One test's key store: a file in `dir`, or a schema of its own in the test server's key database.
final class KeyPlace {
    let kind: TestKeys
    let dir: TempDir
    let schema: String
    let url: String?

    init(_ kind: TestKeys) throws {
        self.kind = kind
        dir = try TempDir()
        schema = "k_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        url = kind == .postgres ? try TestKeys.serverURL() + "?schema=" + schema : nil
    }

    deinit {
        guard let url, let address = try? PostgresAddress(url), let connection = try? Connection(address) else { return }
        try? connection.execute("DROP SCHEMA IF EXISTS \(schema) CASCADE")
    }

    var path: String { dir.path("k.keys") }

    /// What `--keys` takes.
    var argument: String { url ?? path }

    var backend: any KeyStoreBackend {
        get throws {
            switch kind {
            case .file: SQLiteKeyBackend(path: path)
            case .postgres: PostgresKeyBackend(try PostgresAddress(url!))
            }
        }
    }

    /// A key store process of its own (each with its own connection and cache).
    func open(seed: UInt64, master: MasterKeySource = testMaster) throws -> KeyStore {
        try KeyStore(try backend, master: master, dataPaths: [], entropy: .seeded(seed), synchronous: .normal)
    }

    /// Runs `sql` in the key store's schema with `psql`; returns what it printed.
    @discardableResult
    func psql(_ sql: String) throws -> String {
        let r = try run("/usr/bin/psql", [try TestKeys.serverURL(), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                                          "-c", "SET search_path TO \(schema); \(sql)"], timeLimit: .seconds(60))
        #expect(r.status == 0, "psql failed on \(sql): \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Every byte the database keeps of the key store on disk, as someone copying its files would
    /// get them: the file and its WAL, or (after a checkpoint) the data files of its tables.
    func storedBytes() throws -> [UInt8] {
        switch kind {
        case .file:
            return [path, path + "-wal"].flatMap { (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: $0)))) ?? [] }
        case .postgres:
            try psql("CHECKPOINT")
            let dataDirectory = try psql("SHOW data_directory")
            return try ["keyrings", "own_keys", "journals"].flatMap { table -> [UInt8] in
                let file = dataDirectory + "/" + (try psql("SELECT pg_relation_filepath('\(table)')"))
                return [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
            }
        }
    }
}

func bytes(_ key: SymmetricKey?) -> [UInt8]? { key?.withUnsafeBytes { Array($0) } }

func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    return haystack.firstRange(of: needle) != nil
}

/// The key store on each of its backends: the same rules, and what a destroyed key leaves.
@Suite struct KeyStoreTests {
    let t = Timestamp(seconds: 1_780_000_000)

    func needs(_ chains: Set<String>) -> KeyStore.Needs {
        var n = KeyStore.Needs()
        n.chains = chains
        return n
    }

    /// Keyrings are written in one pass per batch, each on the condition that the stored one is
    /// still the one this process read: a keyring another process changed meanwhile is read
    /// again and changed on top of what it holds, never overwritten (its chain key survives).
    @Test(arguments: TestKeys.allCases)
    func keyringsWrittenInOnePassYieldToAnotherProcess(_ kind: TestKeys) throws {
        let place = try KeyPlace(kind)
        let a = try place.open(seed: 1)
        let b = try place.open(seed: 2)
        // A makes twenty keyrings (signups, no chain yet), in one pass.
        let signups = try a.provide(Dictionary(uniqueKeysWithValues: (0..<20).map { ("acc_\($0)", needs([])) }), at: t).keyrings
        #expect(signups.count == 20 && signups.values.allSatisfy { $0.chains.isEmpty && $0.accountKey != nil })
        // B, another process, gives acc_0 a chain; A's copy of acc_0 is now stale.
        let fromB = try #require(try b.provide(["acc_0": needs(["page-views"])], at: t).keyrings["acc_0"])
        let pageViews = try #require(fromB.chain(category: "page-views"))
        // A adds another chain to acc_0 and acc_1: acc_0's conditional write fails, is read again, and keeps B's chain.
        let fromA = try a.provide(["acc_0": needs(["surveys"]), "acc_1": needs(["surveys"])], at: t).keyrings
        let ring0 = try #require(fromA["acc_0"])
        #expect(bytes(ring0.chain(category: "page-views")?.key) == bytes(pageViews.key))
        #expect(ring0.chain(category: "surveys") != nil)
        #expect(bytes(ring0.accountKey) == bytes(signups["acc_0"]?.accountKey))
        #expect(fromA["acc_1"]?.chain(category: "surveys") != nil)
        // What a third process reads is what A returned.
        let c = try place.open(seed: 3)
        let stored = try #require(try c.keyring("acc_0"))
        #expect(Set(stored.chains.values.map(\.category)) == ["page-views", "surveys"])
        #expect(bytes(stored.chain(category: "page-views")?.key) == bytes(pageViews.key))
        #expect(bytes(stored.accountKey) == bytes(signups["acc_0"]?.accountKey))
    }

    /// Own keys are numbered on across processes, never reused; a destroyed one is told from one
    /// never made, and every process drops what it cached once the epoch moves.
    @Test(arguments: TestKeys.allCases)
    func ownKeysAreNumberedOnAndADestroyedOneIsToldFromOneNeverMade(_ kind: TestKeys) throws {
        let place = try KeyPlace(kind)
        let a = try place.open(seed: 1)
        let b = try place.open(seed: 2)
        let journal = try a.journalKeys([1, 2, 3], create: true)
        #expect(try a.provide(["x": needs([])], ownKeys: 3, at: t).own.map(\.id) == [1, 2, 3])
        #expect(try b.provide([:], ownKeys: 2, at: t).own.map(\.id) == [4, 5])
        guard case .key = try b.lookup("x", KeyRef(.own, number: 2), journal: journal) else { Issue.record("b cannot read own key 2"); return }
        let seen = b.seenEpoch
        try a.destroy([.own("x", ids: [2, 5])], at: t)
        #expect(try b.epochMoved(since: seen))
        try b.refresh()
        for (store, name) in [(a, "a"), (b, "b")] {
            guard case .destroyed = try store.lookup("x", KeyRef(.own, number: 2), journal: journal) else { Issue.record("\(name): own key 2 is not destroyed"); continue }
            guard case .destroyed = try store.lookup("x", KeyRef(.own, number: 5), journal: journal) else { Issue.record("\(name): own key 5 is not destroyed"); continue }
            guard case .key = try store.lookup("x", KeyRef(.own, number: 3), journal: journal) else { Issue.record("\(name): own key 3 is lost"); continue }
            guard case .none = try store.lookup("x", KeyRef(.own, number: 99), journal: journal) else { Issue.record("\(name): own key 99 exists"); continue }
        }
        // The largest id stays taken although its row is gone: the next key is 6.
        #expect(try a.provide([:], ownKeys: 1, at: t).own.map(\.id) == [6])
        // The account's keyring is untouched; a second journal's keys are refused until made.
        #expect(try a.keyring("x")?.accountKey != nil)
        #expect { try b.journalKeys([9], create: false) } throws: { ($0 as? JournalError)?.code == .keys }
        #expect(bytes(try b.journalKeys([1, 2, 3], create: false).engine) == bytes(journal.engine))
    }

    /// What someone copying the database's files after a purge gets: no copy of the destroyed
    /// keyring, once the store has cleared what the erasure left (a file's WAL; PostgreSQL's dead
    /// row versions). Before that, the copy holds it: the check is one that can fail.
    @Test(arguments: TestKeys.allCases)
    func aDestroyedKeyringLeavesNoCopyOnDiskOnceTheResidueIsCleared(_ kind: TestKeys) throws {
        let place = try KeyPlace(kind)
        let store = try place.open(seed: 1)
        _ = try store.provide(["gone": needs(["surveys"]), "kept": needs([])], at: t)
        let ring = try #require(try store.keyring("gone"))
        let accountKey = try #require(bytes(ring.accountKey))
        // The wrapped keyring as stored (what a copy of the disk holds).
        let db = try place.backend.open(synchronous: .normal)
        let sealed = try #require(try db.keyring("gone")).sealed
        #expect(contains(try place.storedBytes(), sealed))
        try store.destroy([.account("gone", keeping: [])], at: t)
        #expect(try store.hasResidue())
        #expect(try db.keyring("gone")?.sealed != sealed)
        #expect(contains(try place.storedBytes(), sealed), "the old keyring should still be on disk before the residue is cleared")
        db.close()
        #expect(try store.clearResidue(wait: .seconds(5)) == nil)
        #expect(try !store.hasResidue())
        let disk = try place.storedBytes()
        #expect(!contains(disk, sealed), "a copy of the destroyed keyring is still on disk")
        #expect(!contains(disk, accountKey))
        // Every process finds it destroyed; the other account is untouched.
        let other = try place.open(seed: 2)
        let journal = try other.journalKeys([7], create: true)
        guard case .destroyed = try other.lookup("gone", KeyRef.account, journal: journal) else { Issue.record("the account key survived"); return }
        #expect(try other.keyring("kept")?.accountKey != nil)
        #expect(try other.purgedAccounts() == ["gone"])
    }

    /// What on a server can still see a row version deleted after it began, so that `VACUUM`
    /// keeps it (and `VACUUM FULL` copies it into its new files).
    enum OlderVersionHolder: String, CaseIterable, Sendable {
        /// A session whose snapshot began before the destruction (a report left open, say): the
        /// server's twin of a reader holding an old snapshot of a file's WAL.
        case snapshot
        /// A `READ COMMITTED` transaction that got its id and sits idle: no snapshot between its
        /// statements (`backend_xmin` is empty), but its id alone holds the versions back.
        case idleTransaction
        /// A prepared transaction (two-phase commit), which belongs to no session.
        case preparedTransaction
        /// A snapshot on a hot standby whose feedback is on (`hot_standby_feedback`): the
        /// server's WAL sender to it holds the versions back (`Tools/pg.sh standby`).
        case standby
        /// The same through a replication slot: the slot holds them, not the WAL sender.
        case standbyWithSlot
    }

    /// Each holder of old versions keeps the residue marked: the store waits for it, then leaves
    /// the mark and says so; the next call, once the holder is gone, removes the old keyring.
    /// One holder at a time: a holder holds every key store of the database back, so one case's
    /// holder would keep another's residue marked whether that case's holder is seen or not.
    @Test(.serialized, arguments: OlderVersionHolder.allCases)
    func whatStillSeesTheDestroyedKeyringKeepsTheResidueMarkedUntilItEnds(_ holder: OlderVersionHolder) throws {
        let place = try KeyPlace(.postgres)
        let store = try place.open(seed: 1)
        _ = try store.provide(["gone": needs([])], at: t)
        let db = try place.backend.open(synchronous: .normal)
        let sealed = try #require(try db.keyring("gone")).sealed
        db.close()
        let url = try TestKeys.serverURL()
        let environment = ProcessInfo.processInfo.environment
        let gid = "lethe-test-\(UInt64.random(in: 0 ... .max))"
        func psql(_ sql: String) throws -> Bool {
            let child = try Child("/usr/bin/psql", [url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], environment: environment)
            try child.input.close()
            return child.wait(until: .distantFuture) == 0
        }
        // A standby of the test server, for its case: its own folder under the build folder, stopped and removed at the end.
        let standbyDir = packageDirectory.appendingPathComponent(".build/pg-standby-\(UInt32.random(in: 0 ... .max))").path
        let pgScript = packageDirectory.appendingPathComponent("Tools/pg.sh").path
        let slot = "lethe_test_\(UInt32.random(in: 0 ... .max))"
        let onStandby = holder == .standby || holder == .standbyWithSlot
        var sessionURL = url
        if onStandby {
            let made = try run(pgScript, ["standby", standbyDir, url] + (holder == .standbyWithSlot ? [slot] : []), timeLimit: .seconds(120))
            try #require(made.status == 0, "no standby: \(made.stderr)")
            sessionURL = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // (`stop` also drops the slot, which would otherwise hold every later test's old versions.)
        defer { if onStandby { _ = try? run(pgScript, ["stop", standbyDir], timeLimit: .seconds(120)) } }
        let session = try Child("/usr/bin/psql", [sessionURL, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"], environment: environment)
        switch holder {
        case .snapshot, .standby, .standbyWithSlot:
            session.input.write(Data("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 'holding';\n".utf8))
        case .idleTransaction:
            session.input.write(Data("BEGIN; SELECT 'holding ' || pg_current_xact_id();\n".utf8))
        case .preparedTransaction:
            session.input.write(Data("BEGIN; SELECT pg_current_xact_id(); PREPARE TRANSACTION '\(gid)'; SELECT 'holding';\n".utf8))
        }
        // Left behind, a prepared transaction would hold every later test's old versions.
        var prepared = holder == .preparedTransaction
        defer { if prepared { _ = try? psql("ROLLBACK PREPARED '\(gid)'") } }
        var answer = Data()
        while !String(decoding: answer, as: UTF8.self).contains("holding") {
            let more = session.output.availableData
            try #require(!more.isEmpty, "psql ended before holding anything: \(String(decoding: session.errors.readDataToEndOfFile(), as: UTF8.self))")
            answer.append(more)
        }
        try store.destroy([.account("gone", keeping: [])], at: t)
        // The message names what holds the old versions, for the operator to end it. (A
        // standby's feedback comes every second, and an idle standby's also holds back what was
        // deleted since the last: the wait outlasts that, so that only the open snapshot can
        // keep the mark.)
        let left = try #require(try store.clearResidue(wait: onStandby ? .seconds(4) : .milliseconds(300)), "the residue was cleared while \(holder) could still see it")
        #expect(left.contains("still holds old versions of purged rows, which "), "\(left)")
        let named = switch holder {
        case .preparedTransaction: "prepared transaction '\(gid)'"
        case .standby: "(walreceiver)"
        case .standbyWithSlot: "replication slot '\(slot)'"
        case .snapshot, .idleTransaction: "(psql)"
        }
        #expect(left.contains(named), "\(left)")
        #expect(try store.hasResidue())
        #expect(contains(try place.storedBytes(), sealed), "the old keyring is gone although \(holder) could still see it: this test proves nothing")
        try session.input.close()
        _ = session.wait(until: .distantFuture)
        if prepared {
            #expect(try psql("ROLLBACK PREPARED '\(gid)'"))
            prepared = false
        }
        #expect(try store.clearResidue(wait: .seconds(10)) == nil)
        #expect(try !store.hasResidue())
        #expect(!contains(try place.storedBytes(), sealed), "a copy of the destroyed keyring is still on disk")
    }

    /// A rotation re-wraps every row in batches; one interrupted is finished by running it again
    /// with the same two keys, refused with a third, and the old master key opens nothing after.
    @Test(arguments: TestKeys.allCases)
    func aRotationIsFinishedWhenInterruptedAndLeavesTheOldMasterKeyUseless(_ kind: TestKeys) throws {
        let place = try KeyPlace(kind)
        let store = try place.open(seed: 1)
        let journal = try store.journalKeys([1], create: true)
        let made = try store.provide(Dictionary(uniqueKeysWithValues: (0..<25).map { ("a\($0)", needs($0 == 0 ? ["surveys"] : [])) }), ownKeys: 2, at: t)
        let newHex = String(repeating: "5e", count: 32)
        let newKey = SymmetricKey(data: Hex.decode(newHex)!)
        // After one batch of ten per table: ten keyrings, two own keys, the journal's keys.
        #expect(try place.open(seed: 2).rotate(to: newKey, batch: 10, stopAfter: 1) == 13)
        // The old master key no longer opens the ten keyrings re-wrapped so far (nor any key of theirs).
        let old = try place.open(seed: 3)
        let refused = (0..<25).filter { n in
            do {
                _ = try old.keyring("a\(n)")
                return false
            } catch {
                return (error as? JournalError)?.message.contains("a rotation is in progress") == true
            }
        }
        #expect(refused.count == 10)
        #expect { try place.open(seed: 4).rotate(to: SymmetricKey(size: .bits256)) } throws: {
            ($0 as? JournalError)?.message.contains("being rotated to another master key") == true
        }
        #expect(try place.open(seed: 5).rotate(to: newKey) == 15)
        #expect { try place.open(seed: 6) } throws: { ($0 as? JournalError)?.message.contains("does not open the key store") == true }
        let after = try place.open(seed: 7, master: .key(newHex))
        #expect(bytes(try after.keyring("a0")?.accountKey) == bytes(made.keyrings["a0"]?.accountKey))
        #expect(bytes(try after.journalKeys([1], create: false).anchor) == bytes(journal.anchor))
        guard case .key(let own) = try after.lookup("a0", KeyRef(.own, number: made.own[1].id), journal: journal) else {
            Issue.record("own key lost in the rotation")
            return
        }
        #expect(bytes(own) == bytes(made.own[1].key))
    }

    /// The anchors only move forward, and are read without the master key.
    @Test(arguments: TestKeys.allCases)
    func anchorsOnlyMoveForwardAndAreReadWithoutTheMasterKey(_ kind: TestKeys) throws {
        let place = try KeyPlace(kind)
        let store = try place.open(seed: 1)
        try store.anchor(journal: [1], instance: [2], head: AnchoredHead(seq: 5, link: [5]))
        try store.anchor(journal: [1], instance: [2], head: AnchoredHead(seq: 3, link: [3]))
        try store.anchor(journal: [1], instance: [4], head: AnchoredHead(seq: 9, link: [9]))
        #expect(try store.anchoredHead(journal: [1], instance: [2]) == AnchoredHead(seq: 5, link: [5]))
        #expect(try KeyStore.anchoredHead(place.backend, journal: [1], instance: [2]) == AnchoredHead(seq: 5, link: [5]))
        #expect(try KeyStore.anchoredFiles(place.backend, journal: [1]).map { "\($0.instance) \($0.seq)" } == ["04 9", "02 5"])
        #expect(try KeyStore.anchoredHead(place.backend, journal: [3], instance: [2]) == nil)
    }

    /// A key store where there is none yet is refused by a reader that needs one, named.
    @Test(arguments: TestKeys.allCases)
    func aMissingKeyStoreIsNamed(_ kind: TestKeys) throws {
        let place = try KeyPlace(kind)
        #expect(try !place.backend.exists())
        #expect(try KeyStore.anchoredHead(place.backend, journal: [1], instance: [2]) == nil)
        _ = try place.open(seed: 1)
        #expect(try place.backend.exists())
        #expect { try place.open(seed: 1, master: .key(String(repeating: "cd", count: 32))) } throws: {
            ($0 as? JournalError)?.message.contains("the master key does not open the key store") == true
        }
    }
}

/// A journal and its key store both in PostgreSQL, in two databases: the whole service on one server.
@Suite struct PostgresKeyStoreTests {
    func open(_ journal: TestPlace, _ keys: KeyPlace, seed: UInt64 = 1) throws -> Journal {
        var options = Journal.Options()
        options.blockEvents = 4
        options.entropy = .seeded(seed)
        options.clock = .fixed(ts("2026-06-01T00:00:00Z"))
        return try Journal(backend: journal.journalBackend, keys: keys.backend, master: testMaster, options: options)
    }

    /// Nothing a dump of the journal's database (journal and read models) holds is a key, a
    /// wrapped one, or a personal value in clear: the keys are in the other database, and purging
    /// an account works and verifies as on a file.
    @Test func aDumpOfTheJournalsDatabaseHoldsNoKey() throws {
        let place = try TestPlace(.postgres), keys = try KeyPlace(.postgres)
        let j = try open(place, keys)
        for n in 0..<6 {
            try j.append(NewEvent(.accountSignedUp, account: "a\(n)", at: ts("2026-01-01T00:00:00Z"), data: ["name": .string("N\(n)"), "email": .string("n\(n)@example.com")]))
        }
        try j.append(NewEvent(.itemCreated, account: "a0", at: ts("2026-01-02T00:00:00Z"), data: ["item_id": "i1", "kind": "file", "label": "L"]))
        try j.append([NewEvent(.accountPurged, account: "a1", at: ts("2026-01-03T00:00:00Z"), data: ["rule": "support-request"])], erasing: [.account("a1")])
        #expect(try j.finishErasures() >= 0)
        let report = try JournalReader.verify(backend: place.journalBackend, keys: keys.backend, master: testMaster)
        #expect(report.events == 8 && report.anchored)
        // Every key and wrapped key the key store holds, as hex: none is in the journal's dump.
        let store = try keys.open(seed: 9)
        let storage = try keys.backend.open(synchronous: .normal)
        defer { storage.close() }
        var secrets: [String] = []
        for n in 0..<6 {
            if let key = bytes(try store.keyring("a\(n)")?.accountKey) { secrets.append(Hex.encode(key)) }
            if let sealed = try storage.keyring("a\(n)")?.sealed { secrets.append(Hex.encode(sealed)) }
        }
        #expect(secrets.count == 11)  // a1's account key is destroyed; its wrapped keyring stays
        // The read models are in the journal's database too (`SCHEMA_views`): in the dump as well.
        let views = try ReadModels(journal: j)
        #expect(try views.catchUp() == 8 && views.account("a0")?.email == "n0@example.com")
        let dump = try run("/usr/bin/pg_dump", ["--data-only", "--schema", place.schema + "*", try TestBackend.serverURL()], timeLimit: .seconds(60))
        #expect(dump.status == 0, "\(dump.stderr)")
        #expect(dump.stdout.contains("COPY \(place.schema).blocks") || dump.stdout.contains("COPY \(place.schema).tail"))
        #expect(dump.stdout.contains("COPY \(place.schema)_views.accounts"))
        for secret in secrets { #expect(!dump.stdout.contains(secret), "the journal's dump holds a key") }
        // Nor a personal value in clear: the journal's payloads and the read models' cells are sealed.
        for n in 0..<6 { #expect(!dump.stdout.contains("n\(n)@example.com"), "the dump holds an email in clear") }
        // The purged account's signup no longer opens; the others' do.
        let events = try allEvents(j)
        #expect(events.filter { $0.header.type == "AccountSignedUp" }.map { "\($0.header.account) \(isPlaintext($0))" }
                == ["a0 true", "a1 false", "a2 true", "a3 true", "a4 true", "a5 true"])
    }

    func isPlaintext(_ e: StoredEvent) -> Bool { if case .plaintext = e.payload { true } else { false } }

    @Test func aKeyStoreInTheJournalsOwnDatabaseIsRefused() throws {
        let place = try TestPlace(.postgres)
        let sameDatabase = PostgresKeyBackend(try PostgresAddress(try TestBackend.serverURL() + "?schema=" + place.schema + "_keys"))
        #expect { try Journal(backend: place.journalBackend, keys: sameDatabase, master: testMaster) } throws: { error in
            let e = error as? JournalError
            return e?.code == .keys && e?.message.contains("is in the journal's database") == true
        }
    }

    /// A key store address that is malformed, has the wrong password, names the journal's own
    /// database, or names another journal's key store: one line each, naming the cause, never the
    /// password, and nothing written to the journal.
    @Test func badKeyStoreAddressesGetOneClearLine() throws {
        let place = try TestPlace(.postgres), keys = try KeyPlace(.postgres)
        let line = #"{"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}"#
        func lethe(_ args: [String], keys: String) throws -> CommandResult {
            try run("lethe", args + ["--journal", place.journalArgument, "--keys", keys], stdin: line)
        }
        let password = try #require(try PostgresAddress(keys.argument).password)
        let wrong = keys.argument.replacingOccurrences(of: ":" + password + "@", with: ":not-the-password@")
        let cases: [(keys: String, says: String)] = [
            ("postgres://lethe:s3cret-pw@/lethe_keys", "the PostgreSQL address is malformed: no host"),
            (wrong, "password authentication failed"),
            (try TestBackend.serverURL() + "?schema=" + keys.schema, "is in the journal's database: give it a database of its own"),
        ]
        for (address, says) in cases {
            let r = try lethe(["import", "-"], keys: address)
            #expect(r.status != 0 && r.stderr.contains(says), "\(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
            for secret in [password, "s3cret-pw", "not-the-password"] { #expect(!r.stderr.contains(secret)) }
        }
        #expect(try !place.journalBackend.holdsJournal())  // refused before anything was made
        // The journal's own key store works; another one (new, empty) holds none of its keys and makes none up.
        #expect(try lethe(["import", "-"], keys: keys.argument).status == 0)
        let other = try KeyPlace(.postgres)
        let r = try lethe(["export"], keys: other.argument)
        #expect(r.status != 0 && r.stderr.contains("has no keys for journal"), "\(r.stderr)")
        #expect(try JournalReader.verify(backend: place.journalBackend, keys: keys.backend, master: testMaster).events == 1)
    }

    /// The command line with `--keys postgres://…`: import, verify (with and without the master
    /// key), export and a purge; the read models need `--views`, and the password is never shown.
    @Test func theCommandLineTakesAKeyStoreInPostgreSQL() throws {
        let fixture = fixturesDirectory.appendingPathComponent("small.ndjson").path
        let place = try TestPlace(.postgres), keys = try KeyPlace(.postgres)
        let args = ["--journal", place.journalArgument, "--keys", keys.argument]
        let views = ["--views", place.dir.path("v.views")]
        let imported = try run("lethe", ["import", fixture] + args)
        #expect(imported.stdout.contains("imported 3012"), "\(imported.stderr)")  // (12 lines of the fixture are refused)
        let verified = try run("lethe", ["verify"] + args)
        #expect(verified.status == 0 && verified.stdout.contains("authenticated by the key store's anchor key"), "\(verified.stderr)")
        let unauthenticated = try run("/usr/bin/env", ["-u", MasterKeySource.environmentVariable, productsDirectory.appendingPathComponent("lethe").path,
                                                        "verify", "--unauthenticated"] + args)
        #expect(unauthenticated.status == 0 && unauthenticated.stdout.contains("not behind the key store's anchor"), "\(unauthenticated.stdout)\(unauthenticated.stderr)")
        // The export is byte for byte a file journal's, with a file key store, of the same input.
        let file = place.dir.path("f.lethe")
        #expect(try run("lethe", ["import", fixture, "--journal", file]).stdout.contains("imported 3012"))
        let export = try run("lethe", ["export"] + args)
        #expect(export.status == 0 && !export.stdout.isEmpty, "\(export.stderr)")
        #expect(export.stdout == (try run("lethe", ["export", "--journal", file]).stdout))
        // The read models on the server (beside the journal), or in a file: the same answers.
        let onServer = try run("lethe", ["access-log", "--account", "acc_48"] + args)
        #expect(onServer.status == 0 && !onServer.stdout.isEmpty, "\(onServer.stderr)")
        let accesses = try run("lethe", ["access-log", "--account", "acc_48"] + args + views)
        #expect(accesses.status == 0 && accesses.stdout == onServer.stdout, "\(accesses.stderr)")
        // The master key rotated on the server's key store: the old key opens nothing, the new one everything.
        let secrets = try TempDir()
        #expect(try run("lethe", ["keys", "init", secrets.path("new.key")]).status == 0)
        let rotated = try run("lethe", ["keys", "rotate", "--new-master-key", secrets.path("new.key")] + args)
        #expect(rotated.status == 0 && rotated.stdout.hasPrefix("rotated: "), "\(rotated.stderr)")
        #expect(try run("lethe", ["export"] + args).status != 0)
        #expect(try run("lethe", ["export", "--master-key", secrets.path("new.key")] + args).stdout == export.stdout)
        let password = try #require(try PostgresAddress(keys.argument).password)
        for r in [imported, verified, unauthenticated, export, onServer, accesses, rotated] { #expect(!r.stderr.contains(password) && !r.stdout.contains(password)) }
    }
}
