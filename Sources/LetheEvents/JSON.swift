import LetheJournal

/// A JSON value as the contract's events carry it. Objects keep their field order; numbers stay
/// exactly as written: integers that fit 64 bits as `int`, every other number as its text.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    /// A number that is not an integer of 64 bits (a fraction, an exponent, a larger integer),
    /// kept as its text so that nothing is rounded on the way in or out.
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var object: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// The JSON type's name, for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

/// A JSON number as its RFC 8259 text, for every number that is not an integer of 64 bits:
/// `1.000000000000000005`, `1e-999` and `-9223372036854775809` keep every digit, and go out as
/// they came in. Equal when their texts are (`2.5` and `2.50` are two different spellings).
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    /// The number as written; always valid RFC 8259 number syntax.
    public let text: String

    /// `text` when it is an RFC 8259 number (`-`? int frac? exp?), else nil.
    public init?(_ text: String) {
        guard JSONNumber.isValid(Array(text.utf8)) else { return nil }
        self.text = text
    }

    /// The shortest text that reads back as `value`; nil for infinities and NaN, which JSON lacks.
    public init?(_ value: Double) {
        guard value.isFinite else { return nil }
        self.init("\(value)")
    }

    /// What the writer made of a stored double before numbers were kept as text (payload tag 4):
    /// whole numbers below 10^15 as `3.0`, others in Swift's shortest form. Nil if not finite.
    init?(legacy value: Double) {
        guard value.isFinite else { return nil }
        self.init(value == value.rounded() && abs(value) < 1e15 ? "\(Int64(value)).0" : "\(value)")
    }

    /// For the parser, which has checked the syntax already.
    init(checked text: String) { self.text = text }

    public var description: String { text }

    /// The nearest double (rounded, or infinite past its range): for callers that want arithmetic.
    public var doubleValue: Double { Double(text) ?? .nan }

    /// Whether the text is an integer (no fraction, no exponent): one too large for 64 bits.
    public var isInteger: Bool { !text.utf8.contains { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") } }

    /// RFC 8259: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    static func isValid(_ b: [UInt8]) -> Bool {
        var i = 0
        func digits() -> Int {
            let start = i
            while i < b.count, b[i] &- 48 < 10 { i += 1 }
            return i - start
        }
        if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        let n = digits()
        guard n > 0, n == 1 || b[intStart] != UInt8(ascii: "0") else { return false }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { return false }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { return false }
        }
        return i == b.count
    }
}

/// Whether two strings have the same UTF-8 bytes. Object keys are compared this way, as RFC 8259
/// compares names by code units: Swift's `==` would take `"\u{E9}"` (NFC) and `"e\u{301}"` (NFD)
/// for the same name.
///
/// Strings with the same bytes are always `==`, so `==` (a word compare for short ASCII
/// names, the common case) rules out nearly every pair; only equal ones are compared byte by byte.
@inline(__always)
func sameBytes(_ a: String, _ b: String) -> Bool {
    guard a.utf8.count == b.utf8.count, a == b else { return false }
    var (a, b) = (a, b)
    return a.withUTF8 { x in b.withUTF8 { y in utf8Compare(x, y) == 0 } }
}

/// A field name hashed and compared by its UTF-8 bytes (see `sameBytes`), for the parser's set
/// of the names an object has seen.
struct FieldName: Hashable {
    var name: String

    static func == (a: FieldName, b: FieldName) -> Bool { sameBytes(a.name, b.name) }

    func hash(into hasher: inout Hasher) {
        var name = name
        name.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// A JSON object with its fields in their original order (keys are unique, compared by bytes).
public struct JSONObject: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public struct Field: Sendable, Equatable {
        public var key: String
        public var value: JSONValue

        public init(key: String, value: JSONValue) {
            self.key = key
            self.value = value
        }

        /// Keys by their bytes, as everywhere in JSON.
        public static func == (a: Field, b: Field) -> Bool { sameBytes(a.key, b.key) && a.value == b.value }
    }

    public var fields: [Field]

    public init(_ fields: [Field] = []) { self.fields = fields }

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        fields = elements.map { Field(key: $0.0, value: $0.1) }
    }

    /// The field named `key` (compared by bytes). Linear in the fields: for the few named
    /// fields of an event; walk `fields` to visit many.
    public subscript(key: String) -> JSONValue? {
        get { fields.first { sameBytes($0.key, key) }?.value }
        set {
            if let i = fields.firstIndex(where: { sameBytes($0.key, key) }) {
                if let newValue { fields[i].value = newValue } else { fields.remove(at: i) }
            } else if let newValue {
                fields.append(Field(key: key, value: newValue))
            }
        }
    }

    public var keys: [String] { fields.map(\.key) }
    public var isEmpty: Bool { fields.isEmpty }
}

/// A JSON syntax error: what was wrong and at which byte of the line.
public struct JSONSyntaxError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var offset: Int
    public var description: String { "malformed JSON at byte \(offset + 1): \(reason)" }
}

