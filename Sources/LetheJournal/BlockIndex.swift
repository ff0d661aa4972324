import Foundation

/// The per-account block index: which sealed blocks hold events of an account, so that an
/// account's history is read from its own blocks, not the whole journal.
///
/// Two tables, like the event id index (`EventIDIndex`). A new block's postings (one per account
/// in it) go to `recent_account_blocks`, a row each (on PostgreSQL, since format 7, a row per
/// account per append: `PostgresJournalStore.addRecentPostings`); once enough rows have gathered
/// they move, in one pass in account order, to `account_block_runs`: per account, its block ids
/// in order, cut into runs of at most `runBytes`, keyed by (account, first block), each id after
/// the first coded as its difference from the one before. An account's new blocks always come
/// after its old ones, so a merge rewrites only each account's last run.
///
/// A run's layout: count (varint), the first block id (varint; the row's key), then count − 1
/// differences (varints, each at least 1).
///
/// Inserted straight into one large table, the postings of every block landed all over it
/// (accounts are interleaved in time), so each commit rewrote most of its pages; the small table
/// stays in the page cache, and a merge rewrites each run once for many postings.
struct BlockIndex {
    /// A run's encoded size at most: with its key, under what a 4 KiB page of an index tree keeps
    /// in the page.
    static let runBytes = 900
    /// When postings move into the runs (unless `Journal.Options.recentPostingsLimit` says): four
    /// per run, so each costs at most a quarter of a run's rewrite (a merge rewrites up to one
    /// run per account). At two, the merges cost the 20,000-account import 0.5 s of CPU.
    static let merging = MergePolicy(index: .accountBlocks, perRun: 4)

    let store: any JournalStore

    static let schema = """
        CREATE TABLE IF NOT EXISTS account_block_runs(
            account_id INTEGER NOT NULL, first_block INTEGER NOT NULL, blocks BLOB NOT NULL,
            PRIMARY KEY(account_id, first_block)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS recent_account_blocks(
            account_id INTEGER NOT NULL, block_id INTEGER NOT NULL,
            PRIMARY KEY(account_id, block_id)) WITHOUT ROWID;
        """

    // MARK: Lookups

    /// The blocks that hold events of account `name`, in order, each once.
    ///
    /// - Complexity: the account's runs and its recent postings: proportional to its blocks.
    func blocks(ofAccount name: String) throws -> [Int64] {
        guard let account = try store.account(named: name)?.id else { return [] }
        var out: [Int64] = []
        for run in try store.blockRuns(ofAccount: account) { out += try BlockIndex.decode(run.blocks, account: account, first: run.first) }
        out += try store.recentBlocks(ofAccount: account)
        return Array(Set(out)).sorted()
    }

    // MARK: Writing

    /// Adds the postings of new blocks (account id, block id), in the index's order.
    func add(_ postings: [(account: Int64, block: Int64)]) throws {
        try store.addRecentPostings(postings.sorted { ($0.account, $0.block) < ($1.account, $1.block) })
    }

    /// Moves the recent postings into the runs when `merging` says (`limit`: the journal's
    /// option; `force`: whenever there is any). Inside the caller's transaction.
    func mergeIfDue(limit: Int?, force: Bool = false) throws {
        if try BlockIndex.merging.isDue(store, limit: limit, force: force) { try merge() }
    }

