import Foundation
import LetheEvents
@testable import LetheJournal
@testable import LethePostgres
import Logging
import Synchronization
import Testing

/// What a reader sees of a journal, decrypted, in order: what must not depend on the backend.
private func contents(_ j: Journal) throws -> [String] {
    try allEvents(j).map { e in
        let payload: String = switch e.payload {
        case .plaintext(let bytes): Hex.encode(bytes)
        case .purged: "purged"
        case .shredded: "shredded"
        }
        return "\(e.header.seq) \(e.header.version) \(e.header.account) \(e.header.type) \(e.header.at) \(e.header.id ?? "-") \(payload)"
    }
}

/// A history over 12 accounts in batches of 5 to 23 events: blocks of 8 are sealed across
/// batches, the indexes merge every 16 rows, and some events repeat an id or expect a version
/// the account is not at.
private func appendHistory(_ j: Journal, batches: Range<Int> = 0..<12) throws -> [AppendOutcome] {
    var outcomes: [AppendOutcome] = []
    var minute = 0
    for b in batches {
        var batch: [NewEvent] = []
        for k in 0..<(5 + (b * 7) % 19) {
            minute += 1
            let account = "acc_\((b * 5 + k * 3) % 12)"
            let at = String(format: "2026-01-01T%02d:%02d:00Z", minute / 60, minute % 60)
            batch.append(event(account, at: at, id: "evt_\(b)_\(k)", data: ["path": .string("/p/\(b)/\(k)"), "visitor": .string("v\(k)")]))
        }
        batch.append(event("acc_1", at: "2026-01-01T23:00:00Z", id: "evt_0_0"))  // a duplicate id
        batch.append(event("acc_2", at: "2026-01-01T23:00:00Z", expected: 999))  // a version conflict
        outcomes += try j.append(batch)
    }
    return outcomes
}

@Suite struct BackendTests {
    @Test("the same history reads, indexes and verifies the same on both backends", arguments: TestBackend.allCases)
    func sameHistoryOnEachBackend(_ backend: TestBackend) throws {
        let reference = try TestPlace(.sqlite)
        let place = try TestPlace(backend)
        let expected = try contents({ let j = try reference.open(recentLimits: 16); _ = try appendHistory(j); return j }())
        do {
            let j = try place.open(recentLimits: 16)
            let outcomes = try appendHistory(j)
            #expect(outcomes.filter { if case .duplicate = $0 { true } else { false } }.count == 12)
            #expect(outcomes.filter { if case .rejected(let e) = $0 { e.code == .versionConflict } else { false } }.count == 12)
            #expect(try contents(j) == expected)
            try j.settle()
        }
        // Reopened: the head, the tail and the indexes are read back, and what was appended stays.
        let j = try place.open(recentLimits: 16)
        #expect(try contents(j) == expected)
        #expect(j.headSeq == Int64(expected.count))
        let report = try place.verify()
        #expect(report.events == Int64(expected.count))
        #expect(report.accounts == 12)
        #expect(report.anchored)
        // An account's events through the block index; ids through the id index.
        var acc3: [Int64] = []
        try j.read { try $0.events(account: "acc_3") { acc3.append($0.header.seq) } }
        #expect(acc3 == expected.compactMap { line in line.split(separator: " ")[2] == "acc_3" ? Int64(line.split(separator: " ")[0]) : nil })
        #expect(!acc3.isEmpty)
        let again = try j.append([event("acc_3", at: "2026-01-02T00:00:00Z", id: "evt_5_2")])
        guard case .duplicate = again[0] else { Issue.record("a known id was appended again: \(again[0])"); return }
        #expect(try j.version(of: "acc_3") == Int64(acc3.count))
    }

