import LetheJournal

/// The event types of the contract (EVENTS.md): written by the account service, or by the engine only.
public enum EventType: String, CaseIterable, Sendable {
    case accountSignedUp = "AccountSignedUp"
    case profileUpdated = "ProfileUpdated"
    case billingAddressSet = "BillingAddressSet"
    case paymentRecorded = "PaymentRecorded"
    case supportMessageReceived = "SupportMessageReceived"
    case pageViewed = "PageViewed"
    case surveyAnswered = "SurveyAnswered"
    case accountAccessed = "AccountAccessed"
    case itemCreated = "ItemCreated"
    case itemDeleted = "ItemDeleted"
    case itemRestored = "ItemRestored"
    case accountCancelled = "AccountCancelled"
    case accountReactivated = "AccountReactivated"
    case erasureRequested = "ErasureRequested"
    case consentGranted = "ConsentGranted"
    case consentRevoked = "ConsentRevoked"
    case dataShared = "DataShared"
    case noticeSent = "NoticeSent"
    case legalHoldPlaced = "LegalHoldPlaced"
    case legalHoldReleased = "LegalHoldReleased"
    // Written by the engine only.
    case itemPurged = "ItemPurged"
    case accountPurged = "AccountPurged"
    case recordsExpired = "RecordsExpired"
    case processorErasureRequested = "ProcessorErasureRequested"

    /// Types that only the engine writes; importing one from outside is refused.
    public var isEngineOnly: Bool {
        switch self {
        case .itemPurged, .accountPurged, .recordsExpired, .processorErasureRequested: true
        default: false
        }
    }

    /// The record chain whose keys seal events of this type one by one, for the types whose
    /// records expire on their own windows (the policy's record rules): expiring the oldest
    /// records destroys exactly their keys.
    public var recordChain: String? {
        switch self {
        case .pageViewed: "page-views"
        case .surveyAnswered: "surveys"
        case .accountAccessed: "access-log"
        default: nil
        }
    }


    /// The record chains that outlive an account's purge: the staff access log is the company's
    /// record of who looked at the account (with its own window), not the subject's data.
    public static let chainsOutlivingAccount: Set<String> = ["access-log"]

    /// The key that seals an event of this type. Keys are the unit of erasure:
    ///
    /// - an item's own data (`ItemCreated`) under a key of its own, destroyed by `ItemPurged`;
    /// - each record of a category that expires on its own (page views, survey answers, staff
    ///   accesses) under its own key from the account's chain for that category, destroyed as
    ///   the records expire, oldest first;
    /// - the rest of the subject's data under the account's key, destroyed by `AccountPurged`;
    /// - the company's own records about the account under the journal's engine key, never
    ///   destroyed: the engine's purge events, legal holds (proof that no purge ran while a case
    ///   was open), and the trash's moves (`ItemDeleted`, `ItemRestored`: an item id and nothing
    ///   else, as in the engine's own `ItemPurged`).
    public var keyScope: KeyScope {
        if let chain = recordChain { return .records(chain) }
        switch self {
        case .itemCreated: return .own
        case .legalHoldPlaced, .legalHoldReleased, .itemDeleted, .itemRestored: return .journal
        default: return isEngineOnly ? .journal : .account
        }
    }

    /// The current schema version of the type's `data`; stored with every payload so that older
    /// payloads can be upcast when the type changes.
    public var schemaVersion: Int { 1 }
}

extension NewEvent {
    /// An event of the contract's `type`, its `data` encoded by `codec` and sealed under the key
    /// its type and data call for (`EventType.keyScope`).
    public init(
        _ type: EventType, account: String, at: Timestamp, data: JSONObject, id: String? = nil, expectedVersion: Int64? = nil,
        codec: PayloadCodec = .standard
    ) {
        self.init(
            id: id, account: account, type: type.rawValue, at: at, payload: codec.encode(type: type.rawValue, data: data),
            expectedVersion: expectedVersion, scope: type.keyScope)
    }
}
