import LetheJournal
import NIOCore
import PostgresNIO

/// A journal in a schema of a PostgreSQL database: `JournalStore` over one connection.
///
/// The tables mirror the SQLite store's (`schemaSQL`): texts that are compared as the engine
/// compares them (account names and event ids, byte by byte) are `COLLATE "C"`; the frames,
/// compressed already, are stored without PostgreSQL's own compression. Writers serialise on
/// the head's row, locked first in every write transaction, so the chain is extended in one
/// order however many instances append; readers read one `REPEATABLE READ` snapshot.
final class PostgresJournalStore: JournalStore {
    let connection: Connection
    let schema: String
    /// How many of the block index's recent postings `forEachRecentPosting` reads at a time.
    var recentPostingsPage = 20_000

    /// What the block index's recent rows hold beyond their first block: `more`, or nothing in
    /// a journal of format 6 that no writer of this build has opened yet (a row per posting).
    let morePostings: String

    init(_ connection: Connection) throws {
        self.connection = connection
        schema = connection.address.schema
        try connection.execute("SET search_path TO \(schema)")
        let packed = try connection.query(PostgresQuery(unsafeSQL: "SELECT \(Self.hasColumn("more", of: "\(schema).recent_account_blocks"))"))
            .first?.column(Bool.self, "recent_account_blocks") ?? false
        morePostings = packed ? "more" : "NULL::bytea"
    }

    var place: String { connection.address.description }

    func close() { connection.close() }

    var isBroken: Bool { connection.isClosed }

    /// The tables of a journal, made where missing.
    static func schemaSQL(_ schema: String) -> [String] {
        [
            "CREATE SCHEMA IF NOT EXISTS \(schema)",
            "CREATE TABLE IF NOT EXISTS \(schema).meta(key text COLLATE \"C\" PRIMARY KEY, int_value bigint, bytes_value bytea)",
            """
            CREATE TABLE IF NOT EXISTS \(schema).accounts(name text COLLATE "C" PRIMARY KEY, id bigint NOT NULL,
                version bigint NOT NULL, last_at bigint NOT NULL, chains bytea)
            """,
            """
            CREATE TABLE IF NOT EXISTS \(schema).blocks(id bigint PRIMARY KEY, first_seq bigint NOT NULL UNIQUE,
                last_seq bigint NOT NULL, frame bytea NOT NULL)
            """,
            // LZ4 frames of sealed payloads: PostgreSQL's compression would only spend time.
            "ALTER TABLE \(schema).blocks ALTER COLUMN frame SET STORAGE EXTERNAL",
            """
            CREATE TABLE IF NOT EXISTS \(schema).tail(seq bigint PRIMARY KEY, account text NOT NULL, version bigint NOT NULL,
                type text NOT NULL, at bigint NOT NULL, at_digits bigint NOT NULL, event_id text, session bytea NOT NULL,
                counter bigint NOT NULL, key_kind bigint NOT NULL, key_number bigint NOT NULL, key_index bigint NOT NULL,
                payload bytea, digest bytea, link bytea NOT NULL)
            """,
            "CREATE TABLE IF NOT EXISTS \(schema).event_ids(id text COLLATE \"C\" PRIMARY KEY, seq bigint NOT NULL)",
            "CREATE TABLE IF NOT EXISTS \(schema).event_id_runs(first_id text COLLATE \"C\" PRIMARY KEY, entries bytea NOT NULL)",
            // The rows of the index tables (see `count(_:)`); not journal content: no backup carries it.
            "CREATE TABLE IF NOT EXISTS \(schema).counts(name text PRIMARY KEY, n bigint NOT NULL)",
            """
            CREATE TABLE IF NOT EXISTS \(schema).recent_account_blocks(account_id bigint NOT NULL, block_id bigint NOT NULL,
                more bytea, PRIMARY KEY(account_id, block_id))
            """,
            """
            CREATE TABLE IF NOT EXISTS \(schema).account_block_runs(account_id bigint NOT NULL, first_block bigint NOT NULL,
                blocks bytea NOT NULL, PRIMARY KEY(account_id, first_block))
            """,
            """
            CREATE TABLE IF NOT EXISTS \(schema).erasures(id bigserial PRIMARY KEY, account text NOT NULL, kind bigint NOT NULL,
                name text, number bigint, through bigint, keeping text, mac bytea NOT NULL)
            """,
            // Rows rewritten at every append of their account (its version; its last run of the
            // block index, at each merge): pages half full leave each new version room beside the
            // old one, so the update is HOT (no index entry; the old version pruned in the page),
            // where full pages put it on another page with an index entry and left the old one
            // dead until a VACUUM. Measured on the 20,000-account import: the server's statements
            // 3.0 → 2.1 s, the two tables 11.6 → 6.9 MB. Set once, also on journals made before.
            Self.fillfactor(50, of: "\(schema).accounts"),
            Self.fillfactor(50, of: "\(schema).account_block_runs"),
            // Format 7's packed postings (see `addRecentPostings`), also on a journal made before.
            Self.column("more bytea", of: "\(schema).recent_account_blocks"),
        ]
    }

