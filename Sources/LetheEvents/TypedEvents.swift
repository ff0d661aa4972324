import Foundation
import LetheJournal

/// An event's `data`, typed: the account service gets compile-time help instead of dictionaries.
/// Each type's stored properties are the fields of EVENTS.md (snake_case on the wire).
public protocol TypedEvent: Codable, Sendable, Equatable {
    static var type: EventType { get }
}

extension TypedEvent {
    /// The `data` object as the contract writes it.
    public var data: JSONObject {
        // Codable gives every type its coding for free; the contract's strict parser then reads it.
        // Sorted keys: the same event always gives the same bytes.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = (try? encoder.encode(self)).map { [UInt8]($0) } ?? Array("{}".utf8)
        return (try? JSONParser.parse(bytes))?.object ?? [:]
    }

    /// The typed value of a `data` object; nil when it does not have this type's shape.
    public init?(data: JSONObject) {
        guard let value = try? JSONDecoder().decode(Self.self, from: Data(JSONValue.object(data).jsonText.utf8)) else { return nil }
        self = value
    }
}

public enum Events {
    public struct AccountSignedUp: TypedEvent {
        public static let type = EventType.accountSignedUp
        public var name: String
        public var email: String
        public var company: String?
        public init(name: String, email: String, company: String? = nil) { (self.name, self.email, self.company) = (name, email, company) }
    }

    public struct ProfileUpdated: TypedEvent {
        public static let type = EventType.profileUpdated
        public var name: String?
        public var company: String?
        public var email: String?
        public init(name: String? = nil, company: String? = nil, email: String? = nil) { (self.name, self.company, self.email) = (name, company, email) }
    }

    public struct BillingAddressSet: TypedEvent {
        public static let type = EventType.billingAddressSet
        public var line1: String
        public var line2: String?
        public var city: String
        public var region: String?
        public var postcode: String?
        /// ISO 3166-1 alpha-2.
        public var country: String
        public init(line1: String, line2: String? = nil, city: String, region: String? = nil, postcode: String? = nil, country: String) {
            (self.line1, self.line2, self.city, self.region, self.postcode, self.country) = (line1, line2, city, region, postcode, country)
        }
    }

    public struct PaymentRecorded: TypedEvent {
        public static let type = EventType.paymentRecorded
        public var transaction: String
        public var amountMinor: Int64
        /// ISO 4217.
        public var currency: String
        /// Exactly the last four digits: the full number is never stored.
        public var cardLast4: String
        public var processor: String?
        enum CodingKeys: String, CodingKey {
            case transaction, currency, processor
            case amountMinor = "amount_minor", cardLast4 = "card_last4"
        }
        public init(transaction: String, amountMinor: Int64, currency: String, cardLast4: String, processor: String? = nil) {
            (self.transaction, self.amountMinor, self.currency, self.cardLast4, self.processor) = (transaction, amountMinor, currency, cardLast4, processor)
        }
    }

    public struct SupportMessageReceived: TypedEvent {
        public static let type = EventType.supportMessageReceived
        public var ticket: String
        public var fromEmail: String
        public var body: String
        public var subject: String?
        enum CodingKeys: String, CodingKey {
            case ticket, body, subject
            case fromEmail = "from_email"
        }
        public init(ticket: String, fromEmail: String, body: String, subject: String? = nil) {
            (self.ticket, self.fromEmail, self.body, self.subject) = (ticket, fromEmail, body, subject)
        }
    }

    public struct PageViewed: TypedEvent {
        public static let type = EventType.pageViewed
        public var path: String
        public var visitor: String
        public var referrer: String?
        public init(path: String, visitor: String, referrer: String? = nil) { (self.path, self.visitor, self.referrer) = (path, visitor, referrer) }
    }

    public struct SurveyAnswered: TypedEvent {
        public static let type = EventType.surveyAnswered
        public var survey: String
        public var answers: [String: SurveyAnswer]
        public init(survey: String, answers: [String: SurveyAnswer]) { (self.survey, self.answers) = (survey, answers) }
    }

    /// One answer of a survey: text, a number or a yes/no.
    public enum SurveyAnswer: Codable, Sendable, Equatable {
        case text(String)
        case number(Double)
        case flag(Bool)

