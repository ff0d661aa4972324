import LetheJournal

/// The customer's right to see their data: everything held about one account, from its own
/// events (so its cost grows with the account, not the journal), as one JSON document.
public struct SubjectReport: Sendable {
    public let account: String
    public let policy: RetentionPolicy
    private var state: AccountState
    private var signedUpAt: Timestamp?
    private var cancelledAt: Timestamp?
    private var erasureRequestedAt: Timestamp?
    private var purgedAt: Timestamp?
    private var deletedAt: [String: Timestamp] = [:]
    private var labels: [String: String] = [:]
    private var held: Set<String> = []
    private var billing: [JSONValue] = []
    private var payments: [JSONValue] = []
    private var messages: [JSONValue] = []
    private var surveys: [JSONValue] = []
    private var pageViews: [JSONValue] = []
    private var consents: [String: String] = [:]
    private var consentHistory: [JSONValue] = []
    private var disclosures: [JSONValue] = []
    private var notices: [JSONValue] = []
    private var accesses: [JSONValue] = []
    /// The oldest record still held of each type whose records expire.
    private var oldestRecord: [EventType: Timestamp] = [:]

    public init(account: String, policy: RetentionPolicy = .standard) {
        self.account = account
        self.policy = policy
        state = AccountState(account: account)
    }

    /// Takes the account's next event; `data` is nil when its payload is gone.
    public mutating func add(type: EventType, data: JSONObject?, at: Timestamp) {
        state.apply(type, data: data, at: at)
        guard state.exists else { return }
        let when = JSONValue.string(at.rfc3339)
        func with(_ object: JSONObject?) -> JSONValue {
            var o: JSONObject = ["at": when]
            o.fields.append(contentsOf: object?.fields ?? [])
            return .object(o)
        }
        if data != nil, let category = RetentionPolicy.category(of: type) { held.insert(category) }
        if data != nil, policy.recordRule(for: type) != nil, oldestRecord[type] == nil { oldestRecord[type] = at }
        switch type {
        case .accountSignedUp: if signedUpAt == nil { signedUpAt = at }
        case .accountCancelled: cancelledAt = state.status == .cancelled ? at : cancelledAt
        case .accountReactivated: cancelledAt = nil
        case .erasureRequested: erasureRequestedAt = erasureRequestedAt ?? at
        case .accountPurged: purgedAt = at
        case .itemCreated: if let i = data?["item"]?.string, let l = data?["label"]?.string { labels[i] = l }
        case .itemDeleted: if let i = data?["item"]?.string { deletedAt[i] = at }
        case .itemRestored: if let i = data?["item"]?.string { deletedAt[i] = nil }
        case .billingAddressSet where data != nil: billing.append(with(data))
        case .paymentRecorded where data != nil: payments.append(with(data))
        case .supportMessageReceived where data != nil: messages.append(with(data))
        case .surveyAnswered where data != nil: surveys.append(with(data))
        case .pageViewed where data != nil: pageViews.append(with(data))
        case .consentGranted, .consentRevoked:
            guard let purpose = data?["purpose"]?.string else { break }
            consents[purpose] = type == .consentGranted ? at.rfc3339 : nil
            consentHistory.append(.object(["at": when, "purpose": .string(purpose), "granted": .bool(type == .consentGranted)]))
        case .dataShared where data != nil: disclosures.append(with(data))
        case .noticeSent where data != nil: notices.append(with(data))
        case .accountAccessed where data != nil: accesses.append(with(data))
        default: break
        }
    }

    /// The report as of `now`: what is held, who received it, and what is scheduled for purge when.
    public func json(now: Timestamp) -> JSONObject {
        let held = !state.legalHolds.isEmpty
        var purges: [(due: Timestamp, value: JSONValue)] = []
        func schedule(_ rule: String, _ due: Timestamp, item: String? = nil, what: String) {
            purges.append((due, .object([
                "rule": .string(rule), "item": item.map(JSONValue.string) ?? .null, "what": .string(what),
                "due": .string(due.rfc3339), "overdue": .bool(due <= now), "held": .bool(held),
            ])))
        }
        if state.status != .purged {
            let everything = "everything held about the account"
            if let t = erasureRequestedAt { schedule(RetentionPolicy.erasure, t.adding(seconds: policy.window(RetentionPolicy.erasure)), what: everything) }
            if state.status == .cancelled, let t = cancelledAt {
                schedule(RetentionPolicy.cancellation, t.adding(seconds: policy.window(RetentionPolicy.cancellation)), what: everything)
            }
            for item in state.items where item.inTrash {
                if let t = deletedAt[item.item] {
                    schedule(RetentionPolicy.trash, t.adding(seconds: policy.window(RetentionPolicy.trash)), item: item.item, what: "item in the trash")
                }
            }
            for rule in policy.records {
                guard let t = oldestRecord[rule.type] else { continue }
                schedule(rule.rule, t.adding(seconds: rule.afterDays * RetentionPolicy.day),
                         what: "the oldest \(rule.category) record (each expires \(rule.afterDays) days after it)")
            }
        }
        purges.sort { $0.due < $1.due }
        let recipients = policy.recipients(of: self.held)
        var sharedWith: [String: Set<String>] = [:]
        for case .object(let d) in disclosures {
            guard let r = d["recipient"]?.string, case .array(let cs)? = d["categories"] else { continue }
            sharedWith[r, default: []].formUnion(cs.compactMap(\.string))
        }
        func optional(_ t: Timestamp?) -> JSONValue { t.map { .string($0.rfc3339) } ?? .null }
        var profile = state.json
        return [
            "account": .string(account),
            "generated_at": .string(now.rfc3339),
            "status": profile["status"] ?? .null,
            "profile": profile.remove("profile") ?? .null,
            "signed_up_at": optional(signedUpAt),
            "cancelled_at": optional(state.status == .cancelled ? cancelledAt : nil),
            "erasure_requested_at": optional(erasureRequestedAt),
            "purged_at": optional(purgedAt),
            "billing_addresses": .array(billing),
            "payments": .array(payments),
            "support_messages": .array(messages),
            "surveys": .array(surveys),
            "items": .array(state.items.map { item in
                .object([
                    "item": .string(item.item), "kind": .string(item.kind), "label": labels[item.item].map(JSONValue.string) ?? .null,
                    "state": .string(item.inTrash ? "trash" : "live"),
                ])
            }),
            "page_views": .array(pageViews),
            "consents": .array(consents.keys.sorted().map { .object(["purpose": .string($0), "granted_at": .string(consents[$0]!)]) }),
            "consent_history": .array(consentHistory),
            "disclosures": .array(disclosures),
            "notices": .array(notices),
            "legal_holds": .array(state.legalHolds.map(JSONValue.string)),
            "staff_accesses": .array(accesses),
            "processors": .array(recipients.map { .object(["processor": .string($0.name), "categories": .array($0.categories.map(JSONValue.string))]) }),
            "shared_with": .array(sharedWith.keys.sorted().map {
                .object(["recipient": .string($0), "categories": .array(sharedWith[$0]!.sorted().map(JSONValue.string))])
            }),
            "scheduled_purges": .array(purges.map(\.value)),
        ]
    }
}

extension JSONObject {
    /// Removes and returns the value of `key`.
    mutating func remove(_ key: String) -> JSONValue? {
        guard let k = fields.firstIndex(where: { $0.key == key }) else { return nil }
        return fields.remove(at: k).value
    }
}
