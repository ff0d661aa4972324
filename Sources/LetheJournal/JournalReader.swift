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

/// Opens a key store on its first use, with the journal's own keys.
final class LazyKeyStore {
    private let open: () throws -> KeyStore
    private var store: KeyStore?
    private var journalKeys: JournalKeys?

    init(open: @escaping () throws -> KeyStore) { self.open = open }

    func lookup(_ account: String, _ ref: KeyRef, journalID: () throws -> [UInt8]) throws -> KeyStore.Lookup {
        let store = try opened()
        if journalKeys == nil { journalKeys = try store.journalKeys(try journalID(), create: false) }
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
    let db: SQLiteDatabase
    let path: String
    /// Finds the key that sealed a payload; nil for a reader that only checks structure.
    private var lookupKey: ((String, KeyRef) throws -> KeyStore.Lookup)?
    /// Drops cached keys that another process destroyed: before each group of reads. True when it did.
    private var refreshKeys: () throws -> Bool = { false }
    private let keysPath: String

    /// A reader on the writer's own connection, inside its transaction (it sees the batch in progress).
    init(db: SQLiteDatabase, path: String, lookupKey: @escaping (String, KeyRef) throws -> KeyStore.Lookup) {
        self.db = db
        self.path = path
        self.keysPath = ""
        self.lookupKey = lookupKey
    }

    init(path: String, keysPath: String = "", openKeys: (() throws -> KeyStore)?) throws {
        self.path = path
        self.keysPath = keysPath
        do {
            guard FileManager.default.fileExists(atPath: path) else { throw JournalError(.storage, "no journal at \(path)") }
            db = try SQLiteDatabase(path: path, readOnly: true)
            _ = try db.scalarInt("SELECT value FROM meta WHERE key='format'")
        } catch let e as SQLiteError where e.code == 26 {
            throw JournalError(.notAJournal, "\(path) is not a Lethe journal (not an SQLite database)")
        } catch {
            throw JournalError.storage("cannot open journal \(path) for reading", error)
        }
        if let openKeys {
            // The key store is opened on first need: a reader of structure never touches it.
            let lazy = LazyKeyStore(open: openKeys)
            let db = self.db
            lookupKey = { account, ref in try lazy.lookup(account, ref) { try JournalReader.journalID(db) } }
            refreshKeys = { try lazy.refresh() }
        }
    }

    /// Checks a journal without opening it for writing: works on a damaged one. With its key
    /// store and the master key, the chain head's MAC is checked too (`report.anchored`).
    public static func verify(path: String, keysPath: String? = nil, master: MasterKeySource? = nil, progress: ((Int64, Int64) -> Void)? = nil) throws -> VerifyReport {
        let reader = try JournalReader(path: path, openKeys: nil)
        var anchor: SymmetricKey?
        if let master, let keysPath {
            guard FileManager.default.fileExists(atPath: keysPath) else {
                throw JournalError(.keys, "no key store at \(keysPath): the journal's head cannot be authenticated without it")
            }
            let keys = try KeyStore(path: keysPath, master: master, dataPaths: [path], entropy: .system, synchronous: .normal)
            anchor = try keys.journalKeys(try reader.snapshot { try JournalReader.journalID(reader.db) }, create: false).anchor
        }
        return try reader.snapshot { try reader.verify(anchor: anchor, progress: progress) }
    }

    func snapshot<T>(_ body: () throws -> T) throws -> T {
        do {
            try db.execute("BEGIN")
            // The snapshot starts at the first read.
            _ = try db.scalarInt("SELECT value FROM meta WHERE key='head_seq'")
        } catch {
            throw JournalError.storage("cannot read journal \(path)", error)
        }
        defer { try? db.execute("COMMIT") }
        return try body()
    }

    /// The last sequence number in this snapshot.
    public func headSeq() throws -> Int64 {
        try wrap { try db.scalarInt("SELECT value FROM meta WHERE key='head_seq'") ?? 0 }
    }

    private func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw JournalError.storage("cannot read journal \(path)", error) }
    }

    // MARK: Raw events

    static func blockPlace(id: Int64, first: Int64, last: Int64) -> String { "block \(id) (events \(first)–\(last))" }

    static func decodeFrame(_ frame: [UInt8], id: Int64, first: Int64, last: Int64) throws -> Block {
        let place = blockPlace(id: id, first: first, last: last)
        let content: [UInt8]
        do {
            content = try LZ4.decompressFrame(frame, limit: Block.maxContentBytes(frameBytes: frame.count))
        } catch {
            throw JournalError(.corrupt, "\(place): \(error)")
        }
        let block = try Block.decode(content, where: place)
        // Assert what was read: the row's columns and the frame agree.
        guard block.firstSeq == first, block.lastSeq == last else {
            throw JournalError(.corrupt, "\(place): holds events \(block.firstSeq)–\(block.lastSeq) (moved or reordered)")
        }
        return block
    }

    /// The unsealed events, in order, with their stored links.
    ///
    /// Every column is checked against what the writer stores (consecutive sequence numbers, a
    /// positive version, texts of valid UTF-8 within the journal's limits, a 16-byte session, a
    /// 32-byte digest and link, a sealed payload within `Sealing.maxSealedBytes`) before it is
    /// used: a row edited behind the engine's back throws `.corrupt` naming its event, and never
    /// reaches the block encoder's preconditions when the writer seals the tail.
    static func tailRows(_ db: SQLiteDatabase) throws -> ([SealedEvent], [[UInt8]]) {
        let s = try db.statement("""
            SELECT seq, account, version, type, at, at_digits, event_id, session, counter,
                   key_kind, key_number, key_index, payload, digest, link FROM tail ORDER BY seq
            """)
        defer { s.reset() }
        var events: [SealedEvent] = []
        var links: [[UInt8]] = []
        while try s.step() {
            let seq = s.int(0)
            func corrupt(_ why: String) -> JournalError { JournalError(.corrupt, "unsealed event \(seq) \(why)") }
            if let previous = events.last?.header.seq, seq != previous + 1 {
                throw JournalError(.corrupt, "unsealed event \(seq): expected event \(previous + 1) (events removed or reordered)")
            }
            guard seq > 0, seq < Int64.max else { throw corrupt("is out of range") }
            func text(_ column: Int32, _ name: String, limit: Int) throws -> String {
                guard s.isText(column), s.byteCount(column) <= limit,
                      let text = String(validating: s.blob(column), as: UTF8.self) else { throw corrupt("has a damaged \(name)") }
                return text
            }
            let account = try text(1, "account", limit: Journal.maxAccountBytes)
            let type = try text(3, "type", limit: Journal.maxTypeBytes)
            let id = s.isNull(6) ? nil : try text(6, "event id", limit: Journal.maxIDBytes)
            guard s.int(2) > 0 else { throw corrupt("has version \(s.int(2))") }
            // The writer stores -1 for the shortest form, restores of older builds 255: both are -1.
            guard let digits = s.int(5) == 255 ? -1 : Int8(exactly: s.int(5)), Timestamp.fractionDigitsRange.contains(digits) else {
                throw corrupt("has \(s.int(5)) fractional digits (at most 9)")
            }
            let header = EventHeader(
                seq: seq, version: s.int(2), account: account, type: type,
                at: Timestamp(nanoseconds: s.int(4), fractionDigits: digits), id: id)
            guard let session = Session(bytes: s.blob(7)), let counter = UInt32(exactly: s.int(8)) else {
                throw corrupt("has a damaged nonce")
            }
            guard let kind = KeyRef.Kind(rawValue: UInt8(truncatingIfNeeded: s.int(9))), (0...255).contains(s.int(9)) else {
                throw corrupt("has an unknown key kind \(s.int(9))")
            }
            guard s.int(10) >= 0, (0..<Int64.max).contains(s.int(11)) else { throw corrupt("has a key number or index out of range") }
            let key = KeyRef(kind, number: UInt64(s.int(10)), index: UInt64(s.int(11)))
            let body: SealedEvent.Body
            if s.isNull(12) {
                guard s.byteCount(13) == 32 else { throw corrupt("has a damaged digest (\(s.byteCount(13)) bytes)") }
                body = .purged(digest: s.blob(13))
            } else {
                guard s.byteCount(12) <= Sealing.maxSealedBytes else {
                    throw corrupt("has a sealed payload of \(s.byteCount(12)) bytes (at most \(Sealing.maxSealedBytes))")
                }
                body = .sealed(s.blob(12))
            }
            guard s.byteCount(14) == Chain.linkBytes else { throw corrupt("has a damaged link (\(s.byteCount(14)) bytes)") }
            events.append(SealedEvent(header: header, nonce: NonceID(session: session, counter: counter), key: key, body: body))
            links.append(s.blob(14))
        }
        return (events, links)
    }

    static func journalID(_ db: SQLiteDatabase) throws -> [UInt8] {
        let s = try db.statement("SELECT value FROM meta WHERE key='journal_id'")
        guard try s.step() else { throw JournalError(.corrupt, "journal has no id") }
        return s.blob(0)
    }

    static func genesis(_ db: SQLiteDatabase) throws -> [UInt8] { Chain.genesis(journalID: try journalID(db)) }

    /// The journal's random identity (hex), fixed at creation: what derived files (read models,
    /// backups) are bound to.
    public func identity() throws -> String { Hex.encode(try JournalReader.journalID(db)) }

    /// The link after the last sealed block, or the genesis link when no block is sealed yet.
    static func lastSealedLink(_ db: SQLiteDatabase) throws -> [UInt8] {
        let s = try db.statement("SELECT id, first_seq, last_seq, frame FROM blocks ORDER BY first_seq DESC LIMIT 1")
        guard try s.step() else { return try genesis(db) }
        return try decodeFrame(s.blob(3), id: s.int(0), first: s.int(1), last: s.int(2)).lastLink
    }

    /// Calls `body` with every stored event from `from` through `through`, in order; one block in memory at a time.
    package func scan(from: Int64 = 1, through: Int64 = .max, _ body: (SealedEvent) throws -> Void) throws {
        try scanGroups(from: from, through: through) { group in
            for e in group { try body(e) }
        }
    }

    /// Like `scan`, a block (or the tail) at a time.
    package func scanGroups(from: Int64 = 1, through: Int64 = .max, _ body: ([SealedEvent]) throws -> Void) throws {
        let blocks = try wrap {
            try db.statement("""
                SELECT id, first_seq, last_seq, frame FROM blocks
                WHERE last_seq >= ? AND first_seq <= ? ORDER BY first_seq
                """)
        }
        blocks.bind(1, from).bind(2, through)
        while try wrap({ try blocks.step() }) {
            let block = try JournalReader.decodeFrame(blocks.blob(3), id: blocks.int(0), first: blocks.int(1), last: blocks.int(2))
            try body(block.events.filter { $0.header.seq >= from && $0.header.seq <= through })
        }
        try body(try wrap { try JournalReader.tailRows(db).0 }.filter { $0.header.seq >= from && $0.header.seq <= through })
    }

    /// Calls `body` with the account's stored events, in order.
    ///
    /// - Complexity: proportional to the blocks that hold the account's events (an index lookup),
    ///   not to the journal.
    package func scan(account: String, _ body: (SealedEvent) throws -> Void) throws {
        try scanBlocks(account: account, body)
        for e in try wrap({ try JournalReader.tailRows(db).0 }) where e.header.account == account { try body(e) }
    }

    /// The IDs of the blocks holding events of account `?1`, from both tables of the per-account
    /// block index (see `Writer.mergeRecentPostingsIfDue`).
    static let blocksOfAccount = """
        SELECT ab.block_id FROM accounts a JOIN account_blocks ab ON ab.account_id = a.id WHERE a.name = ?1
        UNION ALL
        SELECT rb.block_id FROM accounts a JOIN recent_account_blocks rb ON rb.account_id = a.id WHERE a.name = ?1
        """

    /// The sealed blocks' part of `scan(account:)`.
    package func scanBlocks(account: String, _ body: (SealedEvent) throws -> Void) throws {
        let s = try wrap {
            try db.statement("""
                SELECT b.id, b.first_seq, b.last_seq, b.frame FROM blocks b
                WHERE b.id IN (\(JournalReader.blocksOfAccount)) ORDER BY b.first_seq
                """)
        }
        s.bind(1, account)
        while try wrap({ try s.step() }) {
            let block = try JournalReader.decodeFrame(s.blob(3), id: s.int(0), first: s.int(1), last: s.int(2))
            for e in block.events where e.header.account == account { try body(e) }
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
    private func keys(for events: [SealedEvent]) throws -> [OpeningKey] {
        if try refreshKeys() { sessionKeys.removeAll(keepingCapacity: true) }
        return try events.map { e in
            guard !e.isPurged else { return .none }
            if e.key.kind.isSingleUse { return OpeningKey(try lookup(e.header.account, e.key)) }
            let name = SessionKeyName(account: e.key.kind == .journal ? "" : e.header.account, key: e.key, session: e.nonce.session)
            if let (lookup, session) = sessionKeys[name] { return OpeningKey(lookup, session: session) }
            let lookup = try lookup(e.header.account, e.key)
            let session: SymmetricKey? = if case .key(let k) = lookup { KeyDerivation.sessionKey(k, e.nonce.session) } else { nil }
            if sessionKeys.count >= 200_000 { sessionKeys.removeAll(keepingCapacity: true) }
            sessionKeys[name] = (lookup, session)
            return OpeningKey(lookup, session: session)
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
        // Pipelined: while `body` takes one group's results, the next group is being opened.
        var previous: Opening<T>?
        try scanGroups(from: from, through: through) { group in
            let next = Opening(group, keys: try keys(for: group), keysPath: keysPath, transform: transform)
            if let previous { for t in try previous.results() { try body(t) } }
            previous = next
        }
        if let previous { for t in try previous.results() { try body(t) } }
    }

    /// One account's events, decrypted, in order.
    public func events(account: String, _ body: (StoredEvent) throws -> Void) throws {
        try scan(account: account) { try body(try open($0)) }
    }

    // MARK: Verification

    public struct VerifyReport: Sendable {
        public var events: Int64 = 0
        public var blocks: Int64 = 0
        public var tailEvents: Int64 = 0
        public var purgedEvents: Int64 = 0
        public var accounts: Int64 = 0
        public var storedBytes: Int64 = 0
        /// The chain's last link, hex: publish it to pin the journal's history.
        public var headLink: String = ""
        /// Whether the head's MAC was checked against the journal's anchor key (and matched).
        public var anchored = false
    }

    /// Checks every block's frame and content, the sequence, every account's version and time
    /// order, and the hash chain from genesis to the head. Throws `.corrupt` naming the first
    /// damaged block or event.
    ///
    /// - Complexity: one pass over the journal; memory proportional to the number of accounts.
    func verify(anchor: SymmetricKey?, progress: ((Int64, Int64) -> Void)? = nil) throws -> VerifyReport {
        var report = VerifyReport()
        let head = try headSeq()
        var link = try wrap { try JournalReader.genesis(db) }
        var chainScratch: [UInt8] = []
        var expectedSeq: Int64 = 1
        var accounts: [String: (version: Int64, at: Int64)] = [:]

        func check(_ e: SealedEvent, place: String) throws {
            let h = e.header
            let previous = accounts[h.account] ?? (0, .min)
            guard h.version == previous.version + 1 else {
                throw JournalError(.corrupt, "\(place): event \(h.seq) has version \(h.version) of account \(h.account), expected \(previous.version + 1) (events removed or reordered)")
            }
            guard h.at.nanoseconds >= previous.at else {
                throw JournalError(.corrupt, "\(place): event \(h.seq) goes back in time for its account (reordered)")
            }
            if case .purged(let digest) = e.body {
                guard digest.count == 32 else { throw JournalError(.corrupt, "\(place): event \(h.seq) has a damaged digest") }
                report.purgedEvents += 1
            }
            accounts[h.account] = (h.version, h.at.nanoseconds)
            link = Chain.link(previous: link, header: h, digest: e.digest, scratch: &chainScratch)
        }

        let blocks = try wrap { try db.statement("SELECT id, first_seq, last_seq, frame FROM blocks ORDER BY first_seq") }
        while try wrap({ try blocks.step() }) {
            let (id, first, last) = (blocks.int(0), blocks.int(1), blocks.int(2))
            let place = JournalReader.blockPlace(id: id, first: first, last: last)
            guard first == expectedSeq else {
                throw JournalError(.corrupt, "\(place): expected the block to start at event \(expectedSeq) (events removed or reordered)")
            }
            let frame = blocks.blob(3)
            report.storedBytes += Int64(frame.count)
            let block = try JournalReader.decodeFrame(frame, id: id, first: first, last: last)
            guard block.previousLink == link else {
                throw JournalError(.corrupt, "\(place): does not continue the hash chain of the block before it")
            }
            for e in block.events { try check(e, place: place) }
            guard link == block.lastLink else {
                throw JournalError(.corrupt, "\(place): hash chain broken inside the block (contents altered)")
            }
            report.blocks += 1
            report.events += Int64(block.events.count)
            expectedSeq = last + 1
            progress?(report.events, head)
        }
        let (tail, tailLinks) = try wrap { try JournalReader.tailRows(db) }
        for (e, stored) in zip(tail, tailLinks) {
            let place = "unsealed event \(e.header.seq)"
            guard e.header.seq == expectedSeq else {
                throw JournalError(.corrupt, "\(place): expected event \(expectedSeq) (events removed or reordered)")
            }
            try check(e, place: place)
            guard link == stored else { throw JournalError(.corrupt, "\(place): hash chain broken (contents altered)") }
            if case .sealed(let bytes) = e.body { report.storedBytes += Int64(bytes.count) }
            report.tailEvents += 1
            report.events += 1
            expectedSeq += 1
        }
        guard expectedSeq - 1 == head else {
            throw JournalError(.corrupt, "the journal ends at event \(expectedSeq - 1) but its head says \(head) (events removed or truncated)")
        }
        let headLink = try wrap {
            let s = try db.statement("SELECT value FROM meta WHERE key='head_link'")
            return try s.step() ? s.blob(0) : []
        }
        guard headLink == link else { throw JournalError(.corrupt, "the chain's head link does not match the events (altered)") }
        if let anchor {
            let mac = try wrap {
                let s = try db.statement("SELECT value FROM meta WHERE key='head_mac'")
                defer { s.reset() }
                return try s.step() ? s.blob(0) : []
            }
            // An empty journal has no MAC yet: nothing was appended under the anchor key.
            guard head == 0 || mac == Anchor.mac(key: anchor, headSeq: head, headLink: link) else {
                throw JournalError(.corrupt, "the chain head is not authenticated by the journal's anchor key: the journal was rewritten (or another key store was given)")
            }
            report.anchored = true
        }
        // The account table the writer relies on must agree with the events.
        let rows = try wrap { try db.statement("SELECT name, version FROM accounts") }
        while try wrap({ try rows.step() }) {
            let name = rows.text(0) ?? ""
            guard accounts[name]?.version == rows.int(1) else {
                throw JournalError(.corrupt, "account table: \(name) is at version \(rows.int(1)) but its events end at \(accounts[name]?.version ?? 0)")
            }
            report.accounts += 1
        }
        guard report.accounts == accounts.count else {
            throw JournalError(.corrupt, "account table: \(accounts.count) accounts have events but \(report.accounts) are listed")
        }
        report.headLink = Hex.encode(link)
        progress?(report.events, head)
        return report
    }
}
