#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import LetheJournal

/// The retention policy as data: the windows of EVENTS.md's three purge rules, the windows of
/// the categories the privacy policy leaves open (each record expires on its own), and the
/// processors that receive an erasure request when an account is purged.
///
/// The operator reads, diffs and reviews it as a JSON file (`lethe retention policy` prints the
/// shipped one); an invalid file is refused at start, naming the field at fault.
public struct RetentionPolicy: Sendable, Equatable {
    /// The purge rules, by their contract names (`trash-30d`, `cancellation-30d`, `erasure-request`).
    public static let trash = "trash-30d", cancellation = "cancellation-30d", erasure = "erasure-request"
    public static let purgeRules = [trash, cancellation, erasure]

    /// Raw records of one event type that expire `afterDays` after they happened.
    public struct RecordRule: Sendable, Equatable {
        public var rule: String
        public var type: EventType
        public var category: String
        public var afterDays: Int64
    }

    public struct Processor: Sendable, Equatable {
        public var name: String
        /// The categories it receives; `*` is every category held.
        public var categories: [String]
    }

    /// Days after the start of each purge rule until it is due.
    public var purgeDays: [String: Int64]
    public var records: [RecordRule]
    public var processors: [Processor]

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    /// The shipped policy: what EVENTS.md says.
    public static let standardText = """
        {
          "format": "lethe-retention-policy/1",
          "purges": {
            "trash-30d": {"after_days": 30},
            "cancellation-30d": {"after_days": 30},
            "erasure-request": {"after_days": 0}
          },
          "records": [
            {"rule": "page-views-90d", "type": "PageViewed", "category": "page-views", "after_days": 90},
            {"rule": "surveys-365d", "type": "SurveyAnswered", "category": "surveys", "after_days": 365},
            {"rule": "access-log-400d", "type": "AccountAccessed", "category": "access-log", "after_days": 400}
          ],
          "processors": [
            {"name": "Spark", "categories": ["payments"]},
            {"name": "Amazon Web Services", "categories": ["*"]},
            {"name": "Zendesk", "categories": ["support"]},
            {"name": "VMS", "categories": ["billing", "payments"]}
          ]
        }

        """

    public static let standard = try! RetentionPolicy(json: Array(standardText.utf8), source: "the shipped policy")

    public static let day: Int64 = 86_400

    /// Accounts whose names start with this are the engine's own, never a data subject's.
    public static let engineAccountPrefix = "lethe:"
    /// Where the anonymous daily page-view counts go when raw page views expire: an engine account
    /// of its own, so that the counts are not tied to any data subject (`RecordsExpired` with
    /// `counts`, aggregated over every account whose page views a run expires).
    public static let statisticsAccount = "lethe:statistics"

    /// Seconds from an obligation's start to its due time under `rule`.
    public func window(_ rule: String) -> Int64 { (purgeDays[rule] ?? 0) * RetentionPolicy.day }

    /// The record rule for events of `type`, if that type's records expire.
    public func recordRule(for type: EventType) -> RecordRule? { records.first { $0.type == type } }

