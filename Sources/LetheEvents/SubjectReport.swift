import LetheJournal

/// Who processes which categories of an account's data on the company's behalf (the privacy
/// policy's named processors). A category is held when any of the account's events records it.
public struct ProcessorRegistry: Sendable {
    /// Each processor and the categories it receives; `*` is every category held.
    public var processors: [(name: String, categories: [String])]

    public init(processors: [(name: String, categories: [String])]) { self.processors = processors }

    /// EVENTS.md's registry: Spark for payments, Amazon Web Services for everything hosted,
    /// Zendesk for support correspondence, VMS for billing and tax records.
    public static let standard = ProcessorRegistry(processors: [
        ("Spark", ["payments"]),
        ("Amazon Web Services", ["*"]),
        ("Zendesk", ["support"]),
        ("VMS", ["billing", "payments"]),
    ])

    /// The category of personal data an event of `type` records, if any.
    public static func category(of type: EventType) -> String? {
        switch type {
        case .accountSignedUp, .profileUpdated: "profile"
        case .billingAddressSet: "billing"
        case .paymentRecorded: "payments"
        case .supportMessageReceived: "support"
        case .pageViewed: "page-views"
        case .surveyAnswered: "surveys"
        case .itemCreated: "items"
        default: nil
        }
    }

    /// For each processor, the categories of `held` it received (processors that received none are left out).
    public func recipients(of held: Set<String>) -> [(name: String, categories: [String])] {
        processors.compactMap { p in
            let received = p.categories.contains("*") ? held.sorted() : p.categories.filter(held.contains)
            return received.isEmpty ? nil : (p.name, received)
        }
    }
}

/// The retention windows of EVENTS.md's default policy, in days.
public struct RetentionWindows: Sendable, Equatable {
    public var trashDays: Int64 = 30
    public var cancellationDays: Int64 = 30
    public var pageViewDays: Int64 = 90
    public var surveyDays: Int64 = 365
    public var accessDays: Int64 = 400

    public init() {}
    public static let standard = RetentionWindows()
}

/// The customer's right to see their data: everything held about one account, from its own
/// events (so its cost grows with the account, not the journal), as one JSON document.
public struct SubjectReport: Sendable {
    public let account: String
    public let windows: RetentionWindows
    public let registry: ProcessorRegistry
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
    private var firstPageView, firstSurvey, firstAccess: Timestamp?

    public init(account: String, windows: RetentionWindows = .standard, registry: ProcessorRegistry = .standard) {
        self.account = account
        self.windows = windows
        self.registry = registry
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
        if data != nil, let category = ProcessorRegistry.category(of: type) { held.insert(category) }
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
        case .surveyAnswered where data != nil:
            surveys.append(with(data))
            firstSurvey = firstSurvey ?? at
        case .pageViewed where data != nil:
            pageViews.append(with(data))
            firstPageView = firstPageView ?? at
        case .consentGranted, .consentRevoked:
            guard let purpose = data?["purpose"]?.string else { break }
            consents[purpose] = type == .consentGranted ? at.rfc3339 : nil
            consentHistory.append(.object(["at": when, "purpose": .string(purpose), "granted": .bool(type == .consentGranted)]))
        case .dataShared where data != nil: disclosures.append(with(data))
        case .noticeSent where data != nil: notices.append(with(data))
        case .accountAccessed where data != nil:
            accesses.append(with(data))
            firstAccess = firstAccess ?? at
        default: break
        }
    }

    /// The report as of `now`: what is held, who received it, and what is scheduled for purge when.
    public func json(now: Timestamp) -> JSONObject {
        let day: Int64 = 86_400
        let held = !state.legalHolds.isEmpty
        var purges: [(due: Timestamp, value: JSONValue)] = []
        func schedule(_ rule: String, _ due: Timestamp, item: String? = nil, what: String) {
            purges.append((due, .object([
                "rule": .string(rule), "item": item.map(JSONValue.string) ?? .null, "what": .string(what),
                "due": .string(due.rfc3339), "overdue": .bool(due <= now), "held": .bool(held),
            ])))
        }
        if state.status != .purged {
            if let t = erasureRequestedAt { schedule("erasure-request", t, what: "everything held about the account") }
            if state.status == .cancelled, let t = cancelledAt {
                schedule("cancellation-30d", t.adding(seconds: windows.cancellationDays * day), what: "everything held about the account")
            }
            for item in state.items where item.inTrash {
                if let t = deletedAt[item.item] { schedule("trash-30d", t.adding(seconds: windows.trashDays * day), item: item.item, what: "item in the trash") }
            }
            if let t = firstPageView { schedule("page-views-\(windows.pageViewDays)d", t.adding(seconds: windows.pageViewDays * day), what: "the oldest page view (each expires \(windows.pageViewDays) days after it)") }
            if let t = firstSurvey { schedule("surveys-\(windows.surveyDays)d", t.adding(seconds: windows.surveyDays * day), what: "the oldest survey answer (each expires \(windows.surveyDays) days after it)") }
            if let t = firstAccess { schedule("access-log-\(windows.accessDays)d", t.adding(seconds: windows.accessDays * day), what: "the oldest access record (each expires \(windows.accessDays) days after it)") }
        }
        purges.sort { $0.due < $1.due }
        let recipients = registry.recipients(of: self.held)
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
