import LetheJournal
import PostgresNIO

/// The journal's two indexes on the server (`EventIDIndex`, `BlockIndex`: recent rows and
/// compact runs, as in a file), and the row counts their merge policy asks for.
extension PostgresJournalStore {
    // MARK: The event id index

    func recentIDs(matching ids: [String]) throws -> [(id: String, seq: Int64)] {
        guard !ids.isEmpty else { return [] }
        return try connection.query("SELECT id, seq FROM event_ids WHERE id = ANY(\(ids)::text[])").map {
            try $0.columns((String, Int64).self, "event_ids")
        }
    }

    func recentIDBounds() throws -> (lowest: String, highest: String)? {
        guard let row = try connection.query("SELECT min(id), max(id) FROM event_ids").first else { return nil }
        let (low, high) = try row.columns((String?, String?).self, "event_ids")
        guard let low, let high else { return nil }
        return (low, high)
    }

    func addRecentIDs(_ entries: [(id: String, seq: Int64)]) throws {
        guard !entries.isEmpty else { return }
        connection.send("""
            WITH added AS (INSERT INTO event_ids(id, seq) SELECT * FROM unnest(\(entries.map(\.id))::text[], \(entries.map(\.seq))::bigint[]) RETURNING 1)
            UPDATE counts SET n = n + (SELECT count(*) FROM added) WHERE name = 'event_ids'
            """)
    }

    func forEachRecentID(_ body: (String, Int64) throws -> Void) throws {
        var after: String?
        while true {
            let rows = try connection.query("SELECT id, seq FROM event_ids WHERE \(after)::text IS NULL OR id > \(after) ORDER BY id LIMIT 10000")
            for row in rows {
                let (id, seq) = try row.columns((String, Int64).self, "event_ids")
                try body(id, seq)
                after = id
            }
            if rows.count < 10000 { return }
        }
    }

    func clearRecentIDs() throws {
        connection.sendStatement("WITH gone AS (DELETE FROM event_ids) UPDATE counts SET n = 0 WHERE name = 'event_ids'")
    }

    private static func chunk(_ row: PostgresRow) throws -> IDChunk {
        let (first, entries) = try row.columns((String, ByteBuffer).self, "event_id_runs")
        return IDChunk(first: first, entries: entries.bytes)
    }

    func idChunk(covering id: String) throws -> IDChunk? {
        try connection.query("SELECT first_id, entries FROM event_id_runs WHERE first_id <= \(id) ORDER BY first_id DESC LIMIT 1")
            .first.map(Self.chunk)
    }

    func idChunkKey(after first: String) throws -> String? {
        try connection.query("SELECT first_id FROM event_id_runs WHERE first_id > \(first) ORDER BY first_id LIMIT 1")
            .first?.column(String.self, "event_id_runs")
    }

    func firstIDChunk() throws -> IDChunk? {
        try connection.query("SELECT first_id, entries FROM event_id_runs ORDER BY first_id LIMIT 1").first.map(Self.chunk)
    }

    func lastIDChunk() throws -> IDChunk? {
        try connection.query("SELECT first_id, entries FROM event_id_runs ORDER BY first_id DESC LIMIT 1").first.map(Self.chunk)
    }

    func forEachIDChunk(_ body: (IDChunk) throws -> Void) throws {
        var after: String?
        while true {
            let rows = try connection.query("""
                SELECT first_id, entries FROM event_id_runs WHERE \(after)::text IS NULL OR first_id > \(after) ORDER BY first_id LIMIT 1000
                """)
            for row in rows {
                let chunk = try Self.chunk(row)
                try body(chunk)
                after = chunk.first
            }
            if rows.count < 1000 { return }
        }
    }

    func deleteIDChunk(first: String) throws {
        connection.send("""
            WITH gone AS (DELETE FROM event_id_runs WHERE first_id = \(first) RETURNING 1)
            UPDATE counts SET n = n - (SELECT count(*) FROM gone) WHERE name = 'event_id_runs'
            """)
    }

    func insertIDChunk(_ chunk: IDChunk) throws {
        connection.send("""
            WITH added AS (INSERT INTO event_id_runs(first_id, entries) VALUES(\(chunk.first), \(chunk.entries.buffer)) RETURNING 1)
            UPDATE counts SET n = n + (SELECT count(*) FROM added) WHERE name = 'event_id_runs'
            """)
    }

    // MARK: The per-account block index

