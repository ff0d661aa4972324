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
    private func rows<T>(_ sql: String, _ binds: [String], _ row: (SQLiteStatement) -> T) throws -> [T] {
        try query { db in
            let s = try db.statement(sql)
            for (k, value) in binds.enumerated() { s.bind(Int32(k + 1), value) }
            var out: [T] = []
            while try s.step() { out.append(row(s)) }
            return out
        }
    }

    /// The account's current status and profile; nil when it never signed up.
    public func account(_ account: String) throws -> Views.Account? {
        try rows("SELECT * FROM accounts WHERE account=?1", [account]) {
            Views.Account(
                account: $0.text(0)!, status: $0.text(1)!, name: $0.optionalText(2), company: $0.optionalText(3),
                email: $0.optionalText(4), signedUpAt: $0.text(5)!, cancelledAt: $0.optionalText(6),
                erasureRequestedAt: $0.optionalText(7), purgedAt: $0.optionalText(8))
        }.first
    }

    /// The account's items, live and in the trash, in order of creation.
    public func items(account: String) throws -> [Views.Item] {
        try rows("SELECT item, kind, label, state, created_at, deleted_at FROM items WHERE account=?1 ORDER BY created_at, item", [account]) {
            Views.Item(item: $0.text(0)!, kind: $0.text(1)!, label: $0.optionalText(2), state: $0.text(3)!, createdAt: $0.text(4)!, deletedAt: $0.optionalText(5))
        }
    }

    /// Every billing address the account set, oldest first (the last one is in use).
    public func billingAddresses(account: String) throws -> [Views.BillingAddress] {
        try rows("SELECT set_at, line1, line2, city, region, postcode, country FROM billing_addresses WHERE account=?1 ORDER BY seq", [account]) {
            Views.BillingAddress(
                setAt: $0.text(0)!, line1: $0.optionalText(1), line2: $0.optionalText(2), city: $0.optionalText(3),
                region: $0.optionalText(4), postcode: $0.optionalText(5), country: $0.optionalText(6))
        }
    }

    /// The account's payments, oldest first, with the card's last four digits only.
    public func payments(account: String) throws -> [Views.Payment] {
        try rows("SELECT at, \"transaction\", amount_minor, currency, card_last4, processor FROM payments WHERE account=?1 ORDER BY seq", [account]) {
            Views.Payment(
                at: $0.text(0)!, transaction: $0.optionalText(1), amountMinor: $0.isNull(2) ? nil : $0.int(2),
                currency: $0.optionalText(3), cardLast4: $0.optionalText(4), processor: $0.optionalText(5))
        }
    }

    /// The support tickets the account opened.
    public func tickets(account: String) throws -> [Views.Ticket] {
        try rows("SELECT ticket, opened_at, subject, messages, last_message_at FROM tickets WHERE account=?1 ORDER BY opened_at, ticket", [account]) {
            Views.Ticket(ticket: $0.text(0)!, openedAt: $0.text(1)!, subject: $0.optionalText(2), messages: $0.int(3), lastMessageAt: $0.text(4)!)
        }
    }

    /// The consents in force.
    public func consents(account: String) throws -> [Views.Consent] {
        try rows("SELECT purpose, granted_at FROM consents WHERE account=?1 ORDER BY purpose", [account]) {
            Views.Consent(purpose: $0.text(0)!, grantedAt: $0.text(1)!)
        }
    }

    /// Open legal cases.
    public func legalHolds(account: String) throws -> [Views.LegalHold] {
        try rows("SELECT \"case\", reason, placed_at FROM legal_holds WHERE account=?1 AND released_ns IS NULL ORDER BY placed_seq", [account]) {
            Views.LegalHold(case: $0.text(0)!, reason: $0.optionalText(1), placedAt: $0.text(2)!)
        }
    }

    /// Every `DataShared`, flagged, in time order (one account's, or all).
    public func disclosures(account: String? = nil) throws -> [Views.Disclosure] {
        let columns = "seq, account, at, recipient, basis, categories, without_consent, without_merger_notice"
        let sql = account == nil
            ? "SELECT \(columns) FROM disclosures ORDER BY at_ns, seq"
            : "SELECT \(columns) FROM disclosures WHERE account=?1 ORDER BY at_ns, seq"
        return try rows(sql, account.map { [$0] } ?? []) { s in
            let categories = (try? JSONParser.parse(s.text(5) ?? "[]")).flatMap { value -> [String]? in
                guard case .array(let items) = value else { return nil }
                return items.compactMap(\.string)
            } ?? []
            return Views.Disclosure(
                seq: s.int(0), account: s.text(1)!, at: s.text(2)!, recipient: s.optionalText(3), basis: s.optionalText(4),
                categories: categories, withoutConsent: s.int(6) != 0, withoutMergerNotice: s.int(7) != 0)
        }
    }

    /// Staff accesses with their verdicts, in time order (one account's, or all), handed to
    /// `body` one by one: the whole log is never held in memory.
    public func accessLog(account: String? = nil, _ body: (Views.Access) throws -> Void) throws {
        let columns = "seq, at, account, actor, ip, reason, ticket, authorized"
        let sql = account == nil
            ? "SELECT \(columns) FROM access_log ORDER BY at_ns, seq"
            : "SELECT \(columns) FROM access_log WHERE account=?1 ORDER BY at_ns, seq"
        try query { db in
            let s = try db.statement(sql)
            if let account { s.bind(1, account) }
            while try s.step() {
                try body(Views.Access(
                    seq: s.int(0), at: s.text(1)!, account: s.text(2)!, actor: s.optionalText(3), ip: s.optionalText(4),
                    reason: s.optionalText(5), ticket: s.optionalText(6), authorized: s.isNull(7) ? nil : s.int(7) != 0))
            }
        }
    }

    /// Page views per day and path, from `fromDay` through `toDay` (`YYYY-MM-DD`, inclusive).
    public func pageViews(fromDay: String = "0000-00-00", toDay: String = "9999-99-99") throws -> [Views.PageViewCount] {
        try rows("SELECT day, path, views FROM page_views_daily WHERE day BETWEEN ?1 AND ?2 ORDER BY day, path", [fromDay, toDay]) {
            Views.PageViewCount(day: $0.text(0)!, path: $0.text(1)!, views: $0.int(2))
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
                let s = try db.statement(sql)
                s.bind(1, asOf.nanoseconds)
                while try s.step() {
                    let item = s.text(1) ?? ""
                    out.append(Views.Obligation(
                        account: s.text(0)!, item: item.isEmpty ? nil : item, rule: s.text(2)!, startSeq: s.int(3),
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
            let s = try db.statement("""
                SELECT item, rule, start_seq, start_ns FROM obligations
                WHERE account=?1 AND start_ns <= ?2 AND (end_ns IS NULL OR end_ns > ?2)
                """)
            s.bind(1, account).bind(2, moment.nanoseconds)
            var out: [Views.Obligation] = []
            while try s.step() {
                let item = s.text(0) ?? ""
                out.append(Views.Obligation(
                    account: account, item: item.isEmpty ? nil : item, rule: s.text(1)!, startSeq: s.int(2),
                    start: Timestamp(nanoseconds: s.int(3)), endedBy: nil, end: nil))
            }
            return out
        }
    }

    /// Obligations executed (their item or account purged) by `asOf`, in order of execution.
    public func executedObligations(through asOf: Timestamp) throws -> [Views.Obligation] {
        try query { db in
            let s = try db.statement("""
                SELECT account, item, rule, start_seq, start_ns, end_ns, ended_by FROM obligations
                WHERE end_ns IS NOT NULL AND end_ns <= ?1 AND ended_by IN ('ItemPurged', 'AccountPurged') ORDER BY end_ns, account, item
                """)
            s.bind(1, asOf.nanoseconds)
            var out: [Views.Obligation] = []
            while try s.step() {
                let item = s.text(1) ?? ""
                out.append(Views.Obligation(
                    account: s.text(0)!, item: item.isEmpty ? nil : item, rule: s.text(2)!, startSeq: s.int(3),
                    start: Timestamp(nanoseconds: s.int(4)), endedBy: s.text(6), end: Timestamp(nanoseconds: s.int(5))))
            }
            return out
        }
    }

    /// The legal cases open on the account at `moment`.
    public func openCases(account: String, at moment: Timestamp) throws -> [String] {
        try query { db in
            let s = try db.statement("""
                SELECT "case" FROM legal_holds WHERE account=?1 AND placed_ns <= ?2 AND (released_ns IS NULL OR released_ns > ?2)
                ORDER BY placed_seq
                """)
            s.bind(1, account).bind(2, moment.nanoseconds)
            var out: [String] = []
            while try s.step() { out.append(s.text(0)!) }
            return out
        }
    }

    /// Raw records of `type` from `cutoff` or earlier (still held), by account, in order: what a
    /// record rule has to expire. Read through the records' time index.
    public func records(of type: EventType, through cutoff: Timestamp) throws -> [String: [Views.Record]] {
        try query { db in
            let s = try db.statement("SELECT account, seq, at_ns, day, path FROM records WHERE type=?1 AND at_ns<=?2 ORDER BY account, seq")
            s.bind(1, type.rawValue).bind(2, cutoff.nanoseconds)
            var out: [String: [Views.Record]] = [:]
            while try s.step() {
                out[s.text(0)!, default: []].append(Views.Record(
                    seq: s.int(1), at: Timestamp(nanoseconds: s.int(2)), day: s.optionalText(3), path: s.optionalText(4)))
            }
            return out
        }
    }

    /// All the account's raw records of `type` still held.
    public func records(of type: EventType, account: String) throws -> [Views.Record] {
        try query { db in
            let s = try db.statement("SELECT seq, at_ns, day, path FROM records WHERE account=?1 AND type=?2 ORDER BY seq")
            s.bind(1, account).bind(2, type.rawValue)
            var out: [Views.Record] = []
            while try s.step() { out.append(Views.Record(seq: s.int(0), at: Timestamp(nanoseconds: s.int(1)), day: s.optionalText(2), path: s.optionalText(3))) }
            return out
        }
    }

    /// The sequence number of the event that created the item (whose payload holds its data).
    public func itemCreatedSeq(account: String, item: String) throws -> Int64? {
        try query { db in
            let s = try db.statement("SELECT created_seq FROM items WHERE account=?1 AND item=?2")
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
                ("page-views", "SELECT 1 FROM page_views WHERE account=?1"),
                ("surveys", "SELECT 1 FROM records WHERE account=?1 AND type='SurveyAnswered'"),
            ]
            for (category, sql) in checks {
                let s = try db.statement(sql)
                s.bind(1, account)
                if try s.step() { held.insert(category) }
                s.reset()
            }
            return held
        }
    }

    /// Erasure requests sent to processors, in journal order.
    public func erasureRequests() throws -> [(account: String, processor: String, at: String)] {
        try rows("SELECT account, coalesce(processor, ''), at FROM erasure_requests ORDER BY seq", []) { ($0.text(0)!, $0.text(1)!, $0.text(2)!) }
    }

    /// Active accounts not yet sent a `NoticeSent` of topic `policy-change` for `version`, sorted.
    public func accountsPendingNotice(version: String) throws -> [String] {
        try rows("""
            SELECT account FROM accounts a WHERE status='active' AND NOT EXISTS (
                SELECT 1 FROM notices n WHERE n.account=a.account AND n.topic='policy-change' AND n.version=?1)
            ORDER BY account
            """, [version]) { $0.text(0)! }
    }
}
