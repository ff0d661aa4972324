import Dispatch
import LetheJournal
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// What went wrong on the server or on the way to it, told without the statement's values (they
/// may be personal data) and without the password.
struct PostgresFailure: Error, CustomStringConvertible {
    var description: String

    init(_ error: any Error, address: PostgresAddress) {
        guard let e = error as? PSQLError else {
            description = "PostgreSQL at \(address): \(error)"
            return
        }
        if let info = e.serverInfo, let message = info[.message] {
            let state = info[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
            description = "PostgreSQL at \(address): \(message)\(state)"
        } else if e.code == .connectionError || e.code == .serverClosedConnection || e.code == .clientClosedConnection {
            let cause = e.underlying.map { ": \($0)" } ?? ""
            description = "cannot reach PostgreSQL at \(address) (\(e.code))\(cause)"
        } else {
            description = "PostgreSQL at \(address): \(e.code)"
        }
    }

    init(lostConnectionTo address: PostgresAddress) {
        description = "the connection to PostgreSQL at \(address) was lost (the server restarted or ended it, or the network failed)"
    }

    /// The SQLSTATE of a server's error, if it was one.
    static func sqlState(_ error: any Error) -> String? { (error as? PSQLError)?.serverInfo?[.sqlState] }
}

/// One connection to the server, used synchronously from the caller's thread: every call waits
/// for its answer on a thread of Lethe's (or the caller's), never on one of NIO's event loops or
/// the cooperative pool, so a blocked call cannot starve either. `@unchecked Sendable`: one
/// owner at a time uses it (a store under the journal's lock, a lease that only closes it).
final class Connection: @unchecked Sendable {
    let address: PostgresAddress
    private let connection: PostgresConnection
    private let logger: Logger
    private(set) var inTransaction = false

    init(_ address: PostgresAddress, logger: Logger = Logger(label: "lethe.postgres")) throws {
        self.address = address
        self.logger = logger
        var configuration: PostgresConnection.Configuration
        if let host = address.host {
            configuration = .init(host: host, port: address.port, username: address.user, password: address.password, database: address.database, tls: .disable)
        } else {
            let socket = (address.socketDirectory ?? "") + "/.s.PGSQL.\(address.port)"
            configuration = .init(unixSocketPath: socket, username: address.user, password: address.password, database: address.database)
        }
        configuration.options.connectTimeout = .seconds(10)
        do {
            connection = try PostgresConnection.connect(
                on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: 1, logger: logger
            ).wait()
        } catch {
            throw JournalError(.storage, PostgresFailure(error, address: address).description)
        }
        // The statements waiting when the connection ends get that as their answer.
        connection.closeFuture.whenComplete { [weak self] _ in
            for outcome in self?.pending.withLock({ $0 }) ?? [] { outcome.settle(.failure(ConnectionLost())) }
        }
    }

    deinit { close() }

    private var closed = false

    /// Closed by this side, or lost (the server ended it, a restart, the network).
    var isClosed: Bool { closed || connection.isClosed }

    func close() {
        guard !closed else { return }
        closed = true
        // (On one of NIO's threads, a feed's end, say: never wait there.)
        if connection.eventLoop.inEventLoop {
            connection.close().whenComplete { _ in }
        } else {
            try? connection.close().wait()
        }
    }

    /// Hands `handler` the payload of every notice on `channel` (sent by `NOTIFY` in any
    /// session), on one of NIO's threads, from when the server has run the `LISTEN`: a later
    /// statement on this connection answers only after that.
    func listen(_ channel: String, _ handler: @escaping @Sendable (String) -> Void) {
        connection.addListener(channel: channel) { _, notice in handler(notice.payload) }
    }

    /// Calls `body` once the connection is closed, by either side or by its loss.
    func onClose(_ body: @escaping @Sendable () -> Void) {
        connection.closeFuture.whenComplete { _ in body() }
    }

    /// Runs one statement and returns every row. Errors name the server's message, not the values.
    ///
    /// Statements `send` left unanswered are answered first; if one of them failed, this one
    /// still runs (a `ROLLBACK`, say), and the earlier failure is what is thrown.
    @discardableResult
    func query(_ query: PostgresQuery) throws -> [PostgresRow] {
        let earlier = Result { try awaitSent() }
        let rows = try answer(start(query))
        try earlier.get()
        return rows
    }