    /// A row of recent postings holds all that one call added for one account: its first block
    /// is the row's key, and the account's further blocks, ascending, are in `more`, each as its
    /// difference from the one before (a varint, at least 1; NULL for none). With a row per
    /// posting (format 6), an import of a many-account history inserted about a row per event (an
    /// account seldom has two events in one block, but has about two blocks in a batch of
    /// 32,768): 0.6 s of the server's 2.1 s, all of it on the writer's path. Packed, the 20,000-
    /// account import takes 4.03 s against 4.54 (interleaved A/B), the server 1.65 s of CPU
    /// against 2.08. Callers add an account's postings in the order of its blocks (a new block
    /// comes after the account's others), so an account's rows, in key order, give its blocks in
    /// order.
    static func packMore(_ postings: ArraySlice<(account: Int64, block: Int64)>, after first: Int64) -> ByteBuffer {
        var w = BinaryWriter(capacity: postings.count * 2)
        var previous = first
        for (_, block) in postings {
            w.varint(UInt64(block - previous))
            previous = block
        }
        return w.bytes.buffer
    }

    static func unpackMore(_ more: ByteBuffer?, account: Int64, first: Int64, into out: inout [Int64]) throws {
        out.append(first)
        guard let more, more.readableBytes > 0 else { return }
        var r = BinaryReader(more.bytes)
        var block = first
        let damaged = JournalError(.corrupt, "block index: the recent postings of account id \(account) from block \(first) are damaged")
        while !r.isAtEnd {
            guard let step = try? r.varint(), step > 0, step <= UInt64(Int64.max - block) else { throw damaged }
            block += Int64(step)
            out.append(block)
        }
    }

    func recentBlocks(ofAccount id: Int64) throws -> [Int64] {
        var out: [Int64] = []
        for row in try connection.query("SELECT block_id, \(unescaped: morePostings) FROM recent_account_blocks WHERE account_id = \(id) ORDER BY block_id") {
            let (first, more) = try row.columns((Int64, ByteBuffer?).self, "recent_account_blocks")
            try Self.unpackMore(more, account: id, first: first, into: &out)
        }
        return out
    }

    private static func run(_ row: PostgresRow) throws -> BlockRun {
        let (account, first, blocks) = try row.columns((Int64, Int64, ByteBuffer).self, "account_block_runs")
        return BlockRun(account: account, first: first, blocks: blocks.bytes)
    }

    func blockRuns(ofAccount id: Int64) throws -> [BlockRun] {
        try connection.query("SELECT account_id, first_block, blocks FROM account_block_runs WHERE account_id = \(id) ORDER BY first_block")
            .map(Self.run)
    }

    func lastBlockRuns(ofAccounts accounts: [Int64]) throws -> [Int64: BlockRun] {
        guard !accounts.isEmpty else { return [:] }
        var out: [Int64: BlockRun] = [:]
        for row in try connection.query("""
            SELECT DISTINCT ON (account_id) account_id, first_block, blocks FROM account_block_runs
            WHERE account_id = ANY(\(accounts)::bigint[]) ORDER BY account_id, first_block DESC
            """) {
            let run = try Self.run(row)
            out[run.account] = run
        }
        return out
    }

    func writeBlockRuns(_ runs: [BlockRun], replacing: [Int64: Int64]) throws {
        guard !runs.isEmpty else { return }
        // (`xmax = 0`: the row was inserted, not updated in place.)
        connection.send("""
            WITH written AS (
                INSERT INTO account_block_runs(account_id, first_block, blocks)
                SELECT * FROM unnest(\(runs.map(\.account))::bigint[], \(runs.map(\.first))::bigint[], \(runs.map(\.blocks.buffer))::bytea[])
                ON CONFLICT (account_id, first_block) DO UPDATE SET blocks = EXCLUDED.blocks
                RETURNING xmax = 0 AS inserted)
            UPDATE counts SET n = n + (SELECT count(*) FROM written WHERE inserted) WHERE name = 'account_block_runs'
            """)
    }

    /// `postings` in (account, block) order, as `BlockIndex.add` gives them: a row per account.
    func addRecentPostings(_ postings: [(account: Int64, block: Int64)]) throws {
        guard !postings.isEmpty else { return }
        var (accounts, firsts, mores): ([Int64], [Int64], [ByteBuffer]) = ([], [], [])
        var start = 0
        while start < postings.count {
            // (A block not after the one before starts a row of its own: a posting held twice then
            // fails on the key, as a row per posting would.)
            var end = start + 1
            while end < postings.count && postings[end].account == postings[start].account && postings[end].block > postings[end - 1].block {
                end += 1
            }
            accounts.append(postings[start].account)
            firsts.append(postings[start].block)
            mores.append(Self.packMore(postings[start + 1..<end], after: postings[start].block))
            start = end
        }
        connection.send("""
            WITH added AS (
                INSERT INTO recent_account_blocks(account_id, block_id, more)
                SELECT a, b, NULLIF(m, ''::bytea) FROM unnest(\(accounts)::bigint[], \(firsts)::bigint[], \(mores)::bytea[]) AS u(a, b, m)
                RETURNING 1)
            UPDATE counts SET n = n + (SELECT count(*) FROM added) WHERE name = 'recent_account_blocks'
            """)
    }

