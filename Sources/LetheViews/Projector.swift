import LetheEvents
import LetheJournal

/// An event as the read models take it: its header and its data, nil when the payload is gone
/// (purged or shredded).
public struct ProjectedEvent: Sendable {
    public var header: EventHeader
    public var data: JSONObject?

    public init(header: EventHeader, data: JSONObject?) {
        self.header = header
        self.data = data
    }

    /// Decodes a stored event (on any thread: it is what `catchUp` runs on every core).
    public init(_ event: StoredEvent, codec: PayloadCodec = .standard) throws {
        header = event.header
        guard case .plaintext(let bytes) = event.payload else { return }
        do {
            data = try codec.decode(type: event.header.type, payload: bytes)
        } catch {
            throw JournalError(.corrupt, "event \(event.header.seq) (\(event.header.type) of \(event.header.account)) cannot be decoded: \(error)")
        }
    }
}

/// Applies events, in journal order, to the read models' tables. One rule per type, and the same
/// result whether an event's payload was read or is gone, once the engine's purge event that
/// removed it has been applied too: that is what makes a rebuild equal to incremental catch-up.
///
/// - A keyed fact (an item, an address, a payment, a ticket, a consent, a hold, a page view)
///   is written only from readable data; a purge deletes the account's or item's rows.
/// - A logged fact (a disclosure, a notice) keeps its row after a purge, with the personal
///   fields null: the history shows it happened, not what it said.
/// - An access keeps its record (sealed under the engine key, it outlives the account's key), but
///   after the account's purge it has no verdict (`authorized` null): the tickets and legal cases
///   that justified it were purged with the account, and a rebuild could not judge it again.
/// - Events of an account that never signed up change nothing, as in `AccountState`.
final class Projector {
    private let db: SQLiteDatabase
    private let accountStatus, insertAccount, setProfile, setCancelled, setErasure, purgeAccount: SQLiteStatement
    private let insertItem, deleteItem, restoreItem, removeItem: SQLiteStatement
    private let insertAddress, insertPayment, upsertTicket, hasTicket: SQLiteStatement
    private let grantConsent, revokeConsent, hasConsent, insertNotice, hasMergerNotice, insertDisclosure: SQLiteStatement
    private let placeHold, releaseHold, hasHold, insertAccess, insertPageView: SQLiteStatement
    private let startObligation, endObligations, endItemObligations, endAccountObligations: SQLiteStatement
    private let insertRecord, expireRecords, expireAccesses, dropPageViews, dropEmptyPageViews, addPageViewStats, insertErasureRequest: SQLiteStatement
    /// Event types whose raw records expire on their own (the policy's record rules), by type.
    private let recordRules: [EventType: RetentionPolicy.RecordRule]
    private let recordRulesByName: [String: RetentionPolicy.RecordRule]
    private let purgeStatements: [SQLiteStatement]
    /// Accounts' statuses (nil: never signed up) as of the last event applied, for the accounts
    /// seen since `forget`: most events need their account's status, few change it.
    private var statuses: [String: String?] = [:]

