import Foundation
import LetheJournal
import LetheViews
import Logging
import NIOCore
import PostgresNIO

extension ViewsPlace {
    /// Read models in a schema of a PostgreSQL database (`address.schema`), shared by every
    /// instance that opens them: one projects at a time, all read.
    public static func postgres(_ address: PostgresAddress) -> ViewsPlace {
        ViewsPlace(description: address.description) { logger in try PostgresViewConnection(address, logger: logger) }
    }
}

extension PostgresBackend: ViewsHosting {
    /// A journal in PostgreSQL keeps its read models beside it, in the schema `SCHEMA_views` of
    /// its database, where every instance finds them.
    package var defaultViews: ViewsPlace {
        var views = address
        views.schema = address.schema + "_views"
        return .postgres(views)
    }
}

/// Read models in a schema of a PostgreSQL database: the same tables as in a file
/// (`Schema.create(for: .postgres)`), texts compared byte by byte.
///
/// - Catch-up: every chunk's transaction first takes the schema's advisory lock, then reads the
///   checkpoint: instances project one at a time, each from where the last left off.
/// - Readers read one `REPEATABLE READ` snapshot, through cursors, so a long result (the whole
///   access log) is read a page at a time.
/// - A rebuild projects into a scratch schema, then, in one transaction under the lock, drops the
///   old schema and gives the scratch its name: readers see the old rows or the new.
/// - A purge's old row versions stay in the tables' files until a `VACUUM`, which `clearResidue`
///   runs; the personal values in them are sealed under keys the purge destroyed.
final class PostgresViewConnection: ViewConnection {
    let address: PostgresAddress
    private let connection: Connection
    private let db: PostgresViewDatabase
    private let logger: Logger

    var database: any ViewDatabase { db }
    private var schema: String { address.schema }

    init(_ address: PostgresAddress, logger: Logger) throws {
        guard PostgresAddress.isIdentifier(address.schema) else {
            throw JournalError(.storage, "the read models at \(address): \(address.schema) is not a schema name this build makes (at most 63 lowercase letters, digits and _)")
        }
        self.address = address
        self.logger = logger
        connection = try Connection(address, logger: logger)
        db = PostgresViewDatabase(connection)
        do {
            try connection.execute("SET search_path TO \(address.schema)")
            // Derived data: a commit lost in a crash is projected again from the checkpoint.
            try connection.execute("SET synchronous_commit TO off")
        } catch {
            connection.close()
            throw error
        }
    }

    func close() { connection.close() }

    private var lock: String { "SELECT pg_advisory_xact_lock(\(Int64(bitPattern: journalHash(schema: schema, "read models"))))" }

