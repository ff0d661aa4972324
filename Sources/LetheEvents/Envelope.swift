import LetheJournal

/// One event in the contract's interchange shape: `{"id","type","account","at","data"}`.
public struct Envelope: Sendable, Equatable {
    public var id: String?
    public var type: EventType
    public var account: String
    public var at: Timestamp
    public var data: JSONObject
    /// The free-text fields (`data.body`, `data.answers.why`) in which a card number was masked
    /// before anything was stored, in their order in the event; empty for most events.
    public var masked: [String]

    public init(id: String? = nil, type: EventType, account: String, at: Timestamp, data: JSONObject, masked: [String] = []) {
        self.id = id
        self.type = type
        self.account = account
        self.at = at
        self.data = data
        self.masked = masked
    }
}

/// Why an event was refused: the field at fault (if one is) and the reason, never the value.
public struct Rejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String?
    public var reason: String

    public init(field: String? = nil, _ reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { field.map { "field \($0): \(reason)" } ?? reason }
}

/// Checks an incoming event on its own: its shape, JSON types, id, account, time and type, card
/// numbers (masked in free text, refused anywhere else), and its `data` against its type's
/// schema (`DataSchema`). Rules that need the account's history are not checked here.
///
/// The importer and the typed Swift API (`Journal.record`) both go through `validate`, so they
/// accept, mask and refuse the same events.
public enum EnvelopeValidator {
    static let topLevelFields = ["id", "type", "account", "at", "data", "seq"]

    /// The fields of each type that hold free text (EVENTS.md, "Card numbers"): a card number in
    /// their strings (at any depth, for a survey's answers) is masked; anywhere else it is refused.
    public static let freeTextFields: [EventType: [String]] = [
        .supportMessageReceived: ["body", "subject"],
        .surveyAnswered: ["answers"],
        .itemCreated: ["label", "content"],
        .accountCancelled: ["reason"],
    ]

    /// Whether `s` holds a control character (U+0000 to U+001F, U+007F to U+009F): refused in
    /// ids, accounts and types, which are stored and shown as they are.
    public static func hasControlCharacter(_ s: String) -> Bool { Journal.hasControlCharacter(s) }

    /// `[A-Za-z0-9_.:-]{1,64}`
    public static func isValidAccount(_ s: String) -> Bool {
        let u = s.utf8
        guard (1...64).contains(u.count) else { return false }
        return u.allSatisfy { c in
            (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
                || c == 0x5F || c == 0x2E || c == 0x3A || c == 0x2D
        }
    }

    /// A name safe to repeat in a message (letters, and the `extra` characters; short), else "(not shown)".
    static func printable(_ s: String, allowing extra: String = "") -> String {
        let ok = s.utf8.count <= 64 && s.utf8.allSatisfy {
            ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || extra.utf8.contains($0)
        }
        return ok ? "\"\(s)\"" : "(not shown)"
    }

    /// Parses and checks one NDJSON line.
    public static func parse(line: [UInt8]) -> Result<Envelope, Rejection> {
        let value: JSONValue
        do {
            value = try JSONParser.parse(line)
        } catch {
            return .failure(Rejection(error.description))
        }
        return validate(value)
    }

    public static func validate(_ value: JSONValue) -> Result<Envelope, Rejection> {
        guard case .object(let o) = value else { return .failure(Rejection("an event must be a JSON object, not \(value.typeName)")) }
        for k in o.keys where !topLevelFields.contains(where: { sameBytes($0, k) }) {
            return .failure(Rejection("unknown field \(printable(k)) in the event"))
        }
        let controlCharacters = "must not hold control characters (U+0000 to U+001F, U+007F to U+009F)"
        var id: String?
        if let v = o["id"] {
            guard case .string(let s) = v else { return .failure(Rejection(field: "id", "must be a string, not \(v.typeName)")) }
            guard (1...256).contains(s.utf8.count) else { return .failure(Rejection(field: "id", "must be 1 to 256 characters")) }
            guard !hasControlCharacter(s) else { return .failure(Rejection(field: "id", controlCharacters)) }
            guard !CardNumbers.contains(s) else { return .failure(Rejection(field: "id", "holds what looks like a full card number")) }
            id = s
        }
        guard let typeValue = o["type"] else { return .failure(Rejection(field: "type", "missing")) }
        guard case .string(let typeName) = typeValue else { return .failure(Rejection(field: "type", "must be a string, not \(typeValue.typeName)")) }
        guard !hasControlCharacter(typeName) else { return .failure(Rejection(field: "type", controlCharacters)) }
        guard let type = EventType(rawValue: typeName) else { return .failure(Rejection(field: "type", "unknown type \(printable(typeName))")) }
        guard !type.isEngineOnly else { return .failure(Rejection(field: "type", "\(typeName) is written by the engine only")) }
        guard let accountValue = o["account"] else { return .failure(Rejection(field: "account", "missing")) }
        guard case .string(let account) = accountValue else { return .failure(Rejection(field: "account", "must be a string, not \(accountValue.typeName)")) }
        guard !hasControlCharacter(account) else { return .failure(Rejection(field: "account", controlCharacters)) }
        guard isValidAccount(account) else { return .failure(Rejection(field: "account", "must match [A-Za-z0-9_.:-]{1,64}")) }
        guard !CardNumbers.contains(account) else { return .failure(Rejection(field: "account", "holds what looks like a full card number")) }
        guard !account.utf8.starts(with: RetentionPolicy.engineAccountPrefix.utf8) else {
            return .failure(Rejection(field: "account", "names starting with \(RetentionPolicy.engineAccountPrefix) are the engine's own"))
        }
        guard let atValue = o["at"] else { return .failure(Rejection(field: "at", "missing")) }
        guard case .string(let atText) = atValue else { return .failure(Rejection(field: "at", "must be a string, not \(atValue.typeName)")) }
        guard let at = Timestamp(rfc3339: atText) else {
            return .failure(Rejection(field: "at", "must be RFC 3339 in UTC, like 2026-01-05T10:00:00Z"))
        }
        guard let dataValue = o["data"] else { return .failure(Rejection(field: "data", "missing")) }
        guard case .object(var data) = dataValue else { return .failure(Rejection(field: "data", "must be an object, not \(dataValue.typeName)")) }
        var masked: [String] = []
        do {
            data = try screenCardNumbers(data, of: type, masked: &masked)
        } catch {
            return .failure(error.rejection)
        }
        if let problem = DataSchema.check(type, data) { return .failure(problem) }
        return .success(Envelope(id: id, type: type, account: account, at: at, data: data, masked: masked))
    }

    /// `data` with the card numbers of its free-text fields masked (their paths added to
    /// `masked`); a card number anywhere else throws. Not copied when nothing is masked.
    static func screenCardNumbers(_ data: JSONObject, of type: EventType, masked: inout [String]) throws(CardNumberFound) -> JSONObject {
        let freeText = freeTextFields[type] ?? []
        var out = data
        var path = FieldPath(root: "data")
        for (k, f) in data.fields.enumerated() {
            if CardNumbers.contains(f.key) { throw CardNumberFound(path: "data", inName: true) }
            path.steps.removeAll(keepingCapacity: true)
            path.steps.append(.field(f.key, position: k + 1))
            let isFreeText = freeText.contains { sameBytes($0, f.key) }
            if let new = try CardNumbers.screen(f.value, freeText: isFreeText, at: &path, masked: &masked) {
                out.fields[k].value = new
            }
        }
        return out
    }
}