/// A strict RFC 8259 parser over UTF-8 bytes: one value, no duplicate keys (compared by bytes).
///
/// Limits, each refused with an error that names it: nesting at most `maxDepth` (64) arrays and
/// objects deep; at most `maxMembers` (1,048,576) fields in one object or items in one array. A
/// line holds at most 16 MiB (`LineReader.maxLineBytes`), so the member limit only refuses what
/// a line of tiny members (`"":0,` is 5 bytes) could pack; a 16 MiB line of 500,000 keys parses.
///
/// - Complexity: linear in the input: duplicate names are found by a linear search while an
///   object has at most `smallObject` fields, through a set of their bytes past that.
public struct JSONParser {
    public static let maxDepth = 64
    public static let maxMembers = 1 << 20
    /// Up to this many fields, a new name is compared with each one before it (no hashing).
    static let smallObject = 8

    /// How deep and how wide a value may be (the defaults above; tests take smaller ones).
    public struct Limits: Sendable {
        public var depth: Int
        public var members: Int

        public init(depth: Int = JSONParser.maxDepth, members: Int = JSONParser.maxMembers) {
            self.depth = depth
            self.members = members
        }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private let limits: Limits
    private var i = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>, limits: Limits) {
        self.bytes = bytes
        self.limits = limits
    }

    public static func parse(_ data: [UInt8], limits: Limits = Limits()) throws(JSONSyntaxError) -> JSONValue {
        let result: Result<JSONValue, JSONSyntaxError> = data.withUnsafeBytes { raw in
            var p = JSONParser(raw.bindMemory(to: UInt8.self), limits: limits)
            return Result { () throws(JSONSyntaxError) -> JSONValue in
                p.skipSpace()
                let v = try p.value(depth: 0)
                p.skipSpace()
                guard p.i == p.bytes.count else { throw p.fail("unexpected bytes after the value") }
                return v
            }
        }
        return try result.get()
    }

    public static func parse(_ text: String, limits: Limits = Limits()) throws(JSONSyntaxError) -> JSONValue {
        try parse(Array(text.utf8), limits: limits)
    }

    private func fail(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(reason: reason, offset: i) }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    private mutating func literal(_ word: StaticString, _ v: JSONValue) throws(JSONSyntaxError) -> JSONValue {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("truncated literal") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { throw fail("invalid literal") }
        i += n
        return v
    }

    private mutating func value(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        guard i < bytes.count else { throw fail("unexpected end of line") }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            guard depth < limits.depth else { throw fail("nested deeper than \(limits.depth)") }
            i += 1
            var fields: [JSONObject.Field] = []
            /// The names seen, once the object is past `smallObject` fields.
            var names: Set<FieldName> = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
                i += 1
                return .object(JSONObject(fields))
            }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a field name") }
                let key = try string()
                guard fields.count < limits.members else { throw fail("more than \(limits.members) fields in one object") }
                if fields.count < JSONParser.smallObject {
                    if fields.contains(where: { sameBytes($0.key, key) }) { throw fail("duplicate field name") }
                } else {
                    if names.isEmpty { names = Set(fields.map { FieldName(name: $0.key) }) }
                    guard names.insert(FieldName(name: key)).inserted else { throw fail("duplicate field name") }
                }
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                i += 1
                skipSpace()
                let v = try value(depth: depth + 1)
                fields.append(JSONObject.Field(key: key, value: v))
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated object") }
                if bytes[i] == UInt8(ascii: ",") {
                    i += 1
                } else if bytes[i] == UInt8(ascii: "}") {
                    i += 1
                    return .object(JSONObject(fields))
                } else {
                    throw fail("expected ',' or '}'")
                }
            }
        case UInt8(ascii: "["):
            guard depth < limits.depth else { throw fail("nested deeper than \(limits.depth)") }
            i += 1
            var items: [JSONValue] = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
                i += 1
                return .array(items)
            }
            while true {
                skipSpace()
                guard items.count < limits.members else { throw fail("more than \(limits.members) items in one array") }
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated array") }
                if bytes[i] == UInt8(ascii: ",") {
                    i += 1
                } else if bytes[i] == UInt8(ascii: "]") {
                    i += 1
                    return .array(items)
                } else {
                    throw fail("expected ',' or ']'")
                }
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try number()
        default:
            throw fail("unexpected character")
        }
    }

    /// An integer that fits 64 bits as `.int`; any other number as its text (`.number`), never
    /// rounded. `-0` stays as written too: as an integer it would come back as `0`.
    private mutating func number() throws(JSONSyntaxError) -> JSONValue {
        let start = i
        var isInteger = true
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        func digits(_ p: inout JSONParser) -> Int {
            let s = p.i
            while p.i < p.bytes.count, p.bytes[p.i] >= 48, p.bytes[p.i] <= 57 { p.i += 1 }
            return p.i - s
        }
        let intStart = i
        let n = digits(&self)
        guard n > 0 else { throw fail("invalid number") }
        if n > 1 && bytes[intStart] == UInt8(ascii: "0") { throw fail("leading zero in number") }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            isInteger = false
            guard digits(&self) > 0 else { throw fail("invalid number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            isInteger = false
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits(&self) > 0 else { throw fail("invalid number") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        if isInteger, text != "-0", let v = Int64(text) { return .int(v) }
        return .number(JSONNumber(checked: text))
    }

    private mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 97...102: d = UInt32(c - 87)
            case 65...70: d = UInt32(c - 55)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    /// A string from UTF-8 bytes, refusing invalid UTF-8 (ASCII, the common case, needs no validation).
    private func makeString(_ bytes: UnsafeBufferPointer<UInt8>, ascii: Bool) throws(JSONSyntaxError) -> String {
        if ascii { return String(decoding: bytes, as: UTF8.self) }
        guard let s = String(validating: bytes, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    private mutating func string() throws(JSONSyntaxError) -> String {
        i += 1  // opening quote
        let start = i
        // Fast path: no escapes.
        var high: UInt8 = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<i])
                i += 1
                return try makeString(slice, ascii: high < 0x80)
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw fail("control character in string") }
            high |= c
            i += 1
        }
        var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[start..<i]))
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                let made = out.withUnsafeBufferPointer { buffer in Result { () throws(JSONSyntaxError) in try makeString(buffer, ascii: false) } }
                return try made.get()
            case UInt8(ascii: "\\"):
                i += 1
                guard i < bytes.count else { throw fail("unterminated string") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard i + 2 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("unpaired surrogate in \\u escape")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate in \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw fail("unpaired surrogate in \\u escape")
                    }
                    out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
                default:
                    throw fail("invalid escape")
                }
            default:
                if c < 0x20 { throw fail("control character in string") }
                out.append(c)
                i += 1
            }
        }
        throw fail("unterminated string")
    }
}