    /// Parses and checks a policy file; `source` names it in errors.
    public init(json bytes: [UInt8], source: String) throws {
        func invalid(_ field: String, _ why: String) -> Invalid { Invalid(description: "\(source): \(field): \(why)") }
        let root: JSONObject
        do {
            guard case .object(let o) = try JSONParser.parse(bytes) else { throw invalid("the file", "must be a JSON object") }
            root = o
        } catch let e as JSONSyntaxError {
            throw invalid("the file", e.description)
        }
        func only(_ object: JSONObject, _ keys: Set<String>, at field: String) throws {
            if let extra = object.keys.first(where: { !keys.contains($0) }) { throw invalid(field.isEmpty ? extra : "\(field).\(extra)", "unknown field") }
        }
        func days(_ value: JSONValue?, at field: String) throws -> Int64 {
            guard case .int(let d)? = value, (0...36_500).contains(d) else { throw invalid(field, "must be a whole number of days from 0 to 36500") }
            return d
        }
        func text(_ value: JSONValue?, at field: String) throws -> String {
            guard let s = value?.string, !s.isEmpty else { throw invalid(field, "must be a non-empty string") }
            return s
        }
        try only(root, ["format", "purges", "records", "processors"], at: "")
        guard root["format"]?.string == "lethe-retention-policy/1" else {
            throw invalid("format", "must be \"lethe-retention-policy/1\"")
        }
        guard case .object(let purges)? = root["purges"] else { throw invalid("purges", "must be an object") }
        try only(purges, Set(RetentionPolicy.purgeRules), at: "purges")
        var purgeDays: [String: Int64] = [:]
        for rule in RetentionPolicy.purgeRules {
            guard case .object(let r)? = purges[rule] else { throw invalid("purges.\(rule)", "is missing (the contract's rule)") }
            try only(r, ["after_days"], at: "purges.\(rule)")
            purgeDays[rule] = try days(r["after_days"], at: "purges.\(rule).after_days")
        }
        guard case .array(let records)? = root["records"] else { throw invalid("records", "must be an array") }
        var recordRules: [RecordRule] = []
        for (k, value) in records.enumerated() {
            let at = "records[\(k)]"
            guard case .object(let r) = value else { throw invalid(at, "must be an object") }
            try only(r, ["rule", "type", "category", "after_days"], at: at)
            let typeName = try text(r["type"], at: "\(at).type")
            guard let type = EventType(rawValue: typeName), !type.isEngineOnly else { throw invalid("\(at).type", "\(typeName) is not an event type the service writes") }
            // A record expires by destroying its own key: only the types sealed record by record can.
            guard type.recordChain != nil else {
                let sealed = EventType.allCases.filter { $0.recordChain != nil }.map(\.rawValue).joined(separator: ", ")
                throw invalid("\(at).type", "\(typeName) is not sealed record by record, so its records cannot expire on their own (only \(sealed) can)")
            }
            let rule = RecordRule(
                rule: try text(r["rule"], at: "\(at).rule"), type: type, category: try text(r["category"], at: "\(at).category"),
                afterDays: try days(r["after_days"], at: "\(at).after_days"))
            if recordRules.contains(where: { $0.type == type }) { throw invalid("\(at).type", "\(typeName) already has a rule") }
            if recordRules.contains(where: { $0.rule == rule.rule }) || purgeDays[rule.rule] != nil { throw invalid("\(at).rule", "\(rule.rule) is used twice") }
            recordRules.append(rule)
        }
        guard case .array(let processors)? = root["processors"] else { throw invalid("processors", "must be an array") }
        var list: [Processor] = []
        for (k, value) in processors.enumerated() {
            let at = "processors[\(k)]"
            guard case .object(let p) = value else { throw invalid(at, "must be an object") }
            try only(p, ["name", "categories"], at: at)
            guard case .array(let cs)? = p["categories"], !cs.isEmpty else { throw invalid("\(at).categories", "must be a non-empty array") }
            let categories = try cs.enumerated().map { try text($1, at: "\(at).categories[\($0)]") }
            let name = try text(p["name"], at: "\(at).name")
            if list.contains(where: { $0.name == name }) { throw invalid("\(at).name", "\(name) is named twice") }
            list.append(Processor(name: name, categories: categories))
        }
        self.purgeDays = purgeDays
        self.records = recordRules
        self.processors = list
    }

    /// Reads a policy file.
    public init(path: String) throws {
        guard let data = FileBytes.read(path) else { throw Invalid(description: "\(path): cannot read the policy file") }
        try self.init(json: data, source: path)
    }

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

    /// For each processor, the categories of `held` it received (those that received none are left out).
    public func recipients(of held: Set<String>) -> [(name: String, categories: [String])] {
        processors.compactMap { p in
            let received = p.categories.contains("*") ? held.sorted() : p.categories.filter(held.contains)
            return received.isEmpty ? nil : (p.name, received)
        }
    }
}

/// Reads a whole file (no Foundation in this module's hot paths).
enum FileBytes {
    static func read(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n > 0 { out.append(contentsOf: buffer[0..<n]) }
            if n < buffer.count { return ferror(f) == 0 ? out : nil }
        }
    }
}
