import CSQLite
import Foundation

// `SQLITE_TRANSIENT` is a macro Swift does not import.
private let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
/// What an empty string is bound from (a null pointer would bind NULL).
nonisolated(unsafe) private let emptyText: UnsafePointer<CChar> = ("" as StaticString).utf8Start.withMemoryRebound(to: CChar.self, capacity: 1) { $0 }

/// An error from SQLite, with the statement that failed and SQLite's own message.
///
/// Bound values are never part of the message, so personal data cannot leak into logs.
package struct SQLiteError: Error, CustomStringConvertible {
    package var code: Int32
    package var message: String
    package var sql: String?

    package var description: String {
        "SQLite error \(code): \(message)" + (sql.map { " (in: \($0.prefix(80)))" } ?? "")
    }
}

/// One SQLite connection. It owns its `sqlite3*` handle and closes it on deinit.
///
/// Not thread-safe by itself: every owner serialises access (the journal holds it under a lock).
package final class SQLiteDatabase {
    package let path: String
    private(set) var handle: OpaquePointer?
    private var cache: [String: SQLiteStatement] = [:]

    /// Opens (and creates, unless `readOnly`) the database at `path`.
    package init(path: String, readOnly: Bool = false) throws {
        self.path = path
        var db: OpaquePointer?
        let flags = readOnly
            ? SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX
            : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: "\(message): \(path)", sql: nil)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, Int32(Self.busyTimeoutMilliseconds))
        _ = lethe_sqlite3_enable_defensive(db)
        // SQLite's temporary files (a statement's journal when it spills, a large sort) stay in
        // memory: on disk they would be copies of journal and key-store pages, account names and
        // wrapped keys, in files of the temporary directory that are unlinked but never
        // overwritten, out of reach of `secure_delete`, of a purge and of crypto-shredding.
        do {
            try execute("PRAGMA temp_store=MEMORY")
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// How long a statement waits for another connection's lock before it answers busy.
    package static let busyTimeoutMilliseconds = 10_000

    /// Switches the file to write-ahead logging.
    ///
    /// When two processes open a new file at once, each may hold the lock the other needs to
    /// change the journal mode; SQLite then answers busy at once instead of calling the busy
    /// handler (waiting would deadlock). One of them always gets through, so the other retries
    /// here, for as long as the busy timeout.
    package func enableWAL() throws {
        let deadline = ContinuousClock.now + .milliseconds(Self.busyTimeoutMilliseconds)
        var pause = 0.001
        while true {
            do {
                return try execute("PRAGMA journal_mode=WAL")
            } catch let e as SQLiteError where e.code & 0xFF == SQLITE_BUSY && ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: pause)
                pause = min(pause * 2, 0.1)
            }
        }
    }

    package func close() {
        cache.removeAll()
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    package func error(_ rc: Int32, sql: String? = nil) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }

    /// Runs one or more statements that take no parameters.
    package func execute(_ sql: String) throws {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc, sql: sql) }
    }

    /// A prepared statement, cached by its text; reset before it is handed out.
    package func statement(_ sql: String) throws -> SQLiteStatement {
        if let cached = cache[sql] {
            cached.reset()
            return cached
        }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, sql: sql) }
        let statement = SQLiteStatement(db: self, stmt: stmt, sql: sql)
        cache[sql] = statement
        return statement
    }

    /// Runs `body` in a read transaction (one snapshot for all its statements, one lock taken),
    /// or in the transaction already open on this connection.
    package func reading<T>(_ body: () throws -> T) throws -> T {
        guard sqlite3_get_autocommit(handle) != 0 else { return try body() }
        try execute("BEGIN")
        defer { resetAll(); try? execute("COMMIT") }
        return try body()
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction: committed if it returns, rolled back if it throws.
    ///
    /// Every cached statement is reset on both sides: a statement left mid-row would keep a read
    /// snapshot open, and a writer whose snapshot is older than another connection's commit
    /// cannot start a write (SQLITE_BUSY_SNAPSHOT).
    package func transaction<T>(_ body: () throws -> T) throws -> T {
        resetAll()
        try execute("BEGIN IMMEDIATE")
        defer { resetAll() }
        do {
            let result = try body()
            resetAll()
            try execute("COMMIT")
            return result
        } catch {
            resetAll()
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// Resets every cached statement left mid-row, ending any read it left open. (Only those: the
    /// cache holds hundreds of multi-row statements, and clearing them all on every transaction
    /// was most of what a single append cost.)
    package func resetAll() {
        for statement in cache.values where statement.isBusy { statement.reset() }
    }

    /// The first column of the first row of a query, as an integer.
    package func scalarInt(_ sql: String) throws -> Int64? {
        let s = try statement(sql)
        defer { s.reset() }
        return try s.step() ? (s.isNull(0) ? nil : s.int(0)) : nil
    }

    package var changes: Int { Int(sqlite3_changes(handle)) }

    /// Runs a statement over `count` rows in chunks of up to `rows`: `sql` makes the statement
    /// for a chunk of a given size (with `placeholders`), and `body` binds and runs it for that
    /// chunk's range. One statement per chunk instead of one per row: SQLite's per-statement
    /// work is paid once for many rows.
    package func inChunks(
        of rows: Int, count: Int, sql: (Int) -> String, _ body: (SQLiteStatement, Range<Int>) throws -> Void
    ) throws {
        var start = 0
        while start < count {
            let end = Swift.min(start + rows, count)
            let s = try statement(sql(end - start))
            try body(s, start..<end)
            s.reset()
            start = end
        }
    }

    /// `(?, ?), (?, ?), …`: `rows` groups of `columns` parameters, numbered in order.
    /// `n` parameters for an `IN (...)` list: `?, ?, ?`.
    package static func parameters(_ n: Int) -> String {
        Array(repeating: "?", count: n).joined(separator: ", ")
    }

    package static func placeholders(rows: Int, columns: Int) -> String {
        let group = "(" + parameters(columns) + ")"
        return Array(repeating: group, count: rows).joined(separator: ", ")
    }

    /// Remembers, in the transaction that removes personal data, that the WAL still holds its old
    /// pages: until `truncateWAL` succeeds, every open and every retention run tries again.
    package func markWALDirty() throws {
        try execute("INSERT OR REPLACE INTO meta(key, value) VALUES('wal_dirty', 1)")
    }

    /// Whether an earlier erasure left the WAL to be truncated.
    package func isWALDirty() throws -> Bool {
        try scalarInt("SELECT count(*) FROM meta WHERE key='wal_dirty'") ?? 0 > 0
    }

    /// `truncateWAL` if an erasure marked the file (`markWALDirty`). Returns nil when nothing is
    /// left to do; otherwise what is left and who holds it (the other processes that have the
    /// file open), for a message.
    package func clearResidue(wait: Duration) throws -> String? {
        guard try isWALDirty(), try !truncateWAL(wait: wait) else { return nil }
        let holders = PrivateFile.holders(of: path)
        return "\(path)-wal still holds purged data (a reader holds an old snapshot\(holders.isEmpty ? "" : ": process " + holders.joined(separator: ", ")))"
    }

    /// Copies the WAL into the database and truncates it to nothing, so no old page survives
    /// there, then clears the mark of `markWALDirty`. A reader holding an older snapshot keeps
    /// the WAL busy: it is waited for up to `wait`. Returns whether the WAL was truncated.
    package func truncateWAL(wait: Duration) throws -> Bool {
        resetAll()
        let deadline = ContinuousClock.now + wait
        defer { sqlite3_busy_timeout(handle, Int32(Self.busyTimeoutMilliseconds)) }
        func checkpoint() throws -> Bool {
            let left = (deadline - ContinuousClock.now).components
            let milliseconds = max(0, Int(left.seconds) * 1000 + Int(left.attoseconds / 1_000_000_000_000_000))
            // The checkpoint waits (through the busy handler) for readers and writers: at most
            // until the deadline.
            sqlite3_busy_timeout(handle, Int32(min(milliseconds, Self.busyTimeoutMilliseconds)))
            let s = try statement("PRAGMA wal_checkpoint(TRUNCATE)")
            defer { s.reset() }
            return try s.step() && s.int(0) == 0
        }
        while true {
            if try checkpoint() { break }
            guard ContinuousClock.now < deadline else { return false }
            Thread.sleep(forTimeInterval: 0.02)
        }
        if try isWALDirty() {
            try execute("DELETE FROM meta WHERE key='wal_dirty'")
            // What that wrote is the mark's page alone; truncated too unless a reader came meanwhile.
            _ = try checkpoint()
        }
        return true
    }

    /// Replaces this database's content with `source`'s, in one step under this database's write
    /// lock (SQLite's online backup): other connections see the old content or the new, never a
    /// mix, and the file itself (with its WAL) stays in place.
    package func replaceContents(from source: SQLiteDatabase) throws {
        resetAll()
        guard let backup = sqlite3_backup_init(handle, "main", source.handle, "main") else {
            throw error(sqlite3_errcode(handle), sql: "backup")
        }
        let step = sqlite3_backup_step(backup, -1)
        let finish = sqlite3_backup_finish(backup)
        guard step == SQLITE_DONE else { throw SQLiteError(code: step, message: String(cString: sqlite3_errstr(step)), sql: "backup") }
        guard finish == SQLITE_OK else { throw error(finish, sql: "backup") }
    }
}

/// A prepared statement. Columns and parameters are 0-based for columns, 1-based for binds (as SQLite).
package final class SQLiteStatement {
    private unowned let db: SQLiteDatabase
    private let stmt: OpaquePointer
    let sql: String

    init(db: SQLiteDatabase, stmt: OpaquePointer, sql: String) {
        self.db = db
        self.stmt = stmt
        self.sql = sql
    }

    deinit { sqlite3_finalize(stmt) }

    package func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    /// Whether the statement was stepped and not reset (it may hold a read open).
    var isBusy: Bool { sqlite3_stmt_busy(stmt) != 0 }

    @discardableResult
    package func bind(_ index: Int32, _ value: Int64) -> SQLiteStatement {
        sqlite3_bind_int64(stmt, index, value)
        return self
    }

    @discardableResult
    package func bind(_ index: Int32, _ value: Int64?) -> SQLiteStatement {
        if let value { sqlite3_bind_int64(stmt, index, value) } else { sqlite3_bind_null(stmt, index) }
        return self
    }

    @discardableResult
    package func bind(_ index: Int32, _ value: String?) -> SQLiteStatement {
        guard var value else {
            sqlite3_bind_null(stmt, index)
            return self
        }
        // With its byte count: a NUL inside the text must not cut it short.
        value.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { chars in
                _ = sqlite3_bind_text(stmt, index, chars.baseAddress ?? emptyText, Int32(chars.count), sqliteTransient)
            }
        }
        return self
    }

    @discardableResult
    package func bind(_ index: Int32, _ value: [UInt8]?) -> SQLiteStatement {
        guard let value else {
            sqlite3_bind_null(stmt, index)
            return self
        }
        value.withUnsafeBytes { raw in
            // A zero-length blob must still be a blob, not NULL.
            _ = sqlite3_bind_blob(stmt, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(raw.count), sqliteTransient)
        }
        return self
    }

    /// Advances to the next row; false when done.
    package func step() throws -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw db.error(rc, sql: sql)
    }

    /// Runs a statement that returns no rows, and resets it: a statement left at its end would
    /// refuse new bindings (SQLITE_MISUSE, silently keeping the old ones).
    package func run() throws {
        defer { reset() }
        while try step() {}
    }

    package func isNull(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_NULL }
    package func isInteger(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_INTEGER }
    package func isBlob(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_BLOB }
    package func isText(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_TEXT }
    /// The size of a text or blob value, without copying it.
    package func byteCount(_ column: Int32) -> Int { Int(sqlite3_column_bytes(stmt, column)) }
    /// A blob column that may be NULL.
    package func optionalBlob(_ column: Int32) -> [UInt8]? { isNull(column) ? nil : blob(column) }
    package var columnCount: Int32 { sqlite3_column_count(stmt) }
    package func columnName(_ column: Int32) -> String { String(cString: sqlite3_column_name(stmt, column)) }
    /// A text column that may be NULL.
    package func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }
    package func int(_ column: Int32) -> Int64 { sqlite3_column_int64(stmt, column) }
    package func text(_ column: Int32) -> String? {
        guard let p = sqlite3_column_text(stmt, column) else { return nil }
        return String(decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(stmt, column))), as: UTF8.self)
    }
    package func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(stmt, column))
        guard count > 0, let p = sqlite3_column_blob(stmt, column) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: p, count: count))
    }
}
