import Crypto
import Dispatch
import Foundation
import Logging
import Synchronization

/// An event to append: who, what, when, and its payload in plaintext (the journal seals it).
public struct NewEvent: Sendable {
    /// The caller's unique id; appending an id that is already in the journal is a no-op.
    public var id: String?
    public var account: String
    public var type: String
    public var at: Timestamp
    /// The data, already encoded by the caller; sealed under the key `scope` names.
    public var payload: [UInt8]
    /// The account's version before this event (0: the account must be new); nil: any.
    public var expectedVersion: Int64?
    /// The account's own key (the default), or the journal's engine key for records that must
    /// outlive the account's key.
    public var scope: SealScope

    public init(
        id: String? = nil, account: String, type: String, at: Timestamp, payload: [UInt8], expectedVersion: Int64? = nil,
        scope: SealScope = .subject
    ) {
        self.id = id
        self.account = account
        self.type = type
        self.at = at
        self.payload = payload
        self.expectedVersion = expectedVersion
        self.scope = scope
    }
}

/// What a purge removes from the journal, besides writing its event.
public enum Erasure: Sendable, Hashable {
    /// The account's key is destroyed and every payload sealed under it is physically removed;
    /// payloads sealed under the engine key (`SealScope.journal`) stay.
    case account(String)
    /// These events of the account lose their payloads, whatever key sealed them.
    case events(account: String, seqs: [Int64])

    public var account: String {
        switch self {
        case .account(let a), .events(let a, _): a
        }
    }
}

/// What became of one event of an append.
public enum AppendOutcome: Sendable {
    case appended(EventHeader)
    /// An event with the same id was already recorded, at `seq`; nothing was written.
    case duplicate(seq: Int64)
    /// Refused; nothing of it was written. The other events of the batch are not affected.
    case rejected(JournalError)
}

/// An event read back: its header and its payload, unless that is gone.
public struct StoredEvent: Sendable {
    public enum Payload: Sendable, Equatable {
        case plaintext([UInt8])
        /// Physically removed from the journal by a purge; only its digest remains.
        case purged
        /// Still in the journal, but its account's key was destroyed: unreadable for good.
        case shredded
    }

    public var header: EventHeader
    public var payload: Payload
}

/// The append-only, tamper-evident store of personal-data events: one SQLite file in WAL mode.
///
/// Events get a global sequence number and a per-account version. Their payloads are sealed with
/// AES-GCM under per-account keys (kept in a separate `KeyStore` file) and chained with SHA-256;
/// they wait in a small unsealed tail until `blockEvents` have gathered, then move, in one
/// transaction, into a block compressed as a standard LZ4 frame. See the README for the format.
///
/// One writer at a time: appends are serialised by a lock in the process and by SQLite's write
/// lock across processes (a writer that finds another process moved the head reloads its state).
/// Reads open their own connection and see a consistent snapshot.
public final class Journal: Sendable {
    public enum Synchronous: Sendable {
        /// fsync on every commit: an append that returned survives power loss. The default.
        case full
        /// No fsync per commit in WAL mode: survives a process crash, not a power loss.
        case normal

        var pragma: String { self == .full ? "FULL" : "NORMAL" }
    }

    public struct Options: Sendable {
        /// Events per sealed block.
        public var blockEvents: Int = 2048
        public var synchronous: Synchronous = .full
        public var entropy: Entropy = .system
        /// Time for the engine's own records (key creation); events carry their own times.
        public var clock: Clock = .system
        /// The domain's rules, checked against each account's history as events are decided.
        public var rules: (any EventRules)?
        public var logger: Logger = Logger(label: "lethe.journal")
        /// How many recent (account, block) postings gather before they move to the main
        /// per-account block index in one sorted pass (see `Writer.mergeRecentPostingsIfDue`).
        package var recentPostingsLimit = 1 << 18

        public init() {}
    }

    public static let formatVersion: Int64 = 2
    public static let maxPayloadBytes = 16 << 20
    public static let maxBlockEvents = 1 << 16
    static let maxAccountBytes = 256
    static let maxTypeBytes = 128
    static let maxIDBytes = 256

    public let path: String
    public let keysPath: String
    let options: Options
    let master: MasterKeySource
    /// Keys and nonces: taken by `prepare`, never while waiting for the writer.
    private let sealer: Mutex<Sealer>
    /// Decisions, the chain and the file: taken by `append` (which may then take `sealer`, never the reverse).
    private let writer: Mutex<Writer>
    /// The journal's random identity (meta `journal_id`).
    let journalID: [UInt8]

    /// Opens the journal at `path` (creating it when missing) and its key store at `keysPath`
    /// (default `path + ".keys"`).
    public init(path: String, keysPath: String? = nil, master: MasterKeySource? = nil, options: Options = Options()) throws {
        precondition((1...Journal.maxBlockEvents).contains(options.blockEvents), "blockEvents out of range")
        self.path = path
        self.keysPath = keysPath ?? path + ".keys"
        self.options = options
        self.master = master ?? MasterKeySource(keysPath: self.keysPath)
        let db = try Journal.openDatabase(path: path, options: options)
        let keys = try KeyStore(path: self.keysPath, master: self.master, entropy: options.entropy, synchronous: options.synchronous)
        let journalID = try JournalReader.journalID(db)
        self.journalID = journalID
        let anchorKey = keys.anchorKey(journalID: journalID)
        writer = Mutex(try Writer(db: db, anchorKey: anchorKey, options: options))
        sealer = Mutex(Sealer(keys: keys, engineKey: keys.engineKey(journalID: journalID), entropy: options.entropy))
    }

