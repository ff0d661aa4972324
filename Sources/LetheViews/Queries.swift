import Crypto
import LetheEvents
import LetheJournal

/// Rows of the read models, as the account service and the CLI read them. Each has the JSON
/// shape the CLI prints; times are the RFC 3339 text the events came with.
public enum Views {
    public struct Account: Sendable, Equatable {
        public var account: String
        /// `active`, `cancelled` or `purged`.
        public var status: String
        public var name, company, email: String?
        public var signedUpAt: String
        public var cancelledAt, erasureRequestedAt, purgedAt: String?

        public var json: JSONObject {
            [
                "account": .string(account), "status": .string(status),
                "profile": .object(["name": name.json, "company": company.json, "email": email.json]),
                "signed_up_at": .string(signedUpAt), "cancelled_at": cancelledAt.json,
                "erasure_requested_at": erasureRequestedAt.json, "purged_at": purgedAt.json,
            ]
        }
    }

    public struct Item: Sendable, Equatable {
        public var item, kind: String
        public var label: String?
        /// `live` or `trash`.
        public var state: String
        public var createdAt: String
        public var deletedAt: String?

        public var json: JSONObject {
            [
                "item": .string(item), "kind": .string(kind), "label": label.json, "state": .string(state),
                "created_at": .string(createdAt), "deleted_at": deletedAt.json,
            ]
        }
    }

    public struct BillingAddress: Sendable, Equatable {
        public var setAt: String
        public var line1, line2, city, region, postcode, country: String?

        public var json: JSONObject {
            [
                "set_at": .string(setAt), "line1": line1.json, "line2": line2.json, "city": city.json,
                "region": region.json, "postcode": postcode.json, "country": country.json,
            ]
        }
    }

    public struct Payment: Sendable, Equatable {
        public var at: String
        public var transaction: String?
        public var amountMinor: Int64?
        public var currency, cardLast4, processor: String?

        public var json: JSONObject {
            [
                "at": .string(at), "transaction": transaction.json, "amount_minor": amountMinor.map(JSONValue.int) ?? .null,
                "currency": currency.json, "card_last4": cardLast4.json, "processor": processor.json,
            ]
        }
    }

    public struct Ticket: Sendable, Equatable {
        public var ticket: String
        public var openedAt: String
        public var subject: String?
        public var messages: Int64
        public var lastMessageAt: String

        public var json: JSONObject {
            [
                "ticket": .string(ticket), "opened_at": .string(openedAt), "subject": subject.json,
                "messages": .int(messages), "last_message_at": .string(lastMessageAt),
            ]
        }
    }

    public struct Consent: Sendable, Equatable {
        public var purpose: String
        public var grantedAt: String
        public var json: JSONObject { ["purpose": .string(purpose), "granted_at": .string(grantedAt)] }
    }

    public struct Disclosure: Sendable, Equatable {
        public var seq: Int64
        public var account: String
        public var at: String
        public var recipient, basis: String?
        public var categories: [String]
        /// Basis `consent` without a `share:<recipient>` consent in force.
        public var withoutConsent: Bool
        /// Basis `merger` without a prior `NoticeSent` of topic `merger`.
        public var withoutMergerNotice: Bool

        public var json: JSONObject {
            [
                "at": .string(at), "account": .string(account), "recipient": recipient.json, "basis": basis.json,
                "categories": .array(categories.map(JSONValue.string)), "without_consent": .bool(withoutConsent),
                "without_merger_notice": .bool(withoutMergerNotice),
            ]
        }
    }

    public struct LegalHold: Sendable, Equatable {
        public var `case`: String
        public var reason: String?
        public var placedAt: String
        public var json: JSONObject { ["case": .string(`case`), "reason": reason.json, "placed_at": .string(placedAt)] }
    }

    public struct Access: Sendable, Equatable {
        public var seq: Int64
        public var at: String
        public var account: String
        /// nil when the access's own record was purged.
        public var actor, ip, reason, ticket: String?
        /// nil when the access's record was purged and it can no longer be judged.
        public var authorized: Bool?

