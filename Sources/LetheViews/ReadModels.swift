import Crypto
import Foundation
import LetheEvents
import LetheJournal
import Logging
import Synchronization

/// The read models of one journal: accounts, items and the trash, billing, tickets, consents,
/// notices, disclosures, legal holds, the staff access log and daily page-view counts, kept in an
/// SQLite file of their own (`JOURNAL.views` by default) and caught up from a stored checkpoint.
///
/// The file is derived data: `rebuild` makes it again from the journal alone, and gives the same
/// rows, byte for byte in `dump`, as catching up in any number of steps. It is bound to its
/// journal's identity; a file made from another journal, an older schema, or a journal that was
/// since replaced by a shorter one (a restore) is rebuilt when it is opened.
///
/// One connection, under a lock: many tasks may read, and catch-up runs one at a time. Several
/// processes may share the file; catch-up commits in chunks under SQLite's write lock, and a
/// process that finds the checkpoint moved by another stops and leaves the rest to it.
public final class ReadModels: Sendable {
    public let path: String
    public let journal: Journal
    private let codec: PayloadCodec
    /// The retention policy: which records expire on their own is part of what is projected.
    public let policy: RetentionPolicy
    private let connection: Mutex<Connection>
    /// The keys personal fields are sealed under (derived from the journal's keys).
    let fieldKeys: FieldKeys

    /// Events applied per transaction during catch-up.
    public let chunkEvents: Int64
    private let logger: Logger

    /// `@unchecked Sendable` is safe: the connection is only ever used under `connection`'s lock.
    final class Connection: @unchecked Sendable {
        var db: SQLiteDatabase
        init(db: SQLiteDatabase) { self.db = db }
    }

    /// Opens (creating it, or emptying it when it cannot be trusted) the read models of
    /// `journal`, at `path` (default `Journal.defaultViewsPath`, which a journal and a key store
    /// both on a server do not have: then `path` is needed); nothing is caught up until `catchUp`
    /// is called.
    public init(
        journal: Journal, path: String? = nil, policy: RetentionPolicy = .standard, codec: PayloadCodec = .standard,
        chunkEvents: Int64 = 50_000, logger: Logger = Logger(label: "lethe.views")
    ) throws {
        precondition(chunkEvents > 0)
        guard let path = path ?? journal.defaultViewsPath else {
            throw JournalError(.storage, "the read models of \(journal.path) need a path: the journal and its key store are both on a server, and there is no file to put them beside")
        }
        self.journal = journal
        self.policy = policy
        self.path = path
        self.codec = codec
        self.chunkEvents = chunkEvents
        self.logger = logger
        let db = try ReadModels.named(path) { () -> SQLiteDatabase in
            let identity = try ReadModels.identity(of: journal, policy: policy)
            let head = try journal.read { try $0.headSeq() }
            let db = try ReadModels.openOrReplace(path, logger: logger)
            if try !ReadModels.isUsable(db, identity: identity, head: head) {
                logger.notice("read models emptied, to be caught up again: made from another journal, schema or records policy, or ahead of the journal", metadata: ["path": "\(path)"])
                try ReadModels.withScratch(path + ".empty") { scratch in
                    try ReadModels.initialize(scratch, identity: identity)
                    try db.replaceContents(from: scratch)
                }
            }
            try ReadModels.initialize(db, identity: identity)
            // A purge whose WAL could not be truncated left a mark: every open tries again.
            if try !db.truncateWALIfMarked(wait: .milliseconds(200)) {
                logger.warning("the read models' WAL still holds purged data: a reader holds an old snapshot", metadata: ["path": "\(path)"])
            }
            return db
        }
        connection = Mutex(Connection(db: db))
        fieldKeys = journal.fieldKeys()
    }

    /// What the rows are made from: the journal's identity, and what of the policy shapes them
    /// (which types' records expire, under which rule).
    private static func identity(of journal: Journal, policy: RetentionPolicy) throws -> String {
        let records = policy.records.map { "\($0.type.rawValue)=\($0.rule)" }.sorted().joined(separator: ",")
        return try journal.read { try $0.identity() } + " " + records
    }

    /// Runs `body`, naming the read models' file in an SQLite error.
    private static func named<T>(_ path: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as SQLiteError {
            throw JournalError(.storage, "the read models \(path): \(e)", underlying: e)
        }
    }

    private func named<T>(_ body: () throws -> T) throws -> T { try ReadModels.named(path, body) }

