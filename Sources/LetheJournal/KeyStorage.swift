/// Where a key store's rows are: a SQLite file (`SQLiteKeyBackend`), or a PostgreSQL database
/// of its own (`PostgresKeyBackend`, in LethePostgres), never the journal's database.
package protocol KeyStoreBackend: Sendable {
    /// Where the key store is, for messages: a path, or a server's address without its password.
    var place: String { get }
    /// The files that hold the keys, which the master key must not lie beside.
    var dataPaths: [String] { get }
    /// The server database that holds the keys (nil: a file); never the journal's (`JournalBackend.database`).
    var database: String? { get }
    /// Whether a key store is there (made by an earlier `open`).
    func exists() throws -> Bool
    /// A connection for a key store process: the store is made when missing.
    func open(synchronous: Journal.Synchronous) throws -> any KeyStorage
    /// A connection that only reads the anchors (`lethe verify --unauthenticated`: no master
    /// key); nil when there is no key store there.
    func openAnchors() throws -> (any KeyStorage)?
}

/// A wrapped key as stored: the wrapping generation it is sealed under, and its sealed bytes.
package struct StoredKey: Sendable, Equatable {
    package var generation: Int64
    package var sealed: [UInt8]

    package init(generation: Int64, sealed: [UInt8]) {
        self.generation = generation
        self.sealed = sealed
    }
}

/// A row of a wrapping generation: its salt and the MAC that tells whether a master key opens it.
package struct WrappingRow: Sendable, Equatable {
    package var generation: Int64
    package var salt: [UInt8]
    package var check: [UInt8]

    package init(generation: Int64, salt: [UInt8], check: [UInt8]) {
        (self.generation, self.salt, self.check) = (generation, salt, check)
    }
}

/// A wrapped key's row, by what names it: what a rotation re-wraps.
package enum KeyRowID: Sendable, Hashable {
    case keyring(account: String)
    case own(UInt64)
    case journal([UInt8])
}

/// A keyring to write, on the condition that the stored one is still `expected`.
package struct KeyringWrite: Sendable {
    package var account: String
    package var key: StoredKey
    /// When it was made, and when it was purged (seconds), if it was.
    package var created: Int64
    package var purged: Int64?
    package var expected: [UInt8]?

    package init(account: String, key: StoredKey, created: Int64, purged: Int64?, expected: [UInt8]?) {
        (self.account, self.key, self.created, self.purged, self.expected) = (account, key, created, purged, expected)
    }
}

/// The tables of wrapped keys.
package enum KeyTable: Sendable, CaseIterable {
    case keyrings, ownKeys, journals

    /// The table's name, and its key column's (the same on every backend).
    package var names: (table: String, key: String) {
        switch self {
        case .keyrings: ("keyrings", "account")
        case .ownKeys: ("own_keys", "id")
        case .journals: ("journals", "id")
        }
    }
}

/// What the key store needs from the database that holds it: rows of wrapped keys, read inside
/// one snapshot or written inside one transaction, which the writers of every process take in
/// turn. One connection; its owner serialises the calls.
///
/// The key store decides everything (what is wrapped, under which generation, what a keyring
/// holds, when keys are destroyed); a storage only keeps rows, and leaves no copy of a removed
/// one behind once `clearResidue` succeeds.
package protocol KeyStorage: AnyObject {
    /// Runs `body` in one write transaction, serialised with every other process's: committed
    /// if it returns, rolled back if it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T
    /// Runs `body` in one read snapshot (or in the transaction already open).
    func reading<T>(_ body: () throws -> T) throws -> T
    func close()

    /// The store's format (nil: a new store, or not one).
    func format() throws -> Int64?
    /// Sets up a new store (in a transaction): its format, epoch 0 and its first generation.
    /// Refuses one that holds keys but no generation (damaged).
    func create(format: Int64, first: WrappingRow) throws
    /// Whether the store has no wrapping generation yet (made by `create`).
    func isNew() throws -> Bool

    /// The epoch: moved by every destruction and rotation, so that every process drops its cached keys.
    func epoch() throws -> Int64
    /// Moves the epoch on and marks what the removed rows left behind (`hasResidue`): in the
    /// transaction that destroys keys.
    func advanceEpoch() throws

    func wrappings() throws -> [WrappingRow]
    func insertWrapping(_ row: WrappingRow) throws
    func deleteWrappings(below generation: Int64) throws

    func keyring(_ account: String) throws -> StoredKey?
    /// The keyrings of `accounts` that exist (in a few statements, not one per account).
    func keyrings(_ accounts: [String]) throws -> [(account: String, key: StoredKey)]
    /// Writes each keyring if the stored one is still the write's `expected` (nil: there is
    /// none), in as few statements as the database allows; for each, whether it was written
    /// (false: another process changed it first). A keyring's `purged` is kept once set.
    func storeKeyrings(_ writes: [KeyringWrite]) throws -> [Bool]
    /// The accounts whose keyring is marked purged.
    func purgedAccounts() throws -> Set<String>

    func ownKey(_ id: UInt64) throws -> StoredKey?
    func ownKeys(_ ids: [UInt64]) throws -> [(id: UInt64, key: StoredKey)]
    /// The largest own key id ever made (0: none), deleted ones included: ids are never reused.
    func lastOwnKeyID() throws -> UInt64
    /// Stores own keys numbered on from `lastOwnKeyID` (in a transaction).
    func insertOwnKeys(_ keys: [(id: UInt64, key: StoredKey)]) throws
    func deleteOwnKeys(_ ids: [UInt64]) throws

    func journalKeys(_ id: [UInt8]) throws -> StoredKey?
    func insertJournalKeys(_ id: [UInt8], _ key: StoredKey) throws

    /// Up to `limit` rows of `table` wrapped under a generation below `generation`.
    func rows(of table: KeyTable, below generation: Int64, limit: Int) throws -> [(id: KeyRowID, key: StoredKey)]
    func rewrap(_ id: KeyRowID, _ key: StoredKey) throws

    func anchoredHead(journal: [UInt8], instance: [UInt8]) throws -> AnchoredHead?
    /// Every instance of `journal` anchored here, newest head first.
    func anchoredFiles(journal: [UInt8]) throws -> [(instance: [UInt8], seq: Int64)]
    /// Records `head` for the instance unless a later one is recorded.
    func anchor(journal: [UInt8], instance: [UInt8], head: AnchoredHead) throws

    /// Whether a destruction or rotation left old copies of removed rows (a WAL's pages, dead row versions).
    func hasResidue() throws -> Bool
    /// Removes them (waiting at most `wait` for readers that hold them). Returns nil when none is
    /// left; otherwise what is left and who holds it, for a message.
    func clearResidue(wait: Duration) throws -> String?
}