        /// The contract's shape: `at`, `account`, `actor`, `ip`, `reason`, `ticket`, `authorized`.
        public var json: JSONObject {
            [
                "at": .string(at), "account": .string(account), "actor": actor.json, "ip": ip.json,
                "reason": reason.json, "ticket": ticket.json, "authorized": authorized.map(JSONValue.bool) ?? .null,
            ]
        }
    }

    /// A raw record whose category expires on its own; a page view's day and path.
    public struct Record: Sendable, Equatable {
        public var seq: Int64
        public var at: Timestamp
        public var day: String?
        public var path: String?
    }

    /// An obligation of one of the purge rules: started by an event, pending until it ends.
    public struct Obligation: Sendable, Equatable {
        public var account: String
        public var item: String?
        public var rule: String
        public var startSeq: Int64
        public var start: Timestamp
        /// What ended it (`ItemRestored`, `AccountReactivated`, `ItemPurged`, `AccountPurged`), if anything has.
        public var endedBy: String?
        public var end: Timestamp?
    }

    public struct PageViewCount: Sendable, Equatable {
        public var day, path: String
        public var views: Int64
        public var json: JSONObject { ["day": .string(day), "path": .string(path), "views": .int(views)] }
    }
}

extension Optional where Wrapped == String {
    var json: JSONValue { map(JSONValue.string) ?? .null }
}

extension ReadModels {
    /// Runs `body` in one read transaction, with the field keys at hand (nil for a key that is
    /// gone). Locks in the order catch-up takes them: the connection, then the keys.
    private func sealedQuery<T: Sendable>(_ body: (any ViewDatabase, (String, KeyRef) throws -> SymmetricKey?) throws -> T) throws -> T {
        try query { db in
            try fieldKeys.withKeys { keys in try withoutActuallyEscaping(keys) { keys in try body(db, keys) } }
        }
    }

    private func rows<T: Sendable>(_ sql: String, _ binds: [String], _ row: (any ViewStatement) throws -> T) throws -> [T] {
        try query { db in
            let s = try db.prepare(sql)
            for (k, value) in binds.enumerated() { s.bind(Int32(k + 1), value) }
            var out: [T] = []
            while try s.step() { out.append(try row(s)) }
            return out
        }
    }

    /// A text column that the schema declares NOT NULL. The file may have been edited (with
    /// sqlite3, the constraint dropped with the table): a NULL there throws `.corrupt` naming
    /// the table, the row (`row`: its account or sequence number, never a personal value) and
    /// the column.
    private func text(_ s: any ViewStatement, _ column: Int32, _ table: String, row: @autoclosure () -> String) throws -> String {
        if let text = s.text(column) { return text }
        throw JournalError(.corrupt, """
            the read models \(path): table \(table), row \(row()): column \(s.columnName(column)) is NULL \
            (edited or damaged; `lethe rebuild` makes it again)
            """)
    }

    /// Rows of one account whose fields are sealed under the account's own key.
    private func accountRows<T: Sendable>(_ sql: String, _ account: String, _ row: (any ViewStatement, SymmetricKey?) throws -> T) throws -> [T] {
        try sealedQuery { db, keys in
            let key = try keys(account, .account)
            let s = try db.prepare(sql)
            s.bind(1, account)
            var out: [T] = []
            while try s.step() { out.append(try row(s, key)) }
            return out
        }
    }

    /// The account's current status and profile; nil when it never signed up.
    public func account(_ account: String) throws -> Views.Account? {
        try accountRows("SELECT * FROM accounts WHERE account=?1", account) { s, key in
            Views.Account(
                account: try text(s, 0, "accounts", row: account), status: try text(s, 1, "accounts", row: account),
                name: Field.name.openText(s.optionalBlob(2), key: key, account: account),
                company: Field.company.openText(s.optionalBlob(3), key: key, account: account),
                email: Field.email.openText(s.optionalBlob(4), key: key, account: account), signedUpAt: try text(s, 5, "accounts", row: account),
                cancelledAt: s.optionalText(6), erasureRequestedAt: s.optionalText(7), purgedAt: s.optionalText(8))
        }.first
    }

