import LetheJournal

/// The staff access log with its verdicts: an access is authorized when it named a ticket that
/// the account had opened by then, or when the account had an open legal case at that moment.
public struct AccessLog: Sendable {
    public struct Entry: Sendable, Equatable {
        public var seq: Int64
        public var at: Timestamp
        public var account: String
        /// nil when the access's own record was purged.
        public var actor: String?
        public var ip: String?
        public var reason: String?
        public var ticket: String?
        public var authorized: Bool

        /// The contract's JSON object: `at`, `account`, `actor`, `ip`, `reason`, `ticket`, `authorized`.
        public var json: JSONObject {
            func optional(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
            return [
                "at": .string(at.rfc3339), "account": .string(account), "actor": optional(actor), "ip": optional(ip),
                "reason": optional(reason), "ticket": optional(ticket), "authorized": .bool(authorized),
            ]
        }
    }

    /// What the verdicts need of each account so far: the tickets it opened, its open cases.
    private var tickets: [String: Set<String>] = [:]
    private var openCases: [String: Set<String>] = [:]
    public private(set) var entries: [Entry] = []

    public init() {}

    /// Takes the next event of the journal (in journal order, which is time order per account).
    public mutating func add(_ event: StoredEvent, codec: PayloadCodec = .standard) throws {
        guard let type = EventType(rawValue: event.header.type) else { return }
        let account = event.header.account
        var data: JSONObject?
        if case .plaintext(let bytes) = event.payload,
           type == .supportMessageReceived || type == .legalHoldPlaced || type == .legalHoldReleased || type == .accountAccessed {
            data = try codec.decode(type: type.rawValue, payload: bytes)
        }
        switch type {
        case .supportMessageReceived:
            if let t = data?["ticket"]?.string { tickets[account, default: []].insert(t) }
        case .legalHoldPlaced:
            if let c = data?["case"]?.string { openCases[account, default: []].insert(c) }
        case .legalHoldReleased:
            if let c = data?["case"]?.string { openCases[account]?.remove(c) }
        case .accountAccessed:
            let ticket = data?["ticket"]?.string
            let namedOpenedTicket = ticket.map { tickets[account]?.contains($0) ?? false } ?? false
            let underHold = !(openCases[account]?.isEmpty ?? true)
            entries.append(Entry(
                seq: event.header.seq, at: event.header.at, account: account, actor: data?["actor"]?.string,
                ip: data?["ip"]?.string, reason: data?["reason"]?.string, ticket: ticket, authorized: namedOpenedTicket || underHold))
        default:
            break
        }
    }

    /// The entries in time order (then journal order).
    public var inTimeOrder: [Entry] {
        entries.sorted { ($0.at, $0.seq) < ($1.at, $1.seq) }
    }
}
