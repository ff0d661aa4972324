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

/// The last record index of each of an account's record chains, by the chain's slot in the
/// account's keyring (the number a record's `KeyRef` carries), as the `accounts` table keeps it.
///
/// Stored as a 0 byte, a varint count, then (slot, last index) varint pairs in slot order. Journals
/// of formats 4 and 5 named each chain by its category instead (a varint count of at least 1,
/// then (category, last index) pairs): such marks are still read, through the account's keyring,
/// and written in the new form when they next move.
///
/// A value with a few slots inline (an account has one chain per record category, three for the
/// contract): copying an account's row, once per event in the writer, allocates nothing.
struct ChainMarks: Equatable, Sendable {
    private var a, b, c, d: (UInt64, UInt64)?
    /// Past four chains.
    private var more: [UInt64: UInt64]?

    static func == (x: ChainMarks, y: ChainMarks) -> Bool { x.sorted.elementsEqual(y.sorted) { $0 == $1 } }

    var isEmpty: Bool { a == nil && more == nil }

    subscript(slot: UInt64) -> UInt64? {
        get {
            if let a, a.0 == slot { return a.1 }
            if let b, b.0 == slot { return b.1 }
            if let c, c.0 == slot { return c.1 }
            if let d, d.0 == slot { return d.1 }
            return more?[slot]
        }
        set {
            guard let newValue else { return }  // marks only grow; none is ever removed
            if a == nil || a!.0 == slot { a = (slot, newValue) }
            else if b == nil || b!.0 == slot { b = (slot, newValue) }
            else if c == nil || c!.0 == slot { c = (slot, newValue) }
            else if d == nil || d!.0 == slot { d = (slot, newValue) }
            else { more = (more ?? [:]).merging([slot: newValue]) { $1 } }
        }
    }

    /// (slot, last index) pairs, by slot.
    var sorted: [(UInt64, UInt64)] {
        ([a, b, c, d].compactMap { $0 } + (more.map { Array($0) } ?? [])).sorted { $0.0 < $1.0 }
    }

    func encode() -> [UInt8]? {
        guard !isEmpty else { return nil }
        let pairs = sorted
        var w = BinaryWriter(capacity: 2 + 4 * pairs.count)
        w.u8(0)
        w.varint(pairs.count)
        for (slot, last) in pairs {
            w.varint(slot)
            w.varint(last)
        }
        return w.bytes
    }