    /// The account's items, live and in the trash, in order of creation.
    public func items(account: String) throws -> [Views.Item] {
        try sealedQuery { db, keys in
            let s = try db.prepare("SELECT item, kind, label, state, created_at, deleted_at, key_number FROM items WHERE account=?1 ORDER BY created_at, item")
            s.bind(1, account)
            var out: [Views.Item] = []
            while try s.step() {
                let key = try keys(account, KeyRef(.own, number: UInt64(bitPattern: s.int(6))))
                out.append(Views.Item(
                    item: try text(s, 0, "items", row: account), kind: Field.itemKind.openText(s.optionalBlob(1), key: key, account: account) ?? "",
                    label: Field.itemLabel.openText(s.optionalBlob(2), key: key, account: account), state: try text(s, 3, "items", row: account),
                    createdAt: try text(s, 4, "items", row: account), deletedAt: s.optionalText(5)))
            }
            return out
        }
    }

    /// Every billing address the account set, oldest first (the last one is in use).
    public func billingAddresses(account: String) throws -> [Views.BillingAddress] {
        try accountRows("SELECT set_at, address FROM billing_addresses WHERE account=?1 ORDER BY seq", account) { s, key in
            let a = Field.address.openObject(s.optionalBlob(1), key: key, account: account) ?? [:]
            return Views.BillingAddress(
                setAt: try text(s, 0, "billing_addresses", row: account), line1: a["line1"]?.string, line2: a["line2"]?.string, city: a["city"]?.string,
                region: a["region"]?.string, postcode: a["postcode"]?.string, country: a["country"]?.string)
        }
    }

    /// The account's payments, oldest first, with the card's last four digits only.
    public func payments(account: String) throws -> [Views.Payment] {
        try accountRows("SELECT at, payment FROM payments WHERE account=?1 ORDER BY seq", account) { s, key in
            let p = Field.payment.openObject(s.optionalBlob(1), key: key, account: account) ?? [:]
            let amount: Int64? = if case .int(let v)? = p["amount_minor"] { v } else { nil }
            return Views.Payment(
                at: try text(s, 0, "payments", row: account), transaction: p["transaction"]?.string, amountMinor: amount, currency: p["currency"]?.string,
                cardLast4: p["card_last4"]?.string, processor: p["processor"]?.string)
        }
    }

    /// The support tickets the account opened.
    public func tickets(account: String) throws -> [Views.Ticket] {
        try accountRows("SELECT ticket, opened_at, subject, messages, last_message_at FROM tickets WHERE account=?1 ORDER BY opened_at, ticket_tag", account) { s, key in
            Views.Ticket(
                ticket: Field.ticket.openText(s.optionalBlob(0), key: key, account: account) ?? "", openedAt: try text(s, 1, "tickets", row: account),
                subject: Field.ticketSubject.openText(s.optionalBlob(2), key: key, account: account), messages: s.int(3), lastMessageAt: try text(s, 4, "tickets", row: account))
        }
    }

    /// The consents in force.
    public func consents(account: String) throws -> [Views.Consent] {
        try accountRows("SELECT purpose, granted_at FROM consents WHERE account=?1", account) { s, key in
            Views.Consent(purpose: Field.purpose.openText(s.optionalBlob(0), key: key, account: account) ?? "", grantedAt: try text(s, 1, "consents", row: account))
        }.sorted { $0.purpose < $1.purpose }
    }

    /// Open legal cases.
    public func legalHolds(account: String) throws -> [Views.LegalHold] {
        try sealedQuery { db, keys in
            let key = try keys(account, .journal)
            let s = try db.prepare("SELECT \"case\", reason, placed_at FROM legal_holds WHERE account=?1 AND released_ns IS NULL ORDER BY placed_seq")
            s.bind(1, account)
            var out: [Views.LegalHold] = []
            while try s.step() {
                out.append(Views.LegalHold(
                    case: try text(s, 0, "legal_holds", row: account), reason: Field.holdReason.openText(s.optionalBlob(1), key: key, account: account),
                    placedAt: try text(s, 2, "legal_holds", row: account)))
            }
            return out
        }
    }

