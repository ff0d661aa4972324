import Crypto
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
    /// The key that seals the payload, so that it can be erased on its own (an item, a record),
    /// with the account, or never (the engine's records).
    public var scope: KeyScope

    public init(
        id: String? = nil, account: String, type: String, at: Timestamp, payload: [UInt8], expectedVersion: Int64? = nil,
        scope: KeyScope = .account
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

/// What a purge erases, besides writing its event: keys first (so every copy of what they sealed
/// is unreadable for good, backups and old copies of the file included), then the payloads
/// themselves, physically, from the journal's file.
public enum Erasure: Sendable, Hashable {
    /// The account's key, the own keys of its events and its record chains but those of the categories in
    /// `keeping` (records that outlive the account, as the staff access log does); payloads
    /// sealed under the engine key stay.
    case account(String, keeping: Set<String> = [])
    /// The event `seq`'s own key (`KeyScope.own`: an item's `ItemCreated`) and payload, with which
    /// every copy of it goes. An event sealed under a key it shares is refused (`.invalidEvent`):
    /// removing its payload alone would leave it readable in the copies taken before.
    case event(account: String, seq: Int64)
    /// The account's records of a category up to `through` (inclusive): they expire oldest first,
    /// so their keys are the beginning of the category's chain.
    case records(account: String, category: String, through: Timestamp)

    public var account: String {
        switch self {
        case .account(let a, _), .event(let a, _), .records(let a, _, _): a
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
        /// Still in the journal, but the key that sealed it was destroyed: unreadable for good.
        case shredded
    }

    public var header: EventHeader
    public var payload: Payload
    /// The key the payload was sealed under (a reference: kind, own key id, record index).
    package var key: KeyRef = .account
    /// That key itself, when it still exists: what the read models seal their copy of the
    /// payload's fields under (`KeyDerivation.fieldKey`), so that the copy dies with it.
    package var sealingKey: SymmetricKey?
    /// The payload's sealing session and counter, unique to it in any history that holds it: what
    /// the read models' sealed copies of its fields are made unique by (`KeyDerivation.cellKey`).
    package var origin: NonceID?

    public init(header: EventHeader, payload: Payload) {
        self.header = header
        self.payload = payload
    }
}

/// The append-only, tamper-evident store of personal-data events: one SQLite file in WAL mode.
///
/// Events get a global sequence number and a per-account version. Their payloads are sealed with
/// AES-GCM under keys kept in a separate `KeyStore` file (the account's, an event's own, a record's,
/// or the engine's: see `KeyScope`) and chained with SHA-256; they wait in a small unsealed tail
/// until `blockEvents` have gathered, then move, in one transaction, into a block compressed as a
/// standard LZ4 frame. See the README for the format.
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
        /// Time for the engine's own records (key creation and destruction); events carry their own times.
        public var clock: Clock = .system
        /// The domain's rules, checked against each account's history as events are decided.
        public var rules: (any EventRules)?
        public var logger: Logger = Logger(label: "lethe.journal")
        /// How long an erasure waits for readers that hold an old snapshot of a file before it
        /// reports that file's WAL as not yet truncated.
        public var truncateWait: Duration = .seconds(10)
        /// How many recent (account, block) postings gather before they move to the per-account
        /// block index's runs in one sorted pass; nil: at least 16,384, more as the runs grow
        /// (see `BlockIndex`).
        package var recentPostingsLimit: Int?
        /// How many new event ids gather before they move to the id index's runs in one sorted
        /// pass; nil: at least 16,384, more as the runs grow (see `EventIDIndex`).
        package var recentIDsLimit: Int?

        public init() {}
    }

    /// Format 7 (session 21) packs the block index's recent postings on PostgreSQL (a row per
    /// account per append, `PostgresJournalStore.addRecentPostings`); a file's tables are those
    /// of format 6, and its upgrade only renumbers it. Older builds refuse format 7: one of them
    /// would read a packed row as a single posting and miss blocks of the account.
    public static let formatVersion: Int64 = 7
    /// What readers read: formats 4 to 6 are read as they are until a writer upgrades them.
    package static let readableFormats: ClosedRange<Int64> = 4...formatVersion
    public static let maxPayloadBytes = 16 << 20
    public static let maxBlockEvents = 1 << 16
    static let maxAccountBytes = 256
    static let maxTypeBytes = 128
    static let maxIDBytes = 256

    /// Where the journal is: its file, or a server's address without its password.
    public let path: String
    /// Where the key store is: its file, or a server's address without its password.
    public let keysPath: String
    /// Where the key store's rows are, and how connections to them are opened.
    package let keyStore: any KeyStoreBackend
    /// Where the rows are, and how connections to them are opened.
    package let backend: any JournalBackend
    public let options: Options
    let master: MasterKeySource
    /// Keys and nonces: taken by `prepare`, never while waiting for the writer.
    let sealer: SealerLock
    /// Decisions, the chain and the file: taken by `append` (which may then take `sealer`, never the reverse).
    let writer: Mutex<Writer>
    /// The journal's random identity (meta `journal_id`).
    let journalID: [UInt8]
    /// The journal's own keys (engine, anchor, backup), from the key store.
    let journalKeys: JournalKeys
    /// This file's random instance (meta `instance`), new for every journal created or restored.
    let instance: [UInt8]
    /// Wakes this journal's waiting subscribers at each commit (see `Subscription`).
    let commits = CommitSignal()
    /// Readers kept between reads (see `read`).
    let idleReaders = Mutex<[IdleReader]>([])

    deinit {
        // The kept readers go first: their connections to a file are read-only, and the last
        // connection to close is the one that folds the WAL into the file and removes it.
        idleReaders.withLock { $0.removeAll() }
        commits.stopFeed()
    }

    /// The file the read models live in unless told otherwise, for a journal in a file: beside
    /// it. (A journal on a server keeps them on the server: see `ReadModels`.)
    public var defaultViewsPath: String? { backend.dataPaths.isEmpty ? nil : path + ".views" }

    /// How many events a bulk import (`Importer`) appends at a time on this journal's backend.
    public var importBatchSize: Int { backend.importBatchSize }

    /// How many events a bulk import (`Importer`) appends at once at most on this journal's
    /// backend: sealed batches waiting for the append are joined up to this many.
    public var importAppendLimit: Int { backend.importAppendLimit }

    /// `body` with the writer, under its lock, on a live connection (see `Writer.reconnectIfBroken`).
    func withWriter<T>(_ body: (inout sending Writer) throws -> sending T) throws -> sending T {
        try writer.withLock { writer in
            try writer.reconnectIfBroken(backend)
            return try body(&writer)
        }
    }

    /// Makes sure other instances' commits wake this journal's followers (see `CommitSignal.watch`). Blocks.
    func watchCommits() -> CommitSignal.Watch {
        commits.watch { onCommit, onEnd in try backend.commitFeed(onCommit: onCommit, onEnd: onEnd) }
    }

    /// Opens the journal at `path` (creating it when missing) and its key store at `keysPath`
    /// (default `path + ".keys"`), with the master key from `master` (default: the environment).
    public convenience init(path: String, keysPath: String? = nil, master: MasterKeySource = MasterKeySource(), options: Options = Options()) throws {
        try self.init(backend: SQLiteBackend(path: path), keysPath: keysPath ?? path + ".keys", master: master, options: options)
    }

    /// Opens the journal `backend` reaches (creating it when missing), with its key store in
    /// the file `keysPath`.
    package convenience init(backend: any JournalBackend, keysPath: String, master: MasterKeySource = MasterKeySource(), options: Options = Options()) throws {
        try self.init(backend: backend, keys: SQLiteKeyBackend(path: keysPath), master: master, options: options)
    }

    /// Opens the journal `backend` reaches (creating it when missing), with its key store where
    /// `keys` says (made when missing too).
    package init(backend: any JournalBackend, keys keyStore: any KeyStoreBackend, master: MasterKeySource = MasterKeySource(), options: Options = Options()) throws {
        precondition((1...Journal.maxBlockEvents).contains(options.blockEvents), "blockEvents out of range")
        self.backend = backend
        path = backend.place
        self.keyStore = keyStore
        keysPath = keyStore.place
        if let database = backend.database, database == keyStore.database {
            throw JournalError(.keys, "the key store \(keyStore.place) is in the journal's database: give it a database of its own (or a file), so that no dump or backup of the journal's database holds a key")
        }
        self.options = options
        self.master = master
        let dataPaths = backend.dataPaths
        let keys = try KeyStore(keyStore, master: master, dataPaths: dataPaths, entropy: options.entropy, synchronous: options.synchronous)
        let store = try backend.openWriter(options: options)
        let journalID = try store.journalID()
        self.journalID = journalID
        // A journal's keys are made with it: a journal with events and a key store without its
        // keys is the wrong key store, never a reason to make new ones.
        let isNew = try store.headSeq() == 0
        journalKeys = try keys.journalKeys(journalID, create: isNew)
        let keysDirty = try keys.hasResidue()
        // The writer has a key store connection of its own: it checks keys under the journal's
        // write lock without waiting for a batch being sealed.
        let writerKeys = try KeyStore(keyStore, master: master, dataPaths: dataPaths, entropy: options.entropy, synchronous: options.synchronous)
        if isNew { try Journal.anchorEmpty(store, keys: writerKeys, journalID: journalID, anchorKey: journalKeys.anchor) }
        writer = Mutex(try Writer(store: store, keys: writerKeys, journalID: journalID, journalKeys: journalKeys, options: options))
        instance = writer.withLock { $0.instance }
        sealer = SealerLock(try Sealer(keys: keys, journalKeys: journalKeys, backend: backend, entropy: options.entropy))
        // An erasure that could not truncate a WAL (a reader held an old snapshot) left a mark:
        // every open tries again.
        // (Briefly: an open is not the place to wait for readers; the next retention run waits.)
        if try keysDirty || writer.withLock({ try $0.store.hasResidue() }) {
            if let unfinished = try? truncateWALs(wait: min(options.truncateWait, .milliseconds(200))), !unfinished.isEmpty {
                options.logger.warning("a WAL still holds purged data: \(unfinished.joined(separator: "; "))")
            }
        }
    }

    /// A journal with no events yet is authenticated like any other: its head (0, the genesis
    /// link) gets its MAC, and the key store an anchor at 0, when it has none. (A journal emptied
    /// after it had events is not made valid again: the key store's anchor is ahead of it.)
    static func anchorEmpty(_ store: some JournalStore, keys: KeyStore, journalID: [UInt8], anchorKey: SymmetricKey) throws {
        let stored = try store.storedHead()
        let anchored = try keys.anchoredHead(journal: journalID, instance: stored.instance)
        guard stored.seq == 0, anchored == nil || anchored?.seq == 0 else { return }
        let mac = Anchor.mac(key: anchorKey, instance: stored.instance, headSeq: 0, headLink: stored.link)
        if stored.mac != mac { try store.write { try store.setHeadMAC(mac) } }
        if anchored == nil { try keys.anchor(journal: journalID, instance: stored.instance, head: stored.head) }
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
    /// An erasure whose account had an event of the batch refused is not recorded: a purge that
    /// did not happen erases nothing.
    ///
    /// With `finish: false` the erasures stay recorded for a later `finishErasures`, which does
    /// many at once: each block is rewritten once however many of its events go.
    ///
    /// With `allOrNothing`, a batch with any event refused writes nothing at all (neither events
    /// nor erasures) and throws that refusal: what a retention run needs, whose events were all
    /// decided on one view of the journal.
    @discardableResult
    public func append(_ events: [NewEvent], erasing erasures: [Erasure], allOrNothing: Bool = false, finish: Bool = true) throws -> [AppendOutcome] {
        let outcomes = try append(prepare(events), erasing: erasures, allOrNothing: allOrNothing)
        if finish { try finishErasures() }
        return outcomes
    }

    private func append(_ batch: PreparedBatch, erasing erasures: [Erasure], allOrNothing: Bool = false) throws -> [AppendOutcome] {
        let (outcomes, head) = try withWriter { writer in
            // Lock order: writer, then sealer (`prepare` takes the sealer alone).
            (try writer.append(batch, erasing: erasures, allOrNothing: allOrNothing, sealer: sealer), writer.headSeq)
        }
        commits.committed(through: head)
        return outcomes
    }

    /// Tidies the indexes after a run of appends: what their recent tables hold moves into
    /// their compact runs, where that costs work in proportion to it rather than to the journal
    /// (see "Writing" in the README). The importer calls it at its end; a host may call it
    /// when idle. Changes no event, no sequence number and no answer of any lookup.
    ///
    /// - Complexity: the recent postings and, for ids that grow with time, the recent ids.
    public func settle() throws {
        do {
            try withWriter { try $0.settle() }
        } catch {
            throw JournalError.storage("tidying the indexes failed; nothing was changed", error)
        }
    }

    /// Each account's version as of sequence number `head` (its events up to `head`), read in one
    /// snapshot: what a caller that decided from a view of the journal at `head` expects.
    ///
    /// - Complexity: the blocks after `head` and the accounts' rows.
    public func versions(of accounts: Set<String>, asOf head: Int64) throws -> [String: Int64] {
        try read { reader in
            var versions = try reader.store.accounts(named: Array(accounts)).mapValues(\.version)
            try reader.scan(from: head + 1) { e in
                if accounts.contains(e.header.account) { versions[e.header.account, default: 0] -= 1 }
            }
            for account in accounts where versions[account] == nil { versions[account] = 0 }
            return versions
        }
    }

    /// Checks and seals `events` (compression, AES-GCM, digests) without taking the writer's lock:
    /// a caller can prepare the next batch while the previous one is being appended. Keys the
    /// events need (a new account's, an event's own, a new record chain) are created and committed
    /// to the key store here, before any event sealed under them is written.
    ///
    /// - Complexity: O(n) in the batch.
    public func prepare(_ events: [NewEvent]) throws -> PreparedBatch {
        let keepPlaintext = options.rules != nil
        let checked = events.map { Journal.check($0) }
        let valid = events.indices.filter { checked[$0] == nil }
        let toSeal = valid.count == events.count ? events : valid.map { events[$0] }
        // Each event's account's place among the batch's distinct accounts (one lookup per event:
        // `slot` is set in place when the account is new).
        var accounts: [String] = []
        var places: [String: Int] = [:]
        places.reserveCapacity(events.count)
        func place(_ slot: inout Int) -> Int {
            if slot < 0 { slot = accounts.count }
            return slot
        }
        let slots = events.map { e in
            let slot = place(&places[e.account, default: -1])
            if slot == accounts.count { accounts.append(e.account) }
            return slot
        }
        // Keys and nonces under the sealer's lock; the sealing itself, on every core, outside it
        // (the writer takes that lock too, while this batch is being sealed).
        let (plans, epoch) = try sealer.withLock { sealer in
            let sealedSlots = valid.count == events.count ? slots : valid.map { slots[$0] }
            return (try sealer.plan(toSeal, slots: sealedSlots, accounts: accounts.count, at: options.clock.now()), sealer.keys.seenEpoch)
        }
        let sealed = Sealer.seal(toSeal, plans)
        // Each event's outcome: sealed, or refused by `check` (in order; no intermediate copies).
        var next = 0
        let items = events.indices.map { k in
            let outcome: Result<PreparedBatch.Sealed, JournalError>
            if let refusal = checked[k] {
                outcome = .failure(refusal)
            } else {
                outcome = sealed[next]
                next += 1
            }
            return PreparedBatch.Item(events[k], slot: slots[k], sealed: outcome, keepPlaintext: keepPlaintext)
        }
        return PreparedBatch(items: items, accounts: accounts, epoch: epoch)
    }

    /// Whether `s` holds a control character (Unicode's Cc: U+0000 to U+001F, U+007F to U+009F).
    /// Ids, accounts and types are stored as text, compared, indexed and printed as they are: a
    /// NUL would cut them short in SQLite, a line break would forge lines in a report.
    public static func hasControlCharacter(_ s: String) -> Bool {
        var s = s
        return s.withUTF8 { u in
            for (k, c) in u.enumerated() {
                if c < 0x20 || c == 0x7F { return true }
                // U+0080 to U+009F are C2 80 to C2 9F in UTF-8.
                if c == 0xC2, k + 1 < u.count, u[k + 1] < 0xA0 { return true }
            }
            return false
        }
    }

    static func check(_ e: NewEvent) -> JournalError? {
        func bad(_ field: String, _ why: String) -> JournalError { JournalError(.invalidEvent, "field \(field): \(why)") }
        let controlCharacters = "must not hold control characters (U+0000 to U+001F, U+007F to U+009F)"
        if e.account.isEmpty || e.account.utf8.count > Journal.maxAccountBytes { return bad("account", "must be 1 to \(Journal.maxAccountBytes) bytes") }
        if hasControlCharacter(e.account) { return bad("account", controlCharacters) }
        if e.type.isEmpty || e.type.utf8.count > Journal.maxTypeBytes { return bad("type", "must be 1 to \(Journal.maxTypeBytes) bytes") }
        if hasControlCharacter(e.type) { return bad("type", controlCharacters) }
        if let id = e.id, id.isEmpty || id.utf8.count > Journal.maxIDBytes { return bad("id", "must be 1 to \(Journal.maxIDBytes) bytes") }
        if let id = e.id, hasControlCharacter(id) { return bad("id", controlCharacters) }
        if e.payload.count > Journal.maxPayloadBytes { return bad("data", "payload above \(Journal.maxPayloadBytes) bytes") }
        // What the block decoder accepts back (it refuses any other count as damage).
        if !Timestamp.fractionDigitsRange.contains(e.at.fractionDigits) { return bad("at", "fractional digit count must be -1 to 9") }
        switch e.scope {
        case .records(let category) where category.isEmpty || category.utf8.count > Journal.maxTypeBytes:
            return bad("scope", "a record category must be 1 to \(Journal.maxTypeBytes) bytes")
        default:
            return nil
        }
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
        try withWriter { try $0.accountRow(account)?.version ?? 0 }
    }

    /// The time of the account's latest event; nil when it has none.
    public func latestTime(of account: String) throws -> Timestamp? {
        try withWriter { try $0.accountRow(account).map { Timestamp(nanoseconds: $0.lastAt) } }
    }

    /// The key of this journal's backups (random, in the key store under the master key).
    package var backupKey: SymmetricKey { journalKeys.backup }

    /// The accounts of this journal whose keys were destroyed (a purge).
    ///
    /// - Complexity: proportional to the journal's accounts (for a restore, once).
    public func accountsWithDestroyedKeys() throws -> [String] {
        var names: [String] = []
        try read { reader in try reader.store.forEachAccount { name, _ in names.append(name) } }
        let purged = try sealer.withLock { try $0.keys.purgedAccounts() }
        return names.filter(purged.contains)
    }

    /// Destroys every key of the account (what `Erasure.account` does before the payloads go):
    /// its sealed payloads become unreadable everywhere, backups included.
    public func destroyKeys(of account: String, keeping: Set<String> = [], at time: Timestamp) throws {
        try sealer.withLock { try $0.keys.destroy([.account(account, keeping: keeping)], at: time) }
        let unfinished = try truncateWALs()
        if !unfinished.isEmpty {
            throw JournalError(.erasureIncomplete, "keys destroyed, but " + unfinished.joined(separator: "; "))
        }
    }
}