    static func openDatabase(path: String, options: Options) throws -> SQLiteDatabase {
        do {
            let db = try SQLiteDatabase(path: path)
            try db.enableWAL()
            try db.execute("""
                PRAGMA synchronous=\(options.synchronous.pragma);
                PRAGMA secure_delete=ON; PRAGMA cache_size=-16384;
                """)
            try db.transaction {
                try db.execute("""
                    CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
                    CREATE TABLE IF NOT EXISTS accounts(
                        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                        version INTEGER NOT NULL, last_at INTEGER NOT NULL);
                    CREATE TABLE IF NOT EXISTS blocks(
                        id INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL UNIQUE,
                        last_seq INTEGER NOT NULL, frame BLOB NOT NULL);
                    CREATE TABLE IF NOT EXISTS account_blocks(
                        account_id INTEGER NOT NULL, block_id INTEGER NOT NULL,
                        PRIMARY KEY(account_id, block_id)) WITHOUT ROWID;
                    CREATE TABLE IF NOT EXISTS recent_account_blocks(
                        account_id INTEGER NOT NULL, block_id INTEGER NOT NULL,
                        PRIMARY KEY(account_id, block_id)) WITHOUT ROWID;
                    CREATE TABLE IF NOT EXISTS tail(
                        seq INTEGER PRIMARY KEY, account TEXT NOT NULL, version INTEGER NOT NULL,
                        type TEXT NOT NULL, at INTEGER NOT NULL, at_digits INTEGER NOT NULL, event_id TEXT,
                        session INTEGER NOT NULL, counter INTEGER NOT NULL,
                        payload BLOB, digest BLOB, link BLOB NOT NULL, scope INTEGER NOT NULL);
                    CREATE TABLE IF NOT EXISTS event_ids(id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
                    CREATE TABLE IF NOT EXISTS erasures(id INTEGER PRIMARY KEY, account TEXT NOT NULL, seqs TEXT);
                    """)
                if try db.scalarInt("SELECT count(*) FROM meta") == 0 {
                    let id = options.entropy.bytes(16)
                    let insert = try db.statement("INSERT INTO meta(key, value) VALUES(?, ?)")
                    try insert.bind(1, "format").bind(2, Journal.formatVersion).run()
                    insert.reset()
                    try insert.bind(1, "journal_id").bind(2, id).run()
                    insert.reset()
                    try insert.bind(1, "head_seq").bind(2, Int64(0)).run()
                    insert.reset()
                    try insert.bind(1, "head_link").bind(2, Chain.genesis(journalID: id)).run()
                    insert.reset()
                    try insert.bind(1, "erased").bind(2, Int64(0)).run()
                }
            }
            let format = try db.scalarInt("SELECT value FROM meta WHERE key='format'")
            guard format == Journal.formatVersion else {
                throw JournalError(.notAJournal, "\(path) has journal format \(format.map(String.init) ?? "none"); this build reads format \(Journal.formatVersion)")
            }
            return db
        } catch let e as JournalError {
            throw e
        } catch let e as SQLiteError where e.code == 26 {  // SQLITE_NOTADB
            throw JournalError(.notAJournal, "\(path) is not a Lethe journal (not an SQLite database)")
        } catch {
            throw JournalError.storage("cannot open journal \(path)", error)
        }
    }

    /// Appends `events` in order, in one transaction. Each gets an outcome; rejected ones leave no
    /// trace and do not stop the others. Throws only when nothing could be written at all.
    ///
    /// - Complexity: O(n) in the batch, independent of the journal's size.
    public func append(_ events: [NewEvent]) throws -> [AppendOutcome] {
        try append(prepare(events))
    }

    /// Appends a batch sealed beforehand by `prepare`.
    public func append(_ batch: PreparedBatch) throws -> [AppendOutcome] {
        try append(batch, erasing: [])
    }

    /// Appends `events` and, in the same transaction, records the `erasures` they announce (a
    /// purge event and the purge itself); then carries the erasures out (`finishErasures`). A
    /// crash between the two leaves the erasures recorded, and the next `finishErasures` does them.
    ///
    /// With `finish: false` the erasures stay recorded for a later `finishErasures`, which does
    /// many at once: each block is rewritten once however many of its events go.
    @discardableResult
    public func append(_ events: [NewEvent], erasing erasures: [Erasure], finish: Bool = true) throws -> [AppendOutcome] {
        let outcomes = try append(prepare(events), erasing: erasures)
        if finish { try finishErasures() }
        return outcomes
    }

    private func append(_ batch: PreparedBatch, erasing erasures: [Erasure]) throws -> [AppendOutcome] {
        try writer.withLock { writer in
            // Accounts whose key was destroyed since `prepare` take nothing (lock order: writer, then sealer).
            let accounts = Set(batch.items.map(\.account))
            let shredded = try sealer.withLock { try $0.shredded(among: accounts) }
            return try writer.append(batch, shredded: shredded, erasing: erasures) { account, scope in
                try self.sealer.withLock { try $0.lookup(account, scope) }
            }
        }
    }

    /// Carries out every recorded erasure that is not done yet, oldest first: an account's key is
    /// destroyed, then the payloads are physically removed from their blocks and the tail (each
    /// keeps its digest, so the chain still verifies), freed pages are overwritten (`secure_delete`)
    /// and the WAL is checkpointed and truncated, so no copy of them is left in the journal's files.
    /// Idempotent; safe to run from several processes. Returns how many erasures it did.
    @discardableResult
    public func finishErasures() throws -> Int {
        try writer.withLock { writer in
            var done = 0
            while true {
                let batch = try writer.pendingErasures(limit: 10_000)
                guard !batch.isEmpty else { break }
                let accounts = batch.compactMap { if case .account(let a) = $0.erasure { a } else { nil } }
                let events = batch.compactMap { if case .events(let a, let seqs) = $0.erasure { (a, seqs) } else { nil } }
                // The key store, which outlives every backup, learns of them first (see `reapplyErasures`).
                try sealer.withLock {
                    try $0.keys.destroyKeys(accounts, at: options.clock.now())
                    try $0.keys.rememberErasures(journal: journalID, events)
                }
                try writer.scrub(batch)
                done += batch.count
            }
            if done > 0 {
                try writer.checkpoint()
                options.logger.debug("erasures done", metadata: ["count": "\(done)"])
            }
            return done
        }
    }