    /// Every `DataShared`, flagged, in time order (one account's, or all).
    public func disclosures(account: String? = nil) throws -> [Views.Disclosure] {
        let columns = "seq, account, at, disclosure, without_consent, without_merger_notice"
        let sql = account == nil
            ? "SELECT \(columns) FROM disclosures ORDER BY at_ns, seq"
            : "SELECT \(columns) FROM disclosures WHERE account=?1 ORDER BY at_ns, seq"
        return try sealedQuery { db, keys in
            let s = try db.prepare(sql)
            if let account { s.bind(1, account) }
            var out: [Views.Disclosure] = []
            while try s.step() {
                let owner = try text(s, 1, "disclosures", row: "seq \(s.int(0))")
                let d = Field.disclosure.openObject(s.optionalBlob(3), key: try keys(owner, .account), account: owner) ?? [:]
                let categories: [String] = if case .array(let items)? = d["categories"] { items.compactMap(\.string) } else { [] }
                out.append(Views.Disclosure(
                    seq: s.int(0), account: owner, at: try text(s, 2, "disclosures", row: "seq \(s.int(0))"), recipient: d["recipient"]?.string, basis: d["basis"]?.string,
                    categories: categories, withoutConsent: s.int(4) != 0, withoutMergerNotice: s.int(5) != 0))
            }
            return out
        }
    }

    /// Staff accesses with their verdicts, in time order (one account's, or all), handed to
    /// `body` one by one: the whole log is never held in memory.
    public func accessLog(account: String? = nil, _ body: (Views.Access) throws -> Void) throws {
        let columns = "seq, at, account, key_number, key_index, access, authorized"
        let sql = account == nil
            ? "SELECT \(columns) FROM access_log ORDER BY at_ns, seq"
            : "SELECT \(columns) FROM access_log WHERE account=?1 ORDER BY at_ns, seq"
        try sealedQuery { db, keys in
            let s = try db.prepare(sql)
            if let account { s.bind(1, account) }
            while try s.step() {
                let owner = try text(s, 2, "access_log", row: "seq \(s.int(0))")
                let ref = KeyRef(.records, number: UInt64(bitPattern: s.int(3)), index: UInt64(bitPattern: s.int(4)))
                let sealed = s.optionalBlob(5)
                let a = try sealed.flatMap { Field.access.openObject($0, key: try keys(owner, ref), account: owner) } ?? [:]
                try body(Views.Access(
                    seq: s.int(0), at: try text(s, 1, "access_log", row: "seq \(s.int(0))"), account: owner, actor: a["actor"]?.string, ip: a["ip"]?.string,
                    reason: a["reason"]?.string, ticket: a["ticket"]?.string, authorized: s.isNull(6) ? nil : s.int(6) != 0))
            }
        }
    }

    /// Page views per day and path, from `fromDay` through `toDay` (`YYYY-MM-DD`, inclusive): the
    /// raw page views still held (their paths opened with their own keys) and the anonymous
    /// counts that expired ones left.
    public func pageViews(fromDay: String = "0000-00-00", toDay: String = "9999-99-99") throws -> [Views.PageViewCount] {
        var counts: [String: [String: Int64]] = [:]
        try sealedQuery { db, keys in
            let live = try db.prepare("""
                SELECT account, day, key_number, key_index, path FROM records WHERE type='PageViewed' AND day BETWEEN ?1 AND ?2
                """)
            live.bind(1, fromDay).bind(2, toDay)
            while try live.step() {
                let account = try text(live, 0, "records", row: "of a page view")
                let ref = KeyRef(.records, number: UInt64(bitPattern: live.int(2)), index: UInt64(bitPattern: live.int(3)))
                guard let path = Field.path.openText(live.optionalBlob(4), key: try keys(account, ref), account: account) else { continue }
                counts[try text(live, 1, "records", row: "of account \(account)"), default: [:]][path, default: 0] += 1
            }
            live.reset()
            let stats = try db.prepare("SELECT day, path, views FROM page_view_stats WHERE day BETWEEN ?1 AND ?2")
            stats.bind(1, fromDay).bind(2, toDay)
            while try stats.step() {
                let day = try text(stats, 0, "page_view_stats", row: "of a day")
                counts[day, default: [:]][try text(stats, 1, "page_view_stats", row: "of day \(day)"), default: 0] += stats.int(2)
            }
            stats.reset()
        }
        return counts.sorted { $0.key < $1.key }.flatMap { day, paths in
            paths.sorted { $0.key < $1.key }.map { Views.PageViewCount(day: day, path: $0.key, views: $0.value) }
        }
    }
    // MARK: Retention