    /// A page of rows comes as one `bytea` in one row: each row's account and first block (8
    /// bytes each, big-endian), the length of its `more` (4 bytes), then `more`. Read a row each,
    /// their decoding was about 0.25 s of the appending thread in a 20,000-account import; read as
    /// three arrays, the server sorted the page three times (an ordered aggregate each, on
    /// PostgreSQL 15) and the client decoded three arrays: a merge's page cost twice what it
    /// costs now, all of it on the writer's path. The aggregate takes the page's rows in their
    /// order in practice, which SQL does not promise: a page out of order is sorted here.
    func forEachRecentPosting(_ body: (Int64, Int64) throws -> Void) throws {
        let page = recentPostingsPage
        var after: (Int64, Int64) = (.min, .min)
        var rows: [(account: Int64, first: Int64, more: ByteBuffer)] = []
        var blocks: [Int64] = []
        while true {
            guard let row = try connection.query("""
                SELECT count(*), coalesce(string_agg(int8send(account_id) || int8send(block_id) || int4send(coalesce(length(more), 0)) || coalesce(more, ''::bytea), ''::bytea), ''::bytea)
                FROM (SELECT account_id, block_id, \(unescaped: morePostings) AS more FROM recent_account_blocks WHERE (account_id, block_id) > (\(after.0), \(after.1))
                      ORDER BY account_id, block_id LIMIT \(page)) AS page
                """).first else { return }
            var (count, packed) = try row.columns((Int64, ByteBuffer).self, "recent_account_blocks")
            rows.removeAll(keepingCapacity: true)
            var inOrder = true
            while packed.readableBytes > 0 {
                guard let account = packed.readInteger(as: Int64.self), let first = packed.readInteger(as: Int64.self),
                      let length = packed.readInteger(as: Int32.self), length >= 0, let more = packed.readSlice(length: Int(length))
                else {
                    throw JournalError(.corrupt, "recent_account_blocks: a page of rows after account id \(after.0), block \(after.1) came back cut short")
                }
                if let last = rows.last, (last.account, last.first) >= (account, first) { inOrder = false }
                rows.append((account, first, more))
            }
            guard rows.count == count else {
                throw JournalError(.corrupt, "recent_account_blocks: a page of \(count) rows came back with \(rows.count)")
            }
            if !inOrder { rows.sort { ($0.account, $0.first) < ($1.account, $1.first) } }
            for r in rows {
                blocks.removeAll(keepingCapacity: true)
                try Self.unpackMore(r.more, account: r.account, first: r.first, into: &blocks)
                for block in blocks { try body(r.account, block) }
            }
            guard rows.count == page, let last = rows.last else { return }
            after = (last.account, last.first)
        }
    }

    func clearRecentPostings() throws {
        connection.sendStatement("WITH gone AS (DELETE FROM recent_account_blocks) UPDATE counts SET n = 0 WHERE name = 'recent_account_blocks'")
    }

    func forEachBlockRun(_ body: (BlockRun) throws -> Void) throws {
        var after: (Int64, Int64) = (.min, .min)
        while true {
            let rows = try connection.query("""
                SELECT account_id, first_block, blocks FROM account_block_runs WHERE (account_id, first_block) > (\(after.0), \(after.1))
                ORDER BY account_id, first_block LIMIT 5000
                """)
            for row in rows {
                let run = try Self.run(row)
                try body(run)
                after = (run.account, run.first)
            }
            if rows.count < 5000 { return }
        }
    }

    private static func tables(_ index: IndexName) -> (recent: String, runs: String) {
        switch index {
        case .eventIDs: ("event_ids", "event_id_runs")
        case .accountBlocks: ("recent_account_blocks", "account_block_runs")
        }
    }

    func recentRowCount(_ index: IndexName) throws -> Int64 { try count(Self.tables(index).recent) }

    func runRowCount(_ index: IndexName) throws -> Int64 { try count(Self.tables(index).runs) }

    /// The rows of an index table, as `counts` keeps them: every statement of this store that
    /// adds or removes some also moves its count, in the same transaction (each under the head's
    /// lock, so writers of every instance take turns). The merge policy asks at every append,
    /// and on PostgreSQL `count(*)` reads the whole table: with a run per account, each append
    /// would have cost time in proportion to the accounts (about 1 ms at 20,000 accounts, about
    /// 50 at a million). A table without a count (a journal made before, a restore) is counted
    /// once, and the count kept from then on (in a write transaction; a reader only counts).
    private func count(_ table: String) throws -> Int64 {
        if let n = try connection.query("SELECT n FROM counts WHERE name = \(table)").first?.column(Int64.self, "counts") { return n }
        guard let row = try connection.query(PostgresQuery(unsafeSQL: """
            SELECT (SELECT count(*) FROM \(table)), current_setting('transaction_read_only') = 'on'
            """)).first else { return 0 }
        let (n, readOnly) = try row.columns((Int64, Bool).self, "counts")
        if !readOnly { try connection.query("INSERT INTO counts(name, n) VALUES(\(table), \(n)) ON CONFLICT (name) DO NOTHING") }
        return n
    }
}