    /// Checks and seals `events` (compression, AES-GCM, digests) without taking the writer's lock:
    /// a caller can prepare the next batch while the previous one is being appended. Keys for new
    /// accounts are created (and committed) here, before any event that needs them is written.
    ///
    /// - Complexity: O(n) in the batch.
    public func prepare(_ events: [NewEvent]) throws -> PreparedBatch {
        var outcome = events.map { Journal.check($0).map { Result<PreparedBatch.Sealed, JournalError>.failure($0) } }
        let valid = events.indices.filter { outcome[$0] == nil }
        let accounts = Set(valid.filter { events[$0].scope == .subject }.map { events[$0].account })
        let (keys, engineKey, nonces) = try sealer.withLock { sealer in
            (try sealer.keys(for: accounts, at: options.clock.now(), logger: options.logger), sealer.engineKey, sealer.reserve(valid.count))
        }
        // Sealing is pure work on values: large batches are sealed on every core.
        let work = valid.indices.map { k in (event: events[valid[k]], nonce: nonces[k]) }
        let results = work.parallelMap { e, nonce -> Result<PreparedBatch.Sealed, JournalError> in
            let key: SymmetricKey
            switch e.scope {
            case .journal:
                key = engineKey
            case .subject:
                guard case .key(let subjectKey) = keys[e.account] else {
                    return .failure(JournalError(.accountShredded, "account \(e.account) was erased; it takes no new events"))
                }
                key = subjectKey
            }
            let body = Sealing.seal(e.payload, key: key, nonce: nonce, account: e.account)
            return .success(PreparedBatch.Sealed(
                nonce: nonce, body: body, digest: Sealing.digest(nonce: nonce, scope: e.scope, sealed: body)))
        }
        for (k, index) in valid.enumerated() { outcome[index] = results[k] }
        let keepPlaintext = options.rules != nil
        return PreparedBatch(items: events.indices.map { k in
            PreparedBatch.Item(events[k], sealed: outcome[k]!, keepPlaintext: keepPlaintext)
        })
    }

    static func check(_ e: NewEvent) -> JournalError? {
        func bad(_ field: String, _ why: String) -> JournalError { JournalError(.invalidEvent, "field \(field): \(why)") }
        if e.account.isEmpty || e.account.utf8.count > Journal.maxAccountBytes { return bad("account", "must be 1 to \(Journal.maxAccountBytes) bytes") }
        if e.type.isEmpty || e.type.utf8.count > Journal.maxTypeBytes { return bad("type", "must be 1 to \(Journal.maxTypeBytes) bytes") }
        if let id = e.id, id.isEmpty || id.utf8.count > Journal.maxIDBytes { return bad("id", "must be 1 to \(Journal.maxIDBytes) bytes") }
        if e.payload.count > Journal.maxPayloadBytes { return bad("data", "payload above \(Journal.maxPayloadBytes) bytes") }
        return nil
    }

    /// Appends one event; a rejection is thrown.
    @discardableResult
    public func append(_ event: NewEvent) throws -> EventHeader {
        switch try append([event])[0] {
        case .appended(let header): return header
        case .duplicate(let seq): return try header(seq: seq)
        case .rejected(let error): throw error
        }
    }

    /// The last sequence number, 0 when empty.
    public var headSeq: Int64 { writer.withLock { $0.headSeq } }

    /// The account's current version, 0 when it has no events.
    public func version(of account: String) throws -> Int64 {
        try writer.withLock { try $0.accountRow(account)?.version ?? 0 }
    }

    /// The master key this journal was opened with.
    package func masterKey() throws -> SymmetricKey { try master.load(create: false, entropy: options.entropy) }

    /// Erases again every single-event erasure the key store remembers for this journal (whole
    /// accounts need nothing: their keys are gone): what a journal restored from an older backup
    /// must do before anyone reads it. Returns how many erasures it recorded and carried out.
    @discardableResult
    public func reapplyErasures() throws -> Int {
        let head = headSeq
        let remembered = try sealer.withLock { try $0.keys.erasedEvents(journal: journalID) }
        let erasures = remembered.compactMap { e -> Erasure? in
            let seqs = e.seqs.filter { $0 <= head }
            return seqs.isEmpty ? nil : .events(account: e.account, seqs: seqs)
        }
        guard !erasures.isEmpty else { return 0 }
        _ = try append(PreparedBatch.empty, erasing: erasures)
        return try finishErasures()
    }

    /// The accounts of this journal whose key was destroyed (a purge, or its erasure).
    ///
    /// - Complexity: proportional to the journal's accounts (for a restore, once).
    public func accountsWithDestroyedKeys() throws -> [String] {
        var names: [String] = []
        try read { reader in
            let s = try reader.db.statement("SELECT name FROM accounts ORDER BY name")
            while try s.step() { names.append(s.text(0) ?? "") }
            s.reset()
        }
        return try sealer.withLock { sealer in try names.filter { if case .destroyed = try sealer.keys.lookup($0) { true } else { false } } }
    }

    /// The time of the account's latest event; nil when it has none.
    public func latestTime(of account: String) throws -> Timestamp? {
        try writer.withLock { try $0.accountRow(account).map { Timestamp(nanoseconds: $0.lastAt) } }
    }

    /// Destroys the account's data key: its sealed payloads become unreadable everywhere,
    /// backups included.
    public func destroyKey(of account: String, at time: Timestamp) throws {
        try sealer.withLock { try $0.keys.destroyKey(account, at: time) }
    }

    func header(seq: Int64) throws -> EventHeader {
        var found: EventHeader?
        try read { try $0.scan(from: seq, through: seq) { found = $0.header } }
        guard let found else { throw JournalError(.invalidEvent, "no event \(seq)") }
        return found
    }

