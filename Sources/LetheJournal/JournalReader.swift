import Crypto
import Dispatch
import Foundation

/// Output slots for parallel decryption.
///
/// `@unchecked Sendable` is safe: each worker writes only the indices congruent to its own part
/// number, and nothing reads the buffer until the work is over (`concurrentPerform` returned, or
/// the work's group was waited for).
private struct ResultSlots<T>: @unchecked Sendable {
    let results: UnsafeMutableBufferPointer<Result<T, any Error>>
}

/// What one thread hands another and then leaves alone until the other is done with it (the
/// reader and its key caches, given to the keying queue for a read: see `events`).
private struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Opens a key store on its first use, with the journal's own keys.
final class LazyKeyStore {
    private let open: () throws -> KeyStore
    private let readJournalID: () throws -> [UInt8]
    private var store: KeyStore?
    private var journalKeys: JournalKeys?
    /// The journal's id, once read (`lookup` reads it when it first needs the journal's keys).
    private var journalID: [UInt8]?

    /// `journalID` reads the journal's id, once, when a lookup first needs it or `readJournalIDNow`.
    init(open: @escaping () throws -> KeyStore, journalID: @escaping () throws -> [UInt8]) {
        (self.open, readJournalID) = (open, journalID)
    }

    /// Reads the journal's id now, on the caller's thread, if it was not read yet (a reader reads
    /// it from its own connection before handing the lookups to another thread).
    func readJournalIDNow() throws {
        if journalID == nil { journalID = try readJournalID() }
    }

    func prefetch(accounts: Set<String>, own: Set<UInt64>) throws {
        try opened().prefetch(accounts: accounts, own: own)
    }

    func lookup(_ account: String, _ ref: KeyRef) throws -> KeyStore.Lookup {
        let store = try opened()
        if journalKeys == nil {
            try readJournalIDNow()
            journalKeys = try store.journalKeys(journalID!, create: false)
        }
        return try store.lookup(account, ref, journal: journalKeys!)
    }

    /// Drops keys destroyed since the last look (by any process); `dropping` runs, and it returns
    /// true, when it did.
    @discardableResult
    func refresh(dropping: () -> Void = {}) throws -> Bool {
        guard try store?.refresh() == true else { return false }
        dropping()
        return true
    }

    /// Drops the accounts' keys read so far (see `KeyStore.forgetSubjectKeys`).
    func forgetSubjectKeys() { store?.forgetSubjectKeys() }

    var cachedSubjectKeys: Int { store?.cachedSubjectKeys ?? 0 }

    private func opened() throws -> KeyStore {
        if let store { return store }
        let store = try open()
        self.store = store
        return store
    }
}

/// Reads a journal on a connection of its own: whole-journal scans, one account's events, and
/// verification. Created by `Journal.read`, used inside one read snapshot, on one thread.
public final class JournalReader {
    let store: any JournalStore
    let path: String
    /// Finds the key that sealed a payload; nil for a reader that only checks structure.
    private var lookupKey: ((String, KeyRef) throws -> KeyStore.Lookup)?
    /// Drops cached keys that another process destroyed: before each group of reads. True when it did.
    private var refreshKeys: () throws -> Bool = { false }
    /// Reads the keys of many accounts (and own keys) at once, ahead of their lookups.
    private var prefetchKeys: (Set<String>, Set<UInt64>) throws -> Void = { _, _ in }
    private let keysPath: String
    /// What `authenticate(after:)` checks the head against (set by `Journal.read(authenticated:)`).
    package var authority: HeadAuthority?
    /// The key store this reader opens on first need (nil: a reader of structure alone).
    private var keys: LazyKeyStore?

    /// A reader on the writer's own connection, inside its transaction (it sees the batch in progress).
    init(store: any JournalStore, lookupKey: @escaping (String, KeyRef) throws -> KeyStore.Lookup) {
        self.store = store
        self.path = store.place
        self.keysPath = ""
        self.lookupKey = lookupKey
    }

    /// A reader on a connection of its own (`JournalBackend.openReader`).
    init(backend: any JournalBackend, keysPath: String = "", openKeys: (() throws -> KeyStore)?) throws {
        path = backend.place
        self.keysPath = keysPath
        store = try backend.openReader()
        if let openKeys {
            // The key store is opened on first need: a reader of structure never touches it.
            let store = self.store
            let lazy = LazyKeyStore(open: openKeys, journalID: { try store.journalID() })
            keys = lazy
            lookupKey = { account, ref in try lazy.lookup(account, ref) }
            refreshKeys = { try lazy.refresh() }
            prefetchKeys = { accounts, own in try lazy.prefetch(accounts: accounts, own: own) }
        }
    }