    init(db: SQLiteDatabase, policy: RetentionPolicy) throws {
        self.db = db
        recordRules = Dictionary(uniqueKeysWithValues: policy.records.map { ($0.type, $0) })
        recordRulesByName = Dictionary(uniqueKeysWithValues: policy.records.map { ($0.rule, $0) })
        func s(_ sql: String) throws -> SQLiteStatement { try db.statement(sql) }
        accountStatus = try s("SELECT status FROM accounts WHERE account=?1")
        insertAccount = try s("INSERT INTO accounts(account, status, name, company, email, signed_up_at) VALUES(?1, 'active', ?2, ?3, ?4, ?5)")
        setProfile = try s("UPDATE accounts SET name=coalesce(?2, name), company=coalesce(?3, company), email=coalesce(?4, email) WHERE account=?1")
        setCancelled = try s("UPDATE accounts SET status=?2, cancelled_at=?3 WHERE account=?1")
        setErasure = try s("UPDATE accounts SET erasure_requested_at=coalesce(erasure_requested_at, ?2) WHERE account=?1")
        purgeAccount = try s("UPDATE accounts SET status='purged', name=NULL, company=NULL, email=NULL, purged_at=?2 WHERE account=?1")
        insertItem = try s("INSERT OR IGNORE INTO items(account, item, kind, label, state, created_at, created_seq) VALUES(?1, ?2, ?3, ?4, 'live', ?5, ?6)")
        deleteItem = try s("UPDATE items SET state='trash', deleted_at=?3, deleted_ns=?4 WHERE account=?1 AND item=?2 AND state='live'")
        restoreItem = try s("UPDATE items SET state='live', deleted_at=NULL, deleted_ns=NULL WHERE account=?1 AND item=?2 AND state='trash'")
        removeItem = try s("DELETE FROM items WHERE account=?1 AND item=?2")
        insertAddress = try s("INSERT INTO billing_addresses VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        insertPayment = try s("INSERT INTO payments VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
        upsertTicket = try s("""
            INSERT INTO tickets VALUES(?1, ?2, ?3, ?4, 1, ?3)
            ON CONFLICT(account, ticket) DO UPDATE SET messages=messages+1, last_message_at=?3, subject=coalesce(subject, ?4)
            """)
        hasTicket = try s("SELECT 1 FROM tickets WHERE account=?1 AND ticket=?2")
        grantConsent = try s("INSERT OR IGNORE INTO consents VALUES(?1, ?2, ?3)")
        revokeConsent = try s("DELETE FROM consents WHERE account=?1 AND purpose=?2")
        hasConsent = try s("SELECT 1 FROM consents WHERE account=?1 AND purpose=?2")
        insertNotice = try s("INSERT INTO notices VALUES(?1, ?2, ?3, ?4, ?5)")
        hasMergerNotice = try s("SELECT 1 FROM notices WHERE account=?1 AND topic='merger'")
        insertDisclosure = try s("INSERT INTO disclosures VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        placeHold = try s("""
            INSERT INTO legal_holds(account, "case", placed_seq, reason, placed_at, placed_ns)
            SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (
                SELECT 1 FROM legal_holds WHERE account=?1 AND "case"=?2 AND released_ns IS NULL)
            """)
        releaseHold = try s("UPDATE legal_holds SET released_at=?3, released_ns=?4 WHERE account=?1 AND \"case\"=?2 AND released_ns IS NULL")
        hasHold = try s("SELECT 1 FROM legal_holds WHERE account=?1 AND released_ns IS NULL")
        startObligation = try s("INSERT OR IGNORE INTO obligations(account, item, rule, start_seq, start_at, start_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6)")
        endObligations = try s("""
            UPDATE obligations SET end_at=?4, end_ns=?5, ended_by=?6 WHERE account=?1 AND item=?2 AND rule=?3 AND end_ns IS NULL
            """)
        endItemObligations = try s("UPDATE obligations SET end_at=?3, end_ns=?4, ended_by=?5 WHERE account=?1 AND item=?2 AND end_ns IS NULL")
        endAccountObligations = try s("UPDATE obligations SET end_at=?2, end_ns=?3, ended_by='AccountPurged' WHERE account=?1 AND end_ns IS NULL")
        insertRecord = try s("INSERT OR IGNORE INTO records VALUES(?1, ?2, ?3, ?4, ?5, ?6)")
        // `+at_ns`: by the primary key (this account's records), never by the time index (everybody's).
        expireRecords = try s("DELETE FROM records WHERE account=?1 AND type=?2 AND +at_ns<=?3")
        expireAccesses = try s("UPDATE access_log SET actor=NULL, ip=NULL, reason=NULL, ticket=NULL, authorized=NULL WHERE account=?1 AND at_ns<=?2")
        dropPageViews = try s("UPDATE page_views SET views=views-?4 WHERE account=?1 AND day=?2 AND path=?3")
        dropEmptyPageViews = try s("DELETE FROM page_views WHERE account=?1 AND day=?2 AND path=?3 AND views <= 0")
        addPageViewStats = try s("INSERT INTO page_view_stats VALUES(?1, ?2, ?3) ON CONFLICT DO UPDATE SET views=views+?3")
        insertErasureRequest = try s("INSERT INTO erasure_requests VALUES(?1, ?2, ?3, ?4)")
        insertAccess = try s("INSERT INTO access_log VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        insertPageView = try s("INSERT INTO page_views VALUES(?1, ?2, ?3, 1) ON CONFLICT DO UPDATE SET views=views+1")
        purgeStatements = try [
            "DELETE FROM items WHERE account=?1",
            "DELETE FROM billing_addresses WHERE account=?1",
            "DELETE FROM payments WHERE account=?1",
            "DELETE FROM tickets WHERE account=?1",
            "DELETE FROM consents WHERE account=?1",
            "DELETE FROM page_views WHERE account=?1",
            // The records sealed under the account's key went with it; the engine-sealed ones stay.
            "DELETE FROM records WHERE account=?1 AND type NOT IN (\(EventType.allCases.filter { $0.scope == .journal }.map { "'\($0.rawValue)'" }.joined(separator: ",")))",
            "UPDATE notices SET topic=NULL, version=NULL WHERE account=?1",
            """
            UPDATE disclosures SET recipient=NULL, basis=NULL, categories='[]', without_consent=0, without_merger_notice=0
            WHERE account=?1
            """,
            // The access records outlive the account (engine key), but the tickets and cases that
            // justified them went with it: they can no longer be judged.
            "UPDATE access_log SET authorized=NULL WHERE account=?1",
        ].map(s)
    }

    /// Whether a query bound by `bind` returns a row.
    private func exists(_ statement: SQLiteStatement) throws -> Bool {
        defer { statement.reset() }
        return try statement.step()
    }

    /// Drops the cached statuses (at the end of a transaction: memory stays bounded by its size).
    func forget() { statuses.removeAll(keepingCapacity: true) }

    private func status(of account: String) throws -> String? {
        if let cached = statuses[account] { return cached }
        accountStatus.bind(1, account)
        defer { accountStatus.reset() }
        let status = try accountStatus.step() ? accountStatus.text(0) : nil
        statuses[account] = status
        return status
    }

    func apply(_ event: ProjectedEvent) throws {
        guard let type = EventType(rawValue: event.header.type) else { return }
        let h = event.header
        let account = h.account
        let at = h.at.rfc3339
        let data = event.data
        func text(_ key: String) -> String? { data?[key]?.string }

        let status = try self.status(of: account)
        if type == .accountSignedUp {
            guard status == nil else { return }
            try insertAccount.bind(1, account).bind(2, text("name")).bind(3, text("company")).bind(4, text("email")).bind(5, at).run()
            statuses[account] = "active"
            return
        }
        guard let status else { return }

        switch type {
        case .accountSignedUp:
            break
        case .profileUpdated:
            try setProfile.bind(1, account).bind(2, text("name")).bind(3, text("company")).bind(4, text("email")).run()
        case .accountCancelled:
            if status == "active" {
                try setCancelled.bind(1, account).bind(2, "cancelled").bind(3, at).run()
                statuses[account] = "cancelled"
                try start(RetentionPolicy.cancellation, item: "", h, at)
            }
        case .accountReactivated:
            if status == "cancelled" {
                try setCancelled.bind(1, account).bind(2, "active").bind(3, nil as String?).run()
                statuses[account] = "active"
                try endObligations.bind(1, account).bind(2, "").bind(3, RetentionPolicy.cancellation).bind(4, at)
                    .bind(5, h.at.nanoseconds).bind(6, type.rawValue).run()
            }
        case .erasureRequested:
            try setErasure.bind(1, account).bind(2, at).run()
            if status != "purged" { try start(RetentionPolicy.erasure, item: "", h, at) }
        case .accountPurged:
            try purgeAccount.bind(1, account).bind(2, at).run()
            statuses[account] = "purged"
            for statement in purgeStatements { try statement.bind(1, account).run() }
            try endAccountObligations.bind(1, account).bind(2, at).bind(3, h.at.nanoseconds).run()
        case .recordsExpired:
            // `through`: the newest record it expired; `counts`: the anonymous page-view counts
            // the expired records leave behind (day, path, views).
            guard let rule = text("rule"), let through = text("through").flatMap(Timestamp.init(rfc3339:)) else { return }
            let type = recordRulesByName[rule]?.type ?? (text("category") == "page-views" ? .pageViewed : nil)
            if let type { try expireRecords.bind(1, account).bind(2, type.rawValue).bind(3, through.nanoseconds).run() }
            if type == .accountAccessed { try expireAccesses.bind(1, account).bind(2, through.nanoseconds).run() }
            if case .array(let counts)? = data?["counts"] {
                for case .object(let c) in counts {
                    guard let day = c["day"]?.string, let path = c["path"]?.string, case .int(let views)? = c["views"] else { continue }
                    try dropPageViews.bind(1, account).bind(2, day).bind(3, path).bind(4, views).run()
                    try dropEmptyPageViews.bind(1, account).bind(2, day).bind(3, path).run()
                    try addPageViewStats.bind(1, day).bind(2, path).bind(3, views).run()
                }
            }
        case .processorErasureRequested:
            try insertErasureRequest.bind(1, h.seq).bind(2, account).bind(3, text("processor")).bind(4, at).run()
        case .itemCreated:
            guard let item = text("item") else { return }
            try insertItem.bind(1, account).bind(2, item).bind(3, text("kind") ?? "").bind(4, text("label")).bind(5, at).bind(6, h.seq).run()
        case .itemDeleted:
            guard let item = text("item") else { return }
            try deleteItem.bind(1, account).bind(2, item).bind(3, at).bind(4, h.at.nanoseconds).run()
            try start(RetentionPolicy.trash, item: item, h, at)
        case .itemRestored:
            guard let item = text("item") else { return }
            try restoreItem.bind(1, account).bind(2, item).run()
            try endObligations.bind(1, account).bind(2, item).bind(3, RetentionPolicy.trash).bind(4, at)
                .bind(5, h.at.nanoseconds).bind(6, type.rawValue).run()
        case .itemPurged:
            guard let item = text("item") else { return }
            try removeItem.bind(1, account).bind(2, item).run()
            try endItemObligations.bind(1, account).bind(2, item).bind(3, at).bind(4, h.at.nanoseconds).bind(5, type.rawValue).run()
        case .billingAddressSet:
            guard data != nil else { return }
            try insertAddress.bind(1, account).bind(2, h.seq).bind(3, at).bind(4, text("line1")).bind(5, text("line2"))
                .bind(6, text("city")).bind(7, text("region")).bind(8, text("postcode")).bind(9, text("country")).run()
        case .paymentRecorded:
            guard let data else { return }
            let amount: Int64? = if case .int(let v)? = data["amount_minor"] { v } else { nil }
            insertPayment.bind(1, account).bind(2, h.seq).bind(3, at).bind(4, text("transaction"))
            if let amount { insertPayment.bind(5, amount) } else { insertPayment.bind(5, nil as String?) }
            try insertPayment.bind(6, text("currency")).bind(7, text("card_last4")).bind(8, text("processor")).run()
        case .supportMessageReceived:
            guard let ticket = text("ticket") else { return }
            try upsertTicket.bind(1, account).bind(2, ticket).bind(3, at).bind(4, text("subject")).run()
        case .consentGranted:
            guard let purpose = text("purpose") else { return }
            try grantConsent.bind(1, account).bind(2, purpose).bind(3, at).run()
        case .consentRevoked:
            guard let purpose = text("purpose") else { return }
            try revokeConsent.bind(1, account).bind(2, purpose).run()
        case .noticeSent:
            try insertNotice.bind(1, account).bind(2, h.seq).bind(3, at).bind(4, text("topic")).bind(5, text("version")).run()
        case .dataShared:
            let recipient = text("recipient")
            let basis = text("basis")
            var categories = JSONWriter()
            categories.write(data?["categories"] ?? .array([]))
            var withoutConsent = false
            if basis == "consent" {
                hasConsent.bind(1, account).bind(2, "share:" + (recipient ?? ""))
                withoutConsent = try !exists(hasConsent)
            }
            var withoutNotice = false
            if basis == "merger" {
                hasMergerNotice.bind(1, account)
                withoutNotice = try !exists(hasMergerNotice)
            }
            try insertDisclosure.bind(1, h.seq).bind(2, account).bind(3, at).bind(4, h.at.nanoseconds).bind(5, recipient)
                .bind(6, basis).bind(7, String(decoding: categories.bytes, as: UTF8.self))
                .bind(8, withoutConsent ? 1 : 0).bind(9, withoutNotice ? 1 : 0).run()
        case .legalHoldPlaced:
            guard let c = text("case") else { return }
            try placeHold.bind(1, account).bind(2, c).bind(3, h.seq).bind(4, text("reason")).bind(5, at).bind(6, h.at.nanoseconds).run()
        case .legalHoldReleased:
            guard let c = text("case") else { return }
            try releaseHold.bind(1, account).bind(2, c).bind(3, at).bind(4, h.at.nanoseconds).run()
        case .accountAccessed:
            insertAccess.bind(1, h.seq).bind(2, account).bind(3, at).bind(4, h.at.nanoseconds)
            if data != nil {
                let ticket = text("ticket")
                var authorized = false
                if let ticket {
                    hasTicket.bind(1, account).bind(2, ticket)
                    authorized = try exists(hasTicket)
                }
                if !authorized {
                    hasHold.bind(1, account)
                    authorized = try exists(hasHold)
                }
                insertAccess.bind(5, text("actor")).bind(6, text("ip")).bind(7, text("reason")).bind(8, ticket).bind(9, authorized ? 1 : 0)
            } else {
                insertAccess.bind(5, nil as String?).bind(6, nil as String?).bind(7, nil as String?).bind(8, nil as String?).bind(9, nil as String?)
            }
            try insertAccess.run()
        case .pageViewed:
            guard let path = text("path") else { return }
            try insertPageView.bind(1, account).bind(2, String(at.prefix(10))).bind(3, path).run()
        case .surveyAnswered:
            break
        }
        // A raw record whose category expires on its own, while its payload is there to expire.
        if data != nil, recordRules[type] != nil {
            // A page view keeps its day and path: what its expiry leaves as anonymous counts.
            let pageView = type == .pageViewed
            try insertRecord.bind(1, account).bind(2, type.rawValue).bind(3, h.seq).bind(4, h.at.nanoseconds)
                .bind(5, pageView ? String(at.prefix(10)) : nil).bind(6, pageView ? text("path") : nil).run()
        }
    }

    /// Starts an obligation of `rule` at this event.
    private func start(_ rule: String, item: String, _ h: EventHeader, _ at: String) throws {
        try startObligation.bind(1, h.account).bind(2, item).bind(3, rule).bind(4, h.seq).bind(5, at).bind(6, h.at.nanoseconds).run()
    }
}
