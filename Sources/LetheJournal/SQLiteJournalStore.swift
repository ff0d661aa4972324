import Foundation

/// A journal in one SQLite file at `path` (WAL mode, beside its `-wal` and `-shm`).
package struct SQLiteBackend: JournalBackend {
    package let path: String

    package init(path: String) { self.path = path }

    package var place: String { path }
    package var dataPaths: [String] { [path] }
    package func openWriter(options: Journal.Options) throws -> any JournalStore {
        SQLiteJournalStore(try Journal.openDatabase(path: path, options: options))
    }

    package func openReader() throws -> any JournalStore {
        let store: SQLiteJournalStore
        let format: Int64?
        do {
            guard FileManager.default.fileExists(atPath: path) else { throw JournalError(.storage, "no journal at \(path)") }
            store = SQLiteJournalStore(try SQLiteDatabase(path: path, readOnly: true))
            format = try store.counter(.format)
        } catch let e as SQLiteError where e.code == 26 {
            throw JournalError(.notAJournal, "\(path) is not a Lethe journal (not an SQLite database)")
        } catch {
            throw JournalError.storage("cannot open journal \(path) for reading", error)
        }
        // A reader does not upgrade a file: it reads this build's format and the two before it
        // (which differ only in the tables of the indexes and the accounts, read by the same
        // statements), and names any other.
        guard let format, Journal.readableFormats.contains(format) else {
            throw JournalError(.notAJournal, "\(path) has journal format \(format.map(String.init) ?? "none"); this build reads formats \(Journal.readableFormats.lowerBound) to \(Journal.formatVersion)")
        }
        return store
    }

    /// A lock file beside the journal's real path: two instances that reach the file through
    /// different links or relative paths share one lock.
    package func lease(_ purpose: String, wait: Duration) throws -> Lease? {
        try Lease.lockFile(leaseName(purpose), purpose: purpose, wait: wait)
    }

    package func leaseName(_ purpose: String) -> String { (PrivateFile.realPath(path) ?? path) + "." + purpose + ".lock" }

    package func holdsJournal() throws -> Bool {
        [path, path + "-wal"].contains { FileManager.default.fileExists(atPath: $0) }
    }

    package func drop() throws {
        for p in [path, path + "-wal", path + "-shm"] { unlink(p) }
    }
}