    @Test("an import appends the sealed batches waiting for it together, up to its limit, with every line's outcome, warning and rejection as a batch at a time gives them",
          arguments: TestBackend.allCases)
    func anImportJoinsTheBatchesWaitingForTheAppend(_ backend: TestBackend) throws {
        // 61 lines over 5 accounts: a blank line, a malformed one, a repeated id, an account that
        // has not signed up, a visitor with a card number (refused) and support messages with one
        // in their free text (masked).
        var lines: [String] = []
        for k in 0..<60 {
            let account = "acc_\(k % 5)", at = String(format: "2026-01-01T00:%02d:00Z", k)
            switch k {
            case 0..<5: lines.append(#"{"id":"evt_\#(k)","type":"AccountSignedUp","account":"\#(account)","at":"\#(at)","data":{"name":"N\#(k)","email":"n\#(k)@example.com"}}"#)
            case 17: lines.append("{not json")
            case 23: lines.append(#"{"id":"evt_9","type":"PageViewed","account":"\#(account)","at":"\#(at)","data":{"path":"/again","visitor":"v"}}"#)
            case 31: lines.append(#"{"id":"evt_31","type":"PageViewed","account":"acc_none","at":"\#(at)","data":{"path":"/p","visitor":"v"}}"#)
            case 38: lines.append(#"{"id":"evt_38","type":"PageViewed","account":"\#(account)","at":"\#(at)","data":{"path":"/p","visitor":"4111 1111 1111 1111"}}"#)
            case 12, 44, 51:
                lines.append(#"{"id":"evt_\#(k)","type":"SupportMessageReceived","account":"\#(account)","at":"\#(at)","data":{"ticket":"T-\#(k)","from_email":"a@example.com","body":"card 4111 1111 1111 1111 please"}}"#)
            default: lines.append(#"{"id":"evt_\#(k)","type":"PageViewed","account":"\#(account)","at":"\#(at)","data":{"path":"/p/\#(k)","visitor":"v\#(k)"}}"#)
            }
        }
        lines.insert("", at: 40)  // a blank line: counted by number, not as a line
        let dir = try TempDir()
        let input = dir.path("in.ndjson")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: input))

        /// Imports `input` in batches of 4 events, appending up to `limit` at once; the first
        /// append waits so that sealed batches queue up behind it.
        func importing(into place: TestPlace, limit: Int) throws -> (Importer.Summary, [String], [String], [Int], [String]) {
            let journal = try place.open(blockEvents: 8, rules: ContractRules())
            var importer = Importer(journal: journal)
            importer.batchSize = 4
            importer.appendLimit = limit
            let appends = Mutex<[Int]>([])
            importer.onAppend = { n in
                if appends.withLock({ $0.isEmpty }) { Thread.sleep(forTimeInterval: 0.3) }
                appends.withLock { $0.append(n) }
            }
            let fd = open(input, O_RDONLY)
            defer { close(fd) }
            var rejections: [String] = [], warnings: [String] = []
            let summary = try importer.run(LineReader(fd: fd), onRejection: { rejections.append("\($0)") }, onWarning: { warnings.append("\($0)") })
            return (summary, rejections, warnings, appends.withLock { $0 }, try contents(journal))
        }
        let (alone, aloneRejections, aloneWarnings, aloneAppends, aloneContents) = try importing(into: try TestPlace(backend), limit: 4)
        let (joined, joinedRejections, joinedWarnings, joinedAppends, joinedContents) = try importing(into: try TestPlace(backend), limit: 12)
        #expect(aloneAppends.allSatisfy { $0 <= 4 })
        #expect(joinedAppends.contains { $0 > 4 }, "no batches were joined: \(joinedAppends)")
        #expect(joinedAppends.allSatisfy { $0 <= 12 })
        #expect(joinedAppends.reduce(0, +) == aloneAppends.reduce(0, +))
        #expect(joined == alone)
        #expect(alone.lines == 60 && alone.imported == 56 && alone.duplicates == 1 && alone.rejected == 3 && alone.masked == 3)
        #expect(joinedRejections == aloneRejections)
        #expect(aloneRejections.map { $0.split(separator: ":")[0] } == ["line 18", "line 32", "line 39"])
        #expect(aloneRejections[1] == "line 32: account acc_none has not signed up: AccountSignedUp comes first")
        #expect(joinedWarnings == aloneWarnings)
        #expect(aloneWarnings == ["line 13: warning: field data.body: a card number was masked",
                                  "line 46: warning: field data.body: a card number was masked",
                                  "line 53: warning: field data.body: a card number was masked"])
        #expect(joinedContents == aloneContents)
    }

    @Test("a purge removes an account's payloads and the journal still verifies", arguments: TestBackend.allCases)
    func purgeOnEachBackend(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        _ = try appendHistory(j, batches: 0..<4)
        let before = try allEvents(j).filter { $0.header.account == "acc_4" }.count
        #expect(before > 0)
        try j.append([event("acc_4", .accountPurged, at: "2026-02-01T00:00:00Z", data: ["rule": "erasure-request"])], erasing: [.account("acc_4")])
        let after = try allEvents(j).filter { $0.header.account == "acc_4" }
        #expect(after.count == before + 1)
        #expect(after.dropLast().allSatisfy { $0.payload == .purged })
        #expect(try allEvents(j).filter { $0.header.account == "acc_5" }.allSatisfy { if case .plaintext = $0.payload { true } else { false } })
        #expect(try place.verify().purgedEvents == Int64(before))
        // The account takes nothing more but the engine's records.
        let refused = try j.append([event("acc_4", at: "2026-02-02T00:00:00Z")])
        guard case .rejected(let why) = refused[0] else { Issue.record("a purged account took an event"); return }
        #expect(why.code == .accountShredded)
    }

    /// On a server, the statements that only write (the accounts' new versions among them) are
    /// sent on while the writer goes on: a failure among them must still stop the append before
    /// its commit, named, and leave nothing of it behind. With blocks of 4 the failing append
    /// seals one (the merge policy then reads after the update); with blocks of 64 it only adds to
    /// the tail, and nothing is read between the update and the commit.
    @Test("an append to an account whose row was removed behind the writer fails, names it and commits nothing",
          arguments: TestBackend.allCases, [4, 64])
    func anAccountRowRemovedBehindTheWriter(_ backend: TestBackend, blockEvents: Int) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: blockEvents)
        let first = try j.append((0..<6).map { event("acc_\($0 % 3)", at: "2026-01-01T00:00:0\($0)Z", id: "e\($0)") })
        #expect(first.allSatisfy { if case .appended = $0 { true } else { false } })
        try place.tamper("DELETE FROM accounts WHERE name = 'acc_1'")
        // The writer holds acc_1's row from its last append: it updates the row, which is gone.
        let failure = #expect(throws: JournalError.self) {
            try j.append([event("acc_0", at: "2026-01-01T00:01:00Z", id: "late0"), event("acc_1", at: "2026-01-01T00:01:01Z", id: "late1")])
        }
        #expect(failure?.code == .corrupt)
        #expect(failure?.message.contains("account acc_1: its row is missing") == true, "\(String(describing: failure))")
        // Nothing of the failed append was committed: not its events, not acc_0's new version.
        #expect(try place.scalar("SELECT count(*) FROM event_ids WHERE id LIKE 'late%'") == 0)
        #expect(try place.scalar("SELECT version FROM accounts WHERE name = 'acc_0'") == 2)
        #expect(try allEvents(j).count == 6)
    }

    @Test("ids and accounts told apart by their bytes alone (composed and decomposed, case, emoji, the longest id) on both backends, before and after the indexes merge", arguments: TestBackend.allCases)
    func idsAreComparedByTheirBytes(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4, recentLimits: 3)
        // Each pair looks alike to a person and differs in its bytes: distinct ids, never duplicates.
        let ids = ["caf\u{E9}", "cafe\u{301}", "Case", "case", "\u{1F600}", "\u{1F600}\u{FE0F}", String(repeating: "z", count: 256),
                   String(repeating: "z", count: 255) + "y", "a b", "a\u{A0}b", "\u{10FFFF}", "~"]
        let accounts = ["acc.1", "ACC.1", "acc:1", "acc-1"]
        var at = 0
        func next() -> String {
            at += 1
            return String(format: "2026-04-01T00:%02d:%02dZ", at / 60, at % 60)
        }
        let first = try j.append(ids.enumerated().map { k, id in event(accounts[k % accounts.count], at: next(), id: id) })
        #expect(first.allSatisfy { if case .appended = $0 { true } else { false } })
        func again() throws -> [AppendOutcome] { try j.append(ids.map { event("acc.1", at: next(), id: $0) }) }
        #expect(try again().map(kind) == Array(repeating: "duplicate", count: ids.count))
        try j.settle()  // every id into the runs
        #expect(try again().map(kind) == Array(repeating: "duplicate", count: ids.count))
        let stored = try allEvents(j)
        #expect(stored.compactMap(\.header.id) == ids)
        #expect(Set(stored.map(\.header.account)) == Set(accounts))
        for account in accounts {
            #expect(try j.version(of: account) == Int64(ids.indices.filter { accounts[$0 % accounts.count] == account }.count))
        }
        #expect(try place.verify().events == Int64(ids.count))
    }

    /// The rows every append rewrites (an account's version, its last run of the block index)
    /// are kept in half-full pages, so that each new version fits beside the old one (a HOT
    /// update: no index entry, the old version pruned in the page). A journal made before the
    /// setting gets it at its next writer's open; the rows written since are placed by it.
    @Test("on PostgreSQL, the tables of rows rewritten at every append leave room in their pages, also in a journal made before")
    func rewrittenRowsHaveRoomOnPostgres() throws {
        let place = try TestPlace(.postgres)
        let fillfactors = "SELECT string_agg(relname || ':' || coalesce(array_to_string(reloptions, ','), '-'), ' ' ORDER BY relname) FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relname IN ('accounts', 'account_block_runs')"
        do {
            let j = try place.open()
            _ = try j.append([event("acc_1", at: "2026-01-01T00:00:00Z")])
            #expect(try place.psql(fillfactors) == "account_block_runs:fillfactor=50 accounts:fillfactor=50")
        }
        try place.psql("ALTER TABLE accounts RESET (fillfactor); ALTER TABLE account_block_runs RESET (fillfactor)")
        #expect(try place.psql(fillfactors) == "account_block_runs:- accounts:-")
        let j = try place.open()
        #expect(try place.psql(fillfactors) == "account_block_runs:fillfactor=50 accounts:fillfactor=50")
        _ = try j.append([event("acc_1", at: "2026-01-01T01:00:00Z"), event("acc_2", at: "2026-01-01T01:00:00Z")])
        #expect(try j.version(of: "acc_1") == 2)
    }

    /// On the server, an append's postings of one account share a row of the block index's
    /// recent table (format 7). The account's reads, `verify` and a merge see every block of it;
    /// a damaged row is named; a journal of format 6 (a row per posting, no `more` column) is read
    /// as it is and taken to format 7 by its next writer, which packs from then on; older builds
    /// refuse format 7 (a build of format 6 would read a packed row as its first block alone).
    @Test("on PostgreSQL, an append's postings of one account share a row; a format-6 journal is read as it is and upgraded by its writer")
    func packedPostingsOnPostgres() throws {
        let place = try TestPlace(.postgres)
        let rows = "SELECT string_agg(account_id || ':' || block_id || ':' || coalesce(encode(more, 'hex'), '-'), ' ' ORDER BY account_id, block_id) FROM recent_account_blocks"
        // acc_0 in every block of 4 (blocks 1 to 3), acc_1 in blocks 1 and 3 only; all in one append.
        let history = ["acc_0", "acc_1", "acc_2", "acc_2", "acc_0", "acc_2", "acc_2", "acc_2", "acc_0", "acc_1", "acc_2", "acc_2"]
        let j = try place.open(blockEvents: 4, recentPostingsLimit: 1 << 20)
        _ = try j.append(history.enumerated().map { event($1, at: "2026-01-01T00:00:00Z", id: "e\($0)") })
        #expect(try place.psql(rows) == "1:1:0101 2:1:02 3:1:0101")
        func seqs(_ account: String) throws -> [Int64] {
            var out: [Int64] = []
            try j.read { try $0.events(account: account) { out.append($0.header.seq) } }
            return out
        }
        #expect(try seqs("acc_0") == [1, 5, 9])
        #expect(try seqs("acc_1") == [2, 10])
        #expect(try place.verify().events == 12)

        // A damaged row is named, by `verify` and by the account's read.
        try place.psql("UPDATE recent_account_blocks SET more = '\\x00' WHERE account_id = 2")
        let message = try #require(place.verifyFailure())
        #expect(message.contains("the recent postings of account id 2 from block 1 are damaged"), "\(message)")
        #expect(throws: JournalError.self) { try seqs("acc_1") }
        try place.psql("UPDATE recent_account_blocks SET more = '\\x02' WHERE account_id = 2")

        // As format 6 wrote it: a row per posting, no `more`, format 6 in meta.
        try place.psql("""
            CREATE TABLE unpacked AS SELECT account_id, block_id FROM recent_account_blocks WHERE false;
            INSERT INTO unpacked VALUES (1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2), (3, 3);
            DELETE FROM recent_account_blocks; ALTER TABLE recent_account_blocks DROP COLUMN more;
            INSERT INTO recent_account_blocks SELECT * FROM unpacked; DROP TABLE unpacked;
            UPDATE meta SET int_value = 6 WHERE key = 'format'
            """)
        // Read as it is (no writer of this build has opened it since).
        let store = try place.journalBackend.openReader()
        #expect(try store.snapshot { try BlockIndex(store: store).blocks(ofAccount: "acc_1") } == [1, 3])
        store.close()
        #expect(try place.verify().events == 12)
        let upgraded = try place.open(blockEvents: 4, recentPostingsLimit: 1 << 20)
        #expect(try place.psql("SELECT int_value FROM meta WHERE key = 'format'") == "7")
        _ = try upgraded.append((0..<8).map { event("acc_1", at: "2026-01-02T00:00:00Z", id: "f\($0)") })
        #expect(try place.psql(rows) == "1:1:- 1:2:- 1:3:- 2:1:- 2:3:- 2:4:01 3:1:- 3:2:- 3:3:-")
        var after: [Int64] = []
        try upgraded.read { try $0.events(account: "acc_1") { after.append($0.header.seq) } }
        #expect(after == [2, 10] + Array(13...20))
        try upgraded.settle()
        #expect(try place.psql("SELECT count(*) FROM recent_account_blocks") == "0")
        #expect(try place.verify().events == 20)
    }

    /// The merge policy asks for the index tables' rows at every append; on the server they are
    /// kept in `counts` by the statements that add and remove rows, where `count(*)` would read
    /// each table whole (a run per account). They must stay exact through appends, merges and a
    /// journal that had none (made before, restored): counted once, then kept.
    @Test("on PostgreSQL, the index tables' row counts are kept exact by every write, and made where missing")
    func indexRowCountsOnPostgres() throws {
        let place = try TestPlace(.postgres)
        let tables = ["account_block_runs", "event_id_runs", "event_ids", "recent_account_blocks"]
        let actual = "SELECT " + tables.map { "(SELECT count(*) FROM \($0))" }.joined(separator: " || ' ' || ")
        let kept = "SELECT string_agg(coalesce((SELECT n FROM counts WHERE name = t)::text, '-'), ' ' ORDER BY t) FROM unnest(ARRAY['\(tables.joined(separator: "','"))']) t"
        do {
            // No merge yet: every append that seals a block asks for both tables of both indexes.
            let j = try place.open()
            _ = try appendHistory(j, batches: 0..<3)
            #expect(try place.psql(kept) == place.psql(actual))
            #expect(!(try place.psql(kept)).contains("-"))
        }
        do {
            // Merges every 16 rows: runs inserted and rewritten, recent rows cleared.
            let j = try place.open(recentLimits: 16)
            _ = try appendHistory(j, batches: 3..<12)
            try j.settle()
            #expect(try place.psql(kept) == place.psql(actual))
            #expect(try place.psql("SELECT count(*) FROM account_block_runs") != "0")
        }
        // As a journal made before the counts: none kept; the next write counts each once.
        try place.psql("DELETE FROM counts")
        let j = try place.open()
        // (Asked for when an append seals a block: blocks of 8 here.)
        _ = try j.append((0..<10).map { event("acc_\($0 % 3)", at: "2026-01-02T00:00:00Z", id: "late_\($0)") })
        #expect(try place.psql(kept) == place.psql(actual))
        #expect(!(try place.psql(kept)).contains("-"))
    }

    /// A lease's lock can go without its holder letting go: the lock file removed (a cleanup
    /// script), the connection that held the advisory lock cut (a server restart, a network
    /// fault). Another holder can then take it; the first must know before its next step.
    @Test("a lease whose lock went without a release knows it, and another holder takes it", arguments: TestBackend.allCases)
    func aLostLeaseKnowsIt(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let a = try place.open(), b = try place.open(seed: 2)
        let held = try #require(try a.lease("retention"))
        #expect(held.isHeld)
        try held.ensureHeld()
        #expect(try b.lease("retention") == nil)
        switch backend {
        case .sqlite:
            #expect(unlink(held.path) == 0)
        case .postgres:
            let name = try #require(place.journalBackend as? PostgresBackend).leaseConnectionName("retention")
            let admin = try Connection(try PostgresAddress(try TestBackend.serverURL()))
            defer { admin.close() }
            try admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(name)'")
        }
        #expect(!held.isHeld)
        #expect { try held.ensureHeld() } throws: { error in
            guard let e = error as? JournalError else { return false }
            return e.code == .busy && e.message.hasPrefix("the retention lease (\(held.path)) is no longer held")
        }
        let taken = try #require(try b.lease("retention", wait: .seconds(5)))
        #expect(taken.isHeld)
        held.release()
        #expect(taken.isHeld && !held.isHeld)
        #expect(try a.lease("retention") == nil)
        taken.release()
        #expect(!taken.isHeld)
        #expect(try a.lease("retention") != nil)
    }

    @Test("lethe import, export and verify on PostgreSQL: the export is byte for byte the file journal's")
    func commandLineOnPostgres() throws {
        let place = try TestPlace(.postgres)
        let url = try #require(place.url)
        let file = place.dir.path("file.lethe")
        let fixture = fixturesDirectory.appendingPathComponent("small.ndjson").path
        let environment = ["LETHE_MASTER_KEY": testMasterKey]
        let intoFile = try run("lethe", ["import", fixture, "--journal", file], environment: environment)
        let intoServer = try run("lethe", ["import", fixture, "--journal", url, "--keys", place.keysPath], environment: environment)
        #expect(intoServer.status == intoFile.status, "\(intoServer.stderr)")
        #expect(intoServer.stdout == intoFile.stdout)
        #expect(intoServer.stdout.contains("imported"))
        // Rejections are told alike, by line, and the password never appears.
        #expect(intoServer.stderr == intoFile.stderr)
        let secret = try #require(PostgresAddress(url).password)
        #expect(!intoServer.stderr.contains(secret) && !intoServer.stdout.contains(secret))
        let fromFile = try run("lethe", ["export", "--journal", file], environment: environment)
        let fromServer = try run("lethe", ["export", "--journal", url, "--keys", place.keysPath], environment: environment)
        #expect(fromServer.status == 0, "\(fromServer.stderr)")
        #expect(!fromServer.stdout.isEmpty && fromServer.stdout == fromFile.stdout)
        let verify = try run("lethe", ["verify", "--journal", url, "--keys", place.keysPath], environment: environment)
        #expect(verify.status == 0 && verify.stdout.hasPrefix("ok:"), "\(verify.stderr)")
        #expect(!verify.stdout.contains(secret))
        // Importing the same file again adds nothing: every id is already there.
        let again = try run("lethe", ["import", fixture, "--journal", url, "--keys", place.keysPath], environment: environment)
        #expect(again.stdout.contains("imported 0"), "\(again.stdout)")
    }

    @Test("a backup of a file journal restores into PostgreSQL and one of a PostgreSQL journal into a file: same events, verified, and the restored journal takes appends")
    func backupsAcrossBackends() throws {
        let place = try TestPlace(.postgres)
        let url = try #require(place.url)
        let file = place.dir.path("file.lethe"), fileKeys = file + ".keys"
        let fixture = fixturesDirectory.appendingPathComponent("small.ndjson").path
        let environment = ["LETHE_MASTER_KEY": testMasterKey]
        func lethe(_ args: [String]) throws -> CommandResult { try run("lethe", args + ["--now", "2026-12-01T00:00:00Z"], environment: environment) }
        _ = try lethe(["import", fixture, "--journal", file])
        let fromFile = place.dir.path("from-file.backup")
        #expect(try lethe(["backup", "create", fromFile, "--journal", file]).status == 0)
        // Two copies of the live key store, one per restore: a restore applies again the purges
        // due by --now, destroying keys, which the other would then find destroyed already.
        let serverKeys = place.dir.path("server.keys"), copyKeys = place.dir.path("copy.keys")
        for copy in [serverKeys, copyKeys] {
            for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: fileKeys + suffix) {
                try FileManager.default.copyItem(atPath: fileKeys + suffix, toPath: copy + suffix)
            }
        }

        // File → PostgreSQL, and the same backup into a file: the same events, verified.
        let intoServer = try lethe(["backup", "restore", fromFile, "--journal", url, "--keys", serverKeys])
        #expect(intoServer.status == 0, "\(intoServer.stderr)")
        #expect(intoServer.stdout.contains("restored:"))
        let verified = try lethe(["verify", "--journal", url, "--keys", serverKeys])
        #expect(verified.status == 0 && verified.stdout.hasPrefix("ok:"), "\(verified.stderr)")
        let fileCopy = place.dir.path("file-copy.lethe")
        #expect(try lethe(["backup", "restore", fromFile, "--journal", fileCopy, "--keys", copyKeys]).status == 0)
        let copyExport = try lethe(["export", "--journal", fileCopy, "--keys", copyKeys]).stdout
        #expect(copyExport.split(separator: "\n").count > 3000)
        #expect(try lethe(["export", "--journal", url, "--keys", serverKeys]).stdout == copyExport)
        // Not over a journal unless told to; then replaced.
        let again = try lethe(["backup", "restore", fromFile, "--journal", url, "--keys", serverKeys])
        #expect(again.status == 1 && again.stderr.contains("holds a journal"), "\(again.stderr)")
        #expect(!again.stderr.contains(try #require(PostgresAddress(url).password)))
        #expect(try lethe(["backup", "restore", fromFile, "--journal", url, "--keys", serverKeys, "--replace"]).status == 0)
        // The restored journal goes on: its counters and head came with it.
        let more = #"{"id":"after-restore","type":"AccountSignedUp","account":"acct-restored","at":"2026-11-01T00:00:00Z","data":{"name":"N","email":"n@mail.example"}}"#
        let appended = try run("lethe", ["import", "-", "--journal", url, "--keys", serverKeys], stdin: more + "\n", environment: environment)
        #expect(appended.stdout.contains("imported 1"), "\(appended.stderr)")
        #expect(try lethe(["verify", "--journal", url, "--keys", serverKeys]).status == 0)

        // PostgreSQL → file.
        let fromServer = place.dir.path("from-server.backup")
        #expect(try lethe(["backup", "create", fromServer, "--journal", url, "--keys", serverKeys]).status == 0)
        let restoredFile = place.dir.path("restored.lethe")
        let intoFile = try lethe(["backup", "restore", fromServer, "--journal", restoredFile, "--keys", serverKeys])
        #expect(intoFile.status == 0, "\(intoFile.stderr)")
        #expect(try lethe(["verify", "--journal", restoredFile, "--keys", serverKeys]).status == 0)
        let serverExport = try lethe(["export", "--journal", url, "--keys", serverKeys]).stdout
        #expect(try lethe(["export", "--journal", restoredFile, "--keys", serverKeys]).stdout == serverExport)
        #expect(serverExport.contains("after-restore"))
    }

    @Test("lethe follow prints each event's header as two other processes commit, in order, and never its data", arguments: TestBackend.allCases)
    func followCommand(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = place.url ?? place.dir.path("j.lethe")
        let where_ = ["--journal", journal, "--keys", place.keysPath]
        let environment = ["LETHE_MASTER_KEY": testMasterKey]
        /// An account's signup, then a page view.
        func lines(_ account: String, _ n: Int, from: Int) -> String {
            (0..<n).map { k in
                let event = k == 0
                    ? #""type":"AccountSignedUp","account":"\#(account)","at":"2026-03-01T10:00:0\#(from + k)Z","data":{"name":"Secret Person","email":"secret@mail.example"}"#
                    : #""type":"PageViewed","account":"\#(account)","at":"2026-03-01T10:00:0\#(from + k)Z","data":{"path":"/secret-\#(k)","visitor":"v"}"#
                return #"{"id":"\#(account)-\#(k)","# + event + "}"
            }.joined(separator: "\n") + "\n"
        }
        let first = try run("lethe", ["import", "-"] + where_, stdin: lines("acct-a", 2, from: 0), environment: environment)
        try #require(first.status == 0, "\(first.stderr)")
        // From after the first event, five in all: one there already, four to come.
        let follower = try start("lethe", ["follow", "--after", "1", "--count", "5", "--poll", "50"] + where_, environment: environment, timeLimit: .seconds(60))
        let a = try start("lethe", ["import", "-"] + where_, stdin: lines("acct-b", 2, from: 2), environment: environment)
        let b = try start("lethe", ["import", "-"] + where_, stdin: lines("acct-c", 2, from: 4), environment: environment)
        for writer in [a, b] { #expect(try writer.finish().status == 0) }
        let followed = try follower.finish()
        #expect(followed.status == 0, "\(followed.stderr)")
        let seen = followed.stdout.split(separator: "\n").map(String.init)
        #expect(seen.count == 5)
        #expect(seen.map { $0.components(separatedBy: ",")[0] } == (2...6).map { #"{"seq":\#($0)"# })
        #expect(Set(seen.compactMap { $0.firstRange(of: #""account":"acct-"#) == nil ? nil : $0.components(separatedBy: #""account":""#)[1].prefix(6) }) == ["acct-a", "acct-b", "acct-c"])
        #expect(!followed.stdout.contains("secret") && !followed.stdout.contains("data"))
    }
}

