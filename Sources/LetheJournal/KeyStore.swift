import Crypto
import Foundation

/// Where the master key comes from: `LETHE_MASTER_KEY` (64 hex digits) in the environment, or a key
/// file (32 random bytes, hex) created with mode 0600 on first use, by default `KEYS.master`.
public struct MasterKeySource: Sendable {
    public static let environmentVariable = "LETHE_MASTER_KEY"

    public var environment: [String: String]
    public var keyFile: String

    public init(keysPath: String, environment: [String: String] = ProcessInfo.processInfo.environment, keyFile: String? = nil) {
        self.environment = environment
        self.keyFile = keyFile ?? keysPath + ".master"
    }

    /// The master key, creating the key file when neither it nor the variable exists and `create` is true.
    package func load(create: Bool, entropy: Entropy) throws -> SymmetricKey {
        if let text = environment[Self.environmentVariable] {
            guard let bytes = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 else {
                throw JournalError(.keys, "\(Self.environmentVariable) must be 64 hexadecimal digits (a 256-bit key)")
            }
            return SymmetricKey(data: bytes)
        }
        if let text = try? String(contentsOfFile: keyFile, encoding: .utf8) {
            guard let bytes = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 else {
                throw JournalError(.keys, "master key file \(keyFile) does not hold 64 hexadecimal digits")
            }
            return SymmetricKey(data: bytes)
        }
        guard create else {
            throw JournalError(.keys, "no master key: set \(Self.environmentVariable) or provide the key file \(keyFile)")
        }
        let bytes = entropy.bytes(32)
        let fd = open(keyFile, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw JournalError(.keys, "cannot create master key file \(keyFile): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let text = Array((Hex.encode(bytes) + "\n").utf8)
        guard write(fd, text, text.count) == text.count, fsync(fd) == 0 else {
            throw JournalError(.keys, "cannot write master key file \(keyFile): \(String(cString: strerror(errno)))")
        }
        return SymmetricKey(data: bytes)
    }
}

/// Each account's own 256-bit data key, wrapped (AES-GCM) under a key derived from the master key.
///
/// One SQLite file, separate from the journal and never inside a backup of it. Destroying an
/// account's key leaves a tombstone row (account id, time), so the store can tell "never had a key"
/// from "shredded"; the wrapped key itself is overwritten on disk (`secure_delete`).
package final class KeyStore {
    package let path: String
    private let db: SQLiteDatabase
    private let wrappingKey: SymmetricKey
    private let master: SymmetricKey
    private let entropy: Entropy
    /// Unwrapped keys, so that a busy account costs one unwrap. Bounded: cleared when full.
    private var cache: [String: SymmetricKey] = [:]
    private let cacheLimit = 100_000

    package enum Lookup: Sendable {
        case key(SymmetricKey)
        case destroyed
        case none
    }

    package init(path: String, master: MasterKeySource, entropy: Entropy, synchronous: Journal.Synchronous) throws {
        self.path = path
        self.entropy = entropy
        let existed = FileManager.default.fileExists(atPath: path)
        do {
            db = try SQLiteDatabase(path: path)
            try db.enableWAL()
            try db.execute("""
                PRAGMA synchronous=\(synchronous.pragma); PRAGMA secure_delete=ON;
                CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS keys(
                    account TEXT PRIMARY KEY, wrapped BLOB, created INTEGER NOT NULL, destroyed INTEGER
                ) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS erased(journal BLOB NOT NULL, account TEXT NOT NULL, seqs TEXT NOT NULL);
                """)
        } catch {
            throw JournalError(.keys, "cannot open key store \(path)", underlying: error)
        }
        let hasKeys = existed && ((try? db.scalarInt("SELECT count(*) FROM keys")) ?? 0) > 0
        let master = try master.load(create: !hasKeys, entropy: entropy)
        self.master = master
        let salt: [UInt8]
        do {
            let s = try db.statement("SELECT value FROM meta WHERE key='salt'")
            defer { s.reset() }
            if try s.step() {
                salt = s.blob(0)
            } else {
                salt = entropy.bytes(16)
                try db.statement("INSERT INTO meta(key, value) VALUES('salt', ?)").bind(1, salt).run()
            }
        } catch {
            throw JournalError(.keys, "cannot read key store \(path)", underlying: error)
        }
        wrappingKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: master, salt: salt, info: Array("lethe key-wrap v1".utf8), outputByteCount: 32)
        // Prove the master key opens this store now, not at the first read of an old account.
        do {
            let s = try db.statement("SELECT account, wrapped FROM keys WHERE wrapped IS NOT NULL LIMIT 1")
            defer { s.reset() }
            if try s.step(), let account = s.text(0) {
                _ = try unwrap(s.blob(1), account: account)
            }
        }
    }

    /// The key that authenticates the chain head of the journal with this id.
    package func anchorKey(journalID: [UInt8]) -> SymmetricKey { Anchor.key(master: master, journalID: journalID) }
    package func engineKey(journalID: [UInt8]) -> SymmetricKey { Anchor.engineKey(master: master, journalID: journalID) }

    private func unwrap(_ wrapped: [UInt8], account: String) throws -> SymmetricKey {
        do {
            let box = try AES.GCM.SealedBox(combined: wrapped)
            return SymmetricKey(data: try AES.GCM.open(box, using: wrappingKey, authenticating: Array(account.utf8)))
        } catch {
            throw JournalError(.keys, "the master key does not open the key store \(path) (wrong key, or the store was altered)")
        }
    }

    /// The account's data key, if it has one that was not destroyed.
    package func lookup(_ account: String) throws -> Lookup {
        if let key = cache[account] { return .key(key) }
        let wrapped: [UInt8]?
        do {
            let s = try db.statement("SELECT wrapped FROM keys WHERE account = ?")
            // Reset at once: a statement left on its row would pin a stale snapshot, and keys
            // created by another process since would stay invisible.
            defer { s.reset() }
            s.bind(1, account)
            guard try s.step() else { return .none }
            wrapped = s.isNull(0) ? nil : s.blob(0)
        } catch {
            throw JournalError(.keys, "cannot read key store \(path)", underlying: error)
        }
        guard let wrapped else { return .destroyed }
        let key = try unwrap(wrapped, account: account)
        remember(account, key)
        return .key(key)
    }

    private func remember(_ account: String, _ key: SymmetricKey) {
        if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[account] = key
    }

    /// Creates and durably stores keys for `accounts`, in one transaction. An account that got a
    /// key meanwhile (another process) keeps that one; one whose key was destroyed gets nil.
    package func createKeys(for accounts: [String], at time: Timestamp) throws -> [SymmetricKey?] {
        guard !accounts.isEmpty else { return [] }
        do {
            let created: [SymmetricKey?] = try db.transaction {
                let insert = try db.statement("INSERT INTO keys(account, wrapped, created) VALUES(?, ?, ?) ON CONFLICT(account) DO NOTHING")
                return try accounts.map { account in
                    let key = SymmetricKey(data: entropy.bytes(32))
                    let nonce = try AES.GCM.Nonce(data: entropy.bytes(12))
                    let wrapped = try AES.GCM.seal(
                        key.withUnsafeBytes { Array($0) }, using: wrappingKey, nonce: nonce,
                        authenticating: Array(account.utf8))
                    insert.reset()
                    try insert.bind(1, account).bind(2, Array(wrapped.combined!)).bind(3, time.nanoseconds).run()
                    guard db.changes == 1 else { return nil }
                    remember(account, key)
                    return key
                }
            }
            return try zip(accounts, created).map { account, key in
                if let key { return key }
                if case .key(let existing) = try lookup(account) { return existing }
                return nil
            }
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.keys, "cannot store new account keys in \(path)", underlying: error)
        }
    }

