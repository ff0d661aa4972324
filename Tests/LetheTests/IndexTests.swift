import Foundation
import LetheEvents
@testable import LetheJournal
import Testing

/// Both indexes keep new entries a row each and move them to compact runs (`EventIDIndex`,
/// `BlockIndex`; the block index's reads and damage are tested in `JournalTests` and
/// `RollbackTests`). Whatever table an id is in, appending it again must find it, and any damage
/// to either table must be named by `verify`.
@Suite struct IndexTests {
    /// Ids of every shape the runs must order by bytes: sequential, sharing long prefixes, one a
    /// prefix of another, multi-byte characters (whose code points order differently from
    /// Swift's `<` for canonically equivalent text), the longest allowed.
    static let ids: [String] = {
        var ids = (0..<600).map { String(format: "evt_%07d", $0) }
        ids += (0..<60).map { "order-\(UUID(uuidString: String(format: "00000000-0000-0000-0000-%012d", $0 * 7919 % 1000))!.uuidString)" }
        ids += ["a", "ab", "abc", "é", "e\u{301}", "\u{1F600}", "z", String(repeating: "x", count: 256), "0"]
        return ids
    }()

    /// Appends `ids` in a scrambled order, `batch` at a time, with a merge due every few ids.
    func journal(_ place: TestPlace, ids: [String] = IndexTests.ids, batch: Int = 7, shuffled: Bool = true) throws -> (Journal, [ExactID: Int64]) {
        let j = try place.open(blockEvents: 4, recentIDsLimit: 5)
        var order = ids
        var rng = SplitMix(seed: 3)
        if shuffled { order.shuffle(using: &rng) }
        var seqs: [ExactID: Int64] = [:]
        for start in stride(from: 0, to: order.count, by: batch) {
            let chunk = Array(order[start..<min(start + batch, order.count)])
            let outcomes = try j.append(chunk.enumerated().map { k, id in
                event("acc_\(k % 3)", at: "2026-01-01T00:00:00Z", id: id)
            })
            for (id, outcome) in zip(chunk, outcomes) {
                guard case .appended(let header) = outcome else { Issue.record("\(id): \(outcome)"); continue }
                seqs[ExactID(id)] = header.seq
            }
        }
        return (j, seqs)
    }

    func duplicates(_ j: Journal, _ ids: [String]) throws -> [ExactID: Int64] {
        var found: [ExactID: Int64] = [:]
        let outcomes = try j.append(ids.map { event("acc_9", at: "2026-01-02T00:00:00Z", id: $0) })
        for (id, outcome) in zip(ids, outcomes) {
            if case .duplicate(let seq) = outcome { found[ExactID(id)] = seq }
        }
        return found
    }

    @Test(arguments: TestBackend.allCases)
    func everyIdIsFoundAgainAfterItMovedToTheRuns(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (j, seqs) = try journal(place)
        #expect(seqs.count == Self.ids.count)
        // Most ids were merged, into several chunks.
        let recent = try #require(try place.scalar("SELECT count(*) FROM event_ids"))
        let chunks = try #require(try place.scalar("SELECT count(*) FROM event_id_runs"))
        #expect(recent < 5 && chunks > 3, "recent \(recent), chunks \(chunks)")
        // The same ids again, in another order: each one a duplicate of its event, nothing appended.
        #expect(try duplicates(j, Self.ids.reversed()) == seqs)
        #expect(j.headSeq == Int64(Self.ids.count))
        #expect(try verified(j).events == Int64(Self.ids.count))
        // And so from another process, after a restart.
        let again = try place.open(blockEvents: 4, recentIDsLimit: 5, seed: 2)
        #expect(try duplicates(again, Self.ids) == seqs)
    }

