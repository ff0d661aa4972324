import Foundation

/// The read models' tables. Every table has a natural primary key and no rowid, so the same
/// events give the same rows whatever the order of transactions that wrote them, and a dump in
/// key order is canonical.
///
/// Times are stored twice where they are compared or sorted: as the RFC 3339 text the event
/// came with (`*_at`) and as nanoseconds since the epoch (`*_ns`).
///
/// Personal values copied from payloads are sealed (`Field`), under keys derived from the keys that
/// sealed the payloads; a row names its key where that is not the account's (`key_number`,
/// `key_index`: an item's number, a record's chain slot and index).
package enum Schema {
    package static let version: Int64 = 5

    /// The two dialects the tables are made in.
    package enum Dialect { case sqlite, postgres }

    /// The tables and indexes, in `dialect`. PostgreSQL's types are spelled out, and its text
    /// compares byte by byte (`COLLATE "C"`), as SQLite's does: the same rows sort the same way,
    /// so queries and the dump give the same order on both.
    package static func create(for dialect: Dialect) -> String {
        switch dialect {
        case .sqlite:
            return create
        case .postgres:
            return create
                .replacingOccurrences(of: "(key TEXT PRIMARY KEY, value)", with: "(key TEXT PRIMARY KEY, value TEXT)")
                .replacingOccurrences(of: " WITHOUT ROWID", with: "")
                .replacingOccurrences(of: " TEXT", with: " text COLLATE \"C\"")
                .replacingOccurrences(of: " INTEGER", with: " bigint")
                .replacingOccurrences(of: " BLOB", with: " bytea")
        }
    }

    private static let create = """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE accounts(
            account TEXT PRIMARY KEY, status TEXT NOT NULL, name BLOB, company BLOB, email BLOB,
            signed_up_at TEXT NOT NULL, cancelled_at TEXT, erasure_requested_at TEXT, purged_at TEXT) WITHOUT ROWID;
        CREATE TABLE items(
            account TEXT NOT NULL, item TEXT NOT NULL, key_number INTEGER NOT NULL, kind BLOB, label BLOB, state TEXT NOT NULL,
            created_at TEXT NOT NULL, deleted_at TEXT, deleted_ns INTEGER, created_seq INTEGER NOT NULL,
            PRIMARY KEY(account, item)) WITHOUT ROWID;
        CREATE TABLE billing_addresses(
            account TEXT NOT NULL, seq INTEGER NOT NULL, set_at TEXT NOT NULL, address BLOB NOT NULL,
            PRIMARY KEY(account, seq)) WITHOUT ROWID;
        CREATE TABLE payments(
            account TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, payment BLOB NOT NULL,
            PRIMARY KEY(account, seq)) WITHOUT ROWID;
        CREATE TABLE tickets(
            account TEXT NOT NULL, ticket_tag BLOB NOT NULL, ticket BLOB NOT NULL, opened_at TEXT NOT NULL, subject BLOB,
            messages INTEGER NOT NULL, last_message_at TEXT NOT NULL, PRIMARY KEY(account, ticket_tag)) WITHOUT ROWID;
        CREATE TABLE consents(
            account TEXT NOT NULL, purpose_tag BLOB NOT NULL, purpose BLOB NOT NULL, granted_at TEXT NOT NULL,
            PRIMARY KEY(account, purpose_tag)) WITHOUT ROWID;
        CREATE TABLE notices(
            account TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, topic TEXT, version TEXT,
            PRIMARY KEY(account, seq)) WITHOUT ROWID;
        CREATE TABLE disclosures(
            seq INTEGER PRIMARY KEY, account TEXT NOT NULL, at TEXT NOT NULL, at_ns INTEGER NOT NULL, disclosure BLOB,
            without_consent INTEGER NOT NULL, without_merger_notice INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX disclosures_by_account ON disclosures(account, seq);
        CREATE TABLE legal_holds(
            account TEXT NOT NULL, "case" TEXT NOT NULL, placed_seq INTEGER NOT NULL, reason BLOB, placed_at TEXT NOT NULL,
            placed_ns INTEGER NOT NULL, released_at TEXT, released_ns INTEGER,
            PRIMARY KEY(account, "case", placed_seq)) WITHOUT ROWID;
        CREATE TABLE access_log(
            seq INTEGER PRIMARY KEY, account TEXT NOT NULL, at TEXT NOT NULL, at_ns INTEGER NOT NULL,
            key_number INTEGER NOT NULL, key_index INTEGER NOT NULL, access BLOB, authorized INTEGER) WITHOUT ROWID;
        CREATE INDEX access_log_by_time ON access_log(at_ns, seq);
        CREATE INDEX access_log_by_account ON access_log(account, at_ns, seq);
        CREATE TABLE page_view_stats(
            day TEXT NOT NULL, path TEXT NOT NULL, views INTEGER NOT NULL, PRIMARY KEY(day, path)) WITHOUT ROWID;
        CREATE TABLE obligations(
            account TEXT NOT NULL, item TEXT NOT NULL, rule TEXT NOT NULL, start_seq INTEGER NOT NULL,
            start_at TEXT NOT NULL, start_ns INTEGER NOT NULL, end_at TEXT, end_ns INTEGER, ended_by TEXT,
            PRIMARY KEY(account, item, rule, start_seq)) WITHOUT ROWID;
        CREATE INDEX obligations_pending ON obligations(start_ns) WHERE end_ns IS NULL;
        CREATE INDEX obligations_ended ON obligations(end_ns) WHERE end_ns IS NOT NULL;
        CREATE TABLE records(
            account TEXT NOT NULL, type TEXT NOT NULL, seq INTEGER NOT NULL, at_ns INTEGER NOT NULL, day TEXT,
            key_number INTEGER NOT NULL, key_index INTEGER NOT NULL, path BLOB,
            PRIMARY KEY(account, type, seq)) WITHOUT ROWID;
        CREATE INDEX records_by_time ON records(type, at_ns);
        CREATE TABLE erasure_requests(
            seq INTEGER PRIMARY KEY, account TEXT NOT NULL, processor TEXT, at TEXT NOT NULL) WITHOUT ROWID;
        """

    /// Every table, with its key columns, in the order `dump` writes them.
    package static let tables: [(name: String, key: String)] = [
        ("accounts", "account"),
        ("items", "account, item"),
        ("billing_addresses", "account, seq"),
        ("payments", "account, seq"),
        ("tickets", "account, ticket_tag"),
        ("consents", "account, purpose_tag"),
        ("notices", "account, seq"),
        ("disclosures", "seq"),
        ("legal_holds", "account, \"case\", placed_seq"),
        ("access_log", "seq"),
        ("page_view_stats", "day, path"),
        ("obligations", "account, item, rule, start_seq"),
        ("records", "account, type, seq"),
        ("erasure_requests", "seq"),
    ]
}