    /// `statement` unless `condition` holds: an `ALTER TABLE` takes a lock that waits for a
    /// running `VACUUM`, not to be taken at every open.
    static func alter(unless condition: String, _ statement: String) -> String {
        "DO $$ BEGIN IF NOT (\(condition)) THEN \(statement); END IF; END $$"
    }

    /// Whether `table` has the column `name` (a dropped one does not count), as SQL.
    static func hasColumn(_ name: String, of table: String) -> String {
        "EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('\(table)') AND attname = '\(name)' AND NOT attisdropped)"
    }

    /// Adds a nullable column (`definition`: its name first) to `table` unless it has it.
    static func column(_ definition: String, of table: String) -> String {
        alter(unless: hasColumn(String(definition.prefix { $0 != " " }), of: table), "ALTER TABLE \(table) ADD COLUMN \(definition)")
    }

    /// Sets `table`'s fillfactor unless it is set already.
    static func fillfactor(_ percent: Int, of table: String) -> String {
        alter(unless: "EXISTS (SELECT FROM pg_class WHERE oid = to_regclass('\(table)') AND reloptions @> ARRAY['fillfactor=\(percent)'])",
              "ALTER TABLE \(table) SET (fillfactor = \(percent))")
    }

    // MARK: Transactions

    func write<T>(_ body: () throws -> T) throws -> T {
        try connection.transaction {
            // The head's row, locked first: one writer at a time, across every instance.
            try connection.query("SELECT int_value FROM meta WHERE key = 'head_seq' FOR UPDATE")
            return try body()
        }
    }

