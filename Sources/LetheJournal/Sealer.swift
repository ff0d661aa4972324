import Crypto
import Foundation
import Synchronization

/// The sealer under its lock, as the journal and its writer share it (a class, so that closures
/// and the writer can hold it).
final class SealerLock: Sendable {
    private let mutex: Mutex<Sealer>

    init(_ sealer: sending Sealer) { mutex = Mutex(sealer) }

    func withLock<T, E: Error>(_ body: (inout sending Sealer) throws(E) -> sending T) throws(E) -> sending T {
        try mutex.withLock(body)
    }
}

/// The last record index of each of an account's record chains, as the `accounts` table keeps it
/// (`chains`): varint count, then (category, last index) pairs.
enum ChainMarks {
    static func encode(_ marks: [String: UInt64]) -> [UInt8]? {
        guard !marks.isEmpty else { return nil }
        var w = BinaryWriter(capacity: 16 * marks.count)
        w.varint(marks.count)
        for (category, last) in marks.sorted(by: { $0.key < $1.key }) {
            w.string(category)
            w.varint(last)
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) throws -> [String: UInt64] {
        guard !bytes.isEmpty else { return [:] }
        var r = BinaryReader(bytes)
        var marks: [String: UInt64] = [:]
        for _ in 0..<(try r.count(limit: 1 << 16)) { marks[try r.string()] = try r.varint() }
        return marks
    }
}

/// The key store and this process's sealing session. Lives inside the journal's `sealer` mutex.
///
/// It finds (and creates) the key each event is sealed under, hands out nonces, and seals on every
/// core. A record takes the next index of its chain; the writer, which alone knows the journal's
/// order, checks that indices only grow along each chain and seals a record again under the next
/// key when another writer took its place (`reseal`).
final class Sealer {
    let keys: KeyStore
    let journalKeys: JournalKeys
    private let entropy: Entropy
    private var session: Session
    private var nextCounter: UInt64 = 0
    /// The next index each record chain hands out, per account and category (bounded cache).
    private var nextIndex: [ChainName: UInt64] = [:]
    private let journalPath: String
    /// A read-only connection to the journal, for the chains' last indices on a cache miss.
    private var journal: SQLiteDatabase?

    struct ChainName: Hashable {
        var account: String
        var category: String
    }

    init(keys: KeyStore, journalKeys: JournalKeys, journalPath: String, entropy: Entropy) throws {
        self.keys = keys
        self.journalKeys = journalKeys
        self.journalPath = journalPath
        self.entropy = entropy
        session = Session.random(entropy)
    }

    /// `n` fresh nonces; a session that would run out of counters draws a new id first.
    private func reserve(_ n: Int) -> [NonceID] {
        if nextCounter + UInt64(n) > UInt64(UInt32.max) {
            session = Session.random(entropy)
            nextCounter = 0
        }
        defer { nextCounter += UInt64(n) }
        return (0..<n).map { NonceID(session: session, counter: UInt32(nextCounter + UInt64($0))) }
    }

    /// The key that opens payloads of `account` sealed under `ref`.
    func lookup(_ account: String, _ ref: KeyRef) throws -> KeyStore.Lookup {
        try keys.lookup(account, ref, journal: journalKeys)
    }

    /// The accounts among `accounts` whose keys were destroyed (a purge).
    func purged(among accounts: Set<String>) throws -> Set<String> {
        try keys.refresh()
        return try Set(accounts.filter { try keys.keyring($0)?.purged ?? false })
    }

    private struct Resolved {
        var key: SymmetricKey
        var ref: KeyRef
    }

    /// Seals each event under its key (creating the keys it needs first), on every core.
    func seal(_ events: [NewEvent], at time: Timestamp) throws -> [Result<PreparedBatch.Sealed, JournalError>] {
        guard !events.isEmpty else { return [] }
        try keys.refresh()
        var needs: [String: KeyStore.Needs] = [:]
        for e in events {
            switch e.scope {
            case .journal: continue
            case .account: if needs[e.account] == nil { needs[e.account] = .init() }
            case .item(let name): needs[e.account, default: .init()].items.insert(name)
            case .records(let category): needs[e.account, default: .init()].chains.insert(category)
            }
        }
        let rings = try keys.provide(needs, at: time)
        try loadChainMarks(for: events)
        let resolved: [Result<Resolved, JournalError>] = events.map { e in
            if case .journal = e.scope { return .success(Resolved(key: journalKeys.engine, ref: .journal)) }
            guard let ring = rings[e.account], let accountKey = ring.accountKey else {
                return .failure(JournalError(.accountShredded, "account \(e.account) was erased; it takes no new events"))
            }
            switch e.scope {
            case .journal, .account:
                return .success(Resolved(key: accountKey, ref: .account))
            case .item(let name):
                guard let item = ring.item(named: name) else { return .failure(JournalError(.keys, "no key for item \(name) of \(e.account)")) }
                return .success(Resolved(key: item.key, ref: KeyRef(.item, number: item.number)))
            case .records(let category):
                guard let chain = ring.chain(category: category) else { return .failure(JournalError(.keys, "no record chain \(category) for \(e.account)")) }
                return .success(record(e.account, chain, atLeast: 0))
            }
        }
        let nonces = reserve(events.count)
        // Sealing is pure work on values: large batches are sealed on every core.
        let work = events.indices.map { k in (event: events[k], nonce: nonces[k], key: resolved[k]) }
        return work.parallelMap { e, nonce, key -> Result<PreparedBatch.Sealed, JournalError> in
            key.map { Sealer.seal(e.payload, account: e.account, under: $0, nonce: nonce) }
        }
    }