    /// Runs `body` with a reader on its own connection, inside one read snapshot.
    public func read<T>(_ body: (JournalReader) throws -> T) throws -> T {
        let reader = try JournalReader(path: path, keysPath: keysPath) { [keysPath, master, options] in
            try KeyStore(path: keysPath, master: master, entropy: options.entropy, synchronous: options.synchronous)
        }
        return try reader.snapshot { try body(reader) }
    }
}

/// Events checked and sealed by `Journal.prepare`, waiting for `Journal.append`. The plaintext
/// is gone: only ciphertext, nonces and digests are kept.
public struct PreparedBatch: Sendable {
    struct Sealed: Sendable {
        var nonce: NonceID
        var body: [UInt8]
        var digest: [UInt8]
    }

    /// One event on its way to the writer. A class: the writer's passes over a batch then share
    /// each item instead of copying its strings and buffers.
    final class Item: Sendable {
        let id: String?
        let account: String
        let type: String
        let at: Timestamp
        let expectedVersion: Int64?
        let scope: SealScope
        /// The sealed payload, or why the event was refused before it reached the writer.
        let sealed: Result<Sealed, JournalError>
        /// The plaintext, kept only for the journal's rules.
        let plaintext: [UInt8]?

        init(_ e: NewEvent, sealed: Result<Sealed, JournalError>, keepPlaintext: Bool) {
            (id, account, type, at, expectedVersion, scope) = (e.id, e.account, e.type, e.at, e.expectedVersion, e.scope)
            self.sealed = sealed
            plaintext = keepPlaintext ? e.payload : nil
        }
    }

    var items: [Item]

    public var count: Int { items.count }

    public static let empty = PreparedBatch(items: [])
}

/// The key store and this process's nonce session. Lives inside the journal's `sealer` mutex.
final class Sealer {
    let keys: KeyStore
    /// The key of `SealScope.journal` payloads.
    let engineKey: SymmetricKey
    private let entropy: Entropy
    private var session: UInt64
    private var nextCounter: UInt64 = 0

    init(keys: KeyStore, engineKey: SymmetricKey, entropy: Entropy) {
        self.keys = keys
        self.engineKey = engineKey
        self.entropy = entropy
        session = Sealer.newSession(entropy)
    }

    private static func newSession(_ entropy: Entropy) -> UInt64 {
        var r = BinaryReader(entropy.bytes(8))
        return try! r.u64()  // exactly 8 bytes
    }

    /// `n` fresh nonces; a session that would run out of counters takes a new random id first.
    func reserve(_ n: Int) -> [NonceID] {
        if nextCounter + UInt64(n) > UInt64(UInt32.max) {
            session = Sealer.newSession(entropy)
            nextCounter = 0
        }
        defer { nextCounter += UInt64(n) }
        return (0..<n).map { NonceID(session: session, counter: UInt32(nextCounter + UInt64($0))) }
    }

    /// Each account's key, creating (and committing) keys for accounts that have none yet.
    func keys(for accounts: Set<String>, at time: Timestamp, logger: Logger) throws -> [String: KeyStore.Lookup] {
        var found: [String: KeyStore.Lookup] = [:]
        var missing: [String] = []
        for account in accounts {
            let lookup = try keys.lookup(account)
            if case .none = lookup { missing.append(account) } else { found[account] = lookup }
        }
        if !missing.isEmpty {
            logger.trace("creating account keys", metadata: ["count": "\(missing.count)"])
            for (account, key) in zip(missing, try keys.createKeys(for: missing, at: time)) {
                found[account] = key.map { .key($0) } ?? .destroyed
            }
        }
        return found
    }

    /// The key that seals (and opens) payloads of `account` in `scope`.
    func lookup(_ account: String, _ scope: SealScope) throws -> KeyStore.Lookup {
        scope == .journal ? .key(engineKey) : try keys.lookup(account)
    }

    /// The accounts among `accounts` whose key was destroyed.
    func shredded(among accounts: Set<String>) throws -> Set<String> {
        try Set(accounts.filter { if case .destroyed = try keys.lookup($0) { true } else { false } })
    }
}

/// The writer's state: the connection, the head of the chain, the unsealed tail and the caches.
///
/// Lives inside the journal's mutex, so it is never touched by two threads at once.
final class Writer {
    struct AccountRow {
        var id: Int64
        var version: Int64
        var lastAt: Int64
    }

    let db: SQLiteDatabase
    let options: Options
    /// Authenticates the chain head (see `Anchor`).
    private let anchorKey: SymmetricKey
    private(set) var headSeq: Int64 = 0
    /// How many erasures the journal has done (meta `erased`): when another process erased, the tail in memory is stale.
    private(set) var erased: Int64 = 0
    private var headLink: [UInt8] = []
    /// The chain link after the last sealed block: the link before the first tail event.
    private var sealedLink: [UInt8] = []
    private var tail: [SealedEvent] = []
    private var tailLinks: [[UInt8]] = []
    private var nextAccountID: Int64 = 1
    private var nextBlockID: Int64 = 1
    /// The domain's rules, following the accounts this writer has seen.
    private let rules: (any RulesChecker)?
    /// Finds keys during an append (to read an account's history for the rules).
    private var lookupKey: ((String, SealScope) throws -> KeyStore.Lookup)?
    /// Known accounts; a cache of the `accounts` table, cleared when it outgrows `accountCacheLimit`.
    private var accounts: [String: AccountRow] = [:]
    private let accountCacheLimit = 200_000

    typealias Options = Journal.Options

    init(db: SQLiteDatabase, anchorKey: SymmetricKey, options: Options) throws {
        self.db = db
        self.options = options
        self.anchorKey = anchorKey
        rules = options.rules?.makeChecker()
        try reload()
        options.logger.debug("journal opened", metadata: [
            "path": "\(db.path)", "head_seq": "\(headSeq)", "unsealed": "\(tail.count)",
        ])
    }

