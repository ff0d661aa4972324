// The options the commands share (CLI.md): the journal and its files, the clock, and who reads.
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import LetheEvents
import LetheJournal
import LetheRetention
import LetheViews
#if PostgreSQL
import LethePostgres
#endif

/// `--now`, `--at` and `--until` are RFC 3339 in UTC, parsed by the engine's own parser.
extension Timestamp: ExpressibleByArgument {
    public init?(argument: String) { self.init(rfc3339: argument) }
}

/// The options every command takes (CLI.md).
struct JournalOptions: ParsableArguments {
    @Option(name: .customLong("journal"), help: "The journal: a file (SQLite), or a PostgreSQL database, postgres://USER:PASSWORD@HOST:PORT/DATABASE[?schema=NAME]. Default: LETHE_JOURNAL.")
    var journalArgument: String?

    /// `--journal`, else `LETHE_JOURNAL` (`validate` makes sure there is one).
    var journal: String { journalArgument ?? ProcessInfo.processInfo.environment["LETHE_JOURNAL"] ?? "" }

    /// Whether the journal is a server's address rather than a file.
    var isServer: Bool { JournalOptions.isAddress(journal) }

    /// Whether the key store is a server's address rather than a file.
    var keysOnServer: Bool { keys.map(JournalOptions.isAddress) ?? false }

    static func isAddress(_ text: String) -> Bool {
        let lowered = text.lowercased()
        return lowered.hasPrefix("postgres://") || lowered.hasPrefix("postgresql://")
    }

    func validate() throws {
        guard !journal.isEmpty else { throw ValidationError("no journal: give --journal PATH, or set LETHE_JOURNAL") }
        if isServer || keysOnServer {
            #if !PostgreSQL
            throw ValidationError("this build of lethe has no PostgreSQL support (built without its PostgreSQL trait): --journal and --keys take the paths of files")
            #endif
        }
        if isServer {
            // Keys never live in the journal's database, and have no file to sit beside.
            guard keys != nil else { throw ValidationError("a journal in PostgreSQL needs --keys: its key store is a file of its own, or a PostgreSQL database of its own, never the journal's database") }
        }
    }

    /// Where the key store is. A malformed address is refused without its password.
    func keyStore() throws -> any KeyStoreBackend {
        #if PostgreSQL
        if keysOnServer { return PostgresKeyBackend(try PostgresAddress(keysPath)) }
        #endif
        return SQLiteKeyBackend(path: keysPath)
    }

    /// Where the journal's rows are. A malformed address is refused without its password.
    func backend() throws -> any JournalBackend {
        #if PostgreSQL
        if isServer { return PostgresBackend(try PostgresAddress(journal)) }
        #endif
        return SQLiteBackend(path: journal)
    }

    @Option(name: .long, help: "The key store: a file (default: the journal's path + \".keys\"), or a PostgreSQL database of its own, postgres://USER:PASSWORD@HOST:PORT/DATABASE[?schema=NAME] (never the journal's); required for a journal in PostgreSQL.")
    var keys: String?

    @Option(name: .customLong("master-key"), help: "A file holding the master key (made by `lethe keys init`; owner-only, outside the journal's and the key store's directory). Default: LETHE_MASTER_KEY, else the file LETHE_MASTER_KEY_FILE names.")
    var masterKey: String?

    @Option(name: .long, help: "The time to use as now, RFC 3339 in UTC, like 2026-03-01T00:00:00Z (default: the system clock).")
    var now: Timestamp?

    @Option(name: .long, help: "The read models: a file, or a PostgreSQL database, postgres://USER:PASSWORD@HOST:PORT/DATABASE[?schema=NAME] (default: the journal's path + \".views\"; for a journal in PostgreSQL, the schema NAME_views in its database, which every instance shares); derived data, rebuilt when missing.")
    var views: String?

    /// `--views`, else where the journal keeps its read models. A malformed address is refused
    /// without its password.
    func viewsPlace(_ journal: Journal) throws -> ViewsPlace {
        guard let views else { return try ReadModels.defaultPlace(of: journal) }
        if JournalOptions.isAddress(views) {
            #if PostgreSQL
            return .postgres(try PostgresAddress(views))
            #else
            throw ValidationError("this build of lethe has no PostgreSQL support (built without its PostgreSQL trait): --views takes the path of a file")
            #endif
        }
        return .file(views)
    }

    @Option(name: .long, help: "The retention policy (JSON; default: the journal's path + \".policy.json\" if it exists (a file journal), else the shipped policy: see `lethe retention policy`).")
    var policy: String?

    @Option(name: .customLong("wal-wait"), help: "Seconds a purge waits for readers holding an old snapshot (of a file, or sessions of a server's database) before it reports what still holds purged data (and exits non-zero).")
    var walWait: Double = 10

    var clock: Clock { now.map(Clock.fixed) ?? .system }

    var keysPath: String { keys ?? journal + ".keys" }

    /// Where the master key comes from: `--master-key`, else the environment.
    var master: MasterKeySource { MasterKeySource(keyFile: masterKey) }

    /// The retention policy: `--policy`, else `JOURNAL.policy.json` when there is one, else the shipped one.
    func retentionPolicy() throws -> RetentionPolicy {
        let path = policy ?? journal + ".policy.json"
        guard policy != nil || (!isServer && access(path, F_OK) == 0) else { return .standard }
        do {
            return try RetentionPolicy(path: path)
        } catch let e as RetentionPolicy.Invalid {
            throw JournalError(.invalidEvent, "invalid retention policy: \(e.description)")
        }
    }

    /// The read models, caught up with the journal (progress on a terminal).
    func readModels(_ journal: Journal) throws -> ReadModels {
        let models = try ReadModels(journal: journal, place: try viewsPlace(journal), policy: try retentionPolicy())
        var progress = Progress("catching up the read models")
        try models.catchUp { progress.update($0, of: $1, unit: "events") }
        progress.finish()
        return models
    }

    func open(mustExist: Bool = true) throws -> Journal {
        let backend = try backend()
        if mustExist {
            if isServer {
                try backend.openReader().close()  // names a database without a journal
            } else if access(journal, F_OK) != 0 {
                throw JournalError(.storage, "no journal at \(journal)")
            }
        }
        var options = Journal.Options()
        options.clock = clock
        options.rules = ContractRules()
        options.truncateWait = .milliseconds(Int(max(0, walWait) * 1000))
        return try Journal(backend: backend, keys: try keyStore(), master: master, options: options)
    }
}

/// Who reads an account's personal data, and why: every such read is recorded as an access.
struct AccessOptions: ParsableArguments {
    @Option(help: "Who is reading; recorded with the access (default: the operating-system user).")
    var actor: String?

    @Option(help: "Why; recorded with the access.")
    var reason: String?

    @Option(help: "The reader's IP address, recorded with the access.")
    var ip = "127.0.0.1"

    @Option(help: "The support ticket the read is for, recorded with the access (it makes the access authorized if the account opened it).")
    var ticket: String?
}
