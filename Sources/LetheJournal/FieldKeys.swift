import Crypto
import Synchronization

/// The keys the read models seal their copies of personal fields under: for each key that seals
/// payloads (an account's, an item's, a record's, the engine's), a field key derived from it
/// (`KeyDerivation.fieldKey`), which dies with it. One key store connection of its own, under a
/// lock; keys destroyed by any process are dropped at the next `withKeys`.
package final class FieldKeys: Sendable {
    /// `@unchecked Sendable` is safe: only ever used under `state`'s lock.
    private final class State: @unchecked Sendable {
        let keys: LazyKeyStore
        var derived: [Name: SymmetricKey?] = [:]
        init(keys: LazyKeyStore) { self.keys = keys }
    }

    private struct Name: Hashable {
        var account: String
        var ref: KeyRef
    }

    private let state: Mutex<State>

    init(journal: Journal) {
        let keys = LazyKeyStore(open: { [keyStore = journal.keyStore, master = journal.master, options = journal.options, backend = journal.backend] in
            try KeyStore(keyStore, master: master, dataPaths: backend.dataPaths, entropy: options.entropy, synchronous: options.synchronous)
        }, journalID: { [journalID = journal.journalID] in journalID })
        state = Mutex(State(keys: keys))
    }

    /// Runs `body` with a function giving the field key of (account, key reference), nil when
    /// that key was destroyed; keys destroyed since the last call are forgotten first.
    package func withKeys<T>(_ body: ((String, KeyRef) throws -> SymmetricKey?) throws -> T) throws -> T {
        try state.withLock { state in
            try state.keys.refresh(dropping: { state.derived.removeAll(keepingCapacity: true) })
            return try body { account, ref in
                let name = Name(account: account, ref: ref)
                if let known = state.derived[name] { return known }
                let key: SymmetricKey?
                switch try state.keys.lookup(account, ref) {
                case .key(let k): key = KeyDerivation.fieldKey(k)
                case .destroyed, .none: key = nil
                }
                if state.derived.count >= 200_000 { state.derived.removeAll(keepingCapacity: true) }
                state.derived[name] = key
                return key
            }
        }
    }
}

extension Journal {
    /// A key accessor for the read models (see `FieldKeys`).
    package func fieldKeys() -> FieldKeys { FieldKeys(journal: self) }
}
