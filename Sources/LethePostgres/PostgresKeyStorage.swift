import LetheJournal
import PostgresNIO

/// A key store in a PostgreSQL database of its own (never the journal's: a dump or a base backup
/// of the journal's database must hold no key), in the address's schema. Every instance opens
/// its own connections; writers take turns on an advisory lock held for their transaction.
public struct PostgresKeyBackend: KeyStoreBackend {
    public let address: PostgresAddress

    public init(_ address: PostgresAddress) { self.address = address }

    package var place: String { address.description }
    /// Nothing of the key store is in a file here.
    package var dataPaths: [String] { [] }

    package func exists() throws -> Bool {
        let connection = try Connection(address)
        defer { connection.close() }
        return try PostgresKeyStorage.holdsKeyStore(connection)
    }

    package func open(synchronous: Journal.Synchronous) throws -> any KeyStorage {
        let connection = try Connection(address)
        do {
            // Two instances that start on a new database at once make the schema once.
            try connection.transaction {
                try connection.query("SELECT pg_advisory_xact_lock(\(PostgresKeyStorage.lockKey(address.schema)))")
                for sql in PostgresKeyStorage.schemaSQL(address.schema) { try connection.execute(sql) }
            }
            // (A key is committed before anything sealed under it is written: never asynchronously.)
            return try PostgresKeyStorage(connection)
        } catch let e as JournalError {
            connection.close()
            throw e
        } catch {
            connection.close()
            throw JournalError(.keys, "cannot open the key store at \(place): \(error)")
        }
    }

    package func openAnchors() throws -> (any KeyStorage)? {
        let connection = try Connection(address)
        guard try PostgresKeyStorage.holdsKeyStore(connection) else {
            connection.close()
            return nil
        }
        return try PostgresKeyStorage(connection)
    }

    package var database: String? { address.databaseIdentity() }
}

/// The key store's rows in PostgreSQL. Removed keys leave dead row versions behind until the
/// tables are rewritten: `clearResidue` runs `VACUUM FULL` on them, which writes each table anew
/// and drops its old file. (What the server's WAL and its archives keep is in the README.)
final class PostgresKeyStorage: KeyStorage {
    private let connection: Connection

    init(_ connection: Connection) throws {
        self.connection = connection
        try connection.execute("SET search_path TO \(connection.address.schema)")
    }

    static func schemaSQL(_ schema: String) -> [String] {
        [
            "CREATE SCHEMA IF NOT EXISTS \(schema)",
            "CREATE TABLE IF NOT EXISTS \(schema).meta(key text PRIMARY KEY, value bigint NOT NULL)",
            "CREATE TABLE IF NOT EXISTS \(schema).wrapping(generation bigint PRIMARY KEY, salt bytea NOT NULL, check_mac bytea NOT NULL)",
            """
            CREATE TABLE IF NOT EXISTS \(schema).keyrings(
                account text PRIMARY KEY, generation bigint NOT NULL, sealed bytea NOT NULL, created bigint NOT NULL, purged bigint)
            """,
            "CREATE TABLE IF NOT EXISTS \(schema).journals(id bytea PRIMARY KEY, generation bigint NOT NULL, sealed bytea NOT NULL)",
            "CREATE TABLE IF NOT EXISTS \(schema).own_keys(id bigint PRIMARY KEY, generation bigint NOT NULL, sealed bytea NOT NULL)",
            """
            CREATE TABLE IF NOT EXISTS \(schema).anchors(
                journal bytea NOT NULL, instance bytea NOT NULL, head_seq bigint NOT NULL, head_link bytea NOT NULL,
                PRIMARY KEY(journal, instance))
            """,
        ]
    }

    static func holdsKeyStore(_ connection: Connection) throws -> Bool {
        let rows = try connection.query("SELECT to_regclass(\(connection.address.schema + ".wrapping"))::text")
        return try rows.first?.column(String?.self, "wrapping") != nil
    }