    /// Reads the head, the tail and the id counters from disk.
    private func reload() throws {
        // Statements left on a row would hold this snapshot open after the reload.
        defer { db.resetAll() }
        rules?.forget()
        do {
            headSeq = try db.scalarInt("SELECT value FROM meta WHERE key='head_seq'") ?? 0
            erased = try db.scalarInt("SELECT value FROM meta WHERE key='erased'") ?? 0
            let s = try db.statement("SELECT value FROM meta WHERE key='head_link'")
            headLink = try s.step() ? s.blob(0) : []
            nextAccountID = (try db.scalarInt("SELECT max(id) FROM accounts") ?? 0) + 1
            nextBlockID = (try db.scalarInt("SELECT max(id) FROM blocks") ?? 0) + 1
            let lastBlockSeq = try db.scalarInt("SELECT max(last_seq) FROM blocks") ?? 0
            sealedLink = try JournalReader.lastSealedLink(db)
            (tail, tailLinks) = try JournalReader.tailRows(db)
            accounts.removeAll()
            let tailEnd = tail.last?.header.seq ?? lastBlockSeq
            guard headLink.count == Chain.linkBytes, tailEnd == headSeq,
                  tail.first.map({ $0.header.seq == lastBlockSeq + 1 }) ?? true
            else {
                throw JournalError(.corrupt, "journal head (event \(headSeq)) does not match its stored events (last \(tailEnd)); run `lethe verify`")
            }
            // Never write on top of a head that the master key did not sign.
            if headSeq > 0 {
                let s = try db.statement("SELECT value FROM meta WHERE key='head_mac'")
                let mac = try s.step() ? s.blob(0) : []
                guard mac == Anchor.mac(key: anchorKey, headSeq: headSeq, headLink: headLink) else {
                    throw JournalError(.corrupt, "the journal's head is not authenticated by this master key (rewritten, or another master key); run `lethe verify`")
                }
            }
        } catch {
            throw JournalError.storage("cannot read the journal's head", error)
        }
    }

    func accountRow(_ name: String) throws -> AccountRow? {
        if let row = accounts[name] { return row }
        let s = try db.statement("SELECT id, version, last_at FROM accounts WHERE name = ?")
        defer { s.reset() }
        s.bind(1, name)
        guard try s.step() else { return nil }
        let row = AccountRow(id: s.int(0), version: s.int(1), lastAt: s.int(2))
        remember(name, row)
        return row
    }

    private func remember(_ name: String, _ row: AccountRow) {
        if accounts.count >= accountCacheLimit { accounts.removeAll(keepingCapacity: true) }
        accounts[name] = row
    }

