import Foundation
@testable import LetheJournal
@testable import LethePostgres
import LetheViews
import Logging
import PostgresNIO
import Testing

/// The backends a journal can live on. The PostgreSQL one is the server `Tools/test.sh` starts
/// (`Tools/pg.sh`), whose address it passes in `LETHE_TEST_POSTGRES`; each test gets a schema
/// of its own, dropped at its end.
enum TestBackend: String, CaseIterable, CustomStringConvertible, Sendable {
    case sqlite
    case postgres

    var description: String { rawValue }

    /// The test server's address; a test on PostgreSQL fails without it (run `Tools/test.sh`).
    static func serverURL() throws -> String {
        let url = try #require(ProcessInfo.processInfo.environment["LETHE_TEST_POSTGRES"], "LETHE_TEST_POSTGRES is not set: Tools/test.sh starts a server and sets it")
        // (Empty, the address would be taken for a file named "?schema=…" in the working directory.)
        try #require(PostgresAddress.isAddress(url), "LETHE_TEST_POSTGRES is not a postgres:// address")
        return url
    }
}

/// Where one test's journal lives: a file in `dir` (its key store a file beside it), or a schema
/// of its own on the test server (its key store a schema of the same name in the server's key
/// database, its read models in the journal's database: the whole service on one server).
final class TestPlace {
    let backend: TestBackend
    let dir: TempDir
    let schema: String
    let url: String?

    init(_ backend: TestBackend) throws {
        self.backend = backend
        dir = try TempDir()
        schema = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        url = backend == .postgres ? try TestBackend.serverURL() + "?schema=" + schema : nil
    }

    deinit {
        // The journal's schema, its read models' (`_views`, and any a test named), and the key store's.
        for place in [url, keysURL] {
            guard let place, let address = try? PostgresAddress(place), let connection = try? Connection(address) else { continue }
            let schemas = (try? connection.query(PostgresQuery(unsafeSQL: "SELECT nspname FROM pg_namespace WHERE nspname LIKE '\(schema)%'"))) ?? []
            for row in schemas {
                guard let name = try? row.decode(String.self) else { continue }
                try? connection.execute("DROP SCHEMA IF EXISTS \(name) CASCADE")
            }
        }
    }

    /// A key store file (the journal's on SQLite; one a test on PostgreSQL may ask for).
    var keysPath: String { dir.path("j.keys") }

    /// The key store's database for a journal on the server.
    var keysURL: String? { url == nil ? nil : (try? TestKeys.serverURL()).map { $0 + "?schema=" + schema } }

    /// What the command line's `--keys` takes: the file's path, or the key database's address.
    var keysArgument: String { keysURL ?? keysPath }

    var keyStore: any KeyStoreBackend {
        get throws {
            guard let keysURL else { return SQLiteKeyBackend(path: keysPath) }
            return PostgresKeyBackend(try PostgresAddress(keysURL))
        }
    }

    /// `--views` for the read models where they are by default: none.
    var viewsArguments: [String] { [] }

    /// What the command line's `--journal` takes: the file's path or the server's address.
    var journalArgument: String { url ?? dir.path("j.lethe") }

    /// The read models' file, beside the journal's; nil for a journal on the server, whose read
    /// models are in its database (`SCHEMA_views`).
    var viewsPath: String? { backend == .sqlite ? dir.path("j.lethe.views") : nil }

    /// Where the read models are by default: the file beside the journal's, or its schema's `_views`.
    var defaultViews: ViewsPlace {
        get throws { try url == nil ? .file(viewsPath!) : views("views") }
    }

    /// Edits the default read models behind the engine's back: the file with `sqlite3`, or the
    /// schema on the server with a connection of the test's own.
    func tamperWithViews(_ sql: String) throws {
        guard let url else { return try LetheTests.tamper(viewsPath!, sql) }
        var address = try PostgresAddress(url)
        address.schema = schema + "_views"
        let connection = try Connection(address)
        defer { connection.close() }
        try connection.execute("SET search_path TO \(address.schema)")
        try connection.execute(sql)
    }

    /// The schemas of this test on the server (its journal's, its read models', its scratches).
    func schemas() throws -> [String] {
        guard let url else { return [] }
        let connection = try Connection(try PostgresAddress(url))
        defer { connection.close() }
        return try connection.query(PostgresQuery(unsafeSQL: "SELECT nspname FROM pg_namespace WHERE nspname LIKE '\(schema)%'")).map { try $0.decode(String.self) }
    }

    /// Read models of a test's own naming: a file in `dir`, or a schema on the server.
    func views(_ name: String) throws -> ViewsPlace {
        guard let url else { return .file(dir.path(name + ".views")) }
        var address = try PostgresAddress(url)
        address.schema = schema + "_" + name
        return .postgres(address)
    }

    var journalBackend: any JournalBackend {
        get throws {
            switch backend {
            case .sqlite: SQLiteBackend(path: dir.path("j.lethe"))
            case .postgres: PostgresBackend(try PostgresAddress(url!))
            }
        }
    }

    /// A writer on the test's journal (`recentLimits` sets both indexes' limits, unless one is given).
    func open(blockEvents: Int = 8, recentLimits: Int? = nil, recentPostingsLimit: Int? = nil, recentIDsLimit: Int? = nil,
              seed: UInt64 = 1, rules: (any EventRules)? = nil, logger: Logger? = nil) throws -> Journal {
        var options = Journal.Options()
        if let logger { options.logger = logger }
        options.blockEvents = blockEvents
        options.recentPostingsLimit = recentPostingsLimit ?? recentLimits
        options.recentIDsLimit = recentIDsLimit ?? recentLimits
        options.entropy = .seeded(seed)
        options.synchronous = .normal
        options.clock = .fixed(ts("2026-06-01T00:00:00Z"))
        options.rules = rules
        return try Journal(backend: journalBackend, keys: keyStore, master: testMaster, options: options)
    }

