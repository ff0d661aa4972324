import LetheJournal
import Logging

/// A statement of the read models' SQL, as both backends run it: parameters numbered `?1`, `?2`
/// (bound 1-based), columns read 0-based, one row at a time. `SQLiteStatement` is one; the
/// PostgreSQL store has its own.
package protocol ViewStatement: AnyObject {
    @discardableResult func bind(_ index: Int32, _ value: Int64?) -> Self
    @discardableResult func bind(_ index: Int32, _ value: String?) -> Self
    @discardableResult func bind(_ index: Int32, _ value: [UInt8]?) -> Self
    /// Advances to the next row; false when done.
    func step() throws -> Bool
    /// Runs a statement that returns no rows, and resets it.
    func run() throws
    /// Ends the rows and clears the bindings.
    func reset()
    var columnCount: Int32 { get }
    func columnName(_ column: Int32) -> String
    func isNull(_ column: Int32) -> Bool
    /// Whether the value is an integer (the dump writes it as a number).
    func isInteger(_ column: Int32) -> Bool
    /// Whether the value is a blob (the dump writes it in hex).
    func isBlob(_ column: Int32) -> Bool
    func int(_ column: Int32) -> Int64
    func text(_ column: Int32) -> String?
    func blob(_ column: Int32) -> [UInt8]
}

extension ViewStatement {
    /// A text column that may be NULL.
    func optionalText(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }
    /// A blob column that may be NULL.
    func optionalBlob(_ column: Int32) -> [UInt8]? { isNull(column) ? nil : blob(column) }
}

/// The statements of one connection to the read models' tables (cached by their text).
package protocol ViewDatabase: AnyObject {
    func prepare(_ sql: String) throws -> any ViewStatement
}

extension ViewDatabase {
    /// The first column of the first row of a query, as an integer.
    func scalarInt(_ sql: String) throws -> Int64? {
        let s = try prepare(sql)
        defer { s.reset() }
        return try s.step() ? (s.isNull(0) ? nil : s.int(0)) : nil
    }
}

extension SQLiteStatement: ViewStatement {}

extension SQLiteDatabase: ViewDatabase {
    package func prepare(_ sql: String) throws -> any ViewStatement { try statement(sql) }
}

/// One connection to where a journal's read models are kept, and what differs between the
/// places they can be kept in: making the tables, who may project (one writer at a time, across
/// processes and hosts), reading in one snapshot, replacing every row in one step, and clearing
/// what a purge leaves behind in the store's own files. The projector, the queries and the dump
/// are the same SQL on every store.
///
/// Used by one owner at a time (`ReadModels`, under its lock).
package protocol ViewConnection: AnyObject {
    var database: any ViewDatabase { get }

    /// Makes the tables for read models made from `identity` where there are none, and empties
    /// (and makes again) those that cannot be trusted: made from another journal, schema or
    /// policy, or ahead of the journal's `head` (a restore made it shorter). Returns whether it
    /// emptied them. Safe when several processes open the same store at once.
    func prepare(identity: String, head: Int64) throws -> Bool

    /// `body` in one write transaction, while no other connection to this store writes.
    func writing<T>(_ body: () throws -> T) throws -> T

    /// `body` in one read transaction: every statement sees the same snapshot.
    func reading<T>(_ body: () throws -> T) throws -> T

    /// The last journal sequence number applied (inside `writing` or `reading`, or alone).
    func checkpoint() throws -> Int64

    /// Sets the checkpoint (inside `writing`).
    func setCheckpoint(_ seq: Int64) throws

    /// Notes, inside `writing`, that the transaction removed personal data: `clearResidue` then
    /// has something to do, in this process or the next to open the store.
    func markResidue() throws

    /// Removes what removed rows left in the store's own files (an SQLite WAL, a PostgreSQL
    /// table's dead row versions), waiting up to `wait` for readers holding an old snapshot.
    /// Returns nil when nothing is left to do; otherwise what is left and who holds it, for a message.
    func clearResidue(wait: Duration) throws -> String?

    /// `body` with a new, empty store of the same kind, private to this call and removed after it.
    func withScratch<T>(_ body: (any ViewConnection) throws -> T) throws -> T

    /// Replaces every row with `scratch`'s, in one step: readers see the old rows or the new.
    func replaceContents(from scratch: any ViewConnection) throws

    func close()
}

/// Where a journal's read models are kept: an SQLite file (`file`), or, with `LethePostgres`, a
/// schema in a PostgreSQL database, shared by every instance of the service.
public struct ViewsPlace: Sendable, CustomStringConvertible {
    /// The file's path, or the server's address without the password.
    public let description: String
    package let connect: @Sendable (Logger) throws -> any ViewConnection

    package init(description: String, connect: @escaping @Sendable (Logger) throws -> any ViewConnection) {
        self.description = description
        self.connect = connect
    }

    /// An SQLite file at `path`.
    public static func file(_ path: String) -> ViewsPlace {
        ViewsPlace(description: path) { logger in try SQLiteViewConnection(path: path, logger: logger) }
    }
}

/// A journal backend that keeps its journal's read models itself unless told otherwise (a
/// PostgreSQL database: every instance then shares them).
package protocol ViewsHosting {
    var defaultViews: ViewsPlace { get }
}