    /// Opens the file; one that is not an SQLite database (or a damaged one) is derived data that
    /// nobody can be using, so it is removed and made anew.
    private static func openOrReplace(_ path: String, logger: Logger) throws -> SQLiteDatabase {
        do {
            return try open(path)
        } catch let e as SQLiteError where e.code == 26 || e.code & 0xFF == 11 {
            logger.notice("read models replaced: not a database, or damaged", metadata: ["path": "\(path)", "error": "\(e)"])
            remove(path)
            return try open(path)
        }
    }

    /// Opens a read models file; a `scratch` file (private to one rebuild, thrown away after it)
    /// is written without a journal or syncs.
    private static func open(_ path: String, scratch: Bool = false) throws -> SQLiteDatabase {
        try PrivateFile.prepareDatabase(path)
        let db = try SQLiteDatabase(path: path)
        if scratch {
            try db.execute("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
        } else {
            try db.enableWAL()
            try db.execute("PRAGMA synchronous=NORMAL")
        }
        try db.execute("PRAGMA secure_delete=ON; PRAGMA cache_size=-65536")
        return db
    }

    private static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
    }

    /// Runs `body` with a fresh scratch database at `path`, removed afterwards whatever happens.
    private static func withScratch<T>(_ path: String, _ body: (SQLiteDatabase) throws -> T) throws -> T {
        remove(path)
        defer { remove(path) }
        let scratch = try open(path, scratch: true)
        defer { scratch.close() }
        return try body(scratch)
    }

