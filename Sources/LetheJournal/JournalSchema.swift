import Foundation

/// The journal's file: opening it (pragmas, a new file's meta), its tables, and the in-place
/// upgrade of older formats. Readers open the file themselves (`JournalReader`) and never
/// change it.
extension Journal {
    static func openDatabase(path: String, options: Options) throws -> SQLiteDatabase {
        do {
            try PrivateFile.prepareDatabase(path)
            let db = try SQLiteDatabase(path: path)
            try db.execute(Journal.autoVacuum)
            try db.enableWAL()
            try db.execute("""
                PRAGMA synchronous=\(options.synchronous.pragma);
                PRAGMA secure_delete=ON; PRAGMA cache_size=-16384;
                """)
            try db.transaction {
                try createSchema(db)
                if try db.scalarInt("SELECT count(*) FROM meta") == 0 {
                    let insert = try db.statement("INSERT INTO meta(key, value) VALUES(?, ?)")
                    for (key, value) in Journal.newMeta(entropy: options.entropy) {
                        insert.bind(1, key)
                        switch value {
                        case .integer(let n): insert.bind(2, n)
                        case .bytes(let b): insert.bind(2, b)
                        }
                        try insert.run()
                    }
                }
            }
            if let old = try db.scalarInt("SELECT value FROM meta WHERE key='format'"), (4..<Journal.formatVersion).contains(old) {
                try db.transaction { try upgrade(db) }
            }
            let format = try db.scalarInt("SELECT value FROM meta WHERE key='format'")
            guard format == Journal.formatVersion else {
                throw JournalError(.notAJournal, "\(path) has journal format \(format.map(String.init) ?? "none"); this build reads format \(Journal.formatVersion)")
            }
            return db
        } catch let e as JournalError {
            throw e
        } catch let e as SQLiteError where e.code == 26 {  // SQLITE_NOTADB
            throw JournalError(.notAJournal, "\(path) is not a Lethe journal (not an SQLite database)")
        } catch {
            throw JournalError.storage("cannot open journal \(path)", error)
        }
    }

    /// A new journal's meta entries: its format, a random identity and instance, an empty head
    /// (0 and the genesis link) and counters at 0. Every backend writes these.
    package static func newMeta(entropy: Entropy) -> [(key: String, value: MetaValue)] {
        let id = entropy.bytes(16)
        return [
            ("format", .integer(Journal.formatVersion)), ("journal_id", .bytes(id)), ("instance", .bytes(entropy.bytes(16))),
            ("head_seq", .integer(0)), ("head_link", .bytes(Chain.genesis(journalID: id))), ("erased", .integer(0)),
            ("account_ids", .integer(0)),
        ]
    }

    /// Set on a new file before anything else (before WAL mode, before its first table): a
    /// journal made so gives its free pages back to the file system when `settle` asks; on an
    /// older journal it changes nothing, and freed pages wait to be reused.
    static let autoVacuum = "PRAGMA auto_vacuum=INCREMENTAL"

    /// Brings a journal of format 4, 5 or 6 to this build's format, in the caller's transaction
    /// (its first writer does; readers read those formats as they are). The steps look at the
    /// tables, not at the format number, so a file restored from an older backup (whose tables
    /// are new but whose meta says the old format) takes only the steps it needs.
    ///
    /// - Format 4 kept both indexes a row per entry: `createSchema` made the tables of their
    ///   runs; the block index moves there now, the ids at their next merge.
    /// - Formats 4 and 5 kept `accounts` as a rowid table with a unique index on the name: it is
    ///   copied into the table keyed by name, and the highest account id goes to meta
    ///   `account_ids` (the writer's counter, which a scan would otherwise find). Chain marks
    ///   named by category stay as they are (`ChainMarks` reads both forms).
    /// - Format 6 differs from 7 only on PostgreSQL: a file takes the new number alone.
    static func upgrade(_ db: SQLiteDatabase) throws {
        try BlockIndex.upgrade(db)
        let accountsSQL = try db.statement("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'accounts'")
        let keyedByName = try accountsSQL.step() && (accountsSQL.optionalText(0)?.contains("WITHOUT ROWID") ?? false)
        accountsSQL.reset()
        if !keyedByName {
            try db.execute("""
                ALTER TABLE accounts RENAME TO accounts_format5;
                \(accountsTable)
                INSERT INTO accounts(name, id, version, last_at, chains) SELECT name, id, version, last_at, chains FROM accounts_format5;
                DROP TABLE accounts_format5;
                """)
        }
        try db.execute("INSERT OR IGNORE INTO meta(key, value) SELECT 'account_ids', coalesce(max(id), 0) FROM accounts")
        try db.statement("UPDATE meta SET value = ? WHERE key = 'format'").bind(1, Journal.formatVersion).run()
    }

    /// One row per account, keyed by its name (the writer's and the readers' lookups). `id`, the
    /// number the block index uses for it, is given by the writer from meta `account_ids`.
    static let accountsTable = """
        CREATE TABLE IF NOT EXISTS accounts(
            name TEXT PRIMARY KEY, id INTEGER NOT NULL,
            version INTEGER NOT NULL, last_at INTEGER NOT NULL, chains BLOB) WITHOUT ROWID;
        """

    /// Creates the journal's tables where they are missing.
    static func createSchema(_ db: SQLiteDatabase) throws {
        try db.execute("""
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
            \(accountsTable)
            CREATE TABLE IF NOT EXISTS blocks(
                id INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL UNIQUE,
                last_seq INTEGER NOT NULL, frame BLOB NOT NULL);
            \(BlockIndex.schema)
            CREATE TABLE IF NOT EXISTS tail(
                seq INTEGER PRIMARY KEY, account TEXT NOT NULL, version INTEGER NOT NULL,
                type TEXT NOT NULL, at INTEGER NOT NULL, at_digits INTEGER NOT NULL, event_id TEXT,
                session BLOB NOT NULL, counter INTEGER NOT NULL,
                key_kind INTEGER NOT NULL, key_number INTEGER NOT NULL, key_index INTEGER NOT NULL,
                payload BLOB, digest BLOB, link BLOB NOT NULL);
            \(EventIDIndex.schema)
            CREATE TABLE IF NOT EXISTS erasures(
                id INTEGER PRIMARY KEY, account TEXT NOT NULL, kind INTEGER NOT NULL,
                name TEXT, number INTEGER, through INTEGER, keeping TEXT, mac BLOB NOT NULL);
            """)
    }
}
