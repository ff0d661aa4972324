import Crypto
import Foundation
import LetheEvents
import LetheJournal
import Logging
import Synchronization

/// The read models of one journal: accounts, items and the trash, billing, tickets, consents,
/// notices, disclosures, legal holds, the staff access log and daily page-view counts, kept in a
/// store of their own (`ViewsPlace`) and caught up from a stored checkpoint: an SQLite file
/// (`JOURNAL.views` by default), or, for a journal in PostgreSQL, a schema beside the journal's
/// that every instance of the service shares.
///
/// The store is derived data: `rebuild` makes it again from the journal alone, and gives the same
/// rows, byte for byte in `dump`, as catching up in any number of steps. It is bound to its
/// journal's identity; a store made from another journal, an older schema, or a journal that was
/// since replaced by a shorter one (a restore) is emptied when it is opened.
///
/// One connection, under a lock: many tasks may read, and catch-up runs one at a time. Several
/// processes (on a server, several hosts) may share the store; catch-up commits in chunks, each
/// under the store's write lock, and starts each chunk from where the store stands then, so a
/// process whose checkpoint was moved by another goes on from there.
public final class ReadModels: Sendable {
    /// Where the read models are kept.
    public let place: ViewsPlace
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
        let store: any ViewConnection
        init(_ store: any ViewConnection) { self.store = store }
        deinit { store.close() }
    }

    /// The file's path, or the server's address (without the password).
    public var path: String { place.description }

    /// Opens the read models of `journal` in the SQLite file at `path`, or, without a path, where
    /// the journal keeps them (a journal in PostgreSQL: a schema beside its own; one in a file:
    /// `Journal.defaultViewsPath`). Nothing is caught up until `catchUp` is called.
    public convenience init(
        journal: Journal, path: String? = nil, policy: RetentionPolicy = .standard, codec: PayloadCodec = .standard,
        chunkEvents: Int64 = 50_000, logger: Logger = Logger(label: "lethe.views")
    ) throws {
        try self.init(journal: journal, place: try path.map(ViewsPlace.file) ?? ReadModels.defaultPlace(of: journal), policy: policy, codec: codec,
                      chunkEvents: chunkEvents, logger: logger)
    }

    /// Opens (creating them, or emptying them when they cannot be trusted) the read models of
    /// `journal` at `place`; nothing is caught up until `catchUp` is called.
    public init(
        journal: Journal, place: ViewsPlace, policy: RetentionPolicy = .standard, codec: PayloadCodec = .standard,
        chunkEvents: Int64 = 50_000, logger: Logger = Logger(label: "lethe.views")
    ) throws {
        precondition(chunkEvents > 0)
        self.journal = journal
        self.policy = policy
        self.place = place
        self.codec = codec
        self.chunkEvents = chunkEvents
        self.logger = logger
        let store = try ReadModels.named(place.description) { () -> any ViewConnection in
            let identity = try ReadModels.identity(of: journal, policy: policy)
            let head = try journal.read { try $0.headSeq() }
            let store = try place.connect(logger)
            do {
                if try store.prepare(identity: identity, head: head) {
                    logger.notice("read models emptied, to be caught up again: made from another journal, schema or records policy, or ahead of the journal", metadata: ["place": "\(place)"])
                }
            } catch {
                store.close()
                throw error
            }
            return store
        }
        connection = Mutex(Connection(store))
        fieldKeys = journal.fieldKeys()
    }

    /// Where `journal` keeps its read models unless told otherwise: for a journal in PostgreSQL,
    /// a schema beside its own in its database; for a journal in a file, a file beside it.
    public static func defaultPlace(of journal: Journal) throws -> ViewsPlace {
        if let host = journal.backend as? any ViewsHosting { return host.defaultViews }
        guard let path = journal.defaultViewsPath else {
            throw JournalError(.storage, "the read models of \(journal.path) need a place: a file, or a PostgreSQL database")
        }
        return .file(path)
    }

    /// What the rows are made from: the journal's identity, and what of the policy shapes them
    /// (which types' records expire, under which rule).
    private static func identity(of journal: Journal, policy: RetentionPolicy) throws -> String {
        let records = policy.records.map { "\($0.type.rawValue)=\($0.rule)" }.sorted().joined(separator: ",")
        return try journal.read { try $0.identity() } + " " + records
    }

    /// Runs `body`, naming the read models' place in an SQLite error.
    private static func named<T>(_ place: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as SQLiteError {
            throw JournalError(.storage, "the read models \(place): \(e)", underlying: e)
        }
    }

    private func named<T>(_ body: () throws -> T) throws -> T { try ReadModels.named(path, body) }

    /// The last journal sequence number applied.
    public var checkpoint: Int64 {
        get throws { try named { try connection.withLock { try $0.store.checkpoint() } } }
    }

    /// Applies every event committed after the checkpoint, in chunks of `chunkEvents`, each chunk
    /// in one transaction with the new checkpoint. Returns how many events this call applied
    /// (another process sharing the store may have applied some of them).
    @discardableResult
    public func catchUp(progress: ((_ done: Int64, _ head: Int64) -> Void)? = nil) throws -> Int64 {
        try named { try connection.withLock { try catchUp($0.store, progress: progress) } }
    }

    @discardableResult
    private func catchUp(_ store: any ViewConnection, progress: ((Int64, Int64) -> Void)?) throws -> Int64 {
        let codec = self.codec
        return try journal.read(authenticated: true) { reader in
            let head = try reader.headSeq()
            var applied: Int64 = 0
            let checkpoint = try store.checkpoint()
            guard checkpoint < head else { return 0 }
            // Nothing acts on what the journal's key did not vouch for: the events to apply must
            // chain up to the authenticated head, which is not behind the key store's anchor.
            try reader.authenticate(after: checkpoint)
            return try fieldKeys.withKeys { keys in try withoutActuallyEscaping(keys) { keys in
            let projector = try Projector(db: store.database, policy: policy, keys: keys)
            while true {
                // Under the write lock: where the store stands now (another process may have moved it).
                let done: Bool = try store.writing {
                    let from = try store.checkpoint()
                    guard from < head else { return true }
                    projector.beginChunk(at: from)
                    let through = min(head, from + chunkEvents)
                    try reader.events(from: from + 1, through: through, transform: { try ProjectedEvent($0, codec: codec) }) { event in
                        try projector.apply(event)
                    }
                    try store.setCheckpoint(through)
                    // A purge applied here leaves old rows in the store's files until they are cleared.
                    if projector.endChunk(at: through) { try store.markResidue() }
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

    /// Makes the read models again from the journal alone: in a scratch store first, which then
    /// replaces the content of this one in a single step, so readers in any process see the old
    /// models or the new ones. A failed rebuild changes nothing.
    @discardableResult
    public func rebuild(progress: ((_ done: Int64, _ head: Int64) -> Void)? = nil) throws -> Int64 {
        try named {
            try connection.withLock { connection in
                try connection.store.withScratch { scratch in
                    let applied = try project(into: scratch, progress: progress)
                    try connection.store.replaceContents(from: scratch)
                    return applied
                }
            }
        }
    }

    /// Makes the read models again from the journal alone in a scratch store, catches both up to
    /// the same head, and compares them: `current` and `rebuilt` are the digests of their dumps,
    /// equal when the read models are what the journal makes. Nothing is changed but the
    /// checkpoint, which moves up to the journal's head.
    public func check(progress: ((_ done: Int64, _ head: Int64) -> Void)? = nil) throws -> (current: String, rebuilt: String) {
        try named {
            try connection.withLock { connection in
                try connection.store.withScratch { scratch in
                    _ = try project(into: scratch, progress: progress)
                    // Events appended meanwhile: both go on to the same head before they are compared.
                    while try connection.store.checkpoint() != scratch.checkpoint() {
                        try catchUp(connection.store, progress: nil)
                        try catchUp(scratch, progress: nil)
                    }
                    return (try ReadModels.digest(connection.store), try ReadModels.digest(scratch))
                }
            }
        }
    }

    /// The journal's events projected into an empty scratch store.
    private func project(into scratch: any ViewConnection, progress: ((Int64, Int64) -> Void)?) throws -> Int64 {
        let identity = try ReadModels.identity(of: journal, policy: policy)
        let head = try journal.read { try $0.headSeq() }
        _ = try scratch.prepare(identity: identity, head: head)
        return try catchUp(scratch, progress: progress)
    }

    // MARK: Canonical dump

    /// Every row of every table, in key order, as NDJSON lines `{"table":…,"row":{…}}`, preceded by
    /// the checkpoint: two read models are the same exactly when their dumps are.
    public func dump(_ write: ([UInt8]) throws -> Void) throws {
        try named { try connection.withLock { try ReadModels.dump($0.store, write) } }
    }

    private static func dump(_ store: any ViewConnection, _ write: ([UInt8]) throws -> Void) throws {
        let db = store.database
        try store.reading {
            var w = JSONWriter()
            w.write(JSONValue.object(["checkpoint": .int(try store.checkpoint())]))
            w.bytes.append(0x0A)
            try write(w.bytes)
            for (table, key) in Schema.tables {
                let s = try db.prepare("SELECT * FROM \(table) ORDER BY \(key)")
                var columns: [String] = []
                while try s.step() {
                    if columns.isEmpty { columns = (0..<s.columnCount).map { s.columnName($0) } }
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
        }
    }

    /// SHA-256 of a store's dump, in hex.
    private static func digest(_ store: any ViewConnection) throws -> String {
        var hash = SHA256()
        try dump(store) { hash.update(data: $0) }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Where a purge left rows behind in the store's own files (an SQLite WAL, a PostgreSQL
    /// table's dead row versions), removes them, waiting up to `wait` for readers that hold an
    /// old snapshot: after a purge, no old copy of the read models' rows survives there (and what
    /// freed space still holds was sealed under keys the purge destroyed). Returns nil when
    /// nothing is left to do; otherwise what is left and who holds it (the processes holding a
    /// file's old snapshot; on a server, the sessions, prepared transactions or standbys that can
    /// still see the old rows), for a message. Until then, the next open or run tries again.
    public func clearResidue(wait: Duration = .seconds(10)) throws -> String? {
        try named { try connection.withLock { try $0.store.clearResidue(wait: wait) } }
    }

    /// How many rows each table holds, in `dump`'s order.
    public func rowCounts() throws -> [(table: String, rows: Int64)] {
        try query { db in try Schema.tables.map { ($0.name, try db.scalarInt("SELECT count(*) FROM \($0.name)") ?? 0) } }
    }

    /// SHA-256 of `dump`, in hex.
    public func digest() throws -> String {
        try named { try connection.withLock { try ReadModels.digest($0.store) } }
    }

    // MARK: Queries

    /// Runs `body` on the read models' connection, inside one read transaction.
    func query<T: Sendable>(_ body: (any ViewDatabase) throws -> T) throws -> T {
        try named {
            try connection.withLock { connection -> T in
                let store = connection.store
                let result: T = try store.reading { try body(store.database) }
                return result
            }
        }
    }
}
