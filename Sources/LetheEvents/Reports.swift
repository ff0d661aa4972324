import LetheJournal

/// Every `DataShared`, with the flags the policy asks for: a share on the basis of consent
/// without a matching consent (`share:<recipient>` granted and not revoked by then), and a share
/// on the basis of a merger without a prior `NoticeSent` of topic `merger` to the account.
public struct DisclosureLog: Sendable {
    public struct Entry: Sendable, Equatable {
        public var seq: Int64
        public var at: Timestamp
        public var account: String
        public var recipient: String?
        public var basis: String?
        public var categories: [String]
        public var withoutConsent: Bool
        public var withoutMergerNotice: Bool

        public var json: JSONObject {
            [
                "at": .string(at.rfc3339), "account": .string(account), "recipient": recipient.map(JSONValue.string) ?? .null,
                "basis": basis.map(JSONValue.string) ?? .null, "categories": .array(categories.map(JSONValue.string)),
                "without_consent": .bool(withoutConsent), "without_merger_notice": .bool(withoutMergerNotice),
            ]
        }
    }

    private var consents: [String: Set<String>] = [:]
    private var mergerNoticed: Set<String> = []
    public private(set) var entries: [Entry] = []

    public init() {}

    /// Takes the next event of the journal, in journal order.
    public mutating func add(_ event: StoredEvent, codec: PayloadCodec = .standard) throws {
        guard let type = EventType(rawValue: event.header.type),
              [.consentGranted, .consentRevoked, .noticeSent, .dataShared].contains(type) else { return }
        let account = event.header.account
        var data: JSONObject?
        if case .plaintext(let bytes) = event.payload { data = try codec.decode(type: type.rawValue, payload: bytes) }
        switch type {
        case .consentGranted:
            if let p = data?["purpose"]?.string { consents[account, default: []].insert(p) }
        case .consentRevoked:
            if let p = data?["purpose"]?.string { consents[account]?.remove(p) }
        case .noticeSent:
            if data?["topic"]?.string == "merger" { mergerNoticed.insert(account) }
        default:
            let recipient = data?["recipient"]?.string
            let basis = data?["basis"]?.string
            let categories: [String] = {
                guard case .array(let items)? = data?["categories"] else { return [] }
                return items.compactMap(\.string)
            }()
            let consented = recipient.map { consents[account]?.contains("share:\($0)") ?? false } ?? false
            entries.append(Entry(
                seq: event.header.seq, at: event.header.at, account: account, recipient: recipient, basis: basis,
                categories: categories, withoutConsent: basis == "consent" && !consented,
                withoutMergerNotice: basis == "merger" && !mergerNoticed.contains(account)))
        }
    }
}

/// The active account owners who have not yet been sent a `NoticeSent` of topic `policy-change`
/// for a given policy version (as of the end of the journal).
public struct PolicyNoticeReport: Sendable {
    public let version: String
    private var states: [String: AccountState] = [:]
    private var noticed: Set<String> = []

    public init(version: String) { self.version = version }

    public mutating func add(_ event: StoredEvent, codec: PayloadCodec = .standard) throws {
        guard let type = EventType(rawValue: event.header.type) else { return }
        let account = event.header.account
        var data: JSONObject?
        if case .plaintext(let bytes) = event.payload, AccountState.readsData(type) || type == .noticeSent {
            data = try codec.decode(type: type.rawValue, payload: bytes)
        }
        if type == .noticeSent, data?["topic"]?.string == "policy-change", data?["version"]?.string == version {
            noticed.insert(account)
        }
        if states[account] == nil { states[account] = AccountState(account: account) }
        states[account]!.apply(type, data: data, at: event.header.at)
    }

    /// Accounts that exist, are active and were not sent the notice, sorted.
    public var pending: [String] {
        states.values.filter { $0.exists && $0.status == .active && !noticed.contains($0.account) }.map(\.account).sorted()
    }
}
