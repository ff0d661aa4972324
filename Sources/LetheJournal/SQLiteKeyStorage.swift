import Foundation

/// A key store in a SQLite file of its own (owner-only), beside the journal's or anywhere else.
package struct SQLiteKeyBackend: KeyStoreBackend {
    package let path: String

    package init(path: String) { self.path = path }

    package var place: String { path }
    package var dataPaths: [String] { [path] }
    package var database: String? { nil }

    package func exists() throws -> Bool { FileManager.default.fileExists(atPath: path) }

    package func open(synchronous: Journal.Synchronous) throws -> any KeyStorage {
        try SQLiteKeyStorage(path: path, synchronous: synchronous)
    }

    package func openAnchors() throws -> (any KeyStorage)? {
        guard try exists() else { return nil }
        let db = try SQLiteDatabase(path: path, readOnly: true)
        guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name='anchors'") == 1 else {
            db.close()
            return nil
        }
        return SQLiteKeyStorage(db)
    }
}

/// The key store's rows in SQLite. Removed keys are overwritten in place (`secure_delete`), and
/// the WAL, which still holds their old pages, is truncated (`clearResidue`).
final class SQLiteKeyStorage: KeyStorage {
    private let db: SQLiteDatabase

    init(path: String, synchronous: Journal.Synchronous) throws {
        try PrivateFile.prepareDatabase(path)
        db = try SQLiteDatabase(path: path)
        try db.enableWAL()
        try db.execute("PRAGMA synchronous=\(synchronous.pragma); PRAGMA secure_delete=ON; PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=8192;")
        if try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE name='keys'") == 1 {
            throw JournalError(.keys, "the key store \(path) has format 1; this build reads format \(KeyStore.format) (no migration: make a new journal and import an export)")
        }
        try db.transaction {
            try db.execute("""
                CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS wrapping(generation INTEGER PRIMARY KEY, salt BLOB NOT NULL, check_mac BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS keyrings(
                    account TEXT PRIMARY KEY, generation INTEGER NOT NULL, sealed BLOB NOT NULL,
                    created INTEGER NOT NULL, purged INTEGER) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS journals(id BLOB PRIMARY KEY, generation INTEGER NOT NULL, sealed BLOB NOT NULL) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS own_keys(id INTEGER PRIMARY KEY AUTOINCREMENT, generation INTEGER NOT NULL, sealed BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS anchors(
                    journal BLOB NOT NULL, instance BLOB NOT NULL, head_seq INTEGER NOT NULL, head_link BLOB NOT NULL,
                    PRIMARY KEY(journal, instance)) WITHOUT ROWID;
                """)
        }
    }

    /// A read-only connection (the anchors, without the master key).
    init(_ db: SQLiteDatabase) { self.db = db }

    func transaction<T>(_ body: () throws -> T) throws -> T { try db.transaction(body) }
    func reading<T>(_ body: () throws -> T) throws -> T { try db.reading(body) }
    func close() { db.close() }

    func format() throws -> Int64? { try db.scalarInt("SELECT value FROM meta WHERE key='format'") }

    func isNew() throws -> Bool { try db.scalarInt("SELECT count(*) FROM wrapping") == 0 }

    func create(format: Int64, first: WrappingRow) throws {
        try db.transaction {
            guard try isNew() else { return }
            guard try db.scalarInt("SELECT count(*) FROM keyrings") == 0, try db.scalarInt("SELECT count(*) FROM journals") == 0 else {
                throw JournalError(.keys, "the key store \(db.path) holds keys but no wrapping salt (damaged)")
            }
            try insertWrapping(first)
            try db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('format', \(format)), ('epoch', 0)")
        }
    }

    func epoch() throws -> Int64 { try db.scalarInt("SELECT value FROM meta WHERE key='epoch'") ?? 0 }

    func advanceEpoch() throws {
        try db.execute("UPDATE meta SET value = value + 1 WHERE key = 'epoch'")
        try db.markWALDirty()
    }

    func wrappings() throws -> [WrappingRow] {
        let s = try db.statement("SELECT generation, salt, check_mac FROM wrapping ORDER BY generation")
        defer { s.reset() }
        var rows: [WrappingRow] = []
        while try s.step() { rows.append(WrappingRow(generation: s.int(0), salt: s.blob(1), check: s.blob(2))) }
        return rows
    }

    func insertWrapping(_ row: WrappingRow) throws {
        try db.statement("INSERT INTO wrapping(generation, salt, check_mac) VALUES(?, ?, ?)")
            .bind(1, row.generation).bind(2, row.salt).bind(3, row.check).run()
    }

    func deleteWrappings(below generation: Int64) throws {
        try db.statement("DELETE FROM wrapping WHERE generation < ?").bind(1, generation).run()
    }

    func keyring(_ account: String) throws -> StoredKey? {
        let s = try db.statement("SELECT generation, sealed FROM keyrings WHERE account = ?")
        // Reset at once: a statement left on its row would pin a stale snapshot.
        defer { s.reset() }
        s.bind(1, account)
        guard try s.step() else { return nil }
        return StoredKey(generation: s.int(0), sealed: s.blob(1))
    }

    func keyrings(_ accounts: [String]) throws -> [(account: String, key: StoredKey)] {
        var rows: [(account: String, key: StoredKey)] = []
        try db.inChunks(of: 256, count: accounts.count, sql: { n in
            "SELECT account, generation, sealed FROM keyrings WHERE account IN (\(SQLiteDatabase.parameters(n)))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(k + 1), accounts[i]) }
            while try s.step() { rows.append((s.text(0) ?? "", StoredKey(generation: s.int(1), sealed: s.blob(2)))) }
        }
        return rows
    }

    /// One statement per keyring (prepared once): in process, a statement costs no round trip.
    func storeKeyrings(_ writes: [KeyringWrite]) throws -> [Bool] {
        try writes.map { w in
            if let expected = w.expected {
                try db.statement("""
                    UPDATE keyrings SET generation = ?2, sealed = ?3, purged = coalesce(purged, ?4) WHERE account = ?1 AND sealed = ?5
                    """).bind(1, w.account).bind(2, w.key.generation).bind(3, w.key.sealed).bind(4, w.purged).bind(5, expected).run()
            } else {
                try db.statement("""
                    INSERT INTO keyrings(account, generation, sealed, created, purged) VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(account) DO NOTHING
                    """).bind(1, w.account).bind(2, w.key.generation).bind(3, w.key.sealed).bind(4, w.created).bind(5, w.purged).run()
            }
            return db.changes == 1
        }
    }

    func purgedAccounts() throws -> Set<String> {
        let s = try db.statement("SELECT account FROM keyrings WHERE purged IS NOT NULL")
        defer { s.reset() }
        var out = Set<String>()
        while try s.step() { out.insert(s.text(0) ?? "") }
        return out
    }

    func ownKey(_ id: UInt64) throws -> StoredKey? {
        let s = try db.statement("SELECT generation, sealed FROM own_keys WHERE id = ?")
        defer { s.reset() }
        s.bind(1, Int64(bitPattern: id))
        guard try s.step() else { return nil }
        return StoredKey(generation: s.int(0), sealed: s.blob(1))
    }

    func ownKeys(_ ids: [UInt64]) throws -> [(id: UInt64, key: StoredKey)] {
        var rows: [(id: UInt64, key: StoredKey)] = []
        try db.inChunks(of: 256, count: ids.count, sql: { n in
            "SELECT id, generation, sealed FROM own_keys WHERE id IN (\(SQLiteDatabase.parameters(n)))"
        }) { s, range in
            for (k, i) in range.enumerated() { s.bind(Int32(k + 1), Int64(bitPattern: ids[i])) }
            while try s.step() { rows.append((UInt64(bitPattern: s.int(0)), StoredKey(generation: s.int(1), sealed: s.blob(2)))) }
        }
        return rows
    }

    /// AUTOINCREMENT keeps the largest id ever used in `sqlite_sequence`, deleted rows included.
    func lastOwnKeyID() throws -> UInt64 {
        UInt64(max(0, try db.scalarInt("SELECT seq FROM sqlite_sequence WHERE name = 'own_keys'") ?? 0))
    }

    func insertOwnKeys(_ keys: [(id: UInt64, key: StoredKey)]) throws {
        let insert = try db.statement("INSERT INTO own_keys(id, generation, sealed) VALUES(?, ?, ?)")
        for (id, key) in keys { try insert.bind(1, Int64(bitPattern: id)).bind(2, key.generation).bind(3, key.sealed).run() }
    }

    func deleteOwnKeys(_ ids: [UInt64]) throws {
        let delete = try db.statement("DELETE FROM own_keys WHERE id = ?")
        for id in ids { try delete.bind(1, Int64(bitPattern: id)).run() }
    }

    func journalKeys(_ id: [UInt8]) throws -> StoredKey? {
        let s = try db.statement("SELECT generation, sealed FROM journals WHERE id = ?")
        defer { s.reset() }
        s.bind(1, id)
        guard try s.step() else { return nil }
        return StoredKey(generation: s.int(0), sealed: s.blob(1))
    }

    func insertJournalKeys(_ id: [UInt8], _ key: StoredKey) throws {
        try db.statement("INSERT INTO journals(id, generation, sealed) VALUES(?, ?, ?)")
            .bind(1, id).bind(2, key.generation).bind(3, key.sealed).run()
    }

    func rows(of table: KeyTable, below generation: Int64, limit: Int) throws -> [(id: KeyRowID, key: StoredKey)] {
        let (name, column) = table.names
        let s = try db.statement("SELECT \(column), generation, sealed FROM \(name) WHERE generation < ? LIMIT ?")
        defer { s.reset() }
        s.bind(1, generation).bind(2, Int64(limit))
        var rows: [(id: KeyRowID, key: StoredKey)] = []
        while try s.step() {
            let id: KeyRowID = switch table {
            case .keyrings: .keyring(account: s.text(0) ?? "")
            case .ownKeys: .own(UInt64(bitPattern: s.int(0)))
            case .journals: .journal(s.blob(0))
            }
            rows.append((id, StoredKey(generation: s.int(1), sealed: s.blob(2))))
        }
        return rows
    }

    func rewrap(_ id: KeyRowID, _ key: StoredKey) throws {
        func update(_ table: KeyTable) throws -> SQLiteStatement {
            let (name, column) = table.names
            return try db.statement("UPDATE \(name) SET generation = ?, sealed = ? WHERE \(column) = ?").bind(1, key.generation).bind(2, key.sealed)
        }
        switch id {
        case .keyring(let account): try update(.keyrings).bind(3, account).run()
        case .own(let n): try update(.ownKeys).bind(3, Int64(bitPattern: n)).run()
        case .journal(let j): try update(.journals).bind(3, j).run()
        }
    }

    func anchoredHead(journal: [UInt8], instance: [UInt8]) throws -> AnchoredHead? {
        let s = try db.statement("SELECT head_seq, head_link FROM anchors WHERE journal = ? AND instance = ?")
        defer { s.reset() }
        s.bind(1, journal).bind(2, instance)
        guard try s.step() else { return nil }
        return AnchoredHead(seq: s.int(0), link: s.blob(1))
    }

    func anchoredFiles(journal: [UInt8]) throws -> [(instance: [UInt8], seq: Int64)] {
        let s = try db.statement("SELECT instance, head_seq FROM anchors WHERE journal = ? ORDER BY head_seq DESC")
        defer { s.reset() }
        s.bind(1, journal)
        var out: [(instance: [UInt8], seq: Int64)] = []
        while try s.step() { out.append((s.blob(0), s.int(1))) }
        return out
    }

    func anchor(journal: [UInt8], instance: [UInt8], head: AnchoredHead) throws {
        try db.statement("""
            INSERT INTO anchors(journal, instance, head_seq, head_link) VALUES(?, ?, ?, ?)
            ON CONFLICT(journal, instance) DO UPDATE SET head_seq = excluded.head_seq, head_link = excluded.head_link
            WHERE excluded.head_seq > anchors.head_seq
            """).bind(1, journal).bind(2, instance).bind(3, head.seq).bind(4, head.link).run()
    }

    func hasResidue() throws -> Bool { try db.isWALDirty() }

    func clearResidue(wait: Duration) throws -> String? { try db.clearResidue(wait: wait) }
}