    @Test(arguments: TestBackend.allCases)
    func newIdsBetweenAndBelowTheChunksAreNotTakenForOldOnes(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (j, seqs) = try journal(place)
        let fresh = [" ", "evt_", "evt_0000000-", "evt_0000599a", "order-", "zz", "é2", "\u{10FFFF}"].filter { seqs[ExactID($0)] == nil }
        let outcomes = try j.append(fresh.map { event("acc_1", at: "2026-01-03T00:00:00Z", id: $0) })
        for (id, outcome) in zip(fresh, outcomes) {
            guard case .appended = outcome else { Issue.record("\(id.debugDescription): \(outcome)"); continue }
        }
        _ = try place.open(blockEvents: 4, recentIDsLimit: 1, seed: 2).append([event("acc_1", at: "2026-01-03T00:00:00Z", id: "last")])
        #expect(try duplicates(j, fresh + Self.ids).count == fresh.count + Self.ids.count)
        #expect(try verified(j).events == Int64(Self.ids.count + fresh.count + 1))
    }

    /// A batch of at least `EventIDIndex.directBatch` ids that grow, all above every id held (an
    /// import), goes straight into the runs; any other batch becomes recent rows. Either way each
    /// id is found again, and the index verifies.
    @Test(arguments: TestBackend.allCases)
    func largeBatchesOfGrowingIdsGoStraightIntoTheRuns(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 4)
        var seqs: [ExactID: Int64] = [:]
        func add(_ ids: [String]) throws {
            let outcomes = try j.append(ids.enumerated().map { k, id in event("acc_\(k % 50)", at: "2026-01-01T00:00:00Z", id: id) })
            for (id, outcome) in zip(ids, outcomes) {
                guard case .appended(let h) = outcome else { Issue.record("\(id): \(outcome)"); continue }
                seqs[ExactID(id)] = h.seq
            }
        }
        func recent() throws -> Int64? { try place.scalar("SELECT count(*) FROM event_ids") }
        let n = EventIDIndex.directBatch
        func ids(_ range: Range<Int>) -> [String] { range.map { String(format: "evt_%07d", $0) } }
        try add(ids(0..<n + 500))
        #expect(try recent() == 0)
        #expect(try #require(try place.scalar("SELECT count(*) FROM event_id_runs")) > 3)
        try add(ids(n + 500..<2 * n + 499))  // one id short
        #expect(try recent() == Int64(n - 1))
        try add(ids(3 * n..<4 * n).reversed())  // out of order
        #expect(try recent() == Int64(2 * n - 1))
        try add(ids(4 * n..<5 * n))  // in order, above the recent ones too
        #expect(try recent() == Int64(2 * n - 1))
        try add(ids(5 * n..<6 * n) + ["evt_0000000-"])  // one below the ids held
        #expect(try recent() == Int64(3 * n))
        try add(ids(2 * n + 500..<3 * n + 500).filter { seqs[ExactID($0)] == nil } + ids(7 * n..<8 * n))  // some between the chunks
        #expect(try duplicates(j, seqs.keys.map(\.id)) == seqs)
        #expect(try verified(j).events == Int64(seqs.count))
        let again = try place.open(blockEvents: 4, seed: 2)
        #expect(try duplicates(again, seqs.keys.map(\.id)) == seqs)
    }

    @Test(arguments: TestBackend.allCases)
    func sequentialIdsTakeAFewBytesEach(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        _ = try journal(place, ids: (0..<2000).map { String(format: "evt_%07d", $0) }, batch: 50, shuffled: false)
        let bytes = try #require(try place.scalar("SELECT sum(length(entries)) FROM event_id_runs"))
        let merged = 2000 - (try #require(try place.scalar("SELECT count(*) FROM event_ids")))
        #expect(Double(bytes) / Double(merged) < 3.5, "\(bytes) bytes for \(merged) ids")
    }

    /// A writer that reads a damaged chunk stops naming it; `verify` names it too.
    @Test(arguments: TestBackend.allCases)
    func aDamagedChunkIsNamed(_ backend: TestBackend) throws {
        func damages(_ place: TestPlace) -> [String] {
            let last = "WHERE first_id = (SELECT max(first_id) FROM event_id_runs)"
            return [
                "UPDATE event_id_runs SET entries = substr(entries, 1, length(entries) - 1) \(last)",
                "UPDATE event_id_runs SET entries = \(place.literal([0x07])) || substr(entries, 2) \(last)",
                "UPDATE event_id_runs SET first_id = first_id || '0' \(last)",
                "UPDATE event_id_runs SET entries = \(place.literal([0x02])) || substr(entries, 2) \(last)",
            ]
        }
        for k in 0..<4 {
            let place = try TestPlace(backend)
            _ = try journal(place)
            let sql = damages(place)[k]
            try place.tamper(sql)
            let message = try #require(place.verifyFailure(), "\(sql) went unnoticed")
            #expect(message.contains("event id index: the chunk of ids from"), "\(sql): \(message)")
            let last = try #require(Self.ids.max(by: utf8Precedes))
            #expect(throws: JournalError.self, "\(sql)") { try place.open(blockEvents: 4, seed: 2).append([event("acc_1", at: "2026-01-03T00:00:00Z", id: last)]) }
        }
    }

    /// Well-formed chunks that say the wrong thing: an id left out, an id moved to another
    /// event, one added, two chunks that overlap.
    @Test(arguments: TestBackend.allCases)
    func aChunkThatDisagreesWithTheEventsIsNamed(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (_, seqs) = try journal(place, ids: (0..<30).map { "id\($0)" }, batch: 30)
        // (Ids merge as blocks are sealed: these two fill one.)
        _ = try place.open(blockEvents: 4, recentIDsLimit: 1, seed: 2).append(["id99", "id98"].map { event("acc_1", at: "2026-01-03T00:00:00Z", id: $0) })
        #expect(try place.scalar("SELECT count(*) FROM event_ids") == 0)
        let all = (seqs.map { ($0.key.id, $0.value) } + [("id99", 31), ("id98", 32)]).sorted { utf8Precedes($0.0, $1.0) }
        func chunks(_ entries: [(String, Int64)]) throws -> String {
            var rows: [String] = []
            var out = EventIDIndex.RunWriter { first, bytes in rows.append("('\(first)', \(place.literal(bytes)))") }
            for (id, seq) in entries { try out.add(Array(id.utf8)[...], seq: seq) }
            try out.cut()
            return "DELETE FROM event_id_runs; INSERT INTO event_id_runs VALUES \(rows.joined(separator: ", "))"
        }
        let missing = all.firstIndex { $0.0 == "id12" }!
        var moved = all
        moved[missing].1 = 2
        let cases: [(String, String)] = [
            (try chunks(all.filter { $0.0 != "id12" }), "event \(seqs[ExactID("id12")]!) has an id but no entry for it"),
            (try chunks(moved), "the id of event \(seqs[ExactID("id12")]!) is indexed as event 2"),
            (try chunks((all + [("id120", 3)]).sorted { utf8Precedes($0.0, $1.0) }), "an extra entry maps an id to event 3"),
        ]
        for (sql, expected) in cases {
            try place.tamper(sql)
            let message = try #require(place.verifyFailure(), "\(expected) went unnoticed")
            #expect(message.contains("event id index: " + expected), "\(message)")
        }
        // Two chunks, the second beginning inside the first.
        var rows: [String] = []
        for part in [Array(all[0..<20]), Array(all[15...])] {
            var out = EventIDIndex.RunWriter { first, bytes in rows.append("('\(first)', \(place.literal(bytes)))") }
            for (id, seq) in part { try out.add(Array(id.utf8)[...], seq: seq) }
            try out.cut()
        }
        try place.tamper("DELETE FROM event_id_runs; INSERT INTO event_id_runs VALUES \(rows.joined(separator: ", "))")
        let overlap = try #require(place.verifyFailure())
        #expect(overlap.contains("overlaps the one before it"), "\(overlap)")
    }

    /// `settle` (what the importer does at its end) empties the block index's recent table and,
    /// for ids that grow with time, the ids'; ids that would land among the indexed ones wait.
    /// The pages freed go back to the file system, and every lookup answers as before.
    @Test func settlingMovesWhatIsCheapToMoveAndGivesThePagesBack() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4, recentPostingsLimit: 1 << 20, recentIDsLimit: 400)
        var seqs: [ExactID: Int64] = [:]
        func add(_ ids: [String]) throws {
            let outcomes = try j.append(ids.enumerated().map { k, id in event("acc_\(k % 50)", at: "2026-01-01T00:00:00Z", id: id) })
            for (id, outcome) in zip(ids, outcomes) { if case .appended(let h) = outcome { seqs[ExactID(id)] = h.seq } }
        }
        try add((0..<400).map { String(format: "evt_%07d", $0) })  // merged: 400 reached
        try add((400..<700).map { String(format: "evt_%07d", $0) })
        #expect(try sqliteScalar(j.path, "SELECT count(*) FROM event_ids") == 300)
        let postings = try #require(try sqliteScalar(j.path, "SELECT count(*) FROM recent_account_blocks"))
        #expect(postings > 600)
        func blocks() throws -> [[Int64]] {
            let db = try SQLiteDatabase(path: j.path, readOnly: true)
            defer { db.close() }
            return try (0..<50).map { try BlockIndex(store: SQLiteJournalStore(db)).blocks(ofAccount: "acc_\($0)") }
        }
        let before = try blocks()
        let pagesBefore = try #require(try sqliteScalar(j.path, "PRAGMA page_count"))
        try j.settle()
        #expect(try sqliteScalar(j.path, "SELECT count(*) FROM event_ids") == 0)
        #expect(try sqliteScalar(j.path, "SELECT count(*) FROM recent_account_blocks") == 0)
        #expect(try sqliteScalar(j.path, "PRAGMA freelist_count") == 0)
        #expect(try sqliteScalar(j.path, "PRAGMA auto_vacuum") == 2)
        let pagesAfter = try #require(try sqliteScalar(j.path, "PRAGMA page_count"))
        #expect(pagesAfter < pagesBefore, "\(pagesBefore) → \(pagesAfter) pages")
        #expect(try blocks() == before && before.allSatisfy { $0.count > 10 })
        // Ids below the indexed ones (here, the lowest) would rewrite chunks already written: they stay.
        try add(["a-0", "a-1"])
        try j.settle()
        #expect(try sqliteScalar(j.path, "SELECT count(*) FROM event_ids") == 2)
        #expect(try duplicates(j, seqs.keys.map(\.id)) == seqs)
        #expect(try verified(j).events == 702)
    }

    /// Journals of formats 4 (both indexes a row per entry, no runs) and 5 (accounts in a rowid
    /// table with a name index, chain marks by category) are read as they are, and taken to
    /// format 7 by their first writer: the accounts keyed by name, the highest account id in meta,
    /// the marks honoured through the keyring (the next record takes the index after them).
    @Test(arguments: [4, 5])
    func anOlderJournalIsUpgradedInPlace(format: Int) throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4, recentPostingsLimit: 1 << 20)
        let seqs = try j.append((0..<10).map { event("acc_\($0 % 3)", at: "2026-01-01T00:00:00Z", id: "e\($0)") }).map { outcome -> Int64 in
            guard case .appended(let h) = outcome else { return -1 }
            return h.seq
        }
        #expect(try sqliteText(j.path, "SELECT hex(chains) FROM accounts WHERE name = 'acc_1'") == "00010102")
        let indexes = format > 4 ? "" : """
            DROP TABLE event_id_runs; DROP TABLE account_block_runs;
            CREATE TABLE account_blocks(account_id INTEGER NOT NULL, block_id INTEGER NOT NULL, PRIMARY KEY(account_id, block_id)) WITHOUT ROWID;
            INSERT INTO account_blocks SELECT * FROM recent_account_blocks WHERE block_id = 1; DELETE FROM recent_account_blocks WHERE block_id = 1;
            """
        try tamper(j.path, """
            \(indexes)
            CREATE TABLE old(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL, last_at INTEGER NOT NULL, chains BLOB);
            INSERT INTO old SELECT id, name, version, last_at, chains FROM accounts; DROP TABLE accounts; ALTER TABLE old RENAME TO accounts;
            UPDATE accounts SET chains = x'010A706167652D766965777302' WHERE name = 'acc_1';
            DELETE FROM meta WHERE key = 'account_ids'; UPDATE meta SET value = \(format) WHERE key = 'format'
            """)
        #expect(try verified(j).events == 10)
        var history: [Int64] = []
        try j.read { try $0.events(account: "acc_1") { history.append($0.header.seq) } }
        #expect(history == [2, 5, 8])
        let upgraded = try openJournal(dir, blockEvents: 4, recentIDsLimit: 1)
        #expect(try sqliteScalar(j.path, "SELECT value FROM meta WHERE key = 'format'") == 7)
        #expect(try sqliteScalar(j.path, "SELECT value FROM meta WHERE key = 'account_ids'") == 3)
        #expect(try sqliteScalar(j.path, "SELECT count(*) FROM sqlite_master WHERE name IN ('account_blocks', 'accounts_format5', 'sqlite_autoindex_accounts_1')") == 0)
        #expect(try sqliteScalar(j.path, "SELECT count(*) FROM account_block_runs") == (format == 4 ? 3 : 0))
        history = []
        try upgraded.read { try $0.events(account: "acc_1") { history.append($0.header.seq) } }
        #expect(history == [2, 5, 8])
        let outcomes = try upgraded.append((0..<12).map { event("acc_1", at: "2026-01-02T00:00:00Z", id: "e\($0)") })
        #expect(outcomes.prefix(10).map { if case .duplicate(let s) = $0 { s } else { -1 } } == seqs)
        #expect(try sqliteScalar(j.path, "SELECT count(*) FROM event_ids") == 0)
        // The chain in slot 1 goes on after the mark by category (2): the sealer gave the twelve
        // records indices 3 to 14 (the duplicates' are never used), the last two kept. Had the
        // mark been lost, they would have taken 0 to 11, reusing indices already sealed under.
        let marks = try sqliteText(j.path, "SELECT hex(chains) FROM accounts WHERE name = 'acc_1'")
        #expect(marks == "0001010E", "\(marks)")
        _ = try upgraded.append([event("acc_9", at: "2026-01-02T00:00:00Z")])
        #expect(try sqliteScalar(j.path, "SELECT id FROM accounts WHERE name = 'acc_9'") == 4)
        #expect(try verified(upgraded).events == 13)
        #expect(try allEvents(upgraded).count == 13)
        // Other formats are refused, by writers and readers alike, with the format named (a
        // reader of an older build found no `account_blocks` table in a format-5 file, and said
        // only that).
        for other in [3, 8] {
            try tamper(j.path, "UPDATE meta SET value = \(other) WHERE key = 'format'")
            #expect(throws: JournalError.self) { try openJournal(dir, blockEvents: 4) }
            #expect(verifyFailure(j.path)?.contains("has journal format \(other); this build reads formats 4 to 7") == true)
        }
    }
}

func sqliteText(_ path: String, _ sql: String) throws -> String {
    try run("/usr/bin/sqlite3", [path, sql], timeLimit: .seconds(60)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
}

func sqliteScalar(_ path: String, _ sql: String) throws -> Int64? {
    let r = try run("/usr/bin/sqlite3", [path, sql], timeLimit: .seconds(60))
    return Int64(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
}