    func prepare(identity: String, head: Int64) throws -> Bool {
        try connection.transaction {
            try connection.execute(lock)
            try connection.execute("CREATE SCHEMA IF NOT EXISTS \(schema)")
            let meta = try connection.query(PostgresQuery(unsafeSQL: "SELECT to_regclass($1)::text", binds: binds("\(schema).meta")))
            var emptied = false
            if try meta.first?.column(String?.self, "meta") != nil {
                guard try !isUsable(identity: identity, head: head) else { return false }
                emptied = true
            }
            // None, or not to be trusted: the schema is made anew (a half-made one included).
            try connection.execute("DROP SCHEMA \(schema) CASCADE")
            try connection.execute("CREATE SCHEMA \(schema)")
            for statement in Schema.create(for: .postgres).split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                try connection.execute(String(statement))
            }
            try connection.query(PostgresQuery(unsafeSQL: "INSERT INTO meta VALUES('schema', $1), ('journal', $2), ('checkpoint', '0')",
                                               binds: binds(String(Schema.version), identity)))
            return emptied
        }
    }

    private func isUsable(identity: String, head: Int64) throws -> Bool {
        var values: [String: String] = [:]
        for row in try connection.query("SELECT key, value FROM meta") {
            let (key, value) = try row.columns((String, String?).self, "meta")
            values[key] = value
        }
        return values["journal"] == identity && values["schema"] == String(Schema.version)
            && (values["checkpoint"].flatMap { Int64($0) } ?? .max) <= head
    }

    func writing<T>(_ body: () throws -> T) throws -> T {
        try connection.transaction {
            try connection.execute(lock)
            return try body()
        }
    }

    func reading<T>(_ body: () throws -> T) throws -> T {
        try connection.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") {
            db.scanning = true
            defer { db.endScans() }
            return try body()
        }
    }

    func checkpoint() throws -> Int64 {
        let rows = try connection.query("SELECT value FROM meta WHERE key='checkpoint'")
        guard let text = try rows.first?.column(String?.self, "meta"), let seq = Int64(text) else {
            throw JournalError(.corrupt, "the read models at \(address): no checkpoint in meta (edited?; `lethe rebuild` makes them again)")
        }
        return seq
    }

    func setCheckpoint(_ seq: Int64) throws {
        try connection.query(PostgresQuery(unsafeSQL: "UPDATE meta SET value=$1 WHERE key='checkpoint'", binds: binds(String(seq))))
    }

    func markResidue() throws {
        try connection.execute("INSERT INTO meta VALUES('residue', '1') ON CONFLICT DO NOTHING")
    }

    func clearResidue(wait: Duration) throws -> Bool {
        guard try !connection.query("SELECT 1 FROM meta WHERE key='residue'").isEmpty else { return true }
        // The dead versions of the rows a purge changed, removed from every table's pages.
        try connection.execute("VACUUM " + Schema.tables.map(\.name).joined(separator: ", "))
        try connection.execute("DELETE FROM meta WHERE key='residue'")
        return true
    }

    func describeResidue() -> String {
        "the read models at \(address) still hold dead row versions of purged data (until a VACUUM)"
    }

    func withScratch<T>(_ body: (any ViewConnection) throws -> T) throws -> T {
        var scratchAddress = address
        // Of this call alone: instances may rebuild or check at once.
        let tag = Hex.encode((0..<4).map { _ in UInt8.random(in: 0...255) })
        scratchAddress.schema = PostgresAddress.isIdentifier(schema + "_s" + tag) ? schema + "_s" + tag : "lethe_scratch_" + tag
        try connection.execute("CREATE SCHEMA \(scratchAddress.schema)")
        defer { try? connection.execute("DROP SCHEMA IF EXISTS \(scratchAddress.schema) CASCADE") }
        let scratch = try PostgresViewConnection(scratchAddress, logger: logger)
        defer { scratch.close() }
        return try body(scratch)
    }

    func replaceContents(from scratch: any ViewConnection) throws {
        guard let scratch = scratch as? PostgresViewConnection else { preconditionFailure("a scratch of another kind of store") }
        try connection.transaction {
            try connection.execute(lock)
            try connection.execute("DROP SCHEMA \(schema) CASCADE")
            try connection.execute("ALTER SCHEMA \(scratch.schema) RENAME TO \(schema)")
        }
    }
}

/// The statements of one connection to read models in PostgreSQL, cached by their text.
final class PostgresViewDatabase: ViewDatabase {
    let connection: Connection
    private var cache: [String: PostgresViewStatement] = [:]
    /// Inside `reading`: queries go through cursors, a page at a time.
    var scanning = false
    private var cursors = 0

    init(_ connection: Connection) { self.connection = connection }

    func prepare(_ sql: String) throws -> any ViewStatement {
        if let cached = cache[sql] {
            cached.reset()
            return cached
        }
        let statement = PostgresViewStatement(self, sql: sql)
        cache[sql] = statement
        return statement
    }

    func nextCursor() -> String {
        cursors += 1
        return "lethe_c\(cursors)"
    }

    /// The end of a read transaction: its cursors are gone with it.
    func endScans() {
        scanning = false
        for statement in cache.values { statement.forgetCursor() }
    }
}

/// One statement of the read models' SQL on PostgreSQL: `?N` becomes `$N`; values are bound with
/// their types (a NULL's too, where the server could not tell); a query's rows are fetched when
/// it is first stepped (in `reading`, a page at a time through a cursor).
final class PostgresViewStatement: ViewStatement {
    private unowned let db: PostgresViewDatabase
    private let sql: String
    private enum Value { case int(Int64?), text(String?), bytes([UInt8]?) }
    private var values: [Value?] = []
    private var rows: [PostgresRow] = []
    private var next = 0
    private var cells: [PostgresCell] = []
    private var started = false
    private var cursor: String?
    private var exhausted = false

