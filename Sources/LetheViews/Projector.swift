import Crypto
import LetheEvents
import LetheJournal

/// An event as the read models take it: its header and its data, nil when the payload is gone
/// (purged or shredded), with the field key of the key that sealed it (nil once that is gone).
public struct ProjectedEvent: Sendable {
    public var header: EventHeader
    public var data: JSONObject?
    /// Which key sealed the payload (an item's number, a record's chain slot and index).
    package var key: KeyRef = .account
    /// The key the read models seal this event's personal fields with (`Field`), from the key
    /// that sealed its payload and the payload's session (`StoredEvent.origin`).
    package var cellKey: CellKey?

    public init(header: EventHeader, data: JSONObject?) {
        self.header = header
        self.data = data
    }

    /// Decodes a stored event (on any thread: it is what `catchUp` runs on every core).
    public init(_ event: StoredEvent, codec: PayloadCodec = .standard) throws {
        header = event.header
        key = event.key
        guard case .plaintext(let bytes) = event.payload else { return }
        if let key = event.sealingKey, let origin = event.origin {
            cellKey = CellKey(fieldKey: KeyDerivation.fieldKey(key), origin: origin)
        }
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
/// - A keyed fact (an item, an address, a payment, a ticket, a consent, a hold, a record) is
///   written only from readable data; a purge deletes the account's or item's rows.
/// - A logged fact (a disclosure, a notice) keeps its row after a purge, with the personal
///   fields null: the history shows it happened, not what it said.
/// - An access keeps its record (its chain outlives the account's key), but after the account's
///   purge it has no verdict (`authorized` null): the tickets and legal cases that justified it
///   were purged with the account, and a rebuild could not judge it again.
/// - Personal values are sealed (`Field`) under the field key of the event's own key.
/// - Events of an account that never signed up change nothing, as in `AccountState`; the engine's
///   statistics account only adds anonymous page-view counts.
final class Projector {
    private let db: any ViewDatabase
    /// The field key of (account, key), nil once that key is gone.
    private let keys: (String, KeyRef) throws -> SymmetricKey?
    private let accountStatus, insertAccount, setProfile, setCancelled, setErasure, purgeAccount: any ViewStatement
    private let insertItem, deleteItem, restoreItem, removeItem: any ViewStatement
    private let insertAddress, insertPayment, upsertTicket, hasTicket: any ViewStatement
    private let grantConsent, revokeConsent, hasConsent, insertNotice, hasMergerNotice, insertDisclosure: any ViewStatement
    private let placeHold, hasOpenHold, releaseHold, hasHold, insertAccess: any ViewStatement
    private let startObligation, endObligations, endItemObligations, endAccountObligations: any ViewStatement
    private let insertRecord, expireRecords, expireAccesses, addPageViewStats, insertErasureRequest: any ViewStatement
    /// Event types whose raw records expire on their own (the policy's record rules), by type.
    private let recordRules: [EventType: RetentionPolicy.RecordRule]
    private let recordRulesByName: [String: RetentionPolicy.RecordRule]
    private let purgeStatements: [any ViewStatement]
    /// Accounts' statuses (nil: never signed up) as of the last event applied: most events need
    /// their account's status, few change it. Kept from chunk to chunk while this projector alone
    /// wrote the store, up to `statusLimit` accounts.
    private var statuses: [String: String?] = [:]
    /// Whether this projector knows the store's state that the rules read: the projection started
    /// from an empty store and nobody else wrote it since. Then an account not in `statuses`
    /// never signed up, and `known` answers the checks without a read (a rebuild reads nothing).
    private var complete = false
    /// What the checks read of an account: its tickets and consents (by tag), its open holds'
    /// cases, whether it was sent a merger notice. Kept while `complete`.
    private struct Known {
        var tickets: Set<[UInt8]> = [], consents: Set<[UInt8]> = [], openHolds: Set<String> = []
        var mergerNotice = false
    }
    private var known: [String: Known] = [:]
    /// The checkpoint this projector's last chunk committed (-1: none yet).
    private var appliedThrough: Int64 = -1
    /// At most this many accounts' cached statuses and known state (memory stays bounded whatever
    /// the number of accounts).
    static let statusLimit = 1_000_000

    init(db: any ViewDatabase, policy: RetentionPolicy, keys: @escaping (String, KeyRef) throws -> SymmetricKey?) throws {
        self.db = db
        self.keys = keys
        recordRules = Dictionary(uniqueKeysWithValues: policy.records.map { ($0.type, $0) })
        recordRulesByName = Dictionary(uniqueKeysWithValues: policy.records.map { ($0.rule, $0) })
        func s(_ sql: String) throws -> any ViewStatement { try db.prepare(sql) }
        accountStatus = try s("SELECT status FROM accounts WHERE account=?1")
        insertAccount = try s("INSERT INTO accounts(account, status, name, company, email, signed_up_at) VALUES(?1, 'active', ?2, ?3, ?4, ?5)")
        setProfile = try s("UPDATE accounts SET name=coalesce(?2, name), company=coalesce(?3, company), email=coalesce(?4, email) WHERE account=?1")
        setCancelled = try s("UPDATE accounts SET status=?2, cancelled_at=?3 WHERE account=?1")
        setErasure = try s("UPDATE accounts SET erasure_requested_at=coalesce(erasure_requested_at, ?2) WHERE account=?1")
        purgeAccount = try s("UPDATE accounts SET status='purged', name=NULL, company=NULL, email=NULL, purged_at=?2 WHERE account=?1")
        insertItem = try s("""
            INSERT INTO items(account, item, key_number, kind, label, state, created_at, created_seq)
            VALUES(?1, ?2, ?3, ?4, ?5, 'live', ?6, ?7) ON CONFLICT DO NOTHING
            """)
        deleteItem = try s("UPDATE items SET state='trash', deleted_at=?3, deleted_ns=?4 WHERE account=?1 AND item=?2 AND state='live'")
        restoreItem = try s("UPDATE items SET state='live', deleted_at=NULL, deleted_ns=NULL WHERE account=?1 AND item=?2 AND state='trash'")
        removeItem = try s("DELETE FROM items WHERE account=?1 AND item=?2")
        insertAddress = try s("INSERT INTO billing_addresses VALUES(?1, ?2, ?3, ?4)")
        insertPayment = try s("INSERT INTO payments VALUES(?1, ?2, ?3, ?4)")
        upsertTicket = try s("""
            INSERT INTO tickets VALUES(?1, ?2, ?3, ?4, ?5, 1, ?4)
            ON CONFLICT(account, ticket_tag) DO UPDATE SET messages=tickets.messages+1, last_message_at=excluded.last_message_at,
                subject=coalesce(tickets.subject, excluded.subject)
            """)
        hasTicket = try s("SELECT 1 FROM tickets WHERE account=?1 AND ticket_tag=?2")
        grantConsent = try s("INSERT INTO consents VALUES(?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING")
        revokeConsent = try s("DELETE FROM consents WHERE account=?1 AND purpose_tag=?2")
        hasConsent = try s("SELECT 1 FROM consents WHERE account=?1 AND purpose_tag=?2")
        insertNotice = try s("INSERT INTO notices VALUES(?1, ?2, ?3, ?4, ?5)")
        hasMergerNotice = try s("SELECT 1 FROM notices WHERE account=?1 AND topic='merger'")
        insertDisclosure = try s("INSERT INTO disclosures VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        placeHold = try s("""
            INSERT INTO legal_holds(account, "case", placed_seq, reason, placed_at, placed_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6)
            """)
        hasOpenHold = try s("SELECT 1 FROM legal_holds WHERE account=?1 AND \"case\"=?2 AND released_ns IS NULL")
        releaseHold = try s("UPDATE legal_holds SET released_at=?3, released_ns=?4 WHERE account=?1 AND \"case\"=?2 AND released_ns IS NULL")
        hasHold = try s("SELECT 1 FROM legal_holds WHERE account=?1 AND released_ns IS NULL")
        startObligation = try s("""
            INSERT INTO obligations(account, item, rule, start_seq, start_at, start_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING
            """)
        endObligations = try s("""
            UPDATE obligations SET end_at=?4, end_ns=?5, ended_by=?6 WHERE account=?1 AND item=?2 AND rule=?3 AND end_ns IS NULL
            """)
        endItemObligations = try s("UPDATE obligations SET end_at=?3, end_ns=?4, ended_by=?5 WHERE account=?1 AND item=?2 AND end_ns IS NULL")
        endAccountObligations = try s("UPDATE obligations SET end_at=?2, end_ns=?3, ended_by='AccountPurged' WHERE account=?1 AND end_ns IS NULL")
        insertRecord = try s("INSERT INTO records VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING")
        // `+at_ns`: by the primary key (this account's records), never by the time index (everybody's).
        expireRecords = try s("DELETE FROM records WHERE account=?1 AND type=?2 AND +at_ns<=?3")
        expireAccesses = try s("UPDATE access_log SET access=NULL, authorized=NULL WHERE account=?1 AND at_ns<=?2")
        addPageViewStats = try s("""
            INSERT INTO page_view_stats VALUES(?1, ?2, ?3) ON CONFLICT(day, path) DO UPDATE SET views=page_view_stats.views+excluded.views
            """)
        insertErasureRequest = try s("INSERT INTO erasure_requests VALUES(?1, ?2, ?3, ?4)")
        insertAccess = try s("INSERT INTO access_log VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
        let outliving = EventType.allCases.filter { $0.recordChain.map(EventType.chainsOutlivingAccount.contains) ?? false }
        purgeStatements = try [
            "DELETE FROM items WHERE account=?1",
            "DELETE FROM billing_addresses WHERE account=?1",
            "DELETE FROM payments WHERE account=?1",
            "DELETE FROM tickets WHERE account=?1",
            "DELETE FROM consents WHERE account=?1",
            // The records sealed under the account's chains went with it; those that outlive it stay.
            "DELETE FROM records WHERE account=?1 AND type NOT IN (\(outliving.map { "'\($0.rawValue)'" }.joined(separator: ",")))",
            "UPDATE notices SET topic=NULL, version=NULL WHERE account=?1",
            "UPDATE disclosures SET disclosure=NULL, without_consent=0, without_merger_notice=0 WHERE account=?1",
            // The access records outlive the account, but the tickets and cases that justified
            // them went with it: they can no longer be judged.
            "UPDATE access_log SET authorized=NULL WHERE account=?1",
        ].map(s)
    }

    /// Whether a query bound by `bind` returns a row.
    private func exists(_ statement: any ViewStatement) throws -> Bool {
        defer { statement.reset() }
        return try statement.step()
    }

    /// Whether a purge or an expiry was applied in this chunk.
    private var erased = false

    /// Begins a chunk at the store's checkpoint: the cached statuses are dropped unless this
    /// projector wrote everything up to there (another process may have moved it).
    func beginChunk(at checkpoint: Int64) {
        guard checkpoint != appliedThrough || statuses.count + known.count > Projector.statusLimit else { return }
        statuses.removeAll()
        known.removeAll()
        complete = checkpoint == 0
    }

    /// Ends a chunk committed at `checkpoint`; returns whether it applied a purge or an expiry.
    func endChunk(at checkpoint: Int64) -> Bool {
        appliedThrough = checkpoint
        defer { erased = false }
        return erased
    }

    /// Whether a check finds a row: from `known` while complete, else from the store.
    private func found(_ account: String, _ known: (Known) -> Bool, _ query: @autoclosure () -> any ViewStatement) throws -> Bool {
        if complete { return known(self.known[account] ?? Known()) }
        return try exists(query())
    }

    /// Notes a change of what the checks read, while complete.
    private func note(_ account: String, _ change: (inout Known) -> Void) {
        if complete { change(&known[account, default: Known()]) }
    }

    private func status(of account: String) throws -> String? {
        if let cached = statuses[account] { return cached }
        if complete { return nil }
        accountStatus.bind(1, account)
        defer { accountStatus.reset() }
        let status = try accountStatus.step() ? accountStatus.text(0) : nil
        statuses[account] = status
        return status
    }

    func apply(_ event: ProjectedEvent) throws {
        guard let type = EventType(rawValue: event.header.type) else { return }
        if [.accountPurged, .itemPurged, .recordsExpired, .consentRevoked].contains(type) { erased = true }
        let h = event.header
        let account = h.account
        if account == RetentionPolicy.statisticsAccount {
            if type == .recordsExpired { try addStatistics(event.data) }
            return
        }
        let at = h.at.rfc3339
        let data = event.data
        func text(_ key: String) -> String? { data?[key]?.string }
        /// A personal value of this event, sealed for `field` (nil without data or key).
        func sealed(_ field: Field, _ value: String?) -> [UInt8]? {
            guard let cell = event.cellKey else { return nil }
            return field.seal(value, cell: cell, account: account)
        }
        func sealed(_ field: Field, _ object: JSONObject) -> [UInt8]? {
            guard let cell = event.cellKey else { return nil }
            return field.seal(object, cell: cell, account: account)
        }
        /// The keyed tag of a value, under the account's own field key.
        func tag(_ field: Field, _ value: String) throws -> [UInt8]? {
            try keys(account, .account).map { field.tag(value, key: $0) }
        }

        let status = try self.status(of: account)
        if type == .accountSignedUp {
            guard status == nil else { return }
            try insertAccount.bind(1, account).bind(2, sealed(.name, text("name"))).bind(3, sealed(.company, text("company")))
                .bind(4, sealed(.email, text("email"))).bind(5, at).run()
            statuses[account] = "active"
            return
        }
        guard let status else { return }

        switch type {
        case .accountSignedUp:
            break
        case .profileUpdated:
            try setProfile.bind(1, account).bind(2, sealed(.name, text("name"))).bind(3, sealed(.company, text("company")))
                .bind(4, sealed(.email, text("email"))).run()
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
            // Its tickets and consents are deleted, its notices' topics cleared; its holds stay.
            note(account) { $0.tickets = []; $0.consents = []; $0.mergerNotice = false }
            try endAccountObligations.bind(1, account).bind(2, at).bind(3, h.at.nanoseconds).run()
        case .recordsExpired:
            // `through`: the newest record it expired.
            guard let rule = text("rule"), let through = text("through").flatMap(Timestamp.init(rfc3339:)) else { return }
            let type = recordRulesByName[rule]?.type ?? (text("category") == "page-views" ? .pageViewed : nil)
            if let type { try expireRecords.bind(1, account).bind(2, type.rawValue).bind(3, through.nanoseconds).run() }
            if type == .accountAccessed { try expireAccesses.bind(1, account).bind(2, through.nanoseconds).run() }
        case .processorErasureRequested:
            try insertErasureRequest.bind(1, h.seq).bind(2, account).bind(3, text("processor")).bind(4, at).run()
        case .itemCreated:
            guard let item = text("item") else { return }
            try insertItem.bind(1, account).bind(2, item).bind(3, Int64(bitPattern: event.key.number)).bind(4, sealed(.itemKind, text("kind")))
                .bind(5, sealed(.itemLabel, text("label"))).bind(6, at).bind(7, h.seq).run()
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
            guard let data, let address = sealed(.address, data) else { return }
            try insertAddress.bind(1, account).bind(2, h.seq).bind(3, at).bind(4, address).run()
        case .paymentRecorded:
            guard let data, let payment = sealed(.payment, data) else { return }
            try insertPayment.bind(1, account).bind(2, h.seq).bind(3, at).bind(4, payment).run()
        case .supportMessageReceived:
            guard let ticket = text("ticket"), let ticketTag = try tag(.ticket, ticket) else { return }
            try upsertTicket.bind(1, account).bind(2, ticketTag).bind(3, sealed(.ticket, ticket)).bind(4, at)
                .bind(5, sealed(.ticketSubject, text("subject"))).run()
            note(account) { $0.tickets.insert(ticketTag) }
        case .consentGranted:
            guard let purpose = text("purpose"), let purposeTag = try tag(.purpose, purpose) else { return }
            try grantConsent.bind(1, account).bind(2, purposeTag).bind(3, sealed(.purpose, purpose)).bind(4, at).run()
            note(account) { $0.consents.insert(purposeTag) }
        case .consentRevoked:
            guard let purpose = text("purpose"), let purposeTag = try tag(.purpose, purpose) else { return }
            try revokeConsent.bind(1, account).bind(2, purposeTag).run()
            note(account) { $0.consents.remove(purposeTag) }
        case .noticeSent:
            try insertNotice.bind(1, account).bind(2, h.seq).bind(3, at).bind(4, text("topic")).bind(5, text("version")).run()
            if text("topic") == "merger" { note(account) { $0.mergerNotice = true } }
        case .dataShared:
            let recipient = text("recipient")
            let basis = text("basis")
            var withoutConsent = false
            if basis == "consent" {
                if let consent = try tag(.purpose, "share:" + (recipient ?? "")) {
                    withoutConsent = try !found(account, { $0.consents.contains(consent) }, hasConsent.bind(1, account).bind(2, consent))
                } else {
                    withoutConsent = true
                }
            }
            var withoutNotice = false
            if basis == "merger" {
                withoutNotice = try !found(account, \.mergerNotice, hasMergerNotice.bind(1, account))
            }
            let disclosure = data.flatMap { sealed(.disclosure, JSONObject($0.fields.filter { ["recipient", "basis", "categories"].contains($0.key) })) }
            try insertDisclosure.bind(1, h.seq).bind(2, account).bind(3, at).bind(4, h.at.nanoseconds).bind(5, disclosure)
                .bind(6, withoutConsent ? 1 : 0).bind(7, withoutNotice ? 1 : 0).run()
        case .legalHoldPlaced:
            guard let c = text("case") else { return }
            // One open hold per case: placing it again while it is open changes nothing.
            guard try !found(account, { $0.openHolds.contains(c) }, hasOpenHold.bind(1, account).bind(2, c)) else { return }
            try placeHold.bind(1, account).bind(2, c).bind(3, h.seq).bind(4, sealed(.holdReason, text("reason"))).bind(5, at)
                .bind(6, h.at.nanoseconds).run()
            note(account) { $0.openHolds.insert(c) }
        case .legalHoldReleased:
            guard let c = text("case") else { return }
            try releaseHold.bind(1, account).bind(2, c).bind(3, at).bind(4, h.at.nanoseconds).run()
            note(account) { $0.openHolds.remove(c) }
        case .accountAccessed:
            insertAccess.bind(1, h.seq).bind(2, account).bind(3, at).bind(4, h.at.nanoseconds)
                .bind(5, Int64(bitPattern: event.key.number)).bind(6, Int64(bitPattern: event.key.index))
            if let data, let access = sealed(.access, data) {
                var authorized = false
                if let ticket = text("ticket"), let ticketTag = try tag(.ticket, ticket) {
                    authorized = try found(account, { $0.tickets.contains(ticketTag) }, hasTicket.bind(1, account).bind(2, ticketTag))
                }
                if !authorized {
                    authorized = try found(account, { !$0.openHolds.isEmpty }, hasHold.bind(1, account))
                }
                insertAccess.bind(7, access).bind(8, authorized ? 1 : 0)
            } else {
                insertAccess.bind(7, nil as [UInt8]?).bind(8, nil as Int64?)
            }
            try insertAccess.run()
        case .pageViewed, .surveyAnswered:
            break
        }
        // A raw record whose category expires on its own, while its payload is there to expire.
        // A page view keeps its day and its path (sealed under the record's own key): its expiry
        // leaves them as anonymous counts.
        if data != nil, recordRules[type] != nil {
            let pageView = type == .pageViewed
            try insertRecord.bind(1, account).bind(2, type.rawValue).bind(3, h.seq).bind(4, h.at.nanoseconds)
                .bind(5, pageView ? String(at.prefix(10)) : nil).bind(6, Int64(bitPattern: event.key.number))
                .bind(7, Int64(bitPattern: event.key.index)).bind(8, pageView ? sealed(.path, text("path")) : nil).run()
        }
    }

    /// The anonymous daily page-view counts an expiry left behind (`counts`: day, path, views).
    private func addStatistics(_ data: JSONObject?) throws {
        guard case .array(let counts)? = data?["counts"] else { return }
        for case .object(let c) in counts {
            guard let day = c["day"]?.string, let path = c["path"]?.string, case .int(let views)? = c["views"] else { continue }
            try addPageViewStats.bind(1, day).bind(2, path).bind(3, views).run()
        }
    }

    /// Starts an obligation of `rule` at this event.
    private func start(_ rule: String, item: String, _ h: EventHeader, _ at: String) throws {
        try startObligation.bind(1, h.account).bind(2, item).bind(3, rule).bind(4, h.seq).bind(5, at).bind(6, h.at.nanoseconds).run()
    }
}