    /// Whether the file is empty, or the current schema for this journal and not ahead of it.
    private static func isUsable(_ db: SQLiteDatabase, identity: String, head: Int64) throws -> Bool {
        guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name='meta'") == 1 else {
            return try db.scalarInt("SELECT count(*) FROM sqlite_master") == 0
        }
        let s = try db.statement("SELECT value FROM meta WHERE key='journal'")
        let owner = try s.step() ? s.text(0) : nil
        s.reset()
        let schema = try db.scalarInt("SELECT value FROM meta WHERE key='schema'")
        let checkpoint = try db.scalarInt("SELECT value FROM meta WHERE key='checkpoint'") ?? 0
        return owner == identity && schema == Schema.version && checkpoint <= head
    }

    /// Creates the tables in an empty file (in one transaction: two processes may race here).
    private static func initialize(_ db: SQLiteDatabase, identity: String) throws {
        try db.transaction {
            guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name='meta'") == 0 else { return }
            try db.execute(Schema.create)
            try db.statement("INSERT INTO meta VALUES('schema', ?1)").bind(1, Schema.version).run()
            try db.statement("INSERT INTO meta VALUES('journal', ?1)").bind(1, identity).run()
            try db.statement("INSERT INTO meta VALUES('checkpoint', 0)").run()
        }
    }

    /// The last journal sequence number applied.
    public var checkpoint: Int64 {
        get throws { try named { try connection.withLock { try ReadModels.checkpoint($0.db) } } }
    }

    private static func checkpoint(_ db: SQLiteDatabase) throws -> Int64 {
        try db.scalarInt("SELECT value FROM meta WHERE key='checkpoint'") ?? 0
    }

    /// Applies every event committed after the checkpoint, in chunks of `chunkEvents`, each chunk
    /// in one transaction with the new checkpoint. Returns how many events this call applied
    /// (another process sharing the file may have applied some of them).
    @discardableResult
    public func catchUp(progress: ((_ done: Int64, _ head: Int64) -> Void)? = nil) throws -> Int64 {
        try named { try connection.withLock { try catchUp($0.db, progress: progress) } }
    }

    private func catchUp(_ db: SQLiteDatabase, progress: ((Int64, Int64) -> Void)?) throws -> Int64 {
        let codec = self.codec
        return try journal.read(authenticated: true) { reader in
            let head = try reader.headSeq()
            var applied: Int64 = 0
            let checkpoint = try ReadModels.checkpoint(db)
            guard checkpoint < head else { return 0 }
            // Nothing acts on what the journal's key did not vouch for: the events to apply must
            // chain up to the authenticated head, which is not behind the key store's anchor.
            try reader.authenticate(after: checkpoint)
            return try fieldKeys.withKeys { keys in try withoutActuallyEscaping(keys) { keys in
            let projector = try Projector(db: db, policy: policy, keys: keys)
            let setCheckpoint = try db.statement("UPDATE meta SET value=?1 WHERE key='checkpoint'")
            while true {
                // Under the write lock: where this file stands now (another process may have moved it).
                let done: Bool = try db.transaction {
                    let from = try ReadModels.checkpoint(db)
                    guard from < head else { return true }
                    let through = min(head, from + chunkEvents)
                    try reader.events(from: from + 1, through: through, transform: { try ProjectedEvent($0, codec: codec) }) { event in
                        try projector.apply(event)
                    }
                    try setCheckpoint.bind(1, through).run()
                    // A purge applied here leaves old pages in the WAL until it is truncated.
                    if projector.forget() { try db.markWALDirty() }
                    applied += through - from
                    logger.trace("read models caught up", metadata: ["checkpoint": "\(through)", "head": "\(head)"])
                    progress?(through, head)
                    return false
                }
                if done { break }
            }
            return applied
            } }
        }
    }

    /// Makes the read models again from the journal alone: in a scratch file first, which then
    /// replaces the content of this one in a single step (SQLite's online backup), so readers in
    /// any process see the old models or the new ones. A failed rebuild changes nothing.
    @discardableResult
    public func rebuild(progress: ((_ done: Int64, _ head: Int64) -> Void)? = nil) throws -> Int64 {
        try named {
            try connection.withLock { connection in
                let identity = try ReadModels.identity(of: journal, policy: policy)
                return try ReadModels.withScratch(path + ".rebuild") { scratch in
                    try ReadModels.initialize(scratch, identity: identity)
                    let applied = try catchUp(scratch, progress: progress)
                    try connection.db.replaceContents(from: scratch)
                    _ = try connection.db.truncateWAL(wait: .seconds(10))
                    return applied
                }
            }
        }
    }

    // MARK: Canonical dump

    /// Every row of every table, in key order, as NDJSON lines `{"table":…,"row":{…}}`, preceded by
    /// the checkpoint: two read models are the same exactly when their dumps are.
    public func dump(_ write: ([UInt8]) throws -> Void) throws {
        try named { try connection.withLock { connection in
            let db = connection.db
            try db.execute("BEGIN")
            defer { db.resetAll(); try? db.execute("COMMIT") }
            var w = JSONWriter()
            w.write(JSONValue.object(["checkpoint": .int(try ReadModels.checkpoint(db))]))
            w.bytes.append(0x0A)
            try write(w.bytes)
            for (table, key) in Schema.tables {
                let s = try db.statement("SELECT * FROM \(table) ORDER BY \(key)")
                let columns = (0..<s.columnCount).map { s.columnName($0) }
                while try s.step() {
                    var row = JSONObject()
                    for (c, name) in columns.enumerated() {
                        let c = Int32(c)
                        let value: JSONValue = s.isNull(c) ? .null : s.isInteger(c) ? .int(s.int(c))
                            : s.isBlob(c) ? .string(Hex.encode(s.blob(c))) : .string(s.text(c) ?? "")
                        row.fields.append(.init(key: name, value: value))
                    }
                    var line = JSONWriter()
                    line.write(JSONValue.object(["table": .string(table), "row": .object(row)]))
                    line.bytes.append(0x0A)
                    try write(line.bytes)
                }
                s.reset()
            }
        } }
    }

    /// Where a purge left the WAL to be truncated, copies it into the file and truncates it,
    /// waiting up to `wait` for readers that hold an old snapshot: after a purge, no old page of
    /// the read models survives in the WAL (and what the freed pages of the file held was sealed
    /// under keys the purge destroyed, and zeroed by `secure_delete`). Returns whether nothing is
    /// left to do; until then, the next open or run tries again.
    public func truncateWALIfMarked(wait: Duration = .seconds(10)) throws -> Bool {
        try named { try connection.withLock { try $0.db.truncateWALIfMarked(wait: wait) } }
    }

    /// How many rows each table holds, in `dump`'s order.
    public func rowCounts() throws -> [(table: String, rows: Int64)] {
        try query { db in try Schema.tables.map { ($0.name, try db.scalarInt("SELECT count(*) FROM \($0.name)") ?? 0) } }
    }

    /// SHA-256 of `dump`, in hex.
    public func digest() throws -> String {
        var hash = SHA256()
        try dump { hash.update(data: $0) }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    // MARK: Queries

    /// Runs `body` on the read models' connection, inside one read transaction.
    func query<T>(_ body: (SQLiteDatabase) throws -> T) throws -> T {
        try named {
            try connection.withLock { connection in
                let db = connection.db
                try db.execute("BEGIN")
                defer { db.resetAll(); try? db.execute("COMMIT") }
                return try body(db)
            }
        }
    }
}