    func snapshot<T>(_ body: () throws -> T) throws -> T {
        if connection.inTransaction { return try body() }
        return try connection.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    // MARK: Meta

    private func meta(_ key: String) throws -> (Int64?, [UInt8]?)? {
        guard let row = try connection.query("SELECT int_value, bytes_value FROM meta WHERE key = \(key)").first else { return nil }
        let (n, b) = try row.columns((Int64?, ByteBuffer?).self, "meta")
        return (n, b?.bytes)
    }

    func headSeq() throws -> Int64? { try meta("head_seq")?.0 }

    func journalID() throws -> [UInt8] {
        guard let id = try meta("journal_id")?.1 else { throw JournalError(.corrupt, "journal has no id") }
        return id
    }

    func storedHead() throws -> StoredHead {
        var head = StoredHead(seq: -1, link: [], mac: [], instance: [])
        let rows = try connection.query("SELECT key, int_value, bytes_value FROM meta WHERE key IN ('head_seq', 'head_link', 'head_mac', 'instance')")
        for row in rows {
            let (key, n, b) = try row.columns((String, Int64?, ByteBuffer?).self, "meta")
            switch key {
            case "head_seq": head.seq = n ?? -1
            case "head_link": head.link = b?.bytes ?? []
            case "head_mac": head.mac = b?.bytes ?? []
            case "instance": head.instance = b?.bytes ?? []
            default: break
            }
        }
        try head.checkShape()
        return head
    }

    private func put(_ key: String, integer: Int64? = nil, bytes: [UInt8]? = nil) throws {
        connection.send("""
            INSERT INTO meta(key, int_value, bytes_value) VALUES(\(key), \(integer), \(bytes?.buffer))
            ON CONFLICT (key) DO UPDATE SET int_value = EXCLUDED.int_value, bytes_value = EXCLUDED.bytes_value
            """)
    }

    /// Moves the head and, in the same statement, tells the followers of every instance: the
    /// server delivers the notice when (and only if) the transaction commits.
    func setHead(seq: Int64, link: [UInt8], mac: [UInt8]) throws {
        connection.send("""
            WITH head AS (
                INSERT INTO meta(key, int_value, bytes_value)
                VALUES ('head_seq', \(seq), NULL), ('head_link', NULL, \(link.buffer)), ('head_mac', NULL, \(mac.buffer))
                ON CONFLICT (key) DO UPDATE SET int_value = EXCLUDED.int_value, bytes_value = EXCLUDED.bytes_value)
            SELECT pg_notify(\(commitChannel(schema: schema)), \(String(seq)))
            """)
    }

    func setHeadMAC(_ mac: [UInt8]) throws { try put("head_mac", bytes: mac) }

    func replaceMeta(_ entries: [(key: String, value: MetaValue)]) throws {
        connection.sendStatement("DELETE FROM meta")
        for (key, value) in entries {
            switch value {
            case .integer(let n): try put(key, integer: n)
            case .bytes(let b): try put(key, bytes: b)
            }
        }
    }

    func metaEntries() throws -> [(key: String, value: MetaValue)] {
        try connection.query("SELECT key, int_value, bytes_value FROM meta ORDER BY key").map { row in
            let (key, n, b) = try row.columns((String, Int64?, ByteBuffer?).self, "meta")
            return (key, n.map(MetaValue.integer) ?? .bytes(b?.bytes ?? []))
        }
    }

    func counter(_ counter: JournalCounter) throws -> Int64? { try meta(counter.rawValue)?.0 }

    func setCounter(_ counter: JournalCounter, to value: Int64) throws { try put(counter.rawValue, integer: value) }

    // MARK: Sealed blocks

    private static func block(_ row: PostgresRow) throws -> StoredBlock {
        let (id, first, last, frame) = try row.columns((Int64, Int64, Int64, ByteBuffer).self, "blocks")
        return StoredBlock(id: id, first: first, last: last, frame: frame.bytes)
    }

    func blockExtent() throws -> (maxID: Int64, maxLastSeq: Int64)? {
        guard let row = try connection.query("SELECT max(id), max(last_seq) FROM blocks").first else { return nil }
        let (id, last) = try row.columns((Int64?, Int64?).self, "blocks")
        guard let id, let last else { return nil }
        return (id, last)
    }

    func sealedEventCount() throws -> Int64 {
        try connection.query("SELECT coalesce(sum(last_seq - first_seq + 1), 0)::bigint FROM blocks").first?.column(Int64.self, "blocks") ?? 0
    }

    func lastBlock() throws -> StoredBlock? {
        try connection.query("SELECT id, first_seq, last_seq, frame FROM blocks ORDER BY first_seq DESC LIMIT 1").first.map(Self.block)
    }

    func block(startingAtOrBefore seq: Int64) throws -> StoredBlock? {
        try connection.query("SELECT id, first_seq, last_seq, frame FROM blocks WHERE first_seq <= \(seq) ORDER BY first_seq DESC LIMIT 1")
            .first.map(Self.block)
    }

    func block(id: Int64) throws -> StoredBlock? {
        try connection.query("SELECT id, first_seq, last_seq, frame FROM blocks WHERE id = \(id)").first.map(Self.block)
    }

    func blocks(firstSeqIn lower: Int64, _ upper: Int64, limit: Int) throws -> [StoredBlock] {
        try connection.query("""
            SELECT id, first_seq, last_seq, frame FROM blocks WHERE first_seq BETWEEN \(lower) AND \(upper)
            ORDER BY first_seq LIMIT \(Int64(limit))
            """).map(Self.block)
    }

    func insert(blocks: [StoredBlock]) throws {
        guard !blocks.isEmpty else { return }
        connection.send("""
            INSERT INTO blocks(id, first_seq, last_seq, frame)
            SELECT * FROM unnest(\(blocks.map(\.id))::bigint[], \(blocks.map(\.first))::bigint[], \(blocks.map(\.last))::bigint[],
                                 \(blocks.map(\.frame.buffer))::bytea[])
            """)
    }

    func replaceFrame(ofBlock id: Int64, with frame: [UInt8]) throws -> Bool {
        !(try connection.query("UPDATE blocks SET frame = \(frame.buffer) WHERE id = \(id) RETURNING id").isEmpty)
    }

    // MARK: The unsealed tail

    func tailRows(after seq: Int64) throws -> [TailRow] {
        try tailRows(try connection.query("""
            SELECT seq, account, version, type, at, at_digits, event_id, session, counter,
                   key_kind, key_number, key_index, payload, digest, link FROM tail WHERE seq > \(seq) ORDER BY seq
            """))
    }

    func tailRows(account: String) throws -> [TailRow] {
        try tailRows(try connection.query("""
            SELECT seq, account, version, type, at, at_digits, event_id, session, counter,
                   key_kind, key_number, key_index, payload, digest, link FROM tail WHERE account = \(account) ORDER BY seq
            """))
    }

    private func tailRows(_ rows: [PostgresRow]) throws -> [TailRow] {
        try rows.map { row in
            let (seq, account, version, type, at, digits, id, session, counter, kind, number, index, payload, digest, link) = try row.columns(
                (Int64, String, Int64, String, Int64, Int64, String?, ByteBuffer, Int64, Int64, Int64, Int64, ByteBuffer?, ByteBuffer?, ByteBuffer).self,
                "tail")
            return TailRow(
                seq: seq, account: .text(Array(account.utf8)), version: version, type: .text(Array(type.utf8)), at: at, atDigits: digits,
                eventID: id.map { .text(Array($0.utf8)) } ?? .null, session: session.bytes, counter: counter, keyKind: kind,
                keyNumber: number, keyIndex: index, payload: payload?.bytes, digest: digest?.bytes, link: link.bytes)
        }
    }

    func tailLink(seq: Int64) throws -> [UInt8]? {
        try connection.query("SELECT link FROM tail WHERE seq = \(seq)").first?.column(ByteBuffer.self, "tail").bytes
    }

    func tailPayloadBytes() throws -> Int64 {
        try connection.query("SELECT coalesce(sum(length(payload)), 0)::bigint FROM tail").first?.column(Int64.self, "tail") ?? 0
    }

    func appendTail(_ events: [SealedEvent], links: [[UInt8]]) throws {
        guard !events.isEmpty else { return }
        // Arrays cannot hold NULL here: an empty id, payload or digest stands for none (an id, a
        // sealed payload and a digest are never empty).
        let payloads = events.map { e -> ByteBuffer in if case .sealed(let b) = e.body { b.buffer } else { ByteBuffer() } }
        let digests = events.map { e -> ByteBuffer in if case .purged(let d) = e.body { d.buffer } else { ByteBuffer() } }
        connection.send("""
            INSERT INTO tail(seq, account, version, type, at, at_digits, event_id, session, counter,
                             key_kind, key_number, key_index, payload, digest, link)
            SELECT s, a, v, t, at, d, NULLIF(i, ''), se, c, kk, kn, ki, NULLIF(p, ''::bytea), NULLIF(g, ''::bytea), l
            FROM unnest(\(events.map(\.header.seq))::bigint[], \(events.map(\.header.account))::text[],
                        \(events.map(\.header.version))::bigint[], \(events.map(\.header.type))::text[],
                        \(events.map(\.header.at.nanoseconds))::bigint[], \(events.map { Int64($0.header.at.fractionDigits) })::bigint[],
                        \(events.map { $0.header.id ?? "" })::text[], \(events.map { $0.nonce.session.bytes.buffer })::bytea[],
                        \(events.map { Int64($0.nonce.counter) })::bigint[], \(events.map { Int64($0.key.kind.rawValue) })::bigint[],
                        \(events.map { Int64(bitPattern: $0.key.number) })::bigint[], \(events.map { Int64(bitPattern: $0.key.index) })::bigint[],
                        \(payloads)::bytea[], \(digests)::bytea[], \(links.map(\.buffer))::bytea[])
                 AS u(s, a, v, t, at, d, i, se, c, kk, kn, ki, p, g, l)
            """)
    }

    func clearTail() throws { connection.sendStatement("DELETE FROM tail") }

    func purgeTail(_ digests: [(seq: Int64, digest: [UInt8])]) throws {
        guard !digests.isEmpty else { return }
        connection.send("""
            UPDATE tail SET payload = NULL, digest = u.g
            FROM unnest(\(digests.map(\.seq))::bigint[], \(digests.map(\.digest.buffer))::bytea[]) AS u(s, g) WHERE tail.seq = u.s
            """)
    }

    // MARK: Accounts

    private static func account(_ row: PostgresRow) throws -> (String, AccountRecord) {
        let (name, id, version, lastAt, chains) = try row.columns((String, Int64, Int64, Int64, ByteBuffer?).self, "accounts")
        return (name, AccountRecord(id: id, version: version, lastAt: lastAt, chains: chains?.bytes))
    }

    func account(named name: String) throws -> AccountRecord? {
        try connection.query("SELECT name, id, version, last_at, chains FROM accounts WHERE name = \(name)").first.map { try Self.account($0).1 }
    }

    func accounts(named names: [String]) throws -> [String: AccountRecord] {
        guard !names.isEmpty else { return [:] }
        var out: [String: AccountRecord] = [:]
        for row in try connection.query("SELECT name, id, version, last_at, chains FROM accounts WHERE name = ANY(\(names)::text[])") {
            let (name, record) = try Self.account(row)
            out[name] = record
        }
        return out
    }

    func forEachAccount(_ body: (String, AccountRecord) throws -> Void) throws {
        var after: String?
        while true {
            let rows = try connection.query("""
                SELECT name, id, version, last_at, chains FROM accounts WHERE \(after)::text IS NULL OR name > \(after)
                ORDER BY name LIMIT 10000
                """)
            for row in rows {
                let (name, record) = try Self.account(row)
                try body(name, record)
                after = name
            }
            if rows.count < 10000 { return }
        }
    }

    func insert(accounts: [(name: String, row: AccountRecord)]) throws {
        guard !accounts.isEmpty else { return }
        connection.send("""
            INSERT INTO accounts(name, id, version, last_at, chains)
            SELECT n, i, v, t, NULLIF(c, ''::bytea)
            FROM unnest(\(accounts.map(\.name))::text[], \(accounts.map(\.row.id))::bigint[], \(accounts.map(\.row.version))::bigint[],
                        \(accounts.map(\.row.lastAt))::bigint[], \(accounts.map { ($0.row.chains ?? []).buffer })::bytea[]) AS u(n, i, v, t, c)
            """)
    }

    func update(accounts: [AccountUpdate]) throws {
        guard !accounts.isEmpty else { return }
        let names = accounts.map(\.name)
        connection.send("""
            UPDATE accounts SET version = u.v, last_at = u.t, chains = CASE WHEN u.m THEN u.c ELSE accounts.chains END
            FROM unnest(\(names)::text[], \(accounts.map(\.version))::bigint[], \(accounts.map(\.lastAt))::bigint[],
                        \(accounts.map { $0.chains != nil })::boolean[], \(accounts.map { ($0.chains ?? []).buffer })::bytea[]) AS u(n, v, t, m, c)
            WHERE accounts.name = u.n RETURNING accounts.name
            """) { updated in
            guard updated.count != names.count else { return }
            let found = Set(try updated.map { try $0.column(String.self, "accounts") })
            if let missing = names.first(where: { !found.contains($0) }) { throw AccountUpdate.missingRow(missing) }
        }
    }

    // MARK: Recorded erasures, and what erasing leaves behind

    func erasures(kind: Int64?, limit: Int?) throws -> [ErasureRow] {
        try connection.query("""
            SELECT id, account, kind, name, number, through, keeping, mac FROM erasures
            WHERE \(kind)::bigint IS NULL OR kind = \(kind) ORDER BY id LIMIT \(limit.map(Int64.init))
            """).map { row in
            let (id, account, kind, name, number, through, keeping, mac) = try row.columns(
                (Int64, String, Int64, String?, Int64?, Int64?, String?, ByteBuffer).self, "erasures")
            return ErasureRow(id: id, account: account, kind: kind, name: name, number: number, through: through, keeping: keeping, mac: mac.bytes)
        }
    }

    func recordErasures(_ rows: [ErasureRow]) throws {
        for r in rows {
            connection.send("""
                INSERT INTO erasures(account, kind, name, number, through, keeping, mac)
                VALUES(\(r.account ?? ""), \(r.kind), \(r.name), \(r.number), \(r.through), \(r.keeping), \(r.mac.buffer))
                """)
        }
    }

    func deleteErasures(ids: [Int64]) throws {
        guard !ids.isEmpty else { return }
        connection.send("DELETE FROM erasures WHERE id = ANY(\(ids)::bigint[])")
    }

    /// Rows an erasure rewrote stay in their tables' files as dead versions until a VACUUM;
    /// `clearResidue` runs it on the tables an erasure touches. (What PostgreSQL keeps besides,
    /// in its WAL and its backups, is in the README.)
    func markResidue() throws { try put("residue", integer: 1) }

    func hasResidue() throws -> Bool { try connection.hasResidue() }

    func clearResidue(wait: Duration) throws -> String? {
        try connection.clearResidue(wait: wait, vacuum: "VACUUM blocks, tail, erasures")
    }

    /// VACUUM makes dead row versions' space reusable; the recent tables' indexes, which a merge
    /// empties, keep their pages until rebuilt, which costs next to nothing once they are empty
    /// or small (`settle` merged them just before).
    func reclaimSpace() throws {
        try connection.execute("VACUUM accounts, event_ids, event_id_runs, recent_account_blocks, account_block_runs")
        try connection.execute("REINDEX TABLE event_ids")
        try connection.execute("REINDEX TABLE recent_account_blocks")
    }
}