/// Compact JSON output (no spaces), appended to a byte buffer.
public struct JSONWriter {
    public var bytes: [UInt8] = []

    public init() {}

    public mutating func write(_ v: JSONValue) {
        switch v {
        case .null: bytes.append(contentsOf: "null".utf8)
        case .bool(let b): bytes.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let n): write(int: n)
        case .number(let n): bytes.append(contentsOf: n.text.utf8)
        case .string(let s): write(string: s)
        case .array(let items):
            bytes.append(UInt8(ascii: "["))
            for (k, item) in items.enumerated() {
                if k > 0 { bytes.append(UInt8(ascii: ",")) }
                write(item)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let o): write(o)
        }
    }

    public mutating func write(_ o: JSONObject) {
        bytes.append(UInt8(ascii: "{"))
        for (k, f) in o.fields.enumerated() {
            if k > 0 { bytes.append(UInt8(ascii: ",")) }
            write(string: f.key)
            bytes.append(UInt8(ascii: ":"))
            write(f.value)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    private static let hex = Array("0123456789abcdef".utf8)

    /// An integer in decimal, without making a `String` of it.
    public mutating func write(int n: Int64) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            // The magnitude as unsigned: `Int64.min` has none as Int64.
            var m = n.magnitude
            var k = 20
            repeat {
                k -= 1
                digits[k] = UInt8(48 + m % 10)
                m /= 10
            } while m > 0
            if n < 0 { bytes.append(UInt8(ascii: "-")) }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[k...]))
        }
    }

    public mutating func write(string s: String) {
        var s = s
        s.withUTF8 { write(validUTF8: $0) }
    }

    /// Writes `utf8` as a JSON string, or returns false (writing nothing) when it is not UTF-8.
    ///
    /// For a payload's strings on export: no `String` is made (`isUTF8` checks them).
    public mutating func write(utf8: ArraySlice<UInt8>) -> Bool {
        utf8.withUnsafeBufferPointer { utf8 in
            guard isUTF8(utf8) else { return false }
            write(validUTF8: utf8)
            return true
        }
    }

    private mutating func write(validUTF8 utf8: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        // Most strings need no escaping: copy them whole.
        var plain = true
        for c in utf8 where c < 0x20 || c == 0x22 || c == 0x5C {
            plain = false
            break
        }
        if plain {
            bytes.append(contentsOf: utf8)
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for c in utf8 {
            switch c {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20:
                bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, JSONWriter.hex[Int(c >> 4)], JSONWriter.hex[Int(c & 15)]])
            default: bytes.append(c)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Writes `"key":` (with a leading comma unless `first`).
    public mutating func key(_ k: String, first: Bool = false) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        write(string: k)
        bytes.append(UInt8(ascii: ":"))
    }
}

extension JSONValue {
    /// Compact JSON text.
    public var jsonText: String {
        var w = JSONWriter()
        w.write(self)
        return String(decoding: w.bytes, as: UTF8.self)
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }
}