    /// Obligations pending at `asOf`: started by then, and not ended (restored, reactivated or
    /// executed) by then. Read through two indexes, pending and ended, so the cost follows the
    /// obligations that matter at that moment, not the history.
    public func obligations(pendingAt asOf: Timestamp) throws -> [Views.Obligation] {
        let columns = "account, item, rule, start_seq, start_at, start_ns"
        return try query { db in
            var out: [Views.Obligation] = []
            for sql in [
                "SELECT \(columns) FROM obligations WHERE end_ns IS NULL AND start_ns <= ?1",
                "SELECT \(columns) FROM obligations WHERE end_ns IS NOT NULL AND end_ns > ?1 AND start_ns <= ?1",
            ] {
                let s = try db.prepare(sql)
                s.bind(1, asOf.nanoseconds)
                while try s.step() {
                    let item = s.text(1) ?? ""
                    out.append(Views.Obligation(
                        account: try text(s, 0, "obligations", row: "started by event \(s.int(3))"), item: item.isEmpty ? nil : item,
                        rule: try text(s, 2, "obligations", row: "started by event \(s.int(3))"), startSeq: s.int(3),
                        start: Timestamp(nanoseconds: s.int(5)), endedBy: nil, end: nil))
                }
                s.reset()
            }
            return out
        }
    }

    /// One account's obligations pending at `moment` (by its primary key).
    public func obligations(account: String, pendingAt moment: Timestamp) throws -> [Views.Obligation] {
        try query { db in
            let s = try db.prepare("""
                SELECT item, rule, start_seq, start_ns FROM obligations
                WHERE account=?1 AND start_ns <= ?2 AND (end_ns IS NULL OR end_ns > ?2)
                """)
            s.bind(1, account).bind(2, moment.nanoseconds)
            var out: [Views.Obligation] = []
            while try s.step() {
                let item = s.text(0) ?? ""
                out.append(Views.Obligation(
                    account: account, item: item.isEmpty ? nil : item, rule: try text(s, 1, "obligations", row: "started by event \(s.int(2))"),
                    startSeq: s.int(2),
                    start: Timestamp(nanoseconds: s.int(3)), endedBy: nil, end: nil))
            }
            return out
        }
    }

    /// Obligations executed (their item or account purged) by `asOf`, in order of execution.
    public func executedObligations(through asOf: Timestamp) throws -> [Views.Obligation] {
        try query { db in
            let s = try db.prepare("""
                SELECT account, item, rule, start_seq, start_ns, end_ns, ended_by FROM obligations
                WHERE end_ns IS NOT NULL AND end_ns <= ?1 AND ended_by IN ('ItemPurged', 'AccountPurged') ORDER BY end_ns, account, item
                """)
            s.bind(1, asOf.nanoseconds)
            var out: [Views.Obligation] = []
            while try s.step() {
                let item = s.text(1) ?? ""
                out.append(Views.Obligation(
                    account: try text(s, 0, "obligations", row: "started by event \(s.int(3))"), item: item.isEmpty ? nil : item,
                    rule: try text(s, 2, "obligations", row: "started by event \(s.int(3))"), startSeq: s.int(3),
                    start: Timestamp(nanoseconds: s.int(4)), endedBy: s.text(6), end: Timestamp(nanoseconds: s.int(5))))
            }
            return out
        }
    }

    /// The legal cases open on the account at `moment`.
    public func openCases(account: String, at moment: Timestamp) throws -> [String] {
        try query { db in
            let s = try db.prepare("""
                SELECT "case" FROM legal_holds WHERE account=?1 AND placed_ns <= ?2 AND (released_ns IS NULL OR released_ns > ?2)
                ORDER BY placed_seq
                """)
            s.bind(1, account).bind(2, moment.nanoseconds)
            var out: [String] = []
            while try s.step() { out.append(try text(s, 0, "legal_holds", row: "of account \(account)")) }
            return out
        }
    }