    private static func seal(_ payload: [UInt8], account: String, under key: Resolved, nonce: NonceID) -> PreparedBatch.Sealed {
        let body = Sealing.seal(payload, sessionKey: KeyDerivation.sessionKey(key.key, nonce.session), counter: nonce.counter, account: account)
        return PreparedBatch.Sealed(nonce: nonce, key: key.ref, body: body, digest: Sealing.digest(nonce: nonce, key: key.ref, sealed: body))
    }

    /// The next index of the account's chain (at least `atLeast`, never below the chain's base,
    /// whose earlier keys are destroyed) and its key.
    private func record(_ account: String, _ chain: Keyring.RecordChain, atLeast: UInt64) -> Resolved {
        let name = ChainName(account: account, category: chain.category)
        let index = max(nextIndex[name] ?? 0, chain.base, atLeast)
        if nextIndex.count >= 200_000 { nextIndex.removeAll(keepingCapacity: true) }
        nextIndex[name] = index + 1
        // The index is at or above the base: the key exists.
        let key = keys.recordKey(account, chain, index: index)!
        return Resolved(key: key, ref: KeyRef(.records, number: chain.slot, index: index))
    }

    /// Seals a record again under the chain's next index from `atLeast` on: another writer
    /// appended a record of the same chain meanwhile, at the index this one was sealed with.
    func reseal(_ payload: [UInt8], account: String, category: String, atLeast: UInt64) throws -> PreparedBatch.Sealed {
        guard let ring = try keys.keyring(account), !ring.purged, let chain = ring.chain(category: category) else {
            throw JournalError(.accountShredded, "account \(account) was erased; it takes no new events")
        }
        return Sealer.seal(payload, account: account, under: record(account, chain, atLeast: atLeast), nonce: reserve(1)[0])
    }

    /// Forgets where the chains stand (a batch rolled back): they are read again from the journal.
    func forgetChains() { nextIndex.removeAll(keepingCapacity: true) }

    /// Tells the sealer where the writer left each chain it appended to.
    func appended(account: String, chains: [String: UInt64]) {
        for (category, last) in chains {
            let name = ChainName(account: account, category: category)
            nextIndex[name] = max(nextIndex[name] ?? 0, last + 1)
        }
    }

    /// Reads, for the batch's accounts whose chains this process has not followed yet, where the
    /// journal left their chains: records then take the next index without a clash in the writer.
    private func loadChainMarks(for events: [NewEvent]) throws {
        var missing = Set<String>()
        for e in events {
            if case .records(let category) = e.scope, nextIndex[ChainName(account: e.account, category: category)] == nil {
                missing.insert(e.account)
            }
        }
        guard !missing.isEmpty, FileManager.default.fileExists(atPath: journalPath) else { return }
        let accounts = Array(missing)
        do {
            if journal == nil { journal = try SQLiteDatabase(path: journalPath, readOnly: true) }
            try journal!.inChunks(of: 256, count: accounts.count, sql: { n in
                "SELECT name, chains FROM accounts WHERE chains IS NOT NULL AND name IN (\(Array(repeating: "?", count: n).joined(separator: ", ")))"
            }) { s, range in
                for (k, i) in range.enumerated() { s.bind(Int32(k + 1), accounts[i]) }
                while try s.step() {
                    let account = s.text(0) ?? ""
                    for (category, last) in try ChainMarks.decode(s.blob(1)) {
                        let name = ChainName(account: account, category: category)
                        nextIndex[name] = max(nextIndex[name] ?? 0, last + 1)
                    }
                }
            }
        } catch {
            // Only a hint: the writer checks every index and seals a clashing record again.
            journal = nil
        }
    }
}