    /// Sends one statement without waiting for its answer: the connection runs statements in the
    /// order they are sent, and the next `query` (or `awaitSent`) waits for this one's answer and
    /// throws its failure, or what `check` throws of its rows. The caller goes on meanwhile
    /// (encoding the next blocks while the server stores the accounts, say). Inside a
    /// transaction, a failure is thus thrown before the transaction commits.
    func send(_ query: PostgresQuery, check: (@Sendable ([PostgresRow]) throws -> Void)? = nil) {
        sent.append((start(query), check))
    }

    /// `send` of a statement that takes no values (not an overload of `send`: a literal with
    /// values must become a `PostgresQuery`, whose values are sent apart from the text).
    func sendStatement(_ sql: String) { send(PostgresQuery(unsafeSQL: sql)) }

    /// Waits for every statement `send` left unanswered; throws the first failure.
    func awaitSent() throws {
        let outcomes = sent
        sent.removeAll()
        var failure: (any Error)?
        for (outcome, check) in outcomes {
            do {
                let rows = try answer(outcome)
                if failure == nil { try check?(rows) }
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
    }

    private var sent: [(Outcome, (@Sendable ([PostgresRow]) throws -> Void)?)] = []

    /// Sends `query`; its outcome settles with the answer, or the end of the connection, whichever
    /// comes first. (postgres-nio 1.33 never answers a statement it could not send because the
    /// server had just closed the connection, in a restart say: the caller would wait for ever.)
    private func start(_ query: PostgresQuery) -> Outcome {
        let outcome = Outcome()
        pending.withLock { $0.append(outcome) }
        if connection.isClosed { outcome.settle(.failure(ConnectionLost())) }
        connection.query(query, logger: logger).whenComplete { outcome.settle($0.map(\.rows)) }
        return outcome
    }

    /// Waits for `outcome`, naming the cause of a failure.
    private func answer(_ outcome: Outcome) throws -> [PostgresRow] {
        defer { pending.withLock { $0.removeAll { $0 === outcome } } }
        do {
            return try outcome.wait()
        } catch is ConnectionLost {
            throw JournalError(.connectionLost, PostgresFailure(lostConnectionTo: address).description)
        } catch {
            throw PostgresFailure(error, address: address)
        }
    }

    private struct ConnectionLost: Error {}

    /// The statements waiting for their answers (one owner uses a connection at a time).
    private let pending = Mutex<[Outcome]>([])

    /// The first result handed to it; `wait` blocks until there is one.
    private final class Outcome: Sendable {
        private let result = Mutex<Result<[PostgresRow], any Error>?>(nil)
        private let ready = DispatchSemaphore(value: 0)

        func settle(_ r: Result<[PostgresRow], any Error>) {
            let first = result.withLock { result in
                guard result == nil else { return false }
                result = r
                return true
            }
            if first { ready.signal() }
        }

        func wait() throws -> [PostgresRow] {
            ready.wait()
            return try result.withLock { $0! }.get()
        }
    }

    /// What holds back the removal of row versions deleted before this call, so that a `VACUUM`
    /// (even `FULL`, which copies what anything may still see) keeps them:
    /// - another session of this database whose snapshot began before the call (a transaction
    ///   left open, a long report: `backend_xmin`), or whose transaction got its id before it (a
    ///   `READ COMMITTED` transaction that wrote and sits idle holds no snapshot between its
    ///   statements, but its id alone keeps the versions: `backend_xid`);
    /// - a prepared transaction of this database (`PREPARE TRANSACTION`, two-phase commit);
    /// - a standby's feedback (`hot_standby_feedback`), through its replication slot's `xmin` or
    ///   its WAL sender's, whatever its database.
    ///
    /// Waits up to `wait` for them to end; returns those left, named ("process PID (application)",
    /// "prepared transaction 'GID'", "replication slot 'NAME'"); none: a `VACUUM` now removes every
    /// version deleted before the call.
    func holdersOfOlderVersions(wait: Duration) throws -> [String] {
        // The first transaction id not yet given out: every deletion made before the call is below it.
        let text = try query("SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::numeric % 4294967296)::text").first?.column(String.self, "pg_current_snapshot")
        guard let horizon = text.flatMap({ UInt32($0) }) else { throw JournalError(.storage, "the server gave no transaction id horizon (\(text ?? "nothing"))") }
        // `age(x) > age(horizon)`: x was given out before the horizon.
        let older = { (column: String) in "(\(column) IS NOT NULL AND age(\(column)) > age('\(horizon)'::xid))" }
        let deadline = ContinuousClock.now + wait
        while true {
            let holders = try query(PostgresQuery(unsafeSQL: """
                SELECT 'process ' || pid || CASE WHEN coalesce(application_name, '') = '' THEN '' ELSE ' (' || application_name || ')' END
                FROM pg_stat_activity
                WHERE pid <> pg_backend_pid() AND (datname = current_database() OR backend_type = 'walsender')
                  AND (\(older("backend_xmin")) OR \(older("backend_xid")))
                UNION ALL
                SELECT 'prepared transaction ' || quote_literal(gid) FROM pg_prepared_xacts
                WHERE database = current_database() AND \(older("transaction"))
                UNION ALL
                SELECT 'replication slot ' || quote_literal(slot_name) FROM pg_replication_slots WHERE \(older("xmin"))
                """)).map { try $0.decode(String.self) }
            if holders.isEmpty || ContinuousClock.now >= deadline { return holders }
            try? Task.checkCancellation()
            usleep(50_000)
        }
    }

    /// Whether a purge marked this connection's schema (`meta`'s `residue`, in each of the
    /// journal's, the key store's and the read models' schemas).
    func hasResidue() throws -> Bool { try !query("SELECT 1 FROM meta WHERE key = 'residue'").isEmpty }

    /// Clears what a purge marked in this connection's schema (`meta`'s `residue`): once nothing
    /// that began before the call can still see the old row versions (`holdersOfOlderVersions`,
    /// waited for up to `wait`), runs `vacuum` on the tables and removes the mark. Returns nil
    /// when nothing is left (or nothing was marked); otherwise the mark stays, for the next call,
    /// and the message says what holds the versions.
    func clearResidue(wait: Duration, vacuum: String) throws -> String? {
        guard try hasResidue() else { return nil }
        let holders = try holdersOfOlderVersions(wait: wait)
        guard holders.isEmpty else {
            return "\(address) still holds old versions of purged rows, which \(holders.joined(separator: ", ")) can still see"
        }
        try execute(vacuum)
        try execute("DELETE FROM meta WHERE key = 'residue'")
        return nil
    }

    /// Runs a statement that takes no values (schema, transactions).
    func execute(_ sql: String) throws {
        try query(PostgresQuery(unsafeSQL: sql))
    }

    /// `body` in one transaction: committed if it returns, rolled back if it throws.
    func transaction<T>(_ begin: String = "BEGIN", _ body: () throws -> T) throws -> T {
        precondition(!inTransaction, "transactions do not nest")
        try execute(begin)
        inTransaction = true
        defer { inTransaction = false }
        let result: T
        do {
            result = try body()
            // What `send` left unanswered, before the commit: a failure there (or a `check` that
            // throws, after a statement the server ran) rolls the transaction back.
            try awaitSent()
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
        do {
            try execute("COMMIT")
        } catch let e as JournalError where e.code == .connectionLost {
            // The server may have committed before the connection went: nobody can say.
            throw JournalError(.connectionLost, "the connection to PostgreSQL at \(address) was lost while committing: what was being written may or may not be there (writing it again with the same event ids is safe: an id already there is a duplicate)")
        }
        return result
    }
}

extension PostgresRow {
    /// Decodes the row's columns, naming the table on a mismatch (a schema altered by hand).
    func columns<each C: PostgresDecodable>(_ type: (repeat each C).Type, _ table: String) throws -> (repeat each C) {
        do {
            return try decode(type)
        } catch {
            throw JournalError(.corrupt, "\(table): a row does not have the columns this build writes (altered?)")
        }
    }

    /// `columns` of a row of one column.
    func column<C: PostgresDecodable>(_ type: C.Type, _ table: String) throws -> C {
        do {
            return try decode(type)
        } catch {
            throw JournalError(.corrupt, "\(table): a row does not have the columns this build writes (altered?)")
        }
    }
}

extension ByteBuffer {
    var bytes: [UInt8] { Array(readableBytesView) }
}

extension Array where Element == UInt8 {
    var buffer: ByteBuffer { ByteBuffer(bytes: self) }
}