    /// Decodes the `chains` column of `account`'s row; `slot` finds the chain of a category in
    /// the account's keyring, for marks stored by category (nil: the keyring has no such chain any
    /// more, and its mark is dropped). A mark is a record index, which the journal keeps below
    /// 2^63 (rows and read models store it as a signed integer): a larger one is damage, and
    /// refused before the sealer adds one to it.
    static func decode(_ bytes: [UInt8], account: String, slot: (String) throws -> UInt64?) throws -> ChainMarks {
        func damaged(_ why: String) -> JournalError { JournalError(.corrupt, "account \(account): damaged record chain marks (\(why))") }
        var marks = ChainMarks()
        guard !bytes.isEmpty else { return marks }
        var r = BinaryReader(bytes)
        do {
            let bySlot = bytes[0] == 0
            if bySlot { _ = try r.u8() }
            for _ in 0..<(try r.count(limit: 1 << 16)) {
                if bySlot {
                    let (chain, last) = (try r.varint(), try r.varint())
                    guard last < UInt64(Int64.max) else { throw damaged("index \(last) of chain \(chain) out of range") }
                    guard marks[chain] == nil else { throw damaged("chain \(chain) twice") }
                    marks[chain] = last
                } else {
                    let category = try r.string(limit: Journal.maxTypeBytes)
                    let last = try r.varint()
                    guard last < UInt64(Int64.max) else { throw damaged("index \(last) of \(category) out of range") }
                    if let chain = try slot(category) { marks[chain] = last }
                }
            }
        } catch is BinaryReader.Truncated {
            throw damaged("content is truncated")
        } catch let e as BinaryReader.Malformed {
            throw damaged(e.what)
        }
        guard r.isAtEnd else { throw damaged("\(r.remaining) unexpected bytes at the end") }
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
    /// What this process knows of each account it seals for (bounded): one lookup per event.
    private var accounts: [String: AccountKeys] = [:]
    /// The key store's epoch when `accounts` was last valid.
    private var cachedEpoch: Int64 = -1
    /// The engine key's session key.
    private var engineSession: SymmetricKey
    private let backend: any JournalBackend
    /// A reader's connection to the journal, for the chains' last indices on a cache miss.
    private var journal: (any JournalStore)?

    /// An account's keyring, with the session key derived from it for this session and where
    /// each of its record chains stands.
    private final class AccountKeys {
        var ring: Keyring
        var accountSession: SymmetricKey?
        /// By category (an account has a few: a list is quicker than a dictionary).
        var chains: [(category: String, state: ChainState)] = []

        init(_ ring: Keyring) { self.ring = ring }

        func chain(_ category: String) -> ChainState? {
            for c in chains where c.category == category { return c.state }
            return nil
        }
    }

    /// The next index a chain hands out, and the key it was last walked to.
    private final class ChainState {
        let slot: UInt64
        var next: UInt64
        var cursor: (index: UInt64, key: ChainKey)

        init(slot: UInt64, next: UInt64, cursor: (UInt64, ChainKey)) {
            (self.slot, self.next, self.cursor) = (slot, next, cursor)
        }
    }

    /// The domain's record categories, made with an account's first chain.

    init(keys: KeyStore, journalKeys: JournalKeys, backend: any JournalBackend, entropy: Entropy) throws {
        self.keys = keys
        self.journalKeys = journalKeys
        self.backend = backend
        self.entropy = entropy
        let session = Session.random(entropy)
        self.session = session
        engineSession = KeyDerivation.sessionKey(journalKeys.engine, session)
    }

    /// `n` fresh nonces; a session that would run out of counters draws a new id first (and
    /// forgets the session keys of the old one).
    private func reserve(_ n: Int) -> [NonceID] {
        if nextCounter + UInt64(n) > UInt64(UInt32.max) {
            session = Session.random(entropy)
            nextCounter = 0
            engineSession = KeyDerivation.sessionKey(journalKeys.engine, session)
            for a in accounts.values { a.accountSession = nil }
        }
        defer { nextCounter += UInt64(n) }
        return (0..<n).map { NonceID(session: session, counter: UInt32(nextCounter + UInt64($0))) }
    }

    /// How one event is sealed, decided under the sealer's lock: its nonce, its key reference,
    /// and the sealing key (`KeyDerivation.sealingKey`).
    struct Plan: Sendable {
        enum Key: Sendable {
            /// The sealing key itself (a session key, or an own key).
            case sealing(SymmetricKey)
            /// A record's key, held inline until the sealing, on another core, needs it.
            case record(ChainKey)
        }

        var nonce: NonceID
        var ref: KeyRef
        var key: Key
    }

    /// Accounts the key store was just found to hold no keyring for (while `plan` places a
    /// batch's events before making the missing keys): no read each.
    private var absent: Set<String> = []

    private func known(_ account: String) throws -> AccountKeys? {
        if let a = accounts[account] { return a }
        guard !absent.contains(account), let ring = try keys.keyring(account) else { return nil }
        if accounts.count >= 200_000 { accounts.removeAll(keepingCapacity: true) }
        let a = AccountKeys(ring)
        accounts[account] = a
        return a
    }

    /// Decides how each event is sealed (creating the keys it needs first). The sealing itself,
    /// pure work, is `Sealer.seal(_:_:)`, outside the lock.
    ///
    /// One pass over the batch with what this process knows; the events it cannot place yet (a
    /// new account or chain, an event with a key of its own, or a chain this process has not followed) wait for the keys
    /// to be made, in one transaction, and the chains' marks to be read, then take their turn,
    /// in order.
    ///
    /// `slots` gives each event's account a place among the batch's `accounts` distinct ones
    /// (`PreparedBatch.accounts`): what this process holds for an account is found once per batch.
    func plan(_ events: [NewEvent], slots: [Int], accounts count: Int, at time: Timestamp) throws -> [Result<Plan, JournalError>] {
        guard !events.isEmpty else { return [] }
        // Keys destroyed since this cache was made (by any process, this one included): forget it.
        try keys.refresh()
        if keys.seenEpoch != cachedEpoch {
            accounts.removeAll(keepingCapacity: true)
            cachedEpoch = keys.seenEpoch
        }
        let nonces = reserve(events.count)
        let unplaced = Result<Plan, JournalError>.failure(JournalError(.keys, "not placed"))
        var plans = [Result<Plan, JournalError>](repeating: unplaced, count: events.count)
        var waiting: [Int] = []
        // What this process holds of each of the batch's accounts, by slot; the keyrings of those
        // it does not hold yet, read at once.
        var held = [AccountKeys?](repeating: nil, count: count)
        var uncached = Set<String>()
        for k in events.indices where events[k].scope != .journal && held[slots[k]] == nil {
            if let a = accounts[events[k].account] { held[slots[k]] = a } else { uncached.insert(events[k].account) }
        }
        absent = try keys.prefetch(accounts: uncached, own: [UInt64]())
        defer { absent = [] }
        func keysOf(_ k: Int) throws -> AccountKeys? {
            if let a = held[slots[k]] { return a }
            held[slots[k]] = try known(events[k].account)
            return held[slots[k]]
        }
        for k in events.indices {
            if let plan = try place(events, k, nonces[k], keys: keysOf) { plans[k] = plan } else { waiting.append(k) }
        }
        if !waiting.isEmpty {
            var needs: [String: KeyStore.Needs] = [:]
            var unfollowed = Set<String>()
            var ownKeys = 0
            for k in waiting {
                let account = events[k].account
                if needs[account] == nil { needs[account] = .init() }
                switch events[k].scope {
                case .journal, .account: break
                case .own: ownKeys += 1
                case .records(let category):
                    needs[account]!.chains.insert(category)
                    unfollowed.insert(account)
                }
            }
            let made = try keys.provide(needs, ownKeys: ownKeys, at: time)
            absent = []
            for (account, ring) in made.keyrings {
                if let a = accounts[account] { a.ring = ring } else { accounts[account] = AccountKeys(ring) }
            }
            let marks = try chainMarks(of: unfollowed)
            var own = made.own.makeIterator()
            for k in waiting {
                if case .own = events[k].scope {
                    // A key of its own, made for this event (never for another).
                    let key = own.next()!
                    guard let a = try known(events[k].account), !a.ring.purged else {
                        plans[k] = .failure(JournalError(.accountShredded, "account \(events[k].account) was erased; it takes no new events"))
                        continue
                    }
                    plans[k] = .success(Plan(nonce: nonces[k], ref: KeyRef(.own, number: key.id), key: .sealing(key.key)))
                    continue
                }
                plans[k] = try place(events, k, nonces[k], keys: keysOf, marks: marks)
                    ?? .failure(JournalError(.keys, "no key for an event of \(events[k].account)"))
            }
        }
        return plans
    }

    /// Where the journal left the chains (slot → last index), by account: read when the
    /// chains are not followed yet, so that records take the next index without a clash in the writer.
    private typealias Marks = [String: ChainMarks]

    /// The plan of one event, or nil when its keys are not at hand yet (or, with `marks`, when
    /// there is no key for it at all).
    private func place(
        _ events: [NewEvent], _ k: Int, _ nonce: NonceID, keys: (Int) throws -> AccountKeys?, marks: Marks? = nil
    ) throws -> Result<Plan, JournalError>? {
        // (By index: the event is not copied.)
        let scope = events[k].scope
        if case .journal = scope { return .success(Plan(nonce: nonce, ref: .journal, key: .sealing(engineSession))) }
        guard let a = try keys(k) else { return nil }
        guard let accountKey = a.ring.accountKey else {
            return .failure(JournalError(.accountShredded, "account \(events[k].account) was erased; it takes no new events"))
        }
        switch scope {
        case .journal, .account:
            let session = a.accountSession ?? KeyDerivation.sessionKey(accountKey, self.session)
            a.accountSession = session
            return .success(Plan(nonce: nonce, ref: .account, key: .sealing(session)))
        case .own:
            return nil  // a key of its own is made for it
        case .records(let category):
            guard let (ref, key) = record(a, category: category, atLeast: 0, marks: marks) else { return nil }
            return .success(Plan(nonce: nonce, ref: ref, key: .record(key)))
        }
    }

    /// Seals each event as planned, on every core.
    static func seal(_ events: [NewEvent], _ plans: [Result<Plan, JournalError>]) -> [Result<PreparedBatch.Sealed, JournalError>] {
        // By index: neither the events nor their plans are copied.
        return Array(events.indices).parallelMap { k in plans[k].map { seal(events[k].payload, account: events[k].account, $0) } }
    }

    private static func seal(_ payload: [UInt8], account: String, _ plan: Plan) -> PreparedBatch.Sealed {
        let key: SymmetricKey = switch plan.key {
        case .sealing(let k): k
        case .record(let k): k.symmetricKey
        }
        let body = Sealing.seal(payload, key: key, nonce: plan.nonce, kind: plan.ref.kind, account: account)
        return PreparedBatch.Sealed(nonce: plan.nonce, key: plan.ref, body: body, digest: Sealing.digest(nonce: plan.nonce, key: plan.ref, sealed: body))
    }

    /// The next index of the account's chain (at least `atLeast`, never below the chain's base,
    /// whose earlier keys are destroyed) and its key, walked forward from where the chain was
    /// last walked to. Nil for a chain this process does not follow yet, unless `marks` says
    /// where the journal left it.
    private func record(_ a: AccountKeys, category: String, atLeast: UInt64, marks: Marks?) -> (KeyRef, ChainKey)? {
        let state: ChainState
        if let known = a.chain(category) {
            state = known
        } else {
            guard let marks, let chain = a.ring.chain(category: category) else { return nil }
            let mark = marks[a.ring.account]?[chain.slot].map { $0 + 1 } ?? 0
            state = ChainState(slot: chain.slot, next: max(chain.base, mark), cursor: (chain.base, ChainKey(chain.key)))
            a.chains.append((category, state))
        }
        let index = max(state.next, atLeast)
        if index < state.cursor.index {
            // Only when another writer's records moved past ours: walk again from the base.
            guard let chain = a.ring.chain(category: category) else { return nil }
            state.cursor = (chain.base, ChainKey(chain.key))
        }
        if state.cursor.index < index {
            state.cursor = (index, state.cursor.key.advanced(by: index - state.cursor.index))
        }
        state.next = index + 1
        return (KeyRef(.records, number: state.slot, index: index), state.cursor.key)
    }

    /// Seals a record again under the chain's next index from `atLeast` on: another writer
    /// appended a record of the same chain meanwhile, at the index this one was sealed with.
    func reseal(_ payload: [UInt8], account: String, category: String, atLeast: UInt64) throws -> PreparedBatch.Sealed {
        // The journal's marks only for a chain this process does not follow yet (`atLeast` is the
        // writer's authoritative floor).
        guard let a = try known(account), !a.ring.purged,
              let (ref, key) = record(a, category: category, atLeast: atLeast,
                                      marks: a.chain(category) == nil ? try chainMarks(of: [account]) : nil)
        else {
            throw JournalError(.accountShredded, "account \(account) was erased; it takes no new events")
        }
        return Sealer.seal(payload, account: account, Plan(nonce: reserve(1)[0], ref: ref, key: .record(key)))
    }

    /// Forgets where the chains stand (a batch rolled back): they are read again from the journal.
    func forgetChains() { for a in accounts.values { a.chains.removeAll() } }

    /// Reads where the journal left the chains of `accounts` (only a hint: the writer checks
    /// every index, and seals a clashing record again).
    private func chainMarks(of accounts: Set<String>) throws -> Marks {
        guard !accounts.isEmpty else { return [:] }
        let names = Array(accounts)
        var marks: Marks = [:]
        do {
            if journal?.isBroken ?? true { journal = try backend.openReader() }
            for (name, row) in try journal!.accounts(named: names) {
                guard let chains = row.chains else { continue }
                let ring = self.accounts[name]?.ring
                marks[name] = try ChainMarks.decode(chains, account: name) { ring?.chain(category: $0)?.slot }
            }
        } catch {
            journal = nil
        }
        return marks
    }
}