    /// Remembers erasures of single events (their keys live on): the key store outlives any
    /// backup of the journal, so a restore can erase them again (`erasedEvents`).
    package func rememberErasures(journal: [UInt8], _ erasures: [(account: String, seqs: [Int64])]) throws {
        guard !erasures.isEmpty else { return }
        do {
            try db.transaction {
                let s = try db.statement("INSERT INTO erased(journal, account, seqs) VALUES(?, ?, ?)")
                for e in erasures { try s.bind(1, journal).bind(2, e.account).bind(3, e.seqs.map(String.init).joined(separator: ",")).run() }
            }
        } catch {
            throw JournalError(.keys, "cannot record erasures in \(path)", underlying: error)
        }
    }

    /// The single-event erasures remembered for `journal`.
    package func erasedEvents(journal: [UInt8]) throws -> [(account: String, seqs: [Int64])] {
        do {
            let s = try db.statement("SELECT account, seqs FROM erased WHERE journal = ?")
            defer { s.reset() }
            s.bind(1, journal)
            var out: [(String, [Int64])] = []
            while try s.step() { out.append((s.text(0) ?? "", (s.text(1) ?? "").split(separator: ",").compactMap { Int64($0) })) }
            return out
        } catch {
            throw JournalError(.keys, "cannot read erasures in \(path)", underlying: error)
        }
    }

    /// Destroys the account's key for good: the wrapped bytes are overwritten, a tombstone stays.
    package func destroyKey(_ account: String, at time: Timestamp) throws {
        try destroyKeys([account], at: time)
    }

    /// Destroys these accounts' keys in one transaction, then truncates the WAL once.
    package func destroyKeys(_ accounts: [String], at time: Timestamp) throws {
        guard !accounts.isEmpty else { return }
        for account in accounts { cache[account] = nil }
        do {
            try db.transaction {
                let s = try db.statement("""
                    INSERT INTO keys(account, wrapped, created, destroyed) VALUES(?1, NULL, ?2, ?2)
                    ON CONFLICT(account) DO UPDATE SET wrapped = NULL, destroyed = coalesce(destroyed, ?2)
                    """)
                for account in accounts { try s.bind(1, account).bind(2, time.nanoseconds).run() }
            }
            try db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        } catch {
            throw JournalError(.keys, "cannot destroy keys in \(path)", underlying: error)
        }
    }
}
