import LetheJournal

/// The compact binary coding of an event's `data`, as sealed into the journal, and the upcasters
/// that bring older schema versions of a type up to the current one.
///
/// Layout: `0x20 + schema-version:u8  fields`, the payload's object without its tag (format 2,
/// for schema versions below 32), or `format:u8 (=1)  schema-version:varint  value` (format 1,
/// still read, and written for later versions), where a value is a tag byte and its
/// body: 0 null, 1 false, 2 true, 3 integer (zig-zag varint), 4 double (8 bytes, little-endian;
/// written before numbers were kept as text, still read), 5 string (varint length, UTF-8),
/// 0x80 + n a string of n < 128 bytes (UTF-8 follows), 6 array (count, values), 7 object
/// (its fields: count, then per field a key reference and a value), 8 a number that is not a 64-bit integer,
/// as its JSON text (varint length, ASCII), so that it reads back exactly as it was written. A key reference is `k > 0` for entry `k - 1` of `PayloadCodec.keys`
/// (append-only: never reorder it) or `0` followed by the key as a string.
public struct PayloadCodec: Sendable {
    public static let format: UInt8 = 1
    /// The first byte of a format-2 payload, plus its schema version.
    static let shortHeader: UInt8 = 0x20

    /// Field names of the contract, coded as one byte each. Append only.
    static let keys: [String] = [
        "name", "email", "company", "line1", "line2", "city", "region", "postcode", "country",
        "transaction", "amount_minor", "currency", "card_last4", "processor", "ticket", "from_email",
        "body", "subject", "path", "visitor", "referrer", "survey", "answers", "actor", "ip", "reason",
        "item", "kind", "label", "content", "channel", "purpose", "recipient", "basis", "categories",
        "topic", "version", "case", "rule", "category",
    ]
    static let keyIndex: [String: Int] = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })

    /// Brings `data` of `type` from schema `version` to `version + 1`.
    public typealias Upcaster = @Sendable (_ data: JSONObject) throws -> JSONObject

    /// Current schema version per type; types not listed are at version 1.
    public var currentVersions: [String: Int]
    /// Upcasters by type and the version they start from.
    public var upcasters: [String: [Int: Upcaster]]

    public init(currentVersions: [String: Int] = [:], upcasters: [String: [Int: Upcaster]] = [:]) {
        self.currentVersions = currentVersions
        self.upcasters = upcasters
    }

    /// The codec for the contract's types as this build knows them.
    public static let standard = PayloadCodec(
        currentVersions: Dictionary(uniqueKeysWithValues: EventType.allCases.map { ($0.rawValue, $0.schemaVersion) }))

    public func currentVersion(of type: String) -> Int { currentVersions[type] ?? 1 }

    public struct DecodingError: Error, CustomStringConvertible {
        public var description: String
    }

    public func encode(type: String, data: JSONObject) -> [UInt8] {
        var w = BinaryWriter(capacity: 64)
        let version = currentVersion(of: type)
        if version < 32 {
            w.u8(PayloadCodec.shortHeader | UInt8(version))
            PayloadCodec.writeFields(data, to: &w)
        } else {
            w.u8(PayloadCodec.format)
            w.varint(version)
            PayloadCodec.write(.object(data), to: &w)
        }
        return w.bytes
    }

    /// Decodes a payload and upcasts it to the type's current schema version.
    public func decode(type: String, payload: [UInt8]) throws -> JSONObject {
        var r = BinaryReader(payload)
        do {
            let format = try r.u8()
            var version: Int
            var data: JSONObject
            switch format {
            case PayloadCodec.format:
                version = try r.count(limit: 1 << 20)
                guard case .object(let object) = try PayloadCodec.read(&r, depth: 0) else {
                    throw DecodingError(description: "payload is not an object")
                }
                data = object
            case PayloadCodec.shortHeader..<(PayloadCodec.shortHeader + 32):
                version = Int(format - PayloadCodec.shortHeader)
                data = try PayloadCodec.readFields(&r, depth: 0)
            default:
                throw DecodingError(description: "unknown payload format \(format)")
            }
            guard r.isAtEnd else { throw DecodingError(description: "bytes after the payload") }
            let current = currentVersion(of: type)
            guard version <= current else {
                throw DecodingError(description: "\(type) payload has schema version \(version); this build knows up to \(current)")
            }
            while version < current {
                guard let up = upcasters[type]?[version] else {
                    throw DecodingError(description: "no upcaster for \(type) from schema version \(version)")
                }
                data = try up(data)
                version += 1
            }
            return data
        } catch let e as DecodingError {
            throw e
        } catch {
            throw DecodingError(description: "damaged payload")
        }
    }

    /// Writes a payload's `data` as JSON text: the same bytes as `decode` and then
    /// `JSONWriter.write`, without building the value in between (what `lethe export` does for
    /// every event). A payload at an older schema version, or one that does not decode, goes
    /// through `decode`, its upcasters and its errors.
    public func writeJSON(type: String, payload: [UInt8], into w: inout JSONWriter) throws {
        let start = w.bytes.count
        var r = BinaryReader(payload)
        let version = currentVersion(of: type)
        do {
            let first = try r.u8()
            if first == PayloadCodec.shortHeader + UInt8(truncatingIfNeeded: version), version < 32 {
                try PayloadCodec.transcodeFields(&r, depth: 0, into: &w)
                if r.isAtEnd { return }
            } else if first == PayloadCodec.format, try r.count(limit: 1 << 20) == version,
               r.remaining > 0, payload[payload.count - r.remaining] == 7 {
                try PayloadCodec.transcode(&r, depth: 0, into: &w)
                if r.isAtEnd { return }
            }
        } catch {}
        w.bytes.removeSubrange(start...)
        w.write(try decode(type: type, payload: payload))
    }

    /// Field names as JSON text with their colon (`"name":`), by key reference.
    private static let keysJSON: [[UInt8]] = keys.map { key in
        var w = JSONWriter()
        w.key(key, first: true)
        return w.bytes
    }

    /// One value, read as `read` reads it and written as `JSONWriter.write` writes it.
    private static func transcode(_ r: inout BinaryReader, depth: Int, into w: inout JSONWriter) throws {
        guard depth <= JSONParser.maxDepth else { throw DecodingError(description: "payload nested too deep") }
        func string(_ bytes: ArraySlice<UInt8>) throws {
            guard w.write(utf8: bytes) else { throw DecodingError(description: "string is not UTF-8") }
        }
        switch try r.u8() {
        case 0: w.bytes.append(contentsOf: "null".utf8)
        case 1: w.bytes.append(contentsOf: "false".utf8)
        case 2: w.bytes.append(contentsOf: "true".utf8)
        case 3: w.write(.int(try r.zigzag()))
        case 4:
            guard let n = JSONNumber(legacy: Double(bitPattern: try r.u64())) else { throw DecodingError(description: "payload holds a non-finite number") }
            w.write(.number(n))
        case 5: try string(try r.bytes(try r.count(limit: r.remaining)))
        case 6:
            let n = try r.count(limit: r.remaining)
            w.bytes.append(UInt8(ascii: "["))
            for k in 0..<n {
                if k > 0 { w.bytes.append(UInt8(ascii: ",")) }
                try transcode(&r, depth: depth + 1, into: &w)
            }
            w.bytes.append(UInt8(ascii: "]"))
        case 7: try transcodeFields(&r, depth: depth, into: &w)
        case 8:
            guard let n = JSONNumber(try r.string()) else { throw DecodingError(description: "a number that is not valid JSON") }
            w.write(.number(n))
        case let tag where tag >= 0x80:
            try string(try r.bytes(Int(tag & 0x7F)))
        case let tag:
            throw DecodingError(description: "unknown value tag \(tag)")
        }
    }

    /// An object's fields (after its tag 7), as `transcode` writes a value.
    private static func transcodeFields(_ r: inout BinaryReader, depth: Int, into w: inout JSONWriter) throws {
        guard depth <= JSONParser.maxDepth else { throw DecodingError(description: "payload nested too deep") }
        let n = try r.count(limit: r.remaining / 2)
        w.bytes.append(UInt8(ascii: "{"))
        for k in 0..<n {
            if k > 0 { w.bytes.append(UInt8(ascii: ",")) }
            let key = try r.count(limit: keys.count)
            if key == 0 {
                guard w.write(utf8: try r.bytes(try r.count(limit: r.remaining))) else { throw DecodingError(description: "string is not UTF-8") }
                w.bytes.append(UInt8(ascii: ":"))
            } else {
                w.bytes.append(contentsOf: keysJSON[key - 1])
            }
            try transcode(&r, depth: depth + 1, into: &w)
        }
        w.bytes.append(UInt8(ascii: "}"))
    }

    static func write(_ v: JSONValue, to w: inout BinaryWriter) {
        switch v {
        case .null: w.u8(0)
        case .bool(let b): w.u8(b ? 2 : 1)
        case .int(let n):
            w.u8(3)
            w.zigzag(n)
        case .number(let n):
            w.u8(8)
            w.string(n.text)
        case .string(let s):
            let n = s.utf8.count
            if n < 128 {
                w.u8(0x80 | UInt8(n))  // short strings: tag and length in one byte
                w.utf8(s)
            } else {
                w.u8(5)
                w.string(s)
            }
        case .array(let items):
            w.u8(6)
            w.varint(items.count)
            for item in items { write(item, to: &w) }
        case .object(let o):
            w.u8(7)
            writeFields(o, to: &w)
        }
    }

    /// An object's fields, without its tag: count, then per field a key reference and a value.
    static func writeFields(_ o: JSONObject, to w: inout BinaryWriter) {
        w.varint(o.fields.count)
        for f in o.fields {
            if let k = keyIndex[f.key] {
                w.varint(k + 1)
            } else {
                w.varint(0)
                w.string(f.key)
            }
            write(f.value, to: &w)
        }
    }

    static func readFields(_ r: inout BinaryReader, depth: Int) throws -> JSONObject {
        guard depth <= JSONParser.maxDepth else { throw DecodingError(description: "payload nested too deep") }
        let n = try r.count(limit: r.remaining / 2)
        var fields: [JSONObject.Field] = []
        for _ in 0..<n {
            let k = try r.count(limit: keys.count)
            let key = k == 0 ? try r.string() : keys[k - 1]
            fields.append(JSONObject.Field(key: key, value: try read(&r, depth: depth + 1)))
        }
        return JSONObject(fields)
    }

    static func read(_ r: inout BinaryReader, depth: Int) throws -> JSONValue {
        guard depth <= JSONParser.maxDepth else { throw DecodingError(description: "payload nested too deep") }
        switch try r.u8() {
        case 0: return .null
        case 1: return .bool(false)
        case 2: return .bool(true)
        case 3: return .int(try r.zigzag())
        case 4:
            // The encoder writes only what JSON holds: a non-finite number is damage.
            guard let n = JSONNumber(legacy: Double(bitPattern: try r.u64())) else { throw DecodingError(description: "payload holds a non-finite number") }
            return .number(n)
        case 5: return .string(try r.string())
        case 6:
            // Each value takes at least a byte: a count beyond the bytes left is damage, and
            // nothing is reserved for a count before its values are read.
            let n = try r.count(limit: r.remaining)
            var items: [JSONValue] = []
            for _ in 0..<n { items.append(try read(&r, depth: depth + 1)) }
            return .array(items)
        case 7: return .object(try readFields(&r, depth: depth))
        case 8:
            guard let n = JSONNumber(try r.string()) else { throw DecodingError(description: "a number that is not valid JSON") }
            return .number(n)
        case let tag where tag >= 0x80:
            let bytes = try r.bytes(Int(tag & 0x7F))
            guard let s = String(utf8: bytes) else { throw DecodingError(description: "string is not UTF-8") }
            return .string(s)
        case let tag:
            throw DecodingError(description: "unknown value tag \(tag)")
        }
    }
}