    /// Checks a journal without opening it for writing: works on a damaged one. With its key
    /// store, the head is checked against the head the store remembers (rollback, truncation,
    /// a journal emptied or replaced); with the master key too, the head's MAC and the recorded
    /// erasures' MACs are checked (`report.anchored`).
    public static func verify(path: String, keysPath: String? = nil, master: MasterKeySource? = nil, progress: ((Int64, Int64) -> Void)? = nil) throws -> VerifyReport {
        try verify(backend: SQLiteBackend(path: path), keysPath: keysPath, master: master, progress: progress)
    }

    /// `verify(path:…)` of a journal on any backend.
    package static func verify(backend: any JournalBackend, keysPath: String? = nil, master: MasterKeySource? = nil, progress: ((Int64, Int64) -> Void)? = nil) throws -> VerifyReport {
        try verify(backend: backend, keys: keysPath.map { SQLiteKeyBackend(path: $0) }, master: master, progress: progress)
    }

    /// `verify(path:…)` of a journal on any backend, with its key store on any.
    package static func verify(backend: any JournalBackend, keys: (any KeyStoreBackend)?, master: MasterKeySource? = nil, progress: ((Int64, Int64) -> Void)? = nil) throws -> VerifyReport {
        let reader = try JournalReader(backend: backend, openKeys: nil)
        // Read before the snapshot begins: the store's anchor is then never ahead of it.
        var authority: HeadAuthority?
        if let keys {
            let (journalID, instance) = try reader.wrap { (try reader.store.journalID(), try reader.store.storedHead().instance) }
            let exists = try keys.exists()
            if let master {
                guard exists else {
                    throw JournalError(.keys, "no key store at \(keys.place): the journal's head cannot be authenticated without it")
                }
                let store = try KeyStore(keys, master: master, dataPaths: backend.dataPaths, entropy: .system, synchronous: .normal)
                authority = HeadAuthority(
                    anchorKey: try store.journalKeys(journalID, create: false).anchor,
                    anchored: try store.anchoredHead(journal: journalID, instance: instance))
            } else if exists {
                authority = HeadAuthority(anchorKey: nil, anchored: try KeyStore.anchoredHead(keys, journal: journalID, instance: instance))
            }
            if exists {
                authority?.otherFiles = try KeyStore.anchoredFiles(keys, journal: journalID)
            }
        }
        return try reader.snapshot { try reader.verify(authority: authority, progress: progress) }
    }

    /// The accounts' and events' keys this reader's key store holds (see `recycle`).
    package var cachedSubjectKeys: Int { keys?.cachedSubjectKeys ?? 0 }

    /// Readies the reader for another `Journal.read` (see `Journal.idleReaders`): without the
    /// last read's authority, and without any account's key.
    func recycle() {
        authority = nil
        keys?.forgetSubjectKeys()
    }

    /// Whether the last `snapshot` began (its first read answered), and so ran its body.
    private(set) var began = false

    func snapshot<T>(_ body: () throws -> T) throws -> T {
        began = false
        do {
            return try store.snapshot {
                // The snapshot starts at the first read.
                _ = try store.headSeq()
                began = true
                return try body()
            }
        } catch where !began {
            throw JournalError.storage("cannot read journal \(path)", error)
        }
    }

    /// The last sequence number in this snapshot.
    public func headSeq() throws -> Int64 {
        try wrap { try store.headSeq() ?? 0 }
    }

