import Crypto
import Foundation

/// The keys of every account of one or more journals, apart from the journals (a SQLite file, or
/// a PostgreSQL database of its own: `KeyStorage`) and never inside a backup of one: each
/// account's keyring, the own keys of single events, and each journal's own keys, wrapped with
/// AES-256-GCM under a key derived from the master key.
///
/// Own keys are rows numbered in the order they are made (a new one lands at the end of the
/// table, whatever its account): making keys for thousands of items costs appends, not rewrites
/// of keyrings scattered over the file.
///
/// Destroying a key rewrites its keyring and clears what the database kept of the old one (a
/// SQLite file zeroes it and truncates its WAL; PostgreSQL vacuums the tables); every process notices at its next batch or read (the store's `epoch` moves) and drops the
/// keys it had cached, so a destroyed key is not used again anywhere.
package final class KeyStore {
    package enum Lookup: Sendable {
        case key(SymmetricKey)
        /// The key existed and was destroyed: what it sealed is gone for good.
        case destroyed
        /// This store never had such a key (a key store of another journal?).
        case none
    }

    /// What a batch needs from an account's keyring.
    package struct Needs: Sendable {
        package var chains: Set<String> = []
        package init() {}
    }

    /// A key to destroy.
    package enum Destruction: Sendable {
        /// The account's key and its record chains but those of `keeping` (its own keys are
        /// destroyed by `.own`, with the ids its events give).
        case account(String, keeping: Set<String>)
        /// Own keys (their ids) of the account's events.
        case own(String, ids: [UInt64])
        /// The keys of the records of a chain up to `before` (exclusive).
        case records(String, category: String, before: UInt64)

        var account: String {
            switch self {
            case .account(let a, _), .own(let a, _), .records(let a, _, _): a
            }
        }
    }

    package static let format: Int64 = 2
    /// Where the store is, for messages (a path, or a server's address without its password).
    package let path: String
    private let db: any KeyStorage
    private let entropy: Entropy
    /// The wrapping keys this master key opens, by generation (two during a rotation).
    private var wrapping: [Int64: SymmetricKey] = [:]
    /// Where new wrappings go: the newest generation this master key opens.
    private var generation: Int64 = 0
    private var epoch: Int64 = 0
    /// Keyrings as last read or written, with the sealed bytes stored for them (what an update
    /// expects to find, so that a keyring changed by another process is read again first).
    private var keyrings: [String: (ring: Keyring, sealed: [UInt8])] = [:]
    private var journalKeys: [[UInt8]: JournalKeys] = [:]
    /// Where each record chain was last walked to: reading records in order steps once per record.
    private var cursors: [ChainID: (index: UInt64, key: ChainKey)] = [:]
    private let cacheLimit = 100_000

    private struct ChainID: Hashable {
        var account: String
        var slot: UInt64
    }

    private static let wrapInfo = Array("lethe key-wrap v2".utf8)
    private static let checkLabel = Array("lethe key store check v2".utf8)

    /// Opens the key store at `path` (a file), creating it when missing, with the master key of
    /// `master` (which must not lie beside `dataPaths`, the files it protects).
    package convenience init(path: String, master: MasterKeySource, dataPaths: [String], entropy: Entropy, synchronous: Journal.Synchronous) throws {
        try self.init(SQLiteKeyBackend(path: path), master: master, dataPaths: dataPaths, entropy: entropy, synchronous: synchronous)
    }

    /// Opens the key store `backend` holds, creating it when missing, with the master key of
    /// `master` (which must not lie beside `dataPaths`, the files it protects, nor the store's).
    package init(_ backend: any KeyStoreBackend, master: MasterKeySource, dataPaths: [String], entropy: Entropy, synchronous: Journal.Synchronous) throws {
        let path = backend.place
        self.path = path
        self.entropy = entropy
        let masterKey = try master.load(besides: dataPaths + backend.dataPaths)
        do {
            db = try backend.open(synchronous: synchronous)
            if try db.isNew() {
                let salt = entropy.bytes(16)
                try db.create(format: KeyStore.format, first: WrappingRow(
                    generation: 1, salt: salt, check: KeyStore.check(KeyStore.wrappingKey(master: masterKey, salt: salt))))
            }
            let format = try db.format()
            guard format == KeyStore.format else {
                throw JournalError(.keys, "the key store \(path) has format \(format.map(String.init) ?? "none"); this build reads format \(KeyStore.format)")
            }
            for row in try db.wrappings() {
                let key = KeyStore.wrappingKey(master: masterKey, salt: row.salt)
                if KeyStore.check(key) == row.check { wrapping[row.generation] = key }
            }
            epoch = try db.epoch()
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.keys, "cannot open the key store \(path)", underlying: error)
        }
        guard let newest = wrapping.keys.max() else {
            throw JournalError(.keys, "the master key does not open the key store \(path) (wrong key, or the store was altered)")
        }
        generation = newest
    }

    deinit { db.close() }

    private static func wrappingKey(master: SymmetricKey, salt: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: master, salt: salt, info: wrapInfo, outputByteCount: 32)
    }

    private static func check(_ wrappingKey: SymmetricKey) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: checkLabel, using: wrappingKey))
    }

    private func newGeneration(_ g: Int64, master: SymmetricKey) -> WrappingRow {
        let salt = entropy.bytes(16)
        return WrappingRow(generation: g, salt: salt, check: KeyStore.check(KeyStore.wrappingKey(master: master, salt: salt)))
    }

    // MARK: Wrapping

    private func wrap(_ plain: [UInt8], as id: KeyRowID) -> StoredKey {
        StoredKey(generation: generation, sealed: KeyStore.wrap(plain, as: id, key: wrapping[generation]!, nonce: entropy.bytes(12)))
    }

    /// `plain` sealed under the wrapping key with a fresh 12-byte nonce, bound to the label and
    /// name of the row `id` (`binding`).
    private static func wrap(_ plain: [UInt8], as id: KeyRowID, key: SymmetricKey, nonce: [UInt8]) -> [UInt8] {
        // A 256-bit key and a 12-byte nonce: sealing cannot fail; `combined` exists for that nonce size.
        guard let nonce = try? AES.GCM.Nonce(data: nonce),
              let combined = try? AES.GCM.seal(plain, using: key, nonce: nonce, authenticating: binding(id)).combined
        else { preconditionFailure("AES-GCM refused a 256-bit key and a 12-byte nonce") }
        return Array(combined)
    }

    private func unwrap(_ stored: StoredKey, as id: KeyRowID) throws -> [UInt8] {
        try KeyStore.unwrap(stored, as: id, wrapping: wrapping, path: path)
    }

    /// Opens the wrapped key of the row `id` under the wrapping key of its generation (an error
    /// when this process was not given it, or when it does not open).
    private static func unwrap(_ stored: StoredKey, as id: KeyRowID, wrapping: [Int64: SymmetricKey], path: String) throws(JournalError) -> [UInt8] {
        let (sealed, g) = (stored.sealed, stored.generation)
        guard let key = wrapping[g] else {
            throw JournalError(.keys, "\(describe(id)) in the key store \(path) is wrapped under another master key (generation \(g)): a rotation is in progress or was done with a key this process was not given; finish it with `lethe keys rotate`, then use the new master key")
        }
        do {
            return Array(try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: binding(id)))
        } catch {
            throw JournalError(.keys, "\(describe(id)) in the key store \(path) does not open under the master key (the store was altered)")
        }
    }

    /// Runs `body`, naming `what` failed (a description made only then).
    private func failing<T>(_ what: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.keys, "cannot \(what()) in the key store \(path)", underlying: error)
        }
    }

    // MARK: Freshness

    /// Drops every cached key when another process (or this one) destroyed keys since the last
    /// look: called before each batch and each group of reads.
    /// The epoch this process last saw (see `refresh`).
    package var seenEpoch: Int64 { epoch }

    /// Whether keys were destroyed since this process last looked, without dropping anything.
    package func epochMoved(since seen: Int64) throws -> Bool {
        try failing("read") { try db.epoch() } != seen
    }

    @discardableResult
    package func refresh() throws -> Bool {
        let now = try failing("read") { try db.epoch() }
        guard now != epoch else { return false }
        epoch = now
        forgetSubjectKeys()
        return true
    }

    /// Drops every account's and event's key this store has cached (keyrings, own keys, record
    /// chains' places), keeping only the journal's own keys and the connection.
    /// How many accounts' and events' keys (and chains' places) are cached: none after `forgetSubjectKeys`.
    package var cachedSubjectKeys: Int { keyrings.count + ownKeys.count + cursors.count }

    package func forgetSubjectKeys() {
        keyrings.removeAll()
        cursors.removeAll()
        ownKeys.removeAll()
    }

    // MARK: Keyrings

    private func readKeyring(_ account: String) throws -> (ring: Keyring, sealed: [UInt8])? {
        guard let stored = try db.keyring(account) else { return nil }
        let sealed = stored.sealed
        let plain = try unwrap(stored, as: .keyring(account: account))
        do {
            return (try Keyring.decode(plain, account: account), sealed)
        } catch {
            throw JournalError(.keys, "the keys of account \(account) in the key store \(path) are damaged")
        }
    }

    /// The record chains `needs` names that `ring` lacks, in slot order. (A chain is made when
    /// its category's first record comes: a batch's new chains are written together anyway.)
    private static func addChains(to ring: inout Keyring, needs: Needs, key: () -> SymmetricKey) {
        for category in needs.chains.sorted() where ring.chain(category: category) == nil {
            ring.chains[ring.nextSlot] = .init(slot: ring.nextSlot, category: category, base: 0, key: key())
            ring.nextSlot += 1
        }
    }

    /// Stores `ring` if the stored keyring is still `expected` (nil: there is none); returns the
    /// sealed bytes written, or nil when another process changed it first.
    private func writeKeyring(_ ring: Keyring, expected: [UInt8]?, at time: Timestamp) throws -> [UInt8]? {
        let sealed = wrap(ring.encode(), as: .keyring(account: ring.account)).sealed
        return try db.storeKeyrings([keyringWrite(ring, sealed: sealed, expected: expected, at: time)])[0] ? sealed : nil
    }

    /// The write of `sealed`, the wrapped `ring`, on the condition that the stored keyring is
    /// still `expected` (nil: there is none).
    private func keyringWrite(_ ring: Keyring, sealed: [UInt8], expected: [UInt8]?, at time: Timestamp) -> KeyringWrite {
        let seconds = time.nanoseconds / 1_000_000_000
        return KeyringWrite(account: ring.account, key: StoredKey(generation: generation, sealed: sealed), created: seconds,
                            purged: ring.purged ? seconds : nil, expected: expected)
    }

    /// Applies `change` to the account's keyring and stores it, inside a transaction: starting
    /// from the cached keyring when it is current, and reading it again when another process
    /// changed it meanwhile.
    private func update(_ account: String, at time: Timestamp, _ change: (inout Keyring) -> Void) throws -> Keyring {
        var current = keyrings[account]
        for _ in 0..<3 {
            var ring = current?.ring ?? Keyring(account: account, accountKey: SymmetricKey(data: entropy.bytes(32)))
            change(&ring)
            let written = try writeKeyring(ring, expected: current?.sealed, at: time)
            if let sealed = written {
                remember(ring, sealed: sealed)
                return ring
            }
            current = try readKeyring(account)
        }
        throw JournalError(.keys, "the keys of account \(account) kept changing under this process")
    }

    private func remember(_ ring: Keyring, sealed: [UInt8]) {
        if keyrings.count >= cacheLimit { keyrings.removeAll(keepingCapacity: true) }
        keyrings[ring.account] = (ring, sealed)
    }

    /// The accounts whose keys were destroyed (the `purged` column every keyring write keeps),
    /// without unwrapping any keyring.
    package func purgedAccounts() throws -> Set<String> {
        try failing("read the purged accounts") { try db.purgedAccounts() }
    }

    /// Reads the keyrings of `accounts` and the own keys `own` not cached yet: a few hundred rows
    /// to a statement, in one read transaction, unwrapped on every core. A reader calls it before
    /// it looks up the keys of a group of events: one row at a time, a many-account journal's
    /// lookups cost more than opening its payloads. What the store does not hold is left to
    /// `lookup`, which tells a destroyed key from one never made.
    ///
    /// Returns the accounts it found no keyring for (at the time of its read).
    @discardableResult
    package func prefetch(accounts: some Collection<String>, own: some Collection<UInt64>) throws -> Set<String> {
        let accounts = accounts.filter { keyrings[$0] == nil }
        let own = own.filter { ownKeys[$0] == nil }
        guard accounts.count + own.count >= 16 else { return [] }
        let (rings, owned) = try failing("read keys") {
            try db.reading { (try db.keyrings(Array(accounts)), try db.ownKeys(Array(own))) }
        }
        let (wrapping, path) = (self.wrapping, self.path)
        let opened = rings.parallelMap(minimumSlice: 64) { row in
            Result { () throws(JournalError) in
                let plain = try KeyStore.unwrap(row.key, as: .keyring(account: row.account), wrapping: wrapping, path: path)
                do {
                    return try Keyring.decode(plain, account: row.account)
                } catch {
                    throw JournalError(.keys, "the keys of account \(row.account) in the key store \(path) are damaged")
                }
            }
        }
        for (row, ring) in zip(rings, opened) { remember(try ring.get(), sealed: row.key.sealed) }
        let keys = owned.parallelMap(minimumSlice: 64) { row in
            Result { () throws(JournalError) in
                let plain = try KeyStore.unwrap(row.key, as: .own(row.id), wrapping: wrapping, path: path)
                guard plain.count == 32 else { throw JournalError(.keys, "own key \(row.id) in the key store \(path) is damaged") }
                return SymmetricKey(data: plain)
            }
        }
        for (row, key) in zip(owned, keys) { rememberOwn(row.id, try key.get()) }
        return Set(accounts).subtracting(rings.map(\.account))
    }

    /// The account's keyring (cached), nil when the store has none.
    package func keyring(_ account: String) throws -> Keyring? {
        if let cached = keyrings[account] { return cached.ring }
        guard let row = try failing("read the keys of account \(account)", { try readKeyring(account) }) else { return nil }
        remember(row.ring, sealed: row.sealed)
        return row.ring
    }

    /// Makes sure every account of `needs` has its account key and the record chains it names,
    /// and makes `ownKeys` new own keys, in one transaction (committed before anything sealed
    /// under them can reach a journal). A purged account gets nothing new.
    package func provide(
        _ needs: [String: Needs], ownKeys: Int = 0, at time: Timestamp
    ) throws -> (keyrings: [String: Keyring], own: [(id: UInt64, key: SymmetricKey)]) {
        var out: [String: Keyring] = [:]
        var missing: [String] = []
        // (New accounts, most of a first import's, are then known to have none without a read each.)
        let absent = try prefetch(accounts: needs.keys, own: [UInt64]())
        for (account, need) in needs {
            if !absent.contains(account), let ring = try keyring(account), ring.purged || need.chains.allSatisfy({ ring.chain(category: $0) != nil }) {
                out[account] = ring
            } else {
                missing.append(account)
            }
        }
        guard !missing.isEmpty || ownKeys > 0 else { return (out, []) }
        return try failing("store new keys") {
            try db.transaction {
                // The keyrings at hand (cached, or known to be missing just now: most of an
                // import's accounts) are changed with one draw of random bytes, wrapped on every
                // core, and written each on the condition that nobody changed it meanwhile; the
                // others, and any that another process changed first, go through `update`.
                var batch: [(ring: Keyring, expected: [UInt8]?)] = []
                var single: [String] = []
                var draws = 0
                for account in missing {
                    if let cached = keyrings[account] {
                        batch.append((cached.ring, cached.sealed))
                    } else if absent.contains(account) {
                        batch.append((Keyring(account: account, accountKey: nil), nil))
                        draws += 1
                    } else {
                        single.append(account)
                        continue
                    }
                    draws += needs[account]!.chains.count
                }
                var material = entropy.bytes(32 * draws)[...]
                func drawKey() -> SymmetricKey {
                    defer { material = material.dropFirst(32) }
                    return SymmetricKey(data: material.prefix(32))
                }
                for k in batch.indices {
                    if batch[k].expected == nil { batch[k].ring.accountKey = drawKey() }
                    KeyStore.addChains(to: &batch[k].ring, needs: needs[batch[k].ring.account]!, key: drawKey)
                }
                let nonces = entropy.bytes(12 * batch.count)
                let (wrappingKey, rings) = (wrapping[generation]!, batch.map(\.ring))
                let sealed = Array(rings.indices).parallelMap(minimumSlice: 64) { k in
                    KeyStore.wrap(rings[k].encode(), as: .keyring(account: rings[k].account), key: wrappingKey,
                                  nonce: Array(nonces[(12 * k)..<(12 * k + 12)]))
                }
                let written = try db.storeKeyrings(zip(batch, sealed).map { keyringWrite($0.ring, sealed: $1, expected: $0.expected, at: time) })
                for (((ring, _), sealed), stored) in zip(zip(batch, sealed), written) {
                    if stored {
                        remember(ring, sealed: sealed)
                        out[ring.account] = ring
                    } else {
                        single.append(ring.account)
                    }
                }
                for account in single {
                    out[account] = try update(account, at: time) { ring in
                        guard !ring.purged else { return }
                        KeyStore.addChains(to: &ring, needs: needs[account]!) { SymmetricKey(data: entropy.bytes(32)) }
                    }
                }
                var own: [(id: UInt64, key: SymmetricKey)] = []
                if ownKeys > 0 {
                    // Numbered on from the last id ever made (under the write lock): appended in order.
                    let last = try db.lastOwnKeyID()
                    // One draw of random bytes for the keys and their nonces; wrapped on every core.
                    let material = entropy.bytes(44 * ownKeys)
                    let (wrappingKey, current) = (wrapping[generation]!, generation)
                    let rows = Array(0..<ownKeys).parallelMap(minimumSlice: 64) { k in
                        let id = last + 1 + UInt64(k)
                        return (id: id, key: StoredKey(generation: current, sealed: KeyStore.wrap(
                            Array(material[(32 * k)..<(32 * k + 32)]), as: .own(id), key: wrappingKey,
                            nonce: Array(material[(32 * ownKeys + 12 * k)..<(32 * ownKeys + 12 * k + 12)]))))
                    }
                    try db.insertOwnKeys(rows)
                    for (k, row) in rows.enumerated() {
                        let key = SymmetricKey(data: material[(32 * k)..<(32 * k + 32)])
                        own.append((row.id, key))
                        rememberOwn(row.id, key)
                    }
                }
                return (out, own)
            }
        }
    }

    private static func ownName(_ id: UInt64) -> [UInt8] { withUnsafeBytes(of: id.littleEndian) { Array($0) } }

    /// What the wrapping of the row `id` is bound to (its additional data): a label per kind of
    /// key and the row's name, so that a wrapped key moved to another row does not open.
    private static func binding(_ id: KeyRowID) -> [UInt8] {
        switch id {
        case .keyring(let account): Array("lethe keyring v1".utf8) + Array(account.utf8)
        case .own(let n): Array("lethe own key v1".utf8) + ownName(n)
        case .journal(let j): Array("lethe journal keys v1".utf8) + j
        }
    }

    /// What to call the row `id` in an error.
    private static func describe(_ id: KeyRowID) -> String {
        switch id {
        case .keyring(let account): "the keys of account \(account)"
        case .own(let n): "own key \(n)"
        case .journal(let j): "the keys of journal \(Hex.encode(j))"
        }
    }

    /// Own keys as last read or made (bounded); dropped when keys were destroyed anywhere.
    private var ownKeys: [UInt64: SymmetricKey] = [:]

    private func rememberOwn(_ id: UInt64, _ key: SymmetricKey) {
        if ownKeys.count >= cacheLimit { ownKeys.removeAll(keepingCapacity: true) }
        ownKeys[id] = key
    }

    /// An own key: `.destroyed` when its row is gone (ids are never reused), `.none` for an id
    /// this store never made.
    private func ownKey(_ id: UInt64) throws -> Lookup {
        if let key = ownKeys[id] { return .key(key) }
        if let stored = try db.ownKey(id) {
            let plain = try unwrap(stored, as: .own(id))
            guard plain.count == 32 else { throw JournalError(.keys, "own key \(id) in the key store \(path) is damaged") }
            let key = SymmetricKey(data: plain)
            rememberOwn(id, key)
            return .key(key)
        }
        return id <= (try db.lastOwnKeyID()) ? .destroyed : .none
    }

    /// The key `ref` names for `account`; `journal` gives the journal's own keys.
    package func lookup(_ account: String, _ ref: KeyRef, journal: JournalKeys) throws -> Lookup {
        switch ref.kind {
        case .journal:
            return .key(journal.engine)
        case .own:
            return try failing("read own key \(ref.number)") { try ownKey(ref.number) }
        case .account:
            if let cached = keyrings[account] { return cached.ring.accountKey.map { .key($0) } ?? .destroyed }
            guard let ring = try keyring(account) else { return .none }
            return ring.accountKey.map { .key($0) } ?? .destroyed
        case .records:
            guard let ring = try keyrings[account]?.ring ?? keyring(account) else { return .none }
            guard let chain = ring.chains[ref.number] else {
                return ring.purged || ref.number < ring.nextSlot ? .destroyed : .none
            }
            return recordKey(account, chain, index: ref.index).map { .key($0) } ?? .destroyed
        }
    }

    /// Key `index` of a record chain: nil below the chain's base (destroyed). Walks forward from
    /// where the chain was last walked to, never from a key before the base.
    package func recordKey(_ account: String, _ chain: Keyring.RecordChain, index: UInt64) -> SymmetricKey? {
        guard index >= chain.base else { return nil }
        let id = ChainID(account: account, slot: chain.slot)
        var (at, key) = (chain.base, ChainKey(chain.key))
        // The chain's cursor is found once and moved in place (one hash of the account's name).
        let found = cursors.index(forKey: id)
        if let found, case let cursor = cursors.values[found], cursor.index >= chain.base, cursor.index <= index { (at, key) = cursor }
        key = key.advanced(by: index - at)
        if let found {
            cursors.values[found] = (index, key)
        } else {
            if cursors.count >= cacheLimit { cursors.removeAll(keepingCapacity: true) }
            cursors[id] = (index, key)
        }
        return key.symmetricKey
    }

    // MARK: Journal keys

    /// The keys of the journal `id`; created when `create` and missing.
    package func journalKeys(_ id: [UInt8], create: Bool) throws -> JournalKeys {
        if let keys = journalKeys[id] { return keys }
        func read() throws -> JournalKeys? {
            guard let stored = try db.journalKeys(id) else { return nil }
            let plain = try unwrap(stored, as: .journal(id))
            guard plain.count == 96 else { throw JournalError(.keys, "the keys of journal \(Hex.encode(id)) in \(path) are damaged") }
            return JournalKeys(engine: SymmetricKey(data: plain[0..<32]), anchor: SymmetricKey(data: plain[32..<64]), backup: SymmetricKey(data: plain[64..<96]))
        }
        let keys: JournalKeys = try failing("read the keys of journal \(Hex.encode(id))") {
            if let keys = try read() { return keys }
            guard create else {
                throw JournalError(.keys, "the key store \(path) has no keys for journal \(Hex.encode(id)) (the key store of another journal?)")
            }
            return try db.transaction {
                if let keys = try read() { return keys }
                let plain = entropy.bytes(96)
                try db.insertJournalKeys(id, wrap(plain, as: .journal(id)))
                return JournalKeys(engine: SymmetricKey(data: plain[0..<32]), anchor: SymmetricKey(data: plain[32..<64]), backup: SymmetricKey(data: plain[64..<96]))
            }
        }
        journalKeys[id] = keys
        return keys
    }

    // MARK: Anchors

    /// The newest head of the journal file `instance` that a writer reported (`anchor`): that
    /// file may be ahead of it (a crash between its commit and the report), never behind it.
    package func anchoredHead(journal: [UInt8], instance: [UInt8]) throws -> AnchoredHead? {
        try failing("read the anchor of journal \(Hex.encode(journal))") { try db.anchoredHead(journal: journal, instance: instance) }
    }

    /// The anchored head as stored, read without the master key (the anchors are not secret; what
    /// `lethe verify --unauthenticated` can still check); nil when the store has none for the file.
    package static func anchoredHead(_ backend: any KeyStoreBackend, journal: [UInt8], instance: [UInt8]) throws -> AnchoredHead? {
        try anchors(backend) { try $0.anchoredHead(journal: journal, instance: instance) } ?? nil
    }

    /// Every file of `journal` the store anchors: instance (hex) and head.
    package static func anchoredFiles(_ backend: any KeyStoreBackend, journal: [UInt8]) throws -> [(instance: String, seq: Int64)] {
        try anchors(backend) { try $0.anchoredFiles(journal: journal).map { (Hex.encode($0.instance), $0.seq) } } ?? []
    }

    /// `body` on a connection that reads the anchors only; nil when the store has none.
    private static func anchors<T>(_ backend: any KeyStoreBackend, _ body: (any KeyStorage) throws -> T) throws -> T? {
        do {
            guard let storage = try backend.openAnchors() else { return nil }
            defer { storage.close() }
            return try body(storage)
        } catch {
            throw JournalError(.keys, "cannot read the anchors of the key store \(backend.place)", underlying: error)
        }
    }

    /// Remembers that the file `instance` of `journal` reached `head` (committed there): only
    /// ever moves forward, so writers in several processes can report in any order.
    package func anchor(journal: [UInt8], instance: [UInt8], head: AnchoredHead) throws {
        try failing("move the anchor of journal \(Hex.encode(journal))") { try db.anchor(journal: journal, instance: instance, head: head) }
    }

    // MARK: Destruction

    /// Destroys keys, in one transaction that also marks what the database keeps of the old rows:
    /// the caller then clears it (`clearResidue`). An account with no keyring gets an empty, purged one, so the
    /// store can tell "purged" from "never seen".
    package func destroy(_ destructions: [Destruction], at time: Timestamp) throws {
        guard !destructions.isEmpty else { return }
        try failing("destroy keys") {
            try db.transaction {
                for d in destructions {
                    if case .own = d {} else {
                        // Always from the stored keyring, never a cached one.
                        keyrings[d.account] = try readKeyring(d.account)
                    }
                    let stored = keyrings[d.account]
                    switch d {
                    case .account(let account, let keeping):
                        _ = try updateStored(account, stored, at: time) { ring in
                            ring.accountKey = nil
                            ring.chains = ring.chains.filter { keeping.contains($0.value.category) }
                        }
                    case .own(_, let ids):
                        try db.deleteOwnKeys(ids)
                    case .records(let account, let category, let before):
                        guard let chain = stored?.ring.chain(category: category), before > chain.base else { continue }
                        _ = try updateStored(account, stored, at: time) { ring in
                            var chain = chain
                            chain.key = ChainKey(chain.key).advanced(by: before - chain.base).symmetricKey
                            chain.base = before
                            ring.chains[chain.slot] = chain
                        }
                    }
                }
                try db.advanceEpoch()
            }
        }
        // This process forgets them at once.
        try refresh()
    }

    /// `update` from the keyring just read (or, when there is none, an empty purged one).
    private func updateStored(_ account: String, _ stored: (ring: Keyring, sealed: [UInt8])?, at time: Timestamp, _ change: (inout Keyring) -> Void) throws -> Keyring {
        guard stored == nil else { return try update(account, at: time, change) }
        keyrings[account] = nil
        var ring = Keyring(account: account, accountKey: nil)
        change(&ring)
        guard let sealed = try writeKeyring(ring, expected: nil, at: time) else {
            return try update(account, at: time, change)
        }
        remember(ring, sealed: sealed)
        return ring
    }

    /// Clears what an erasure or a rotation left of the old rows (a file's WAL; PostgreSQL's dead
    /// row versions), waiting at most `wait` for readers. Returns nil when nothing is left;
    /// otherwise what is left and who holds it, for a message.
    package func clearResidue(wait: Duration) throws -> String? {
        try failing("clear what an erasure left") { try db.clearResidue(wait: wait) }
    }

    /// Whether an erasure or a rotation left old rows to clear.
    package func hasResidue() throws -> Bool { try failing("read") { try db.hasResidue() } }

    // MARK: Rotation

    /// Re-wraps every keyring and journal key under `next` (a new master key), online: other
    /// processes go on meanwhile, and a rotation that was interrupted is finished by running it
    /// again with the same two keys. When it returns, nothing in the store opens with the old
    /// master key any more, so every copy of the store taken before is useless once the old key
    /// is destroyed. Returns how many keyrings and journals were re-wrapped.
    ///
    /// `batch` rows are re-wrapped per transaction; `stopAfter` (for tests) stops after that many
    /// batches, as a crash would.
    package func rotate(to next: SymmetricKey, batch: Int = 1000, stopAfter: Int? = nil) throws -> Int {
        try failing("rotate the master key") {
            let target: Int64 = try db.transaction {
                let rows = try db.wrappings()
                let newest = rows.last?.generation ?? 0
                if newest > generation {
                    // An interrupted rotation: it must be to the same key.
                    guard let row = rows.last, KeyStore.check(KeyStore.wrappingKey(master: next, salt: row.salt)) == row.check else {
                        throw JournalError(.keys, "the key store \(path) is being rotated to another master key: finish that rotation first")
                    }
                    return newest
                }
                try db.insertWrapping(newGeneration(newest + 1, master: next))
                return newest + 1
            }
            guard let salt = try db.wrappings().first(where: { $0.generation == target })?.salt else {
                throw JournalError(.keys, "the key store \(path) lost the generation it is being rotated to (altered?)")
            }
            wrapping[target] = KeyStore.wrappingKey(master: next, salt: salt)
            let old = generation
            generation = target
            var moved = 0
            var batches = 0
            // In batches, each in its own transaction; rows added meanwhile under the old
            // generation are picked up by the next pass.
            while true {
                if let stopAfter, batches == stopAfter { return moved }
                batches += 1
                let count: Int = try db.transaction {
                    var n = 0
                    for table in KeyTable.allCases {
                        for (id, stored) in try db.rows(of: table, below: target, limit: batch) {
                            try db.rewrap(id, wrap(try unwrap(stored, as: id), as: id))
                            n += 1
                        }
                    }
                    if n == 0 {
                        try db.deleteWrappings(below: target)
                        try db.advanceEpoch()
                    }
                    return n
                }
                moved += count
                if count == 0 { break }
            }
            wrapping[old] = nil
            keyrings.removeAll()
            journalKeys.removeAll()
            ownKeys.removeAll()
            return moved
        }
    }
}