    func verify() throws -> JournalReader.VerifyReport {
        try JournalReader.verify(backend: journalBackend, keys: keyStore, master: testMaster)
    }

    // MARK: Behind the engine's back

    /// Runs `sql` in the journal's schema with `psql`, as someone holding the journal database's
    /// credentials would; returns what it printed. (PostgreSQL only.)
    @discardableResult
    func psql(_ sql: String) throws -> String {
        let r = try run("/usr/bin/psql", [try TestBackend.serverURL(), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                                          "-c", "SET search_path TO \(schema); \(sql)"], timeLimit: .seconds(60))
        #expect(r.status == 0, "psql failed on \(sql): \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// What `sql` (one integer) gives on the journal's rows, read behind the engine's back with
    /// `sqlite3` or `psql`; nil when it gives nothing.
    func scalar(_ sql: String) throws -> Int64? {
        switch backend {
        case .sqlite: try sqliteScalar(dir.path("j.lethe"), sql)
        case .postgres: Int64(try psql(sql))
        }
    }

    /// The files that hold the journal and its key store, as someone copying them would get
    /// them: the two files and their WALs, or (after a checkpoint) the data files of every
    /// relation of the test's schemas on the server (the journal's, its read models', any copy,
    /// the key store's), TOAST and indexes included.
    func storedFiles() throws -> [Data] {
        switch backend {
        case .sqlite:
            return ["j.lethe", "j.lethe-wal", keysPath, keysPath + "-wal"].compactMap { try? Data(contentsOf: URL(fileURLWithPath: dir.path($0))) }
        case .postgres:
            var files: [Data] = []
            for (server, database) in [(try TestBackend.serverURL(), "journal"), (try TestKeys.serverURL(), "keys")] {
                let r = try run("/usr/bin/psql", [server, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", "CHECKPOINT", "-c", """
                    SELECT current_setting('data_directory') || '/' || pg_relation_filepath(c.oid) FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE '\(schema)%'
                    OR c.oid IN (SELECT reltoastrelid FROM pg_class t JOIN pg_namespace m ON m.oid = t.relnamespace WHERE m.nspname LIKE '\(schema)%')
                    OR c.oid IN (SELECT indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace m ON m.oid = t.relnamespace
                                 WHERE m.nspname LIKE '\(schema)%' OR t.oid IN (SELECT reltoastrelid FROM pg_class u JOIN pg_namespace v ON v.oid = u.relnamespace WHERE v.nspname LIKE '\(schema)%'))
                    """], timeLimit: .seconds(60))
                #expect(r.status == 0, "psql failed on the \(database)'s files: \(r.stderr)")
                for path in r.stdout.split(separator: "\n") where !path.isEmpty {
                    if let bytes = try? Data(contentsOf: URL(fileURLWithPath: String(path))) { files.append(bytes) }
                }
            }
            return files
        }
    }

    /// `bytes` as a literal of the journal's SQL (a blob, or a `bytea`).
    func literal(_ bytes: [UInt8]) -> String {
        backend == .sqlite ? "x'\(Hex.encode(bytes))'" : "'\\x\(Hex.encode(bytes))'::bytea"
    }

    /// What `verify` with the key store and the master key says: nil if it passes, else its message.
    func verifyFailure() -> String? {
        do {
            _ = try verify()
            return nil
        } catch let e as JournalError {
            return e.message
        } catch {
            return "\(error)"
        }
    }

    /// Edits the journal behind the engine's back: the file with `sqlite3`, the schema with `psql`.
    func tamper(_ sql: String) throws {
        switch backend {
        case .sqlite: try LetheTests.tamper(dir.path("j.lethe"), sql)
        case .postgres: try psql(sql)
        }
    }

    /// A copy of the journal as it is now, taken behind the engine's back: the file and its WAL
    /// copied (as `cp` of the folder would), or every table of the schema copied into a schema of
    /// its own (as a dump restored elsewhere would). What someone who copied the data holds.
    func copy(_ name: String) throws -> any JournalBackend {
        switch backend {
        case .sqlite:
            try copyJournal(dir.path("j.lethe"), to: dir.path(name + ".lethe"))
            return SQLiteBackend(path: dir.path(name + ".lethe"))
        case .postgres:
            let target = schema + "_" + name
            var sql = "CREATE SCHEMA \(target);"
            for table in try psql("SELECT tablename FROM pg_tables WHERE schemaname = '\(schema)' ORDER BY 1").split(separator: "\n") {
                sql += " CREATE TABLE \(target).\(table) (LIKE \(schema).\(table) INCLUDING ALL); INSERT INTO \(target).\(table) SELECT * FROM \(schema).\(table);"
            }
            try psql(sql)
            var address = try PostgresAddress(url!)
            address.schema = target
            return PostgresBackend(address)
        }
    }

    /// Every sealed payload stored for `account` in `journal` (its blocks and its tail), as the
    /// rows hold them.
    func storedCiphertexts(_ journal: any JournalBackend, account: String) throws -> [[UInt8]] {
        let store = try journal.openReader()
        defer { store.close() }
        return try store.snapshot {
            var out: [[UInt8]] = []
            for stored in try store.blocks(firstSeqIn: 0, .max, limit: .max) {
                let block = try JournalReader.decodeFrame(stored.frame, id: stored.id, first: stored.first, last: stored.last)
                for e in block.events where e.header.account == account { if case .sealed(let b) = e.body { out.append(b) } }
            }
            for e in try store.tail().0 where e.header.account == account { if case .sealed(let b) = e.body { out.append(b) } }
            return out
        }
    }
}