    /// The sequence numbers of those of `ids` that the journal already holds.
    private func existingSeqs(of ids: [String]) throws -> [String: Int64] {
        var found: [String: Int64] = [:]
        try db.inChunks(of: 256, count: ids.count, sql: { n in
            "SELECT id, seq FROM event_ids WHERE id IN (\(Array(repeating: "?", count: n).joined(separator: ", ")))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(k + 1), ids[i]) }
            while try s.step() { found[s.text(0)!] = s.int(1) }
        }
        return found
    }

    func append(
        _ batch: PreparedBatch, shredded: Set<String>, erasing erasures: [Erasure],
        lookupKey: @escaping (String, SealScope) throws -> KeyStore.Lookup
    ) throws -> [AppendOutcome] {
        guard !batch.items.isEmpty || !erasures.isEmpty else { return [] }
        self.lookupKey = lookupKey
        defer { self.lookupKey = nil }
        do {
            return try db.transaction {
                // Another process may have appended since this writer last looked.
                // Another process may have appended, or erased payloads this writer holds in its tail.
                if try db.scalarInt("SELECT value FROM meta WHERE key='head_seq'") != headSeq
                    || db.scalarInt("SELECT value FROM meta WHERE key='erased'") != erased {
                    options.logger.debug("journal moved under this writer; reloading", metadata: ["head_seq": "\(headSeq)"])
                    try reload()
                }
                let outcomes = try appendInTransaction(batch.items, shredded: shredded)
                // An erasure goes with its events: none is recorded for an account whose event
                // was refused (a purge that did not happen erases nothing).
                var refused = Set<String>()
                for (item, outcome) in zip(batch.items, outcomes) { if case .rejected = outcome { refused.insert(item.account) } }
                let record = try db.statement("INSERT INTO erasures(account, seqs) VALUES(?, ?)")
                for erasure in erasures where !refused.contains(erasure.account) {
                    switch erasure {
                    case .account(let account):
                        try record.bind(1, account).bind(2, nil as String?).run()
                    case .events(let account, let seqs):
                        try record.bind(1, account).bind(2, seqs.map(String.init).joined(separator: ",")).run()
                    }
                }
                return outcomes
            }
        } catch {
            // The transaction rolled back: forget whatever this batch cached.
            rules?.forget()
            try? reload()
            throw JournalError.storage("append failed; nothing of the batch was written", error)
        }
    }

    private func appendInTransaction(_ batch: [PreparedBatch.Item], shredded: Set<String>) throws -> [AppendOutcome] {
        // Accounts of this batch, staged until the commit.
        var staged: [String: AccountRow] = [:]
        var newAccounts: [String] = []
        // Ids already in the journal are looked up for the whole batch at once (the write lock is
        // held, so none can appear meanwhile); the batch's own ids join them as they are taken,
        // and are recorded after the loop.
        var known = try existingSeqs(of: batch.compactMap { $0.id })
        var claims: [(id: String, seq: Int64)] = []
        var outcomes: [AppendOutcome] = []
        outcomes.reserveCapacity(batch.count)
        var sealed: [SealedEvent] = []
        var digests: [[UInt8]] = []
        sealed.reserveCapacity(batch.count)
        digests.reserveCapacity(batch.count)
        var seq = headSeq
        try loadHistories(for: batch)
        for e in batch {
            let body: PreparedBatch.Sealed
            switch e.sealed {
            case .failure(let error):
                outcomes.append(.rejected(error))
                continue
            case .success(let s):
                body = s
            }
            // An id the journal or this batch already holds makes the event a no-op.
            if let id = e.id, let earlier = known[id] {
                outcomes.append(.duplicate(seq: earlier))
                continue
            }
            func refuse(_ error: JournalError) { outcomes.append(.rejected(error)) }
            if e.scope == .subject && shredded.contains(e.account) {
                refuse(JournalError(.accountShredded, "account \(e.account) was erased; it takes no new events"))
                continue
            }
            var row: AccountRow
            var isNew = false
            if let s = staged[e.account] {
                row = s
            } else if let known = try accountRow(e.account) {
                row = known
            } else {
                row = AccountRow(id: nextAccountID + Int64(newAccounts.count), version: 0, lastAt: .min)
                isNew = true
            }
            if let expected = e.expectedVersion, expected != row.version {
                refuse(JournalError(
                    .versionConflict, "account \(e.account) is at version \(row.version), not the expected \(expected)"))
                continue
            }
            if e.at.nanoseconds < row.lastAt {
                refuse(JournalError(
                    .timeOrder, "field at: \(e.at) is older than account \(e.account)'s latest event (\(Timestamp(nanoseconds: row.lastAt)))"))
                continue
            }
            // Last, the domain's rules: an event they admit is accepted, so their state stays true.
            if let rules, let plaintext = e.plaintext {
                if !rules.follows(e.account) && rules.needsHistory(type: e.type) {
                    try rules.load(e.account, history: history(of: e.account))
                }
                if let why = rules.admit(account: e.account, type: e.type, payload: plaintext, scope: e.scope, at: e.at) {
                    refuse(JournalError(.refusedByRules, why))
                    continue
                }
            }
            if isNew { newAccounts.append(e.account) }
            seq += 1
            if let id = e.id {
                known[id] = seq
                claims.append((id, seq))
            }
            row.version += 1
            row.lastAt = e.at.nanoseconds
            staged[e.account] = row
            let header = EventHeader(seq: seq, version: row.version, account: e.account, type: e.type, at: e.at, id: e.id)
            sealed.append(SealedEvent(header: header, nonce: body.nonce, body: .sealed(body.body, e.scope)))
            digests.append(body.digest)
            outcomes.append(.appended(header))
        }
        // The chain is computed on another core while the ids and account rows are written.
        let chain = Background(inline: sealed.count < 256) { [headLink, sealed, digests] in
            var link = headLink
            var scratch: [UInt8] = []
            return zip(sealed, digests).map { e, digest in
                link = Chain.link(previous: link, header: e.header, digest: digest, scratch: &scratch)
                return link
            }
        }
        // Plain inserts: an id recorded twice would be a bug, and its error rolls the batch back.
        try db.inChunks(of: 128, count: claims.count, sql: {
            "INSERT INTO event_ids(id, seq) VALUES \(SQLiteDatabase.placeholders(rows: $0, columns: 2))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(2 * k + 1), claims[i].id).bind(Int32(2 * k + 2), claims[i].seq) }
            try s.run()
        }
        try writeAccounts(staged)
        try write(sealed: sealed, links: chain.value(), staged: staged, newAccounts: newAccounts)
        return outcomes
    }

    /// The account's stored events, decrypted, read on this connection inside the transaction.
    ///
    /// - Complexity: nothing for an account the journal has never seen; otherwise the blocks that
    ///   hold its events, plus the unsealed tail this writer keeps in memory.
    private func history(of account: String) throws -> [StoredEvent] {
        guard let lookupKey, try accountRow(account) != nil else { return [] }
        let reader = JournalReader(db: db, path: db.path, keysPath: "", lookupKey: lookupKey)
        var sealed: [SealedEvent] = []
        try reader.scanBlocks(account: account) { sealed.append($0) }
        sealed += tail.filter { $0.header.account == account }
        return try sealed.map { try reader.open($0) }
    }

    /// Gives the rules the histories of the batch's accounts they do not follow yet, a group of
    /// accounts at a time, reading each block that holds any of them once per group: accounts are
    /// interleaved in blocks, so loading them one by one would decode the same blocks again and
    /// again. (An account whose state is dropped meanwhile is loaded alone when its turn comes.)
    private func loadHistories(for batch: [PreparedBatch.Item]) throws {
        guard let rules, let lookupKey else { return }
        var seen = Set<String>()
        var missing: [String] = []
        for e in batch where e.plaintext != nil && seen.insert(e.account).inserted {
            guard case .success = e.sealed, !rules.follows(e.account), rules.needsHistory(type: e.type) else { continue }
            missing.append(e.account)
        }
        guard missing.count > 1 else { return }
        rules.makeRoom(for: missing.count)
        let reader = JournalReader(db: db, path: db.path, keysPath: "", lookupKey: lookupKey)
        // Groups of accounts holding up to ~500,000 events between them (their versions): each
        // group reads the blocks that hold any of them once, and memory stays bounded.
        var start = 0
        while start < missing.count {
            var names = Set<String>()
            var events: Int64 = 0
            while start < missing.count && events < 500_000 {
                let account = missing[start]
                start += 1
                guard let row = try accountRow(account) else {
                    try rules.load(account, history: [])  // a new account: no history
                    continue
                }
                names.insert(account)
                events += row.version
            }
            guard !names.isEmpty else { continue }
            var sealed: [String: [SealedEvent]] = [:]
            try forEachBlock(holding: names) { _, block in
                for e in block.events where names.contains(e.header.account) { sealed[e.header.account, default: []].append(e) }
            }
            for e in tail where names.contains(e.header.account) { sealed[e.header.account, default: []].append(e) }
            for account in names where !rules.follows(account) {
                try rules.load(account, history: try (sealed[account] ?? []).map { try reader.open($0) })
            }
        }
    }

    /// Stores the batch's account rows (new ones, and new versions and times).
    private func writeAccounts(_ staged: [String: AccountRow]) throws {
        let rows = Array(staged)
        try db.inChunks(of: 128, count: rows.count, sql: { n in """
            INSERT INTO accounts(id, name, version, last_at) VALUES \(SQLiteDatabase.placeholders(rows: n, columns: 4))
            ON CONFLICT(id) DO UPDATE SET version = excluded.version, last_at = excluded.last_at
            """ }) { s, range in
            for (k, i) in range.enumerated() {
                let p = Int32(4 * k)
                s.bind(p + 1, rows[i].value.id).bind(p + 2, rows[i].key).bind(p + 3, rows[i].value.version).bind(p + 4, rows[i].value.lastAt)
            }
            try s.run()
        }
    }

    /// Writes the accepted events: full blocks are sealed, the rest joins the tail. Then the caches move.
    private func write(sealed: [SealedEvent], links: [[UInt8]], staged: [String: AccountRow], newAccounts: [String]) throws {
        guard !sealed.isEmpty else { return }
        var blockID = nextBlockID
        var newSealedLink = sealedLink
        let blockSize = options.blockEvents
        var newTail: [SealedEvent]?
        var newTailLinks: [[UInt8]] = []
        if tail.count + sealed.count >= blockSize {
            // (An empty tail, the usual case for large batches, costs no copy of the batch.)
            var pending = tail.isEmpty ? sealed : tail + sealed
            var pendingLinks = tail.isEmpty ? links : tailLinks + links
            try db.statement("DELETE FROM tail").run()
            // Encoding and compressing are pure work: the batch's blocks are made on every core.
            let starts = Array(stride(from: 0, through: pending.count - blockSize, by: blockSize))
            let (events, eventLinks, first) = (pending, pendingLinks, sealedLink)
            let frames = starts.parallelMap(minimumSlice: 1) { start in
                Result<[UInt8], any Error> {
                    let previous = start == 0 ? first : eventLinks[start - 1], last = eventLinks[start + blockSize - 1]
                    let content = Block.encode(events[start..<start + blockSize], previousLink: previous, lastLink: last)
                    #if DEBUG
                    // Assert what is about to be written: it decodes to the same block.
                    assert(try! Block.decode(content, where: "new block")
                           == Block(events: Array(events[start..<start + blockSize]), previousLink: previous, lastLink: last),
                           "block does not round-trip")
                    #endif
                    return try LZ4.compressFrame(content)
                }
            }
            let insertBlock = try db.statement("INSERT INTO blocks(id, first_seq, last_seq, frame) VALUES(?, ?, ?, ?)")
            var postings: [(account: Int64, block: Int64)] = []
            for (start, frame) in zip(starts, frames) {
                insertBlock.reset()
                try insertBlock.bind(1, blockID).bind(2, pending[start].header.seq).bind(3, pending[start + blockSize - 1].header.seq)
                    .bind(4, try frame.get()).run()
                var indexed = Set<Int64>()
                for e in pending[start..<start + blockSize] {
                    let id = try staged[e.header.account]?.id ?? accountRow(e.header.account)!.id
                    if indexed.insert(id).inserted { postings.append((id, blockID)) }
                }
                blockID += 1
            }
            let sealedCount = starts.count * blockSize
            newSealedLink = pendingLinks[sealedCount - 1]
            try db.inChunks(of: 256, count: postings.count, sql: {
                "INSERT INTO recent_account_blocks(account_id, block_id) VALUES \(SQLiteDatabase.placeholders(rows: $0, columns: 2))"
            }) { s, range in
                for (k, i) in range.enumerated() { s.bind(Int32(2 * k + 1), postings[i].account).bind(Int32(2 * k + 2), postings[i].block) }
                try s.run()
            }
            try mergeRecentPostingsIfDue()
            options.logger.trace("sealed blocks", metadata: ["blocks": "\(starts.count)", "last_seq": "\(pending[sealedCount - 1].header.seq)"])
            pending.removeFirst(sealedCount)
            pendingLinks.removeFirst(sealedCount)
            try insertTail(pending, pendingLinks)
            (newTail, newTailLinks) = (pending, pendingLinks)
        } else {
            try insertTail(sealed, links)
        }
        let head = sealed.last!.header.seq
        let meta = try db.statement("UPDATE meta SET value = ? WHERE key = ?")
        try meta.bind(1, head).bind(2, "head_seq").run()
        meta.reset()
        try meta.bind(1, links.last!).bind(2, "head_link").run()
        try db.statement("INSERT OR REPLACE INTO meta(key, value) VALUES('head_mac', ?)")
            .bind(1, Anchor.mac(key: anchorKey, headSeq: head, headLink: links.last!)).run()

        // The caches move now; should the caller's COMMIT fail, `append` reloads them from disk.
        headSeq = head
        headLink = links.last!
        if let newTail {
            tail = newTail
            tailLinks = newTailLinks
        } else {
            tail.append(contentsOf: sealed)
            tailLinks.append(contentsOf: links)
        }
        nextBlockID = blockID
        sealedLink = newSealedLink
        nextAccountID += Int64(newAccounts.count)
        for (name, row) in staged { remember(name, row) }
    }

    /// The per-account block index is kept in two tables. A new block's postings (one per
    /// account in it) go to the small `recent_account_blocks`, and move to `account_blocks` in
    /// one pass, in account order, once `recentPostingsLimit` have gathered.
    ///
    /// Inserted straight into the large index, the postings of every block land all over it
    /// (accounts are interleaved in time), so each commit rewrote most of its pages, and the
    /// import slowed down as the journal grew (by a third over 3 M events). The small table stays
    /// in the page cache, and a merge rewrites each page of the large one once for hundreds of
    /// thousands of postings. Readers look in both tables.
    private func mergeRecentPostingsIfDue() throws {
        guard try db.scalarInt("SELECT count(*) FROM recent_account_blocks") ?? 0 >= options.recentPostingsLimit else { return }
        try db.execute("""
            INSERT OR IGNORE INTO account_blocks(account_id, block_id)
                SELECT account_id, block_id FROM recent_account_blocks ORDER BY account_id, block_id;
            DELETE FROM recent_account_blocks;
            """)
        options.logger.debug("per-account block index merged")
    }

    // MARK: Erasures

    /// Every sealed block that holds an event of any of `accounts`, each once, in journal order
    /// (found through the per-account block index). The block IDs are gathered before the first
    /// block is read, so `body` may rewrite the blocks it is given.
    private func forEachBlock(holding accounts: Set<String>, _ body: (Int64, Block) throws -> Void) throws {
        var blockIDs = Set<Int64>()
        let find = try db.statement(JournalReader.blocksOfAccount)
        for account in accounts {
            find.bind(1, account)
            while try find.step() { blockIDs.insert(find.int(0)) }
            find.reset()
        }
        let read = try db.statement("SELECT first_seq, last_seq, frame FROM blocks WHERE id = ?")
        for blockID in blockIDs.sorted() {
            read.bind(1, blockID)
            guard try read.step() else { read.reset(); continue }
            let block = try JournalReader.decodeFrame(read.blob(2), id: blockID, first: read.int(0), last: read.int(1))
            read.reset()
            try body(blockID, block)
        }
    }

    /// The oldest recorded erasures not done yet, up to `limit`.
    func pendingErasures(limit: Int) throws -> [(id: Int64, erasure: Erasure)] {
        let s = try db.statement("SELECT id, account, seqs FROM erasures ORDER BY id LIMIT ?")
        defer { s.reset() }
        s.bind(1, Int64(limit))
        var out: [(Int64, Erasure)] = []
        while try s.step() {
            let account = s.text(1) ?? ""
            if let list = s.optionalText(2) {
                out.append((s.int(0), .events(account: account, seqs: list.split(separator: ",").compactMap { Int64($0) })))
            } else {
                out.append((s.int(0), .account(account)))
            }
        }
        return out
    }

    /// Physically removes the payloads the erasures name, in one transaction with the removal of
    /// their records: every block that holds one is decoded, its payloads replaced by their
    /// digests, and written back, once however many erasures touch it; the tail's rows likewise.
    /// Payloads already gone are skipped.
    func scrub(_ erasures: [(id: Int64, erasure: Erasure)]) throws {
        var wholeAccounts = Set<String>()
        var events: [String: Set<Int64>] = [:]
        for (_, erasure) in erasures {
            switch erasure {
            case .account(let a): wholeAccounts.insert(a)
            case .events(let a, let seqs): events[a, default: []].formUnion(seqs)
            }
        }
        func targets(_ e: SealedEvent) -> Bool {
            guard case .sealed(_, let scope) = e.body else { return false }
            if scope == .subject && wholeAccounts.contains(e.header.account) { return true }
            return events[e.header.account]?.contains(e.header.seq) ?? false
        }
        let accounts = wholeAccounts.union(events.keys)
        do {
            try db.transaction {
                let update = try db.statement("UPDATE blocks SET frame = ? WHERE id = ?")
                try forEachBlock(holding: accounts) { blockID, block in
                    guard block.events.contains(where: targets) else { return }
                    var scrubbed = block
                    for k in scrubbed.events.indices where targets(scrubbed.events[k]) {
                        scrubbed.events[k].body = .purged(digest: scrubbed.events[k].digest)
                    }
                    let content = scrubbed.encode()
                    #if DEBUG
                    assert(try! Block.decode(content, where: "scrubbed block") == scrubbed, "block does not round-trip")
                    #endif
                    try update.bind(1, try LZ4.compressFrame(content)).bind(2, blockID).run()
                }
                let clearTail = try db.statement("UPDATE tail SET payload = NULL, digest = ?, scope = 0 WHERE seq = ?")
                for e in try JournalReader.tailRows(db).0 where targets(e) {
                    try clearTail.bind(1, e.digest).bind(2, e.header.seq).run()
                }
                let done = try db.statement("DELETE FROM erasures WHERE id = ?")
                for (id, _) in erasures { try done.bind(1, id).run() }
                try db.execute("UPDATE meta SET value = value + 1 WHERE key = 'erased'")
            }
            try reload()
        } catch {
            try? reload()
            throw JournalError.storage("erasing the payloads of \(accounts.count) accounts failed; it will be retried", error)
        }
    }

    /// Copies the WAL into the database and truncates it, so no old page survives there. A
    /// reader holding an old snapshot keeps the WAL busy: the checkpoint is retried for a while,
    /// then reported (the next erasure checkpoints again).
    func checkpoint() throws {
        do {
            for attempt in 0..<50 {
                let s = try db.statement("PRAGMA wal_checkpoint(TRUNCATE)")
                let busy = try s.step() ? s.int(0) : 0
                s.reset()
                if busy == 0 { return }
                if attempt < 49 { usleep(100_000) }
            }
            options.logger.warning("the journal's WAL could not be truncated: a reader holds an old snapshot; the next erasure retries")
        } catch {
            throw JournalError.storage("checkpointing the journal's WAL failed", error)
        }
    }

    private func insertTail(_ events: [SealedEvent], _ links: [[UInt8]]) throws {
        let insert = try db.statement("""
            INSERT INTO tail(seq, account, version, type, at, event_id, session, counter, payload, digest, link, at_digits, scope)
            VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for (e, link) in zip(events, links) {
            insert.reset()
            insert.bind(1, e.header.seq).bind(2, e.header.account).bind(3, e.header.version).bind(4, e.header.type)
                .bind(5, e.header.at.nanoseconds).bind(6, e.header.id)
                .bind(7, Int64(bitPattern: e.nonce.session)).bind(8, Int64(e.nonce.counter))
            switch e.body {
            case .sealed(let bytes, let scope): insert.bind(9, bytes).bind(10, nil as [UInt8]?).bind(13, Int64(scope.rawValue))
            case .purged(let digest): insert.bind(9, nil as [UInt8]?).bind(10, digest).bind(13, Int64(SealScope.subject.rawValue))
            }
            try insert.bind(11, link).bind(12, Int64(e.header.at.fractionDigits)).run()
        }
    }
}
