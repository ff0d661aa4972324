import Foundation
import LetheJournal
import Logging
import Synchronization

/// Read models in an SQLite file of their own (`JOURNAL.views` by default). Several processes may
/// share the file: catch-up writes under SQLite's write lock, readers read a snapshot, a rebuild
/// replaces the content with SQLite's online backup. A purge's old pages are zeroed in the file
/// (`secure_delete`) and its WAL is truncated.
final class SQLiteViewConnection: ViewConnection {
    let path: String
    private let db: SQLiteDatabase
    private let logger: Logger

    var database: any ViewDatabase { db }

    /// Opens the file; one that is not an SQLite database (or a damaged one) is derived data that
    /// nobody can be using, so it is removed and made anew. A `scratch` file (private to one
    /// rebuild, thrown away after it) is written without a journal or syncs.
    init(path: String, logger: Logger, scratch: Bool = false) throws {
        self.path = path
        self.logger = logger
        do {
            db = try Self.open(path, scratch: scratch)
        } catch let e as SQLiteError where e.code == 26 || e.code & 0xFF == 11 {
            logger.notice("read models replaced: not a database, or damaged", metadata: ["path": "\(path)", "error": "\(e)"])
            Self.remove(path)
            db = try Self.open(path, scratch: scratch)
        }
    }

    private static func open(_ path: String, scratch: Bool) throws -> SQLiteDatabase {
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

    private static let scratches = Atomic<Int>(0)

    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
    }

    func close() { db.close() }

    func prepare(identity: String, head: Int64) throws -> Bool {
        var emptied = false
        if try !isUsable(identity: identity, head: head) {
            try withScratch { scratch in
                _ = try scratch.prepare(identity: identity, head: head)
                try replaceContents(from: scratch)
            }
            emptied = true
        }
        try initialize(identity: identity)
        // A purge whose WAL could not be truncated left a mark: every open tries again.
        if let left = try db.clearResidue(wait: .milliseconds(200)) {
            logger.warning("\(left)")
        }
        return emptied
    }

    /// Whether the file is empty, or the current schema for this journal and not ahead of it.
    private func isUsable(identity: String, head: Int64) throws -> Bool {
        guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name='meta'") == 1 else {
            return try db.scalarInt("SELECT count(*) FROM sqlite_master") == 0
        }
        let s = try db.statement("SELECT value FROM meta WHERE key='journal'")
        let owner = try s.step() ? s.text(0) : nil
        s.reset()
        let schema = try db.scalarInt("SELECT value FROM meta WHERE key='schema'")
        let checkpoint = try checkpoint()
        return owner == identity && schema == Schema.version && checkpoint <= head
    }

    /// Creates the tables in an empty file (in one transaction: two processes may race here).
    private func initialize(identity: String) throws {
        try db.transaction {
            guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name='meta'") == 0 else { return }
            try db.execute(Schema.create(for: .sqlite))
            try db.statement("INSERT INTO meta VALUES('schema', ?1)").bind(1, Schema.version).run()
            try db.statement("INSERT INTO meta VALUES('journal', ?1)").bind(1, identity).run()
            try db.statement("INSERT INTO meta VALUES('checkpoint', 0)").run()
        }
    }

    func writing<T>(_ body: () throws -> T) throws -> T { try db.transaction(body) }

    func reading<T>(_ body: () throws -> T) throws -> T { try db.reading(body) }

    func checkpoint() throws -> Int64 {
        try db.scalarInt("SELECT value FROM meta WHERE key='checkpoint'") ?? 0
    }

    func setCheckpoint(_ seq: Int64) throws {
        try db.statement("UPDATE meta SET value=?1 WHERE key='checkpoint'").bind(1, seq).run()
    }

    func markResidue() throws { try db.markWALDirty() }

    func clearResidue(wait: Duration) throws -> String? { try db.clearResidue(wait: wait) }


    func withScratch<T>(_ body: (any ViewConnection) throws -> T) throws -> T {
        // Of this process and call: a rebuild and a check may run at once, in one process or two.
        let scratchPath = path + ".scratch-\(getpid())-\(Self.scratches.add(1, ordering: .relaxed).newValue)"
        Self.remove(scratchPath)
        defer { Self.remove(scratchPath) }
        let scratch = try SQLiteViewConnection(path: scratchPath, logger: logger, scratch: true)
        defer { scratch.close() }
        return try body(scratch)
    }

    func replaceContents(from scratch: any ViewConnection) throws {
        guard let scratch = scratch as? SQLiteViewConnection else { preconditionFailure("a scratch of another kind of store") }
        try db.replaceContents(from: scratch.db)
        // What the old content held is in the WAL now: gone once it is truncated.
        _ = try db.truncateWAL(wait: .seconds(10))
    }
}