        public init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { self = .flag(b) } else if let n = try? c.decode(Double.self) { self = .number(n) } else { self = .text(try c.decode(String.self)) }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .text(let s): try c.encode(s)
            case .number(let n): try c.encode(n)
            case .flag(let b): try c.encode(b)
            }
        }
    }

    public struct AccountAccessed: TypedEvent {
        public static let type = EventType.accountAccessed
        public var actor: String
        /// IPv4 or IPv6.
        public var ip: String
        public var reason: String
        public var ticket: String?
        public init(actor: String, ip: String, reason: String, ticket: String? = nil) { (self.actor, self.ip, self.reason, self.ticket) = (actor, ip, reason, ticket) }
    }

    public struct ItemCreated: TypedEvent {
        public static let type = EventType.itemCreated
        public var item: String
        public var kind: String
        public var label: String?
        public var content: String?
        public init(item: String, kind: String, label: String? = nil, content: String? = nil) { (self.item, self.kind, self.label, self.content) = (item, kind, label, content) }
    }

    public struct ItemDeleted: TypedEvent {
        public static let type = EventType.itemDeleted
        public var item: String
        public init(item: String) { self.item = item }
    }

    public struct ItemRestored: TypedEvent {
        public static let type = EventType.itemRestored
        public var item: String
        public init(item: String) { self.item = item }
    }

    public struct AccountCancelled: TypedEvent {
        public static let type = EventType.accountCancelled
        public var reason: String?
        public init(reason: String? = nil) { self.reason = reason }
    }

    public struct AccountReactivated: TypedEvent {
        public static let type = EventType.accountReactivated
        public init() {}
    }

    public struct ErasureRequested: TypedEvent {
        public static let type = EventType.erasureRequested
        public var channel: String?
        public init(channel: String? = nil) { self.channel = channel }
    }

    public struct ConsentGranted: TypedEvent {
        public static let type = EventType.consentGranted
        public var purpose: String
        public init(purpose: String) { self.purpose = purpose }
    }

    public struct ConsentRevoked: TypedEvent {
        public static let type = EventType.consentRevoked
        public var purpose: String
        public init(purpose: String) { self.purpose = purpose }
    }

    public struct DataShared: TypedEvent {
        public enum Basis: String, Codable, Sendable { case consent, legal, merger }
        public static let type = EventType.dataShared
        public var recipient: String
        public var basis: Basis
        public var categories: [String]
        public init(recipient: String, basis: Basis, categories: [String]) { (self.recipient, self.basis, self.categories) = (recipient, basis, categories) }
    }

    public struct NoticeSent: TypedEvent {
        public enum Topic: String, Codable, Sendable {
            case policyChange = "policy-change"
            case merger
        }
        public static let type = EventType.noticeSent
        public var topic: Topic
        public var version: String?
        public init(topic: Topic, version: String? = nil) { (self.topic, self.version) = (topic, version) }
    }

    public struct LegalHoldPlaced: TypedEvent {
        public static let type = EventType.legalHoldPlaced
        public var `case`: String
        public var reason: String
        public init(case id: String, reason: String) { (self.case, self.reason) = (id, reason) }
    }

    public struct LegalHoldReleased: TypedEvent {
        public static let type = EventType.legalHoldReleased
        public var `case`: String
        public init(case id: String) { self.case = id }
    }
}

extension Journal {
    /// Records one typed event for `account`, checked like an imported line (envelope, card
    /// numbers, the type's schema; engine-only types refused) and then by the journal's rules.
    ///
    /// As on import, a card number in free text (a message's body, a survey's answers, ...) is
    /// masked before anything is stored, and `onMasked` gets the path of each such field
    /// (`data.body`); a card number anywhere else refuses the event.
    @discardableResult
    public func record<E: TypedEvent>(
        _ event: E, account: String, at: Timestamp, id: String? = nil, expectedVersion: Int64? = nil,
        codec: PayloadCodec = .standard, onMasked: (String) -> Void = { _ in }
    ) throws -> EventHeader {
        var object: JSONObject = ["type": .string(E.type.rawValue), "account": .string(account), "at": .string(at.rfc3339), "data": .object(event.data)]
        if let id { object["id"] = .string(id) }
        switch EnvelopeValidator.validate(.object(object)) {
        case .failure(let rejection):
            throw JournalError(.invalidEvent, rejection.description)
        case .success(let envelope):
            let header = try append(NewEvent(E.type, account: account, at: at, data: envelope.data, id: id, expectedVersion: expectedVersion, codec: codec))
            for field in envelope.masked { onMasked(field) }
            return header
        }
    }

    /// `record(_:account:at:id:expectedVersion:codec:onMasked:)` for async callers, on a thread
    /// of `BlockingPool.shared`.
    @discardableResult
    public func record<E: TypedEvent>(
        _ event: E, account: String, at: Timestamp, id: String? = nil, expectedVersion: Int64? = nil,
        codec: PayloadCodec = .standard, onMasked: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> EventHeader {
        try await run { try $0.record(event, account: account, at: at, id: id, expectedVersion: expectedVersion, codec: codec, onMasked: onMasked) }
    }
}