    /// The advisory lock every write transaction of the key store takes first.
    static func lockKey(_ schema: String) -> Int64 { Int64(bitPattern: journalHash(schema: schema, "key store")) }

    func transaction<T>(_ body: () throws -> T) throws -> T {
        try connection.transaction {
            try connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey(connection.address.schema)))")
            return try body()
        }
    }

    func reading<T>(_ body: () throws -> T) throws -> T {
        guard !connection.inTransaction else { return try body() }
        return try connection.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    func close() { connection.close() }

    private func meta(_ key: String) throws -> Int64? {
        try connection.query("SELECT value FROM meta WHERE key = \(key)").first?.column(Int64.self, "meta")
    }

    private func count(_ table: String) throws -> Int64 {
        try connection.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)")).first?.column(Int64.self, table) ?? 0
    }

    func format() throws -> Int64? { try meta("format") }

    func isNew() throws -> Bool { try count("wrapping") == 0 }

    func create(format: Int64, first: WrappingRow) throws {
        try transaction {
            guard try isNew() else { return }
            guard try count("keyrings") == 0, try count("journals") == 0 else {
                throw JournalError(.keys, "the key store \(connection.address) holds keys but no wrapping salt (damaged)")
            }
            try insertWrapping(first)
            try connection.query("INSERT INTO meta(key, value) VALUES('format', \(format)), ('epoch', 0) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        }
    }

    func epoch() throws -> Int64 { try meta("epoch") ?? 0 }

    func advanceEpoch() throws {
        try connection.query("UPDATE meta SET value = value + 1 WHERE key = 'epoch'")
        try connection.query("INSERT INTO meta(key, value) VALUES('residue', 1) ON CONFLICT(key) DO NOTHING")
    }

    func wrappings() throws -> [WrappingRow] {
        try connection.query("SELECT generation, salt, check_mac FROM wrapping ORDER BY generation").map { row in
            let (g, salt, check) = try row.columns((Int64, ByteBuffer, ByteBuffer).self, "wrapping")
            return WrappingRow(generation: g, salt: salt.bytes, check: check.bytes)
        }
    }

    func insertWrapping(_ row: WrappingRow) throws {
        try connection.query("INSERT INTO wrapping(generation, salt, check_mac) VALUES(\(row.generation), \(row.salt.buffer), \(row.check.buffer))")
    }

    func deleteWrappings(below generation: Int64) throws {
        try connection.query("DELETE FROM wrapping WHERE generation < \(generation)")
    }

    private static func stored(_ row: PostgresRow, _ table: String) throws -> StoredKey {
        let (g, sealed) = try row.columns((Int64, ByteBuffer).self, table)
        return StoredKey(generation: g, sealed: sealed.bytes)
    }

    func keyring(_ account: String) throws -> StoredKey? {
        try connection.query("SELECT generation, sealed FROM keyrings WHERE account = \(account)").first.map { try Self.stored($0, "keyrings") }
    }

    func keyrings(_ accounts: [String]) throws -> [(account: String, key: StoredKey)] {
        guard !accounts.isEmpty else { return [] }
        return try connection.query("SELECT account, generation, sealed FROM keyrings WHERE account = ANY(\(accounts)::text[])").map { row in
            let (account, g, sealed) = try row.columns((String, Int64, ByteBuffer).self, "keyrings")
            return (account, StoredKey(generation: g, sealed: sealed.bytes))
        }
    }

    /// Two statements whatever the number: the new keyrings in one insert, the changed ones in
    /// one conditional update (a batch of new accounts would otherwise cost a round trip each).
    /// (`purged` travels as -1 for none: arrays of optional values do not.)
    func storeKeyrings(_ writes: [KeyringWrite]) throws -> [Bool] {
        let inserts = writes.filter { $0.expected == nil }, updates = writes.filter { $0.expected != nil }
        var written = Set<String>()
        if !inserts.isEmpty {
            for row in try connection.query("""
                INSERT INTO keyrings(account, generation, sealed, created, purged)
                SELECT a, g, s, c, nullif(p, -1) FROM unnest(\(inserts.map(\.account))::text[], \(inserts.map(\.key.generation))::bigint[],
                    \(inserts.map(\.key.sealed.buffer))::bytea[], \(inserts.map(\.created))::bigint[], \(inserts.map { $0.purged ?? -1 })::bigint[])
                    AS u(a, g, s, c, p)
                ON CONFLICT(account) DO NOTHING RETURNING account
                """) { written.insert(try row.column(String.self, "keyrings")) }
        }
        if !updates.isEmpty {
            for row in try connection.query("""
                UPDATE keyrings SET generation = u.g, sealed = u.s, purged = coalesce(keyrings.purged, nullif(u.p, -1))
                FROM unnest(\(updates.map(\.account))::text[], \(updates.map(\.key.generation))::bigint[], \(updates.map(\.key.sealed.buffer))::bytea[],
                    \(updates.map { $0.purged ?? -1 })::bigint[], \(updates.map { $0.expected!.buffer })::bytea[]) AS u(a, g, s, p, e)
                WHERE keyrings.account = u.a AND keyrings.sealed = u.e RETURNING keyrings.account
                """) { written.insert(try row.column(String.self, "keyrings")) }
        }
        return writes.map { written.contains($0.account) }
    }

    func purgedAccounts() throws -> Set<String> {
        Set(try connection.query("SELECT account FROM keyrings WHERE purged IS NOT NULL").map { try $0.column(String.self, "keyrings") })
    }

    func ownKey(_ id: UInt64) throws -> StoredKey? {
        try connection.query("SELECT generation, sealed FROM own_keys WHERE id = \(Int64(bitPattern: id))").first.map { try Self.stored($0, "own_keys") }
    }

    func ownKeys(_ ids: [UInt64]) throws -> [(id: UInt64, key: StoredKey)] {
        guard !ids.isEmpty else { return [] }
        return try connection.query("SELECT id, generation, sealed FROM own_keys WHERE id = ANY(\(ids.map { Int64(bitPattern: $0) })::bigint[])").map { row in
            let (id, g, sealed) = try row.columns((Int64, Int64, ByteBuffer).self, "own_keys")
            return (UInt64(bitPattern: id), StoredKey(generation: g, sealed: sealed.bytes))
        }
    }

    /// Kept in `meta` (`own_keys_made`): rows are deleted when their keys are destroyed, and an id
    /// is never made twice.
    func lastOwnKeyID() throws -> UInt64 { UInt64(bitPattern: try meta("own_keys_made") ?? 0) }

    func insertOwnKeys(_ keys: [(id: UInt64, key: StoredKey)]) throws {
        guard let last = keys.map(\.id).max() else { return }
        try connection.query("""
            INSERT INTO own_keys(id, generation, sealed)
            SELECT * FROM unnest(\(keys.map { Int64(bitPattern: $0.id) })::bigint[], \(keys.map(\.key.generation))::bigint[],
                                 \(keys.map(\.key.sealed.buffer))::bytea[])
            """)
        try connection.query("""
            INSERT INTO meta(key, value) VALUES('own_keys_made', \(Int64(bitPattern: last)))
            ON CONFLICT(key) DO UPDATE SET value = greatest(meta.value, excluded.value)
            """)
    }

    func deleteOwnKeys(_ ids: [UInt64]) throws {
        guard !ids.isEmpty else { return }
        try connection.query("DELETE FROM own_keys WHERE id = ANY(\(ids.map { Int64(bitPattern: $0) })::bigint[])")
    }

    func journalKeys(_ id: [UInt8]) throws -> StoredKey? {
        try connection.query("SELECT generation, sealed FROM journals WHERE id = \(id.buffer)").first.map { try Self.stored($0, "journals") }
    }

    func insertJournalKeys(_ id: [UInt8], _ key: StoredKey) throws {
        try connection.query("INSERT INTO journals(id, generation, sealed) VALUES(\(id.buffer), \(key.generation), \(key.sealed.buffer))")
    }

    func rows(of table: KeyTable, below generation: Int64, limit: Int) throws -> [(id: KeyRowID, key: StoredKey)] {
        let (name, column) = table.names
        let query = PostgresQuery(unsafeSQL: "SELECT \(column), generation, sealed FROM \(name) WHERE generation < $1 LIMIT $2", binds: {
            var b = PostgresBindings()
            b.append(generation)
            b.append(Int64(limit))
            return b
        }())
        return try connection.query(query).map { row in
            let id: KeyRowID
            let key: StoredKey
            switch table {
            case .keyrings:
                let (account, g, sealed) = try row.columns((String, Int64, ByteBuffer).self, name)
                (id, key) = (.keyring(account: account), StoredKey(generation: g, sealed: sealed.bytes))
            case .ownKeys:
                let (n, g, sealed) = try row.columns((Int64, Int64, ByteBuffer).self, name)
                (id, key) = (.own(UInt64(bitPattern: n)), StoredKey(generation: g, sealed: sealed.bytes))
            case .journals:
                let (j, g, sealed) = try row.columns((ByteBuffer, Int64, ByteBuffer).self, name)
                (id, key) = (.journal(j.bytes), StoredKey(generation: g, sealed: sealed.bytes))
            }
            return (id, key)
        }
    }

    func rewrap(_ id: KeyRowID, _ key: StoredKey) throws {
        switch id {
        case .keyring(let account):
            try connection.query("UPDATE keyrings SET generation = \(key.generation), sealed = \(key.sealed.buffer) WHERE account = \(account)")
        case .own(let n):
            try connection.query("UPDATE own_keys SET generation = \(key.generation), sealed = \(key.sealed.buffer) WHERE id = \(Int64(bitPattern: n))")
        case .journal(let j):
            try connection.query("UPDATE journals SET generation = \(key.generation), sealed = \(key.sealed.buffer) WHERE id = \(j.buffer)")
        }
    }

    func anchoredHead(journal: [UInt8], instance: [UInt8]) throws -> AnchoredHead? {
        try connection.query("SELECT head_seq, head_link FROM anchors WHERE journal = \(journal.buffer) AND instance = \(instance.buffer)")
            .first.map { row in
                let (seq, link) = try row.columns((Int64, ByteBuffer).self, "anchors")
                return AnchoredHead(seq: seq, link: link.bytes)
            }
    }

    func anchoredFiles(journal: [UInt8]) throws -> [(instance: [UInt8], seq: Int64)] {
        try connection.query("SELECT instance, head_seq FROM anchors WHERE journal = \(journal.buffer) ORDER BY head_seq DESC").map { row in
            let (instance, seq) = try row.columns((ByteBuffer, Int64).self, "anchors")
            return (instance.bytes, seq)
        }
    }

    func anchor(journal: [UInt8], instance: [UInt8], head: AnchoredHead) throws {
        try connection.query("""
            INSERT INTO anchors(journal, instance, head_seq, head_link) VALUES(\(journal.buffer), \(instance.buffer), \(head.seq), \(head.link.buffer))
            ON CONFLICT(journal, instance) DO UPDATE SET head_seq = excluded.head_seq, head_link = excluded.head_link
            WHERE excluded.head_seq > anchors.head_seq
            """)
    }

    func hasResidue() throws -> Bool { try connection.hasResidue() }

    /// `VACUUM FULL` of the tables keys are removed from: each is written anew and its old file
    /// dropped, so no dead version of a destroyed key stays in the database. (It holds each
    /// table's lock while it runs: a key store's tables are small.) A session whose snapshot is
    /// older than the destruction (or anything else that can still see old versions) would make
    /// it copy the destroyed keys' versions into the new files: `Connection.clearResidue` waits
    /// for them up to `wait`, and otherwise leaves the residue marked for the next call.
    func clearResidue(wait: Duration) throws -> String? {
        try connection.clearResidue(wait: wait, vacuum: "VACUUM FULL keyrings, own_keys, journals, wrapping")
    }
}
