/// The read models' tables. Every table has a natural primary key and no rowid, so the same
/// events give the same rows whatever the order of transactions that wrote them, and a dump in
/// key order is canonical.
///
/// Times are stored twice where they are compared or sorted: as the RFC 3339 text the event
/// came with (`*_at`) and as nanoseconds since the epoch (`*_ns`).
enum Schema {
    static let version: Int64 = 3

    static let create = """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE accounts(
            account TEXT PRIMARY KEY, status TEXT NOT NULL, name TEXT, company TEXT, email TEXT,
            signed_up_at TEXT NOT NULL, cancelled_at TEXT, erasure_requested_at TEXT, purged_at TEXT) WITHOUT ROWID;
        CREATE TABLE items(
            account TEXT NOT NULL, item TEXT NOT NULL, kind TEXT NOT NULL, label TEXT, state TEXT NOT NULL,
            created_at TEXT NOT NULL, deleted_at TEXT, deleted_ns INTEGER, created_seq INTEGER NOT NULL,
            PRIMARY KEY(account, item)) WITHOUT ROWID;
        CREATE TABLE billing_addresses(
            account TEXT NOT NULL, seq INTEGER NOT NULL, set_at TEXT NOT NULL, line1 TEXT, line2 TEXT, city TEXT,
            region TEXT, postcode TEXT, country TEXT, PRIMARY KEY(account, seq)) WITHOUT ROWID;
        CREATE TABLE payments(
            account TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, "transaction" TEXT, amount_minor INTEGER,
            currency TEXT, card_last4 TEXT, processor TEXT, PRIMARY KEY(account, seq)) WITHOUT ROWID;
        CREATE TABLE tickets(
            account TEXT NOT NULL, ticket TEXT NOT NULL, opened_at TEXT NOT NULL, subject TEXT, messages INTEGER NOT NULL,
            last_message_at TEXT NOT NULL, PRIMARY KEY(account, ticket)) WITHOUT ROWID;
        CREATE TABLE consents(
            account TEXT NOT NULL, purpose TEXT NOT NULL, granted_at TEXT NOT NULL, PRIMARY KEY(account, purpose)) WITHOUT ROWID;
        CREATE TABLE notices(
            account TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, topic TEXT, version TEXT,
            PRIMARY KEY(account, seq)) WITHOUT ROWID;
        CREATE TABLE disclosures(
            seq INTEGER PRIMARY KEY, account TEXT NOT NULL, at TEXT NOT NULL, at_ns INTEGER NOT NULL, recipient TEXT,
            basis TEXT, categories TEXT NOT NULL, without_consent INTEGER NOT NULL, without_merger_notice INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX disclosures_by_account ON disclosures(account, seq);
        CREATE TABLE legal_holds(
            account TEXT NOT NULL, "case" TEXT NOT NULL, placed_seq INTEGER NOT NULL, reason TEXT, placed_at TEXT NOT NULL,
            placed_ns INTEGER NOT NULL, released_at TEXT, released_ns INTEGER,
            PRIMARY KEY(account, "case", placed_seq)) WITHOUT ROWID;
        CREATE TABLE access_log(
            seq INTEGER PRIMARY KEY, account TEXT NOT NULL, at TEXT NOT NULL, at_ns INTEGER NOT NULL, actor TEXT, ip TEXT,
            reason TEXT, ticket TEXT, authorized INTEGER) WITHOUT ROWID;
        CREATE INDEX access_log_by_time ON access_log(at_ns, seq);
        CREATE INDEX access_log_by_account ON access_log(account, at_ns, seq);
        CREATE TABLE page_views(
            account TEXT NOT NULL, day TEXT NOT NULL, path TEXT NOT NULL, views INTEGER NOT NULL,
            PRIMARY KEY(account, day, path)) WITHOUT ROWID;
        CREATE TABLE page_view_stats(
            day TEXT NOT NULL, path TEXT NOT NULL, views INTEGER NOT NULL, PRIMARY KEY(day, path)) WITHOUT ROWID;
        CREATE VIEW page_views_daily AS SELECT day, path, sum(views) AS views FROM (
            SELECT day, path, views FROM page_views UNION ALL SELECT day, path, views FROM page_view_stats)
            GROUP BY day, path;
        CREATE TABLE obligations(
            account TEXT NOT NULL, item TEXT NOT NULL, rule TEXT NOT NULL, start_seq INTEGER NOT NULL,
            start_at TEXT NOT NULL, start_ns INTEGER NOT NULL, end_at TEXT, end_ns INTEGER, ended_by TEXT,
            PRIMARY KEY(account, item, rule, start_seq)) WITHOUT ROWID;
        CREATE INDEX obligations_pending ON obligations(start_ns) WHERE end_ns IS NULL;
        CREATE INDEX obligations_ended ON obligations(end_ns) WHERE end_ns IS NOT NULL;
        CREATE TABLE records(
            account TEXT NOT NULL, type TEXT NOT NULL, seq INTEGER NOT NULL, at_ns INTEGER NOT NULL, day TEXT, path TEXT,
            PRIMARY KEY(account, type, seq)) WITHOUT ROWID;
        CREATE INDEX records_by_time ON records(type, at_ns);
        CREATE TABLE erasure_requests(
            seq INTEGER PRIMARY KEY, account TEXT NOT NULL, processor TEXT, at TEXT NOT NULL) WITHOUT ROWID;
        """

    /// Every table, with its key columns, in the order `dump` writes them.
    static let tables: [(name: String, key: String)] = [
        ("accounts", "account"),
        ("items", "account, item"),
        ("billing_addresses", "account, seq"),
        ("payments", "account, seq"),
        ("tickets", "account, ticket"),
        ("consents", "account, purpose"),
        ("notices", "account, seq"),
        ("disclosures", "seq"),
        ("legal_holds", "account, \"case\", placed_seq"),
        ("access_log", "seq"),
        ("page_views", "account, day, path"),
        ("page_view_stats", "day, path"),
        ("obligations", "account, item, rule, start_seq"),
        ("records", "account, type, seq"),
        ("erasure_requests", "seq"),
    ]
}
