import LetheJournal

/// An account as its own events describe it at some moment: status, profile, items, open legal
/// holds and the tickets it opened. A pure fold over the account's events in order.
///
/// Transitions the contract refuses (a second signup, deleting an item that is not live,
/// reactivating an account that is not cancelled, releasing a case that is not open, anything
/// before the signup) change nothing here, so the state is the same whether such events were
/// refused on the way in or not.
public struct AccountState: Sendable, Equatable {
    public enum Status: String, Sendable {
        case active, cancelled, purged
    }

    public struct Item: Sendable, Equatable {
        public var item: String
        public var kind: String
        public var inTrash: Bool

        public init(item: String, kind: String, inTrash: Bool) {
            self.item = item
            self.kind = kind
            self.inTrash = inTrash
        }
    }

    public var account: String
    /// Whether the account has signed up (its first event).
    public var exists = false
    public var status = Status.active
    public var name: String?
    public var company: String?
    public var email: String?
    /// Items in the order they were created, live or in the trash.
    public var items: [Item] = []
    /// Open legal cases, in the order they were placed.
    public var legalHolds: [String] = []
    /// Tickets the account opened (`SupportMessageReceived`).
    public var tickets: Set<String> = []
    public var lastAt: Timestamp?

    public init(account: String) { self.account = account }

    /// Whether `apply` looks at the data of events of `type` (the others only by their type).
    public static func readsData(_ type: EventType) -> Bool {
        switch type {
        case .accountSignedUp, .profileUpdated, .itemCreated, .itemDeleted, .itemRestored, .itemPurged,
             .legalHoldPlaced, .legalHoldReleased, .supportMessageReceived:
            true
        default:
            false
        }
    }

    /// Applies one event; `data` is nil when its payload is gone (purged or shredded).
    public mutating func apply(_ type: EventType, data: JSONObject?, at: Timestamp) {
        lastAt = at
        if type == .accountSignedUp {
            guard !exists else { return }
            exists = true
            name = data?["name"]?.string
            company = data?["company"]?.string
            email = data?["email"]?.string
            return
        }
        guard exists else { return }
        func text(_ key: String) -> String? { data?[key]?.string }
        switch type {
        case .profileUpdated:
            if let v = text("name") { name = v }
            if let v = text("company") { company = v }
            if let v = text("email") { email = v }
        case .itemCreated:
            guard let id = text("item"), !items.contains(where: { $0.item == id }) else { return }
            items.append(Item(item: id, kind: text("kind") ?? "", inTrash: false))
        case .itemDeleted:
            if let id = text("item"), let k = items.firstIndex(where: { $0.item == id && !$0.inTrash }) { items[k].inTrash = true }
        case .itemRestored:
            if let id = text("item"), let k = items.firstIndex(where: { $0.item == id && $0.inTrash }) { items[k].inTrash = false }
        case .itemPurged:
            if let id = text("item") { items.removeAll { $0.item == id } }
        case .accountCancelled:
            if status == .active { status = .cancelled }
        case .accountReactivated:
            if status == .cancelled { status = .active }
        case .accountPurged:
            status = .purged
            name = nil
            company = nil
            email = nil
            items = []
        case .legalHoldPlaced:
            if let c = text("case"), !legalHolds.contains(c) { legalHolds.append(c) }
        case .legalHoldReleased:
            if let c = text("case") { legalHolds.removeAll { $0 == c } }
        case .supportMessageReceived:
            if let t = text("ticket") { tickets.insert(t) }
        default:
            break
        }
    }

    /// The contract's `lethe state` shape: `account`, `status`, `profile`, `items`, `legal_holds`.
    public var json: JSONObject {
        func optional(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
        return [
            "account": .string(account),
            "status": .string(status.rawValue),
            "profile": .object(["name": optional(name), "company": optional(company), "email": optional(email)]),
            "items": .array(items.map {
                .object(["item": .string($0.item), "kind": .string($0.kind), "state": .string($0.inTrash ? "trash" : "live")])
            }),
            "legal_holds": .array(legalHolds.map(JSONValue.string)),
        ]
    }

    /// Folds the account's stored events up to and including `until`.
    public static func fold(_ events: [StoredEvent], account: String, until: Timestamp, codec: PayloadCodec = .standard) throws -> AccountState {
        var state = AccountState(account: account)
        for e in events where e.header.at <= until {
            guard let type = EventType(rawValue: e.header.type) else { continue }
            var data: JSONObject?
            if AccountState.readsData(type), case .plaintext(let bytes) = e.payload {
                data = try codec.decode(type: e.header.type, payload: bytes)
            }
            state.apply(type, data: data, at: e.header.at)
        }
        return state
    }
}
