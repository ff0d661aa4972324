import Foundation
import LetheJournal

/// Where a journal lives on a PostgreSQL server, from a `postgres://` (or `postgresql://`)
/// address: `postgres://USER:PASSWORD@HOST:PORT/DATABASE?schema=SCHEMA`.
///
/// - `HOST` may be left out and given as `?host=/path/to/socket/directory`, as libpq allows: the
///   server is then reached on its Unix socket `DIR/.s.PGSQL.PORT`.
/// - `schema` (default `lethe`) is the schema that holds the journal's tables: one database can
///   hold several journals, a schema each.
/// - The password is never part of a message: `description` leaves it out.
public struct PostgresAddress: Sendable, CustomStringConvertible {
    public var user: String
    var password: String?
    /// The server's host name or address; nil when reached through `socketDirectory`.
    public var host: String?
    public var socketDirectory: String?
    public var port: Int
    public var database: String
    public var schema: String

    /// Whether `text` is meant as a PostgreSQL address (rather than a file name).
    public static func isAddress(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    /// Parses an address; a malformed one is refused with a message that names what is wrong
    /// and never repeats the password.
    public init(_ text: String) throws {
        func bad(_ why: String) -> JournalError {
            JournalError(.storage, "the PostgreSQL address is malformed: \(why) (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        guard PostgresAddress.isAddress(text) else { throw bad("it does not begin with postgres://") }
        guard let url = URLComponents(string: text) else { throw bad("it is not a URL") }
        guard let user = url.user, !user.isEmpty else { throw bad("no user") }
        self.user = user.removingPercentEncoding ?? user
        password = url.password.map { $0.removingPercentEncoding ?? $0 }
        let query = Dictionary((url.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        if let h = url.host, !h.isEmpty {
            host = h
        } else if let dir = query["host"], dir.hasPrefix("/") {
            socketDirectory = dir
        } else {
            throw bad("no host (nor ?host=/socket/directory)")
        }
        port = url.port ?? 5432
        guard (1...65535).contains(port) else { throw bad("port \(port) is out of range") }
        let db = String(url.path.drop { $0 == "/" })
        guard !db.isEmpty, !db.contains("/") else { throw bad("no database name") }
        database = db
        schema = query["schema"] ?? "lethe"
        guard PostgresAddress.isIdentifier(schema) else {
            throw bad("the schema must be 1 to 63 lower-case letters, digits and underscores, beginning with a letter")
        }
        for name in query.keys where !["host", "schema"].contains(name) { throw bad("unknown option \(name)") }
    }

    static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, (0x61...0x7A).contains(first), name.utf8.count <= 63 else { return false }
        return name.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }

    /// The address without its password.
    /// The server and database, as far as the address tells (one server reached by two names
    /// looks like two): what a journal and its key store must not share.
    func databaseIdentity() -> String {
        "\(host ?? socketDirectory ?? ""):\(port)/\(database)"
    }

    public var description: String {
        let server = host.map { "\($0):\(port)" } ?? "(socket in \(socketDirectory ?? ""), port \(port))"
        return "postgres://\(user)@\(server)/\(database)" + (schema == "lethe" ? "" : "?schema=\(schema)")
    }
}
