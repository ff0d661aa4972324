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

    /// The key that seals the type's data. The data subject's own data is sealed under the
    /// account's key, which an account purge destroys. The company's own records about the
    /// account are sealed under the journal's engine key and outlive it: the engine's purge
    /// events, the staff access log (with its own window in the policy), legal holds (proof that
    /// no purge ran while a case was open), and the trash's moves (`ItemDeleted`, `ItemRestored`:
    /// an item id and nothing else, as in the engine's own `ItemPurged`). So an auditor can still
    /// see that data existed, when and why it was purged, and who had looked at it.
    public var scope: SealScope {
        switch self {
        case .accountAccessed, .legalHoldPlaced, .legalHoldReleased, .itemDeleted, .itemRestored: .journal
        default: isEngineOnly ? .journal : .subject
        }
    }

    /// The current schema version of the type's `data`; stored with every payload so that older
    /// payloads can be upcast when the type changes.
    public var schemaVersion: Int { 1 }
}
