import LetheJournal

/// The contract's rules that need an account's history (EVENTS.md): the signup comes first and
/// only once, items are created once, deleted only while live and restored only from the trash,
/// an account is reactivated only while cancelled, and a purged account takes no event at all
/// but the engine's `RecordsExpired` of its surviving access records.
///
/// Set as `Journal.Options.rules`; the writer asks at the moment it decides each event, so a
/// refused event leaves no trace and the state stays exact under concurrent writers.
public struct ContractRules: EventRules {
    public var codec: PayloadCodec
    /// Accounts followed at once; past this the checker starts afresh (and reloads histories).
    public var accountLimit: Int

    public init(codec: PayloadCodec = .standard, accountLimit: Int = 1_000_000) {
        self.codec = codec
        self.accountLimit = accountLimit
    }

    public func makeChecker() -> any RulesChecker { Checker(codec: codec, accountLimit: accountLimit) }

    /// Why `type` with `data` may not follow `state`; nil when it may.
    public static func refusal(_ type: EventType, _ data: JSONObject, after state: AccountState) -> String? {
        // Names go into messages; one holding a card number (refused on import and by the typed
        // API, but the journal takes events from elsewhere too) is never repeated.
        // Computed only when a message is made: this runs for every event the writer admits.
        func shown(_ name: String) -> String { CardNumbers.contains(name) ? "(not shown: it holds a card number)" : name }
        var account: String { shown(state.account) }
        // The engine's own records about the account (the staff access log) expire on their own
        // window, after the account's purge too: that expiry is the one event a purged account takes.
        if state.status == .purged && type != .recordsExpired { return "account \(account) was purged; it takes no new events" }
        if type == .accountSignedUp {
            return state.exists ? "account \(account) has already signed up" : nil
        }
        guard state.exists else { return "account \(account) has not signed up: AccountSignedUp comes first" }
        let itemID = data["item"]?.string ?? ""
        var item: String { shown(itemID) }
        switch type {
        case .itemCreated where state.items.contains { $0.item == itemID }:
            return "item \(item) already exists in account \(account)"
        case .itemDeleted where !state.items.contains { $0.item == itemID && !$0.inTrash }:
            return "item \(item) is not live in account \(account)"
        case .itemRestored where !state.items.contains { $0.item == itemID && $0.inTrash }:
            return "item \(item) is not in the trash of account \(account)"
        case .accountReactivated where state.status != .cancelled:
            return "account \(account) is not cancelled"
        default:
            return nil
        }
    }

    final class Checker: RulesChecker {
        let codec: PayloadCodec
        let accountLimit: Int
        var states: [String: AccountState] = [:]

        init(codec: PayloadCodec, accountLimit: Int) {
            self.codec = codec
            self.accountLimit = accountLimit
        }

        func follows(_ account: String) -> Bool { states.index(forKey: account) != nil }

        func makeRoom(for count: Int) {
            if states.count + count > accountLimit { states.removeAll(keepingCapacity: true) }
        }

        /// The engine's own records (purge events) do not depend on the account's history: a
        /// retention run appending them to thousands of accounts loads none of it.
        func needsHistory(type: String) -> Bool { !(EventType(rawValue: type)?.isEngineOnly ?? false) }

        func load(_ account: String, history: [StoredEvent]) throws {
            if states.count >= accountLimit { states.removeAll(keepingCapacity: true) }
            states[account] = try AccountState.fold(history, account: account, until: Timestamp(nanoseconds: .max), codec: codec)
        }

        func admit(account: String, type: String, payload: [UInt8], scope: KeyScope, at: Timestamp) -> String? {
            guard let type = EventType(rawValue: type) else { return nil }  // not the contract's
            // Which key seals what (and so what outlives what) is decided by type, never by the caller.
            if scope != type.keyScope { return "\(type.rawValue) is sealed under another key than its type's" }
            var data: JSONObject = [:]
            if AccountState.readsData(type) {
                guard let decoded = try? codec.decode(type: type.rawValue, payload: payload) else { return "the payload does not decode" }
                data = decoded
            }
            // An engine record for an account not followed: admitted without tracking it (its
            // state will be loaded from the history, this event included, when it is needed).
            if type.isEngineOnly && !follows(account) { return nil }
            // In place, one lookup: no copy of the account's items and tickets.
            return Checker.admit(type, data, at: at, to: &states[account, default: AccountState(account: account)])
        }

        private static func admit(_ type: EventType, _ data: JSONObject, at: Timestamp, to state: inout AccountState) -> String? {
            if let why = ContractRules.refusal(type, data, after: state) { return why }
            state.apply(type, data: data, at: at)
            return nil
        }

        func forget() { states.removeAll() }

        func forget(_ accounts: Set<String>) { for account in accounts { states.removeValue(forKey: account) } }
    }
}