    /// Rows fetched per page of a cursor.
    static let page = 2_000

    init(_ db: PostgresViewDatabase, sql: String) {
        self.db = db
        self.sql = Self.numbered(sql)
    }

    /// `?N` as `$N`, outside quotes.
    static func numbered(_ sql: String) -> String {
        var out = ""
        var quote: Character?
        for c in sql {
            if let q = quote {
                if c == q { quote = nil }
                out.append(c)
            } else if c == "'" || c == "\"" {
                quote = c
                out.append(c)
            } else {
                out.append(c == "?" ? "$" : c)
            }
        }
        return out
    }

    private func set(_ index: Int32, _ value: Value) {
        let i = Int(index) - 1
        if values.count <= i { values.append(contentsOf: repeatElement(nil, count: i + 1 - values.count)) }
        values[i] = value
    }

    @discardableResult func bind(_ index: Int32, _ value: Int64?) -> Self { set(index, .int(value)); return self }
    @discardableResult func bind(_ index: Int32, _ value: String?) -> Self { set(index, .text(value)); return self }
    @discardableResult func bind(_ index: Int32, _ value: [UInt8]?) -> Self { set(index, .bytes(value)); return self }

    private func query(_ sql: String) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: values.count)
        for value in values {
            switch value {
            case .int(let v)?: bindings.append(v)
            case .text(let v)?: bindings.append(v)
            case .bytes(let v)?: bindings.append(v.map { ByteBuffer(bytes: $0) })
            case nil: bindings.appendNull()
            }
        }
        return PostgresQuery(unsafeSQL: sql, binds: bindings)
    }

    func step() throws -> Bool {
        if !started {
            started = true
            if db.scanning {
                let name = db.nextCursor()
                try db.connection.query(query("DECLARE \(name) NO SCROLL CURSOR FOR " + sql))
                cursor = name
            } else {
                rows = try db.connection.query(query(sql))
                exhausted = true
            }
        }
        if next == rows.count, let cursor, !exhausted {
            rows = try db.connection.query(PostgresQuery(unsafeSQL: "FETCH \(Self.page) FROM \(cursor)"))
            next = 0
            exhausted = rows.count < Self.page
        }
        guard next < rows.count else { return false }
        cells = Array(rows[next])
        next += 1
        return true
    }

    func run() throws {
        defer { reset() }
        try db.connection.query(query(sql))
    }

    func reset() {
        if let cursor, db.scanning, db.connection.inTransaction {
            _ = try? db.connection.query(PostgresQuery(unsafeSQL: "CLOSE \(cursor)"))
        }
        cursor = nil
        values.removeAll(keepingCapacity: true)
        rows = []
        cells = []
        next = 0
        started = false
        exhausted = false
    }

    /// The transaction ended, and the cursor with it.
    func forgetCursor() {
        guard cursor != nil else { return }
        cursor = nil
        reset()
    }

    var columnCount: Int32 { Int32(cells.count) }
    func columnName(_ column: Int32) -> String { cells[Int(column)].columnName }
    func isNull(_ column: Int32) -> Bool { cells[Int(column)].bytes == nil }

    func isInteger(_ column: Int32) -> Bool {
        let type = cells[Int(column)].dataType
        return type == .int8 || type == .int4 || type == .int2
    }

    func isBlob(_ column: Int32) -> Bool { cells[Int(column)].dataType == .bytea }

    func int(_ column: Int32) -> Int64 {
        let cell = cells[Int(column)]
        if let value = try? cell.decode(Int64?.self) { return value ?? 0 }
        return (try? cell.decode(String?.self)).flatMap { $0.flatMap { Int64($0) } } ?? 0
    }

    func text(_ column: Int32) -> String? { (try? cells[Int(column)].decode(String?.self)) ?? nil }

    func blob(_ column: Int32) -> [UInt8] { ((try? cells[Int(column)].decode(ByteBuffer?.self)) ?? nil)?.bytes ?? [] }
}