    /// One pass over the recent postings in account order: each account's last run is read,
    /// extended and written again (cut at `runBytes`), for `mergeGroup` accounts at a time (a
    /// store on a server reads and writes a group in one statement each). Memory: one group's
    /// new postings.
    func merge() throws {
        var group: [(account: Int64, blocks: [Int64])] = []
        func flush() throws {
            guard !group.isEmpty else { return }
            let lasts = try store.lastBlockRuns(ofAccounts: group.map(\.account))
            var runs: [BlockRun] = []
            for (account, pending) in group {
                var blocks: [Int64] = []
                if let last = lasts[account] { blocks = try BlockIndex.decode(last.blocks, account: account, first: last.first) }
                for block in pending where block > (blocks.last ?? 0) { blocks.append(block) }
                // The last run keeps its key: it is updated in place, and any further runs inserted.
                runs += BlockIndex.encode(blocks).map { BlockRun(account: account, first: $0.0, blocks: $0.1) }
            }
            try store.writeBlockRuns(runs, replacing: lasts.mapValues(\.first))
            group.removeAll(keepingCapacity: true)
        }
        try store.forEachRecentPosting { account, block in
            if group.last?.account == account {
                group[group.count - 1].blocks.append(block)
            } else {
                if group.count == BlockIndex.mergeGroup { try flush() }
                group.append((account, [block]))
            }
        }
        try flush()
        try store.clearRecentPostings()
    }

    /// How many accounts a merge reads and writes at once.
    static let mergeGroup = 2048

    /// A format-4 journal's `account_blocks`, moved into the runs (by its first writer).
    static func upgrade(_ db: SQLiteDatabase) throws {
        guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'account_blocks'") == 1 else { return }
        try db.execute("""
            INSERT OR IGNORE INTO recent_account_blocks(account_id, block_id) SELECT account_id, block_id FROM account_blocks;
            DROP TABLE account_blocks;
            """)
        try BlockIndex(store: SQLiteJournalStore(db)).merge()
    }

    // MARK: The run format

    /// `blocks` (ascending, each once) cut into runs of at most `runBytes`: (first block, bytes).
    static func encode(_ blocks: [Int64]) -> [(Int64, [UInt8])] {
        var out: [(Int64, [UInt8])] = []
        var start = 0
        while start < blocks.count {
            var body = BinaryWriter(capacity: runBytes)
            var end = start
            body.varint(UInt64(blocks[start]))
            end += 1
            while end < blocks.count, body.bytes.count + 10 + 3 <= runBytes {
                body.varint(UInt64(blocks[end] - blocks[end - 1]))
                end += 1
            }
            var run = BinaryWriter(capacity: body.bytes.count + 3)
            run.varint(end - start)
            run.raw(body.bytes)
            out.append((blocks[start], run.bytes))
            start = end
        }
        return out
    }

    /// Decodes a run and checks it: its first block is its key, the blocks grow, nothing trails.
    static func decode(_ bytes: [UInt8], account: Int64, first: Int64) throws -> [Int64] {
        func corrupt(_ why: String) -> JournalError {
            JournalError(.corrupt, "block index: the run of account id \(account) from block \(first) \(why)")
        }
        var r = BinaryReader(bytes)
        return try decodingRun(corrupt) {
            let count = try r.count(limit: bytes.count)
            guard count > 0 else { throw corrupt("is empty") }
            var blocks: [Int64] = []
            blocks.reserveCapacity(count)
            var block = try r.varint()
            guard block == UInt64(bitPattern: first), first > 0 else { throw corrupt("does not begin with its key") }
            blocks.append(first)
            for _ in 1..<count {
                let step = try r.varint()
                let (next, overflow) = block.addingReportingOverflow(step)
                guard step > 0, !overflow, next <= UInt64(Int64.max) else { throw corrupt("has blocks out of order") }
                block = next
                blocks.append(Int64(block))
            }
            guard r.isAtEnd else { throw corrupt("has trailing bytes") }
            return blocks
        }
    }

    // MARK: Checking

    /// The index's (account id, block id) pairs tallied, every run decoded and checked.
    func tally(key: (UInt64, UInt64)) throws -> PairTally {
        var tally = PairTally(key: key)
        try forEachPosting { tally.add(account: $0, block: $1) }
        return tally
    }

    /// Every posting of both tables (a pair in both is visited twice).
    func forEachPosting(_ body: (Int64, Int64) throws -> Void) throws {
        try store.forEachRecentPosting(body)
        try store.forEachBlockRun { run in
            for block in try BlockIndex.decode(run.blocks, account: run.account, first: run.first) { try body(run.account, block) }
        }
    }
}
