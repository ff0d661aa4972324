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
            // What the literals of a queued statement rely on (the default since PostgreSQL 9.1).
            try connection.execute("SET standard_conforming_strings TO on")
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
            db.batching = true
            defer { db.endBatch() }
            let result = try body()
            try db.flush()
            return result
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

    /// The dead versions of the rows a purge changed: their space made reusable (not overwritten
    /// at once; what they held of personal values is sealed under keys the purge destroyed), once
    /// nothing can still see them.
    func clearResidue(wait: Duration) throws -> String? {
        try connection.clearResidue(wait: wait, vacuum: "VACUUM " + Schema.tables.map(\.name).joined(separator: ", "))
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
///
/// Inside `writing`, statements that return no rows are not sent one by one. They are queued,
/// their values written into them as literals, and sent together as one `DO` block (one round
/// trip, and one statement on the server for a run of inserts), before a query that reads a table
/// they write, before the commit, or when the queue is full; the block runs on the server while
/// the next one is made, and any statement after it waits for its answer:
/// - each table has a queue of its own, kept in order: every statement writes one table, and
///   writes to different tables do not depend on each other (no triggers, no foreign keys);
/// - in a table's queue, inserts of the same statement one after another become one insert of
///   many rows (only inserts that update nothing on a conflict: the rows go in as they would have
///   one by one).
final class PostgresViewDatabase: ViewDatabase {
    let connection: Connection
    private var cache: [String: PostgresViewStatement] = [:]
    /// Inside `reading`: queries go through cursors, a page at a time.
    var scanning = false
    private var cursors = 0
    /// Inside `writing`: statements without rows are queued (`queue`).
    var batching = false

    /// One table's queued statements, each ended by `;` and a newline, and the insert whose list
    /// of rows is still open (its end not written yet).
    private struct TableQueue {
        var text: [UInt8] = []
        var open: PostgresViewStatement?
        var openRows = 0

        mutating func close() {
            guard let open else { return }
            text.append(contentsOf: open.insertEnd)
            text.append(contentsOf: ";\n".utf8)
            self.open = nil
            openRows = 0
        }
    }
    private var queues: [String: TableQueue] = [:]
    private var queuedStatements = 0
    private var queuedBytes = 0
    /// Whether a value in the queue holds a `$` (the block's quote tag must then be checked).
    private var queuedDollar = false

    /// Queued statements (rows of a merged insert count one each) sent at once, at most.
    static let batchStatements = 5_000
    static let batchBytes = 8 << 20

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

    /// Queues `statement`, which writes `table`, with its values written in.
    func queue(_ statement: PostgresViewStatement, writing table: String) throws {
        var queue = queues.removeValue(forKey: table) ?? TableQueue()
        let before = queue.text.count
        let dollar: Bool
        if statement.insertStart != nil, queue.open === statement {
            queue.text.append(contentsOf: ",\n".utf8)
            dollar = statement.inline(into: &queue.text, row: true)
            queue.openRows += 1
        } else {
            queue.close()
            if let start = statement.insertStart {
                queue.text.append(contentsOf: start)
                dollar = statement.inline(into: &queue.text, row: true)
                queue.open = statement
                queue.openRows = 1
            } else {
                dollar = statement.inline(into: &queue.text, row: false)
                queue.text.append(contentsOf: ";\n".utf8)
            }
        }
        queuedBytes += queue.text.count - before
        queuedStatements += 1
        if dollar { queuedDollar = true }
        queues[table] = queue
        if queuedStatements >= Self.batchStatements || queuedBytes >= Self.batchBytes { try flush() }
    }

    /// Sends the queued statements if any of them writes one of `tables`.
    func flush(ifWriting tables: [String]) throws {
        if !queues.isEmpty, tables.contains(where: { queues[$0] != nil }) { try flush() }
    }

    /// Sends the queued statements as one `DO` block.
    func flush() throws {
        guard !queues.isEmpty else { return }
        var text: [UInt8] = []
        text.reserveCapacity(queuedBytes + 64 * queues.count)
        for table in queues.keys.sorted() {
            var queue = queues[table]!
            queue.close()
            text.append(contentsOf: queue.text)
        }
        let body = String(decoding: text, as: UTF8.self)
        let dollar = queuedDollar
        endBatch(keepBatching: true)
        // A dollar-quote tag that the body does not hold: no value can end the block early.
        var tag = "lethe"
        while dollar && body.contains("$\(tag)$") { tag = "lethe" + Hex.encode((0..<8).map { _ in UInt8.random(in: 0...255) }) }
        // Sent without waiting: the server runs it while the next batch is made. The one before
        // it is waited for first, so that at most one is in flight.
        try connection.awaitSent()
        connection.send(PostgresQuery(unsafeSQL: "DO $\(tag)$BEGIN\n\(body)END$\(tag)$"))
    }

    /// The end of a write transaction (committed or not), or of a flush: nothing stays queued.
    func endBatch(keepBatching: Bool = false) {
        batching = keepBatching
        queues.removeAll(keepingCapacity: true)
        queuedStatements = 0
        queuedBytes = 0
        queuedDollar = false
    }
}

/// One statement of the read models' SQL on PostgreSQL: `?N` becomes `$N`; values are bound with
/// their types (a NULL without one: every statement puts its NULLs where a column gives the type);
/// a query's rows are fetched when it is first stepped (in `reading`, a page at a time through a
/// cursor); inside `writing`, a statement without rows is queued with its values written in.
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

    /// The tables the statement names (after FROM, INTO, UPDATE or JOIN).
    private let tables: [String]
    private let returnsRows: Bool

    /// The statement's text between its parameters, and which value goes in each gap
    /// (0-based): what `inline` writes.
    private let pieces: [[UInt8]]
    private let slots: [Int]
    /// For an insert of one row that updates nothing on a conflict: its text up to the row, the
    /// row's template, and the text after it (the queue writes many rows between the two).
    let insertStart: [UInt8]?
    let insertEnd: [UInt8]
    private let rowPieces: [[UInt8]]
    private let rowSlots: [Int]

    init(_ db: PostgresViewDatabase, sql: String) {
        self.db = db
        (pieces, slots) = Self.template(sql)
        // The text the server is sent when the values are bound: each `?N` as `$N`.
        var numbered = pieces[0]
        for (k, slot) in slots.enumerated() { numbered += Array("$\(slot + 1)".utf8) + pieces[k + 1] }
        self.sql = String(decoding: numbered, as: UTF8.self)
        if let (start, row, end) = Self.splitInsert(sql) {
            insertStart = Array(start.utf8)
            insertEnd = Array(end.utf8)
            (rowPieces, rowSlots) = Self.template(row)
        } else {
            (insertStart, insertEnd, rowPieces, rowSlots) = (nil, [], [], [])
        }
        let words = sql.split(whereSeparator: { $0.isWhitespace || $0 == "(" || $0 == "," })
        tables = zip(words, words.dropFirst()).compactMap { w, next in
            ["FROM", "INTO", "UPDATE", "JOIN"].contains(w.uppercased()) ? String(next) : nil
        }
        returnsRows = words.first?.uppercased() == "SELECT"
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

    /// An `INSERT … VALUES(…)` that does nothing or `DO NOTHING` on a conflict, cut around its row.
    static func splitInsert(_ sql: String) -> (String, String, String)? {
        let upper = sql.uppercased()
        guard upper.hasPrefix("INSERT"), !upper.contains("DO UPDATE"), let values = upper.range(of: "VALUES(") else { return nil }
        let open = sql.index(before: values.upperBound)
        var depth = 0
        var quote: Character?
        var index = open
        while index < sql.endIndex {
            let c = sql[index]
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "'" || c == "\"" {
                quote = c
            } else if c == "(" {
                depth += 1
            } else if c == ")" {
                depth -= 1
                if depth == 0 { break }
            }
            index = sql.index(after: index)
        }
        guard index < sql.endIndex else { return nil }
        let close = sql.index(after: index)
        return (String(sql[..<open]), String(sql[open..<close]), String(sql[close...]))
    }

    /// `sql` cut at its parameters (`?N` outside quotes).
    static func template(_ sql: String) -> ([[UInt8]], [Int]) {
        var pieces: [[UInt8]] = [[]], slots: [Int] = []
        var quote: UInt8?
        let bytes = Array(sql.utf8)
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if let q = quote {
                if c == q { quote = nil }
            } else if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                quote = c
            } else if c == UInt8(ascii: "?") {
                var j = i + 1, n = 0
                while j < bytes.count, (48...57).contains(bytes[j]) { n = n * 10 + Int(bytes[j] - 48); j += 1 }
                if j > i + 1 {
                    slots.append(n - 1)
                    pieces.append([])
                    i = j
                    continue
                }
            }
            pieces[pieces.count - 1].append(c)
            i += 1
        }
        return (pieces, slots)
    }

    /// Appends the statement with its values written in as literals (`standard_conforming_strings`:
    /// a quote is doubled, and nothing else is special); returns whether a value held a `$`.
    /// `row`: only the row of an insert (`insertStart`).
    func inline(into out: inout [UInt8], row: Bool) -> Bool {
        let (pieces, slots) = row ? (rowPieces, rowSlots) : (self.pieces, self.slots)
        var dollar = false
        out.append(contentsOf: pieces[0])
        for (k, slot) in slots.enumerated() {
            switch slot >= 0 && slot < values.count ? values[slot] : nil {
            case .int(let v?)?:
                out.append(contentsOf: String(v).utf8)
            case .text(var v?)?:
                out.append(UInt8(ascii: "'"))
                v.withUTF8 { utf8 in
                    for b in utf8 {
                        if b == UInt8(ascii: "'") { out.append(b) }
                        if b == UInt8(ascii: "$") { dollar = true }
                        out.append(b)
                    }
                }
                out.append(UInt8(ascii: "'"))
            case .bytes(let v?)?:
                out.append(contentsOf: "'\\x".utf8)
                Hex.encode(v, into: &out)
                out.append(contentsOf: "'::bytea".utf8)
            default:
                out.append(contentsOf: "NULL".utf8)
            }
            out.append(contentsOf: pieces[k + 1])
        }
        return dollar
    }

    func step() throws -> Bool {
        if !started {
            started = true
            // A query sees what the statements queued before it wrote.
            try db.flush(ifWriting: tables)
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
        if db.batching && !returnsRows {
            try db.queue(self, writing: tables.first ?? "")
        } else {
            try db.flush()
            try db.connection.query(query(sql))
        }
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
        if let value = try? cell.decode(Int64?.self) { return value }  // (NULL: nil, as an error is)
        return (try? cell.decode(String?.self)).flatMap { $0.flatMap { Int64($0) } } ?? 0
    }

    func text(_ column: Int32) -> String? { (try? cells[Int(column)].decode(String?.self)) ?? nil }

    func blob(_ column: Int32) -> [UInt8] { ((try? cells[Int(column)].decode(ByteBuffer?.self)) ?? nil)?.bytes ?? [] }
}