    func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as JournalError { throw e } catch { throw JournalError.storage("cannot read journal \(path)", error) }
    }

    // MARK: Raw events

    static func blockPlace(id: Int64, first: Int64, last: Int64) -> String { "block \(id) (events \(first)–\(last))" }

    static func decodeFrame(_ frame: [UInt8], id: Int64, first: Int64, last: Int64) throws -> Block {
        Block(try decodeFrame(frame, id: id, first: first, last: last, only: nil))
    }

    /// The frame decompressed and decoded (the events of `only` alone, when given: see
    /// `Block.decode(_:where:only:)`), checked against the row's range.
    static func decodeFrame(_ frame: [UInt8], id: Int64, first: Int64, last: Int64, only account: String?) throws -> Block.Content {
        let place = blockPlace(id: id, first: first, last: last)
        let bytes: [UInt8]
        do {
            bytes = try LZ4.decompressFrame(frame, limit: Block.maxContentBytes(frameBytes: frame.count))
        } catch {
            throw JournalError(.corrupt, "\(place): \(error)")
        }
        let content = try Block.decode(bytes, where: place, only: account)
        // Assert what was read: the row's columns and the frame agree.
        guard content.firstSeq == first, content.lastSeq == last else {
            throw JournalError(.corrupt, "\(place): holds events \(content.firstSeq)–\(content.lastSeq) (moved or reordered)")
        }
        return content
    }

    /// The journal's random identity (hex), fixed at creation: what derived files (read models,
    /// backups) are bound to.
    public func identity() throws -> String { Hex.encode(try wrap { try store.journalID() }) }

    /// Calls `body` with every stored event from `from` through `through`, in order; one block in memory at a time.
    package func scan(from: Int64 = 1, through: Int64 = .max, _ body: (SealedEvent) throws -> Void) throws {
        try scanGroups(from: from, through: through) { group in
            for e in group { try body(e) }
        }
    }

    /// Like `scan`, a block (or the tail) at a time.
    package func scanGroups(from: Int64 = 1, through: Int64 = .max, _ body: ([SealedEvent]) throws -> Void) throws {
        // Events are copied out only at the range's ends: a whole block is passed as decoded.
        func within(_ events: [SealedEvent]) -> [SealedEvent] {
            guard let first = events.first, let last = events.last,
                  first.header.seq < from || last.header.seq > through else { return events }
            return events.filter { $0.header.seq >= from && $0.header.seq <= through }
        }
        // The next block is read, then decompressed and decoded on another core while `body`
        // takes this one; what went wrong with it is thrown in its turn, after `body` had this one.
        var blocks = BlockScan(store, from: from, through: through)
        func readAhead() -> Result<Background<Result<[SealedEvent], any Error>>?, any Error> {
            Result { try wrap { try blocks.nextBlock() }.map { row in Background { Result { try row.decode().events } } } }
        }
        var next = readAhead()
        while let decoding = try next.get() {
            next = readAhead()
            try body(within(try decoding.value().get()))
        }
        try body(within(try wrap { try store.tail().0 }))
    }

    /// Calls `body` with the account's stored events, in order.
    ///
    /// - Complexity: proportional to the blocks that hold the account's events (an index lookup),
    ///   not to the journal.
    package func scan(account: String, _ body: (SealedEvent) throws -> Void) throws {
        var last: Int64 = 0
        try scanBlocks(account: account) { e in
            last = e.header.version
            try body(e)
        }
        // The tail's rows of the account alone (not the whole tail: up to a block's worth of
        // other accounts' events). Its versions go on from the blocks' one by one, so a row of
        // the account removed or moved shows, as the whole tail's sequence numbers would.
        for e in try wrap({ try TailRow.events(try store.tailRows(account: account), of: account).0 }) {
            guard e.header.version == last + 1 else {
                throw JournalError(.corrupt, "unsealed event \(e.header.seq): account \(account) is at version \(e.header.version) after \(last) (events removed or reordered)")
            }
            last = e.header.version
            try body(e)
        }
    }

    /// The sealed blocks' part of `scan(account:)`.
    package func scanBlocks(account: String, _ body: (SealedEvent) throws -> Void) throws {
        for id in try wrap({ try BlockIndex(store: store).blocks(ofAccount: account) }) {
            guard let row = try wrap({ try store.block(id: id) }) else {
                throw JournalError(.corrupt, "block index: account \(account) is listed in block \(id), which the journal does not hold")
            }
            for e in try JournalReader.decodeFrame(row.frame, id: row.id, first: row.first, last: row.last, only: account).events { try body(e) }
        }
    }

    // MARK: Decrypted events

    private func lookup(_ account: String, _ ref: KeyRef) throws -> KeyStore.Lookup {
        guard let lookupKey else { throw JournalError(.keys, "this reader has no key store") }
        return try lookupKey(account, ref)
    }

    package func open(_ e: SealedEvent) throws -> StoredEvent {
        guard !e.isPurged else { return try JournalReader.open(e, key: .none, keysPath: "").get() }
        return try JournalReader.open(e, key: OpeningKey(lookup(e.header.account, e.key)), keysPath: keysPath).get()
    }

    /// The key that opens one payload: the key it was sealed under and, when already known, the
    /// sealing key derived from it.
    enum OpeningKey: Sendable {
        case key(SymmetricKey, session: SymmetricKey?)
        case destroyed
        case none

        init(_ lookup: KeyStore.Lookup, session: SymmetricKey? = nil) {
            switch lookup {
            case .key(let k): self = .key(k, session: session)
            case .destroyed: self = .destroyed
            case .none: self = .none
            }
        }
    }

    static func open(_ e: SealedEvent, key: OpeningKey, keysPath: String) -> Result<StoredEvent, JournalError> {
        var stored = StoredEvent(header: e.header, payload: .purged)
        stored.key = e.key
        switch e.body {
        case .purged:
            return .success(stored)
        case .sealed(let bytes):
            switch key {
            case .key(let key, let known):
                return Result { () throws(JournalError) in
                    do {
                        let sealingKey = known ?? KeyDerivation.sealingKey(key, kind: e.key.kind, session: e.nonce.session)
                        stored.payload = .plaintext(try Sealing.open(bytes, key: sealingKey, nonce: e.nonce, kind: e.key.kind, account: e.header.account, seq: e.header.seq))
                        stored.sealingKey = key
                        stored.origin = e.nonce
                        return stored
                    } catch let error as JournalError {
                        throw error
                    } catch {
                        throw JournalError(.corrupt, "event \(e.header.seq): \(error)")
                    }
                }
            case .destroyed:
                stored.payload = .shredded
                return .success(stored)
            case .none:
                return .failure(JournalError(.keys, "event \(e.header.seq): the key store \(keysPath) has no key for it (the key store of another journal?)"))
            }
        }
    }

    private struct SessionKeyName: Hashable {
        var account: String
        var key: KeyRef
        var session: Session
    }

    /// Session keys of the keys that seal many payloads (accounts, the engine), derived
    /// once per read rather than once per payload; cleared when keys were destroyed anywhere.
    private var sessionKeys: [SessionKeyName: (KeyStore.Lookup, SymmetricKey?)] = [:]

    /// The key of each of a group's payloads, looked up on this thread (the key store's connection
    /// is not shared): once per key and session, whatever the number of events. A
    /// single-use key (a record's, an own key) serves one payload and seals it itself.
    ///
    /// Two passes: the payloads under a session key derived already (most of a long read's) take
    /// it in the first; the key store is asked for the rest in the second, after the keyrings of
    /// their accounts were read at once.
    private func keys(for events: [SealedEvent]) throws -> [OpeningKey] {
        if try refreshKeys() { sessionKeys.removeAll(keepingCapacity: true) }
        var keys = [OpeningKey](repeating: .none, count: events.count)
        var missing: [Int] = []
        var accounts = Set<String>()
        var own = Set<UInt64>()
        for k in events.indices where !events[k].isPurged {
            let ref = events[k].key
            switch ref.kind {
            case .own:
                own.insert(ref.number)
            case .records:
                accounts.insert(events[k].header.account)
            case .journal, .account:
                if let (lookup, session) = sessionKeys[sessionKeyName(events[k])] {
                    keys[k] = OpeningKey(lookup, session: session)
                    continue
                }
                if ref.kind == .account { accounts.insert(events[k].header.account) }
            }
            missing.append(k)
        }
        try prefetchKeys(accounts, own)
        for k in missing {
            let e = events[k]
            if e.key.kind.isSingleUse {
                keys[k] = OpeningKey(try lookup(e.header.account, e.key))
                continue
            }
            let name = sessionKeyName(e)
            if let (lookup, session) = sessionKeys[name] {
                keys[k] = OpeningKey(lookup, session: session)
                continue
            }
            let lookup = try lookup(e.header.account, e.key)
            let session: SymmetricKey? = if case .key(let key) = lookup { KeyDerivation.sessionKey(key, e.nonce.session) } else { nil }
            if sessionKeys.count >= 200_000 { sessionKeys.removeAll(keepingCapacity: true) }
            sessionKeys[name] = (lookup, session)
            keys[k] = OpeningKey(lookup, session: session)
        }
        return keys
    }

    private func sessionKeyName(_ e: SealedEvent) -> SessionKeyName {
        SessionKeyName(account: e.key.kind == .journal ? "" : e.header.account, key: e.key, session: e.nonce.session)
    }

    /// A group's opening, started by a job on the keying queue once it found the group's keys;
    /// `opening` waits for the job and throws what it threw.
    private final class Keyed<T: Sendable>: @unchecked Sendable {
        private var outcome: Result<Opening<T>, any Error>?
        private let done = DispatchGroup()

        init(on queue: DispatchQueue, _ work: @escaping () throws -> Opening<T>) {
            let work = Unchecked(work)
            queue.async(group: done) { self.outcome = Result { try work.value() } }
        }

        func wait() { done.wait() }

        func opening() throws -> Opening<T> {
            done.wait()
            return try outcome!.get()
        }
    }

    /// A group of events being opened and transformed on other threads (every core when the group
    /// is large), while the caller goes on; `results` waits for them, in order.
    ///
    /// The work holds only the slots, never the `Opening`: whoever drops the last reference (the
    /// caller, also when it stops early on an error) runs `deinit`, which waits for the work
    /// before the slots are freed.
    private final class Opening<T: Sendable> {
        private let slots: ResultSlots<T>
        private let done = DispatchGroup()

        init(_ events: [SealedEvent], keys: [OpeningKey], keysPath: String, transform: @escaping @Sendable (StoredEvent) throws -> T) {
            let buffer = UnsafeMutableBufferPointer<Result<T, any Error>>.allocate(capacity: events.count)
            buffer.initialize(repeating: .failure(JournalError(.corrupt, "not opened")))
            let slots = ResultSlots(results: buffer)
            self.slots = slots
            let parts = events.count >= 256 ? 2 : 1
            DispatchQueue.global().async(group: done) {
                DispatchQueue.concurrentPerform(iterations: parts) { part in
                    for k in stride(from: part, to: events.count, by: parts) {
                        let opened = JournalReader.open(events[k], key: keys[k], keysPath: keysPath)
                        slots.results[k] = Result { try transform(try opened.get()) }
                    }
                }
            }
        }

        deinit {
            done.wait()
            slots.results.deinitialize()
            slots.results.deallocate()
        }

        /// The results in order; the first failure, in order, is thrown.
        func results() throws -> [T] {
            done.wait()
            return try slots.results.map { try $0.get() }
        }
    }

    /// Every event from `from` on, decrypted, in journal order.
    ///
    /// A block's payloads are decrypted on every core before `body` sees them, one by one, in order.
    public func events(from: Int64 = 1, _ body: (StoredEvent) throws -> Void) throws {
        try events(from: from, transform: { $0 }, body)
    }

    /// Every event from `from` on, decrypted and passed through `transform` (decoding, say) on
    /// every core a block at a time; `body` gets the results one by one, in journal order.
    public func events<T: Sendable>(
        from: Int64 = 1, through: Int64 = .max, transform: @escaping @Sendable (StoredEvent) throws -> T, _ body: (T) throws -> Void
    ) throws {
        // Pipelined in three: this thread reads the blocks (decoded ahead on another core) and
        // hands `body` the results in order; a serial queue finds each group's keys, in order,
        // and starts its opening on every core. Up to three groups are between the two.
        //
        // The key store and the key caches are the queue's alone until every job it was given is
        // done; the journal's store is this thread's (the journal's id, which a first lookup of
        // the journal's keys reads, is read here first).
        if let keys { try wrap { try keys.readJournalIDNow() } }
        let keying = DispatchQueue(label: "lethe.read.keys")
        let reader = Unchecked(self)
        let keysPath = keysPath
        var pending: [Keyed<T>] = []
        defer { for job in pending { job.wait() } }
        try scanGroups(from: from, through: through) { group in
            pending.append(Keyed(on: keying) {
                Opening(group, keys: try reader.value.keys(for: group), keysPath: keysPath, transform: transform)
            })
            if pending.count > 3 { for t in try pending.removeFirst().opening().results() { try body(t) } }
        }
        while !pending.isEmpty { for t in try pending.removeFirst().opening().results() { try body(t) } }
    }

    /// One account's events, decrypted, in order.
    public func events(account: String, _ body: (StoredEvent) throws -> Void) throws {
        try scan(account: account) { try body(try open($0)) }
    }
}