    /// Raw records of `type` from `cutoff` or earlier (still held), by account, in order: what a
    /// record rule has to expire. Read through the records' time index; a page view's path is
    /// opened with its own key.
    public func records(of type: EventType, through cutoff: Timestamp) throws -> [String: [Views.Record]] {
        try sealedQuery { db, keys in
            let s = try db.prepare("SELECT account, seq, at_ns, day, key_number, key_index, path FROM records WHERE type=?1 AND at_ns<=?2 ORDER BY account, seq")
            s.bind(1, type.rawValue).bind(2, cutoff.nanoseconds)
            var out: [String: [Views.Record]] = [:]
            while try s.step() {
                let account = try text(s, 0, "records", row: "of event \(s.int(1))")
                out[account, default: []].append(try record(s, account: account, from: 1, keys))
            }
            return out
        }
    }

    /// All the account's raw records of `type` still held.
    public func records(of type: EventType, account: String) throws -> [Views.Record] {
        try sealedQuery { db, keys in
            let s = try db.prepare("SELECT seq, at_ns, day, key_number, key_index, path FROM records WHERE account=?1 AND type=?2 ORDER BY seq")
            s.bind(1, account).bind(2, type.rawValue)
            var out: [Views.Record] = []
            while try s.step() { out.append(try record(s, account: account, from: 0, keys)) }
            return out
        }
    }

    /// A `records` row from column `k` on: seq, at_ns, day, key_number, key_index, path.
    private func record(_ s: any ViewStatement, account: String, from k: Int32, _ keys: (String, KeyRef) throws -> SymmetricKey?) throws -> Views.Record {
        let sealed = s.optionalBlob(k + 5)
        let path = try sealed.flatMap { sealed -> String? in
            let ref = KeyRef(.records, number: UInt64(bitPattern: s.int(k + 3)), index: UInt64(bitPattern: s.int(k + 4)))
            return Field.path.openText(sealed, key: try keys(account, ref), account: account)
        }
        return Views.Record(seq: s.int(k), at: Timestamp(nanoseconds: s.int(k + 1)), day: s.optionalText(k + 2), path: path)
    }

    /// The sequence number of the event that created the item (whose payload holds its data).
    public func itemCreatedSeq(account: String, item: String) throws -> Int64? {
        try query { db in
            let s = try db.prepare("SELECT created_seq FROM items WHERE account=?1 AND item=?2")
            s.bind(1, account).bind(2, item)
            return try s.step() ? s.int(0) : nil
        }
    }

    /// The categories of personal data held about the account (which processors received what).
    public func categoriesHeld(account: String) throws -> Set<String> {
        try query { db in
            var held = Set<String>()
            let checks: [(String, String)] = [
                ("profile", "SELECT 1 FROM accounts WHERE account=?1 AND coalesce(name, email, company) IS NOT NULL"),
                ("billing", "SELECT 1 FROM billing_addresses WHERE account=?1"),
                ("payments", "SELECT 1 FROM payments WHERE account=?1"),
                ("support", "SELECT 1 FROM tickets WHERE account=?1"),
                ("items", "SELECT 1 FROM items WHERE account=?1"),
                ("page-views", "SELECT 1 FROM records WHERE account=?1 AND type='PageViewed'"),
                ("surveys", "SELECT 1 FROM records WHERE account=?1 AND type='SurveyAnswered'"),
            ]
            for (category, sql) in checks {
                let s = try db.prepare(sql)
                s.bind(1, account)
                if try s.step() { held.insert(category) }
                s.reset()
            }
            return held
        }
    }

    /// Erasure requests sent to processors, in journal order.
    public func erasureRequests() throws -> [(account: String, processor: String, at: String)] {
        try rows("SELECT account, coalesce(processor, ''), at, seq FROM erasure_requests ORDER BY seq", []) { s in
            (try text(s, 0, "erasure_requests", row: "seq \(s.int(3))"), try text(s, 1, "erasure_requests", row: "seq \(s.int(3))"),
             try text(s, 2, "erasure_requests", row: "seq \(s.int(3))"))
        }
    }

    /// Active accounts not yet sent a `NoticeSent` of topic `policy-change` for `version`, sorted.
    public func accountsPendingNotice(version: String) throws -> [String] {
        try rows("""
            SELECT account FROM accounts a WHERE status='active' AND NOT EXISTS (
                SELECT 1 FROM notices n WHERE n.account=a.account AND n.topic='policy-change' AND n.version=?1)
            ORDER BY account
            """, [version]) { try text($0, 0, "accounts", row: "of an active account") }
    }
}