/// The journal in one SQLite file (the embedded default): `JournalStore` over one connection.
///
/// Tables (see `JournalSchema.swift`): `meta` (key, value), `blocks` (id, first_seq, last_seq,
/// frame), `tail` (a row per unsealed event), `accounts` (keyed by name), and the indexes'
/// and erasures' tables, which still use `db` directly.
package final class SQLiteJournalStore: JournalStore {
    package let db: SQLiteDatabase

    package init(_ db: SQLiteDatabase) { self.db = db }

    package var place: String { db.path }

    package func close() { db.close() }

    // MARK: Transactions

    package func write<T>(_ body: () throws -> T) throws -> T { try db.transaction(body) }

    package func snapshot<T>(_ body: () throws -> T) throws -> T { try db.reading(body) }

    // MARK: Meta

    package func headSeq() throws -> Int64? {
        try db.scalarInt("SELECT value FROM meta WHERE key='head_seq'")
    }

    package func journalID() throws -> [UInt8] {
        let s = try db.statement("SELECT value FROM meta WHERE key='journal_id'")
        defer { s.reset() }
        guard try s.step() else { throw JournalError(.corrupt, "journal has no id") }
        return s.blob(0)
    }

    package func storedHead() throws -> StoredHead {
        let s = try db.statement("SELECT key, value FROM meta WHERE key IN ('head_seq', 'head_link', 'head_mac', 'instance')")
        defer { s.reset() }
        var head = StoredHead(seq: -1, link: [], mac: [], instance: [])
        while try s.step() {
            switch s.text(0) {
            case "head_seq": head.seq = s.isInteger(1) ? s.int(1) : -1
            case "head_link": head.link = s.blob(1)
            case "head_mac": head.mac = s.blob(1)
            case "instance": head.instance = s.blob(1)
            default: break
            }
        }
        try head.checkShape()
        return head
    }

    package func setHead(seq: Int64, link: [UInt8], mac: [UInt8]) throws {
        let meta = try db.statement("UPDATE meta SET value = ? WHERE key = ?")
        try meta.bind(1, seq).bind(2, "head_seq").run()
        try meta.bind(1, link).bind(2, "head_link").run()
        try setHeadMAC(mac)
    }

    package func setHeadMAC(_ mac: [UInt8]) throws {
        try db.statement("INSERT OR REPLACE INTO meta(key, value) VALUES('head_mac', ?)").bind(1, mac).run()
    }

    package func replaceMeta(_ entries: [(key: String, value: MetaValue)]) throws {
        try db.execute("DELETE FROM meta")
        let insert = try db.statement("INSERT INTO meta(key, value) VALUES(?, ?)")
        for (key, value) in entries {
            insert.bind(1, key)
            switch value {
            case .integer(let n): insert.bind(2, n)
            case .bytes(let b): insert.bind(2, b)
            }
            try insert.run()
        }
    }

    package func metaEntries() throws -> [(key: String, value: MetaValue)] {
        let s = try db.statement("SELECT key, value FROM meta ORDER BY key")
        defer { s.reset() }
        var out: [(key: String, value: MetaValue)] = []
        while try s.step() { out.append((s.text(0) ?? "", s.isInteger(1) ? .integer(s.int(1)) : .bytes(s.blob(1)))) }
        return out
    }

    package func counter(_ counter: JournalCounter) throws -> Int64? {
        let s = try db.statement("SELECT value FROM meta WHERE key = ?")
        defer { s.reset() }
        guard try s.bind(1, counter.rawValue).step(), s.isInteger(0) else { return nil }
        return s.int(0)
    }

    package func setCounter(_ counter: JournalCounter, to value: Int64) throws {
        try db.statement("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)").bind(1, counter.rawValue).bind(2, value).run()
    }

    // MARK: Sealed blocks

    package func blockExtent() throws -> (maxID: Int64, maxLastSeq: Int64)? {
        let s = try db.statement("SELECT max(id), max(last_seq) FROM blocks")
        defer { s.reset() }
        guard try s.step(), !s.isNull(0) else { return nil }
        return (s.int(0), s.int(1))
    }

    package func sealedEventCount() throws -> Int64 {
        try db.scalarInt("SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM blocks") ?? 0
    }

    private static let blockColumns = "id, first_seq, last_seq, frame"

    private func row(_ s: SQLiteStatement) -> StoredBlock {
        StoredBlock(id: s.int(0), first: s.int(1), last: s.int(2), frame: s.blob(3))
    }

    package func lastBlock() throws -> StoredBlock? {
        let s = try db.statement("SELECT \(Self.blockColumns) FROM blocks ORDER BY first_seq DESC LIMIT 1")
        defer { s.reset() }
        return try s.step() ? row(s) : nil
    }

    package func block(startingAtOrBefore seq: Int64) throws -> StoredBlock? {
        let s = try db.statement("SELECT \(Self.blockColumns) FROM blocks WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1")
        defer { s.reset() }
        return try s.bind(1, seq).step() ? row(s) : nil
    }

    package func block(id: Int64) throws -> StoredBlock? {
        let s = try db.statement("SELECT \(Self.blockColumns) FROM blocks WHERE id = ?")
        defer { s.reset() }
        return try s.bind(1, id).step() ? row(s) : nil
    }

    package func blocks(firstSeqIn lower: Int64, _ upper: Int64, limit: Int) throws -> [StoredBlock] {
        let s = try db.statement("SELECT \(Self.blockColumns) FROM blocks WHERE first_seq BETWEEN ? AND ? ORDER BY first_seq LIMIT ?")
        defer { s.reset() }
        s.bind(1, lower).bind(2, upper).bind(3, Int64(limit))
        var out: [StoredBlock] = []
        while try s.step() { out.append(row(s)) }
        return out
    }

    package func insert(blocks: [StoredBlock]) throws {
        let insert = try db.statement("INSERT INTO blocks(id, first_seq, last_seq, frame) VALUES(?, ?, ?, ?)")
        for b in blocks { try insert.bind(1, b.id).bind(2, b.first).bind(3, b.last).bind(4, b.frame).run() }
    }

    package func replaceFrame(ofBlock id: Int64, with frame: [UInt8]) throws -> Bool {
        try db.statement("UPDATE blocks SET frame = ? WHERE id = ?").bind(1, frame).bind(2, id).run()
        return db.changes == 1
    }

    // MARK: The unsealed tail

    package func tailRows(after seq: Int64) throws -> [TailRow] {
        try tailRows(try db.statement("""
            SELECT seq, account, version, type, at, at_digits, event_id, session, counter,
                   key_kind, key_number, key_index, payload, digest, link FROM tail WHERE seq > ? ORDER BY seq
            """).bind(1, seq))
    }

    package func tailRows(account: String) throws -> [TailRow] {
        try tailRows(try db.statement("""
            SELECT seq, account, version, type, at, at_digits, event_id, session, counter,
                   key_kind, key_number, key_index, payload, digest, link FROM tail WHERE account = ? ORDER BY seq
            """).bind(1, account))
    }

    private func tailRows(_ s: SQLiteStatement) throws -> [TailRow] {
        defer { s.reset() }
        func text(_ column: Int32) -> TailRow.Text {
            s.isNull(column) ? .null : s.isText(column) ? .text(s.blob(column)) : .other
        }
        var rows: [TailRow] = []
        while try s.step() {
            rows.append(TailRow(
                seq: s.int(0), account: text(1), version: s.int(2), type: text(3), at: s.int(4), atDigits: s.int(5),
                eventID: text(6), session: s.blob(7), counter: s.int(8), keyKind: s.int(9), keyNumber: s.int(10),
                keyIndex: s.int(11), payload: s.optionalBlob(12), digest: s.optionalBlob(13), link: s.blob(14)))
        }
        return rows
    }

    package func tailLink(seq: Int64) throws -> [UInt8]? {
        let s = try db.statement("SELECT link FROM tail WHERE seq = ?")
        defer { s.reset() }
        return try s.bind(1, seq).step() ? s.blob(0) : nil
    }

    package func tailPayloadBytes() throws -> Int64 {
        try db.scalarInt("SELECT coalesce(sum(length(payload)), 0) FROM tail") ?? 0
    }

    package func appendTail(_ events: [SealedEvent], links: [[UInt8]]) throws {
        let insert = try db.statement("""
            INSERT INTO tail(seq, account, version, type, at, at_digits, event_id, session, counter,
                             key_kind, key_number, key_index, payload, digest, link)
            VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for (e, link) in zip(events, links) {
            insert.bind(1, e.header.seq).bind(2, e.header.account).bind(3, e.header.version).bind(4, e.header.type)
                .bind(5, e.header.at.nanoseconds).bind(6, Int64(e.header.at.fractionDigits)).bind(7, e.header.id)
                .bind(8, e.nonce.session.bytes).bind(9, Int64(e.nonce.counter))
                .bind(10, Int64(e.key.kind.rawValue)).bind(11, Int64(bitPattern: e.key.number)).bind(12, Int64(bitPattern: e.key.index))
            switch e.body {
            case .sealed(let bytes): insert.bind(13, bytes).bind(14, nil as [UInt8]?)
            case .purged(let digest): insert.bind(13, nil as [UInt8]?).bind(14, digest)
            }
            try insert.bind(15, link).run()
        }
    }

    package func clearTail() throws { try db.statement("DELETE FROM tail").run() }

    package func purgeTail(_ digests: [(seq: Int64, digest: [UInt8])]) throws {
        let clear = try db.statement("UPDATE tail SET payload = NULL, digest = ? WHERE seq = ?")
        for (seq, digest) in digests { try clear.bind(1, digest).bind(2, seq).run() }
    }

    // MARK: Accounts

    package func account(named name: String) throws -> AccountRecord? {
        let s = try db.statement("SELECT id, version, last_at, chains FROM accounts WHERE name = ?")
        defer { s.reset() }
        guard try s.bind(1, name).step() else { return nil }
        return AccountRecord(id: s.int(0), version: s.int(1), lastAt: s.int(2), chains: s.optionalBlob(3))
    }

    package func accounts(named names: [String]) throws -> [String: AccountRecord] {
        var out: [String: AccountRecord] = [:]
        try db.inChunks(of: 256, count: names.count, sql: { n in
            "SELECT name, id, version, last_at, chains FROM accounts WHERE name IN (\(SQLiteDatabase.parameters(n)))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(k + 1), names[i]) }
            while try s.step() {
                out[s.text(0) ?? ""] = AccountRecord(id: s.int(1), version: s.int(2), lastAt: s.int(3), chains: s.optionalBlob(4))
            }
        }
        return out
    }

    package func forEachAccount(_ body: (String, AccountRecord) throws -> Void) throws {
        let s = try db.statement("SELECT name, id, version, last_at, chains FROM accounts ORDER BY name")
        defer { s.reset() }
        while try s.step() {
            guard let name = s.text(0) else { throw JournalError(.corrupt, "account table: row \(s.int(1)) has no name") }
            try body(name, AccountRecord(id: s.int(1), version: s.int(2), lastAt: s.int(3), chains: s.optionalBlob(4)))
        }
    }

    package func insert(accounts: [(name: String, row: AccountRecord)]) throws {
        try db.inChunks(of: 128, count: accounts.count, sql: { n in
            "INSERT INTO accounts(id, name, version, last_at, chains) VALUES \(SQLiteDatabase.placeholders(rows: n, columns: 5))"
        }) { s, range in
            for (k, i) in range.enumerated() {
                let p = Int32(5 * k)
                let (name, row) = accounts[i]
                s.bind(p + 1, row.id).bind(p + 2, name).bind(p + 3, row.version).bind(p + 4, row.lastAt).bind(p + 5, row.chains)
            }
            try s.run()
        }
    }

    package func update(accounts: [AccountUpdate]) throws {
        let times = try db.statement("UPDATE accounts SET version = ?2, last_at = ?3 WHERE name = ?1")
        let marks = try db.statement("UPDATE accounts SET version = ?2, last_at = ?3, chains = ?4 WHERE name = ?1")
        for a in accounts {
            let s = a.chains == nil ? times : marks
            s.bind(1, a.name).bind(2, a.version).bind(3, a.lastAt)
            if let chains = a.chains { s.bind(4, chains) }
            try s.run()
            if db.changes != 1 { throw AccountUpdate.missingRow(a.name) }
        }
    }

    // MARK: The event id index

    /// Whether tables exist, where that is settled. A journal of format 4 that no writer has
    /// opened since has no tables of runs and keeps its block postings in `account_blocks`
    /// (readers do not change it); its first writer makes the runs, which stay, and drops
    /// `account_blocks`, which stays gone.
    private var settled: [String: Bool] = [:]

    private func has(_ table: String) throws -> Bool {
        if let known = settled[table] { return known }
        let s = try db.statement("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
        defer { s.reset() }
        let exists = try s.bind(1, table).step() && s.int(0) == 1
        if exists != (table == "account_blocks") { settled[table] = exists }
        return exists
    }

    package func recentIDs(matching ids: [String]) throws -> [(id: String, seq: Int64)] {
        var found: [(id: String, seq: Int64)] = []
        try db.inChunks(of: 256, count: ids.count, sql: { n in
            "SELECT id, seq FROM event_ids WHERE id IN (\(SQLiteDatabase.parameters(n)))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(k + 1), ids[i]) }
            while try s.step() { if let id = s.text(0) { found.append((id, s.int(1))) } }
        }
        return found
    }

    package func recentIDBounds() throws -> (lowest: String, highest: String)? {
        let s = try db.statement("SELECT min(id), max(id) FROM event_ids")
        defer { s.reset() }
        guard try s.step(), let low = s.optionalText(0), let high = s.optionalText(1) else { return nil }
        return (low, high)
    }

    package func addRecentIDs(_ entries: [(id: String, seq: Int64)]) throws {
        try db.inChunks(of: 128, count: entries.count, sql: {
            "INSERT INTO event_ids(id, seq) VALUES \(SQLiteDatabase.placeholders(rows: $0, columns: 2))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(2 * k + 1), entries[i].id).bind(Int32(2 * k + 2), entries[i].seq) }
            try s.run()
        }
    }

    package func forEachRecentID(_ body: (String, Int64) throws -> Void) throws {
        let s = try db.statement("SELECT id, seq FROM event_ids ORDER BY id")
        defer { s.reset() }
        while try s.step() {
            guard let id = s.text(0) else { throw JournalError(.corrupt, "event id index: a row of event_ids has no id") }
            try body(id, s.int(1))
        }
    }

    package func clearRecentIDs() throws { try db.execute("DELETE FROM event_ids") }

    private func chunk(_ sql: String, _ key: String? = nil) throws -> IDChunk? {
        guard try has("event_id_runs") else { return nil }
        let s = try db.statement(sql)
        defer { s.reset() }
        if let key { s.bind(1, key) }
        guard try s.step() else { return nil }
        guard let first = s.text(0) else { throw JournalError(.corrupt, "event id index: a chunk has no key") }
        return IDChunk(first: first, entries: s.blob(1))
    }

    package func idChunk(covering id: String) throws -> IDChunk? {
        try chunk("SELECT first_id, entries FROM event_id_runs WHERE first_id <= ? ORDER BY first_id DESC LIMIT 1", id)
    }

    package func idChunkKey(after first: String) throws -> String? {
        guard try has("event_id_runs") else { return nil }
        let s = try db.statement("SELECT first_id FROM event_id_runs WHERE first_id > ? ORDER BY first_id LIMIT 1")
        defer { s.reset() }
        return try s.bind(1, first).step() ? s.text(0) : nil
    }

    package func firstIDChunk() throws -> IDChunk? {
        try chunk("SELECT first_id, entries FROM event_id_runs ORDER BY first_id LIMIT 1")
    }

    package func lastIDChunk() throws -> IDChunk? {
        try chunk("SELECT first_id, entries FROM event_id_runs ORDER BY first_id DESC LIMIT 1")
    }

    package func forEachIDChunk(_ body: (IDChunk) throws -> Void) throws {
        guard try has("event_id_runs") else { return }
        let s = try db.statement("SELECT first_id, entries FROM event_id_runs ORDER BY first_id")
        defer { s.reset() }
        while try s.step() {
            guard let first = s.text(0) else { throw JournalError(.corrupt, "event id index: a chunk has no key") }
            try body(IDChunk(first: first, entries: s.blob(1)))
        }
    }

    package func deleteIDChunk(first: String) throws {
        try db.statement("DELETE FROM event_id_runs WHERE first_id = ?").bind(1, first).run()
    }

    package func insertIDChunk(_ chunk: IDChunk) throws {
        try db.statement("INSERT INTO event_id_runs(first_id, entries) VALUES(?, ?)").bind(1, chunk.first).bind(2, chunk.entries).run()
    }

    // MARK: The per-account block index

    /// A journal of format 4 keeps its merged postings a row each in `account_blocks`; a reader
    /// reads them there, as recent postings, until a writer upgrades the file.
    private func recentPostingsSQL(_ columns: String, _ condition: String = "", order: String = "") throws -> String {
        let recent = "SELECT \(columns) FROM recent_account_blocks \(condition)"
        guard try has("account_blocks") else { return recent + " " + order }
        return "\(recent) UNION ALL SELECT \(columns) FROM account_blocks \(condition) \(order)"
    }

    package func recentBlocks(ofAccount id: Int64) throws -> [Int64] {
        let s = try db.statement(try recentPostingsSQL("block_id", "WHERE account_id = ?1"))
        defer { s.reset() }
        s.bind(1, id)
        var out: [Int64] = []
        while try s.step() { out.append(s.int(0)) }
        return out
    }

    package func blockRuns(ofAccount id: Int64) throws -> [BlockRun] {
        guard try has("account_block_runs") else { return [] }
        let s = try db.statement("SELECT first_block, blocks FROM account_block_runs WHERE account_id = ? ORDER BY first_block")
        defer { s.reset() }
        s.bind(1, id)
        var out: [BlockRun] = []
        while try s.step() { out.append(BlockRun(account: id, first: s.int(0), blocks: s.blob(1))) }
        return out
    }

    package func lastBlockRuns(ofAccounts accounts: [Int64]) throws -> [Int64: BlockRun] {
        // (One seek each: in one file that costs no more than a statement for them all.)
        let s = try db.statement("SELECT first_block, blocks FROM account_block_runs WHERE account_id = ? ORDER BY first_block DESC LIMIT 1")
        defer { s.reset() }
        var out: [Int64: BlockRun] = [:]
        for id in accounts {
            s.reset()
            if try s.bind(1, id).step() { out[id] = BlockRun(account: id, first: s.int(0), blocks: s.blob(1)) }
        }
        return out
    }

    package func writeBlockRuns(_ runs: [BlockRun], replacing: [Int64: Int64]) throws {
        // (An update in place: a replace would delete the row and insert it again.)
        let update = try db.statement("UPDATE account_block_runs SET blocks = ?3 WHERE account_id = ?1 AND first_block = ?2")
        let insert = try db.statement("INSERT INTO account_block_runs(account_id, first_block, blocks) VALUES(?, ?, ?)")
        for run in runs {
            try (run.first == replacing[run.account] ? update : insert).bind(1, run.account).bind(2, run.first).bind(3, run.blocks).run()
        }
    }

    package func addRecentPostings(_ postings: [(account: Int64, block: Int64)]) throws {
        try db.inChunks(of: 256, count: postings.count, sql: {
            "INSERT INTO recent_account_blocks(account_id, block_id) VALUES \(SQLiteDatabase.placeholders(rows: $0, columns: 2))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(2 * k + 1), postings[i].account).bind(Int32(2 * k + 2), postings[i].block) }
            try s.run()
        }
    }

    package func forEachRecentPosting(_ body: (Int64, Int64) throws -> Void) throws {
        let s = try db.statement(try recentPostingsSQL("account_id, block_id", order: "ORDER BY account_id, block_id"))
        defer { s.reset() }
        while try s.step() { try body(s.int(0), s.int(1)) }
    }

    package func clearRecentPostings() throws { try db.execute("DELETE FROM recent_account_blocks") }

    package func forEachBlockRun(_ body: (BlockRun) throws -> Void) throws {
        guard try has("account_block_runs") else { return }
        let s = try db.statement("SELECT account_id, first_block, blocks FROM account_block_runs")
        defer { s.reset() }
        while try s.step() { try body(BlockRun(account: s.int(0), first: s.int(1), blocks: s.blob(2))) }
    }

    // MARK: Recorded erasures, and the WAL

    package func erasures(kind: Int64?, limit: Int?) throws -> [ErasureRow] {
        let s = try db.statement("""
            SELECT id, account, kind, name, number, through, keeping, mac FROM erasures
            WHERE ?1 IS NULL OR kind = ?1 ORDER BY id LIMIT ?2
            """)
        defer { s.reset() }
        s.bind(1, kind).bind(2, Int64(limit ?? -1))
        var out: [ErasureRow] = []
        while try s.step() {
            out.append(ErasureRow(
                id: s.int(0), account: s.isText(1) ? s.text(1) : nil, kind: s.int(2), name: s.optionalText(3),
                number: s.isNull(4) ? nil : s.int(4), through: s.isNull(5) ? nil : s.int(5), keeping: s.optionalText(6), mac: s.blob(7)))
        }
        return out
    }

    package func recordErasures(_ rows: [ErasureRow]) throws {
        let insert = try db.statement("INSERT INTO erasures(account, kind, name, number, through, keeping, mac) VALUES(?, ?, ?, ?, ?, ?, ?)")
        for r in rows {
            try insert.bind(1, r.account).bind(2, r.kind).bind(3, r.name).bind(4, r.number).bind(5, r.through).bind(6, r.keeping).bind(7, r.mac).run()
        }
    }

    package func deleteErasures(ids: [Int64]) throws {
        let delete = try db.statement("DELETE FROM erasures WHERE id = ?")
        for id in ids { try delete.bind(1, id).run() }
    }

    /// The WAL holds the pages an erasure rewrote until it is truncated; `secure_delete`
    /// overwrites the file's own freed pages.
    package func markResidue() throws { try db.markWALDirty() }

    package func hasResidue() throws -> Bool { try db.isWALDirty() }

    package func clearResidue(wait: Duration) throws -> String? { try db.clearResidue(wait: wait) }

    package func reclaimSpace() throws { try db.execute("PRAGMA incremental_vacuum") }

    private static func tables(_ index: IndexName) -> (recent: String, runs: String) {
        switch index {
        case .eventIDs: ("event_ids", "event_id_runs")
        case .accountBlocks: ("recent_account_blocks", "account_block_runs")
        }
    }

    package func recentRowCount(_ index: IndexName) throws -> Int64 {
        try db.scalarInt("SELECT count(*) FROM \(Self.tables(index).recent)") ?? 0
    }

    package func runRowCount(_ index: IndexName) throws -> Int64 {
        try db.scalarInt("SELECT count(*) FROM \(Self.tables(index).runs)") ?? 0
    }
}
