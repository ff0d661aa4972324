import Foundation
@testable import LetheEvents
@testable import LetheJournal
import Testing

@Suite struct JSONTests {
    @Test func roundTripsValuesAndFieldOrder() throws {
        let text = #"{"b":1,"a":[true,false,null,-5,2.5,"x\"y\\z\n\u00e9\ud83d\ude00"],"c":{"d":{}}}"#
        let v = try JSONParser.parse(text)
        #expect(v.object?.keys == ["b", "a", "c"])
        #expect(try JSONParser.parse(v.jsonText) == v)
        #expect(v.object?["a"] == .array([true, false, nil, -5, .number(JSONNumber("2.5")!), .string("x\"y\\z\né😀")]))
    }

    @Test(arguments: [
        "", "{", "{\"a\":1,}", "{\"a\":1 \"b\":2}", "[1,]", "01", "1.", "-", "\"abc", "tru", "{\"a\":1}x",
        "\"\\ud800\"", "\"\\x\"", "\"a\u{01}b\"", "{\"a\":1,\"a\":2}", "nul",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(text) }
    }

    @Test func limitsNesting() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(deep) }
        let fine = String(repeating: "[", count: 50) + String(repeating: "]", count: 50)
        #expect(throws: Never.self) { try JSONParser.parse(fine) }
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xFF, 0x22]) }
    }
}

/// The order of the journal's byte-sorted tables (a block's accounts, the id index's runs).
@Suite struct ByteOrderTests {
    @Test func stringsAreOrderedByTheirUTF8BytesWhateverTheirStorage() {
        // Small (inline) and large strings, ASCII and not, prefixes, and pairs whose Unicode order differs from their bytes'.
        let strings = ["", "a", "ab", "a\u{0}", "b", "B", "caf\u{E9}", "cafe\u{301}", "\u{FB01}", "fi", "\u{1F600}", "\u{FFFD}",
                       String(repeating: "x", count: 15), String(repeating: "x", count: 16), String(repeating: "x", count: 40) + "\u{E9}",
                       String(repeating: "x", count: 40) + "e", "acct-000123", "acct-00012", "\u{10FFFF}"]
        let byBytes = strings.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        #expect(strings.sorted(by: utf8Precedes) == byBytes)
        // The same strings built from their bytes at run time: storage other than the literals'.
        let rebuilt = strings.map { String(decoding: Array($0.utf8), as: UTF8.self) }
        #expect(rebuilt.sorted(by: utf8Precedes) == byBytes)
        for a in strings { for b in strings { #expect(utf8Precedes(a, b) == Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))) } }
    }

    /// A block sorts its accounts by `utf8Prefix` first: two different prefixes must order as
    /// the strings do, including a NUL byte against the padding and a prefix of another.
    @Test func anEightBytePrefixNeverContradictsTheByteOrder() {
        let strings = ["", "a", "a\u{0}", "a\u{0}\u{0}b", "ab", "acc_1719", "acc_17194", "acc_1720", "acc_172", "acc_9",
                       "caf\u{E9}", "cafe\u{301}", "\u{1F600}", "\u{10FFFF}", "\u{FF}", String(repeating: "x", count: 40) + "a",
                       String(repeating: "x", count: 40) + "b", String(decoding: Array("acc_17199".utf8), as: UTF8.self)]
        for a in strings {
            for b in strings where utf8Prefix(a) != utf8Prefix(b) {
                #expect((utf8Prefix(a) < utf8Prefix(b)) == Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)), "\(a) vs \(b)")
            }
        }
        #expect(utf8Prefix("acc_1719") == utf8Prefix("acc_17194"))  // a tie: the whole names decide
        #expect(utf8Prefix("a") == 0x6100_0000_0000_0000)
    }
}

@Suite struct UTF8Tests {
    @Test func stringsAreMadeOfValidUTF8AloneWhateverTheirStorage() {
        let valid = ["", "acc_123", "caf\u{E9}", "\u{1F600}", "\u{10FFFF}", String(repeating: "x", count: 40) + "\u{FB01}"]
        for text in valid {
            let bytes = Array(text.utf8)
            #expect(String(utf8: bytes) == text)
            #expect(String(utf8: bytes[...]) == text)
            #expect(bytes.withUnsafeBufferPointer(isUTF8))
            // A collection without contiguous storage goes the generic way.
            #expect(String(utf8: bytes.lazy.map { $0 }) == text)
        }
        // A lone continuation byte, an overlong form, a surrogate, a truncated sequence (the
        // same length as one replacement character), a byte never used in UTF-8.
        let invalid: [[UInt8]] = [[0x61, 0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF0, 0x9F, 0x98], [0x61, 0xFF, 0x62]]
        for bytes in invalid {
            #expect(String(utf8: bytes) == nil)
            #expect(!bytes.withUnsafeBufferPointer(isUTF8))
            #expect(String(utf8: bytes.lazy.map { $0 }) == nil)
        }
    }

    @Test func integersAreWrittenInDecimal() {
        for n: Int64 in [0, 7, -7, 10, 1_000_000, .max, .min, .min + 1] {
            var w = JSONWriter()
            w.write(int: n)
            #expect(String(decoding: w.bytes, as: UTF8.self) == String(n))
        }
    }
}

@Suite struct TimestampTests {
    @Test func parsesAndFormats() throws {
        let t = try #require(Timestamp(rfc3339: "2026-01-05T10:00:00Z"))
        #expect(t.nanoseconds == 1_767_607_200 * 1_000_000_000)
        #expect(t.rfc3339 == "2026-01-05T10:00:00Z")
        // Written as it came in: the fractional digits are kept, trailing zeros included.
        #expect(Timestamp(rfc3339: "2026-01-05T10:00:00.250Z")?.rfc3339 == "2026-01-05T10:00:00.250Z")
        #expect(Timestamp(rfc3339: "2026-01-05T10:00:00.000Z")?.rfc3339 == "2026-01-05T10:00:00.000Z")
        #expect(Timestamp(rfc3339: "2026-01-05t10:00:00.5z")?.rfc3339 == "2026-01-05T10:00:00.5Z")
        // Equality and order look at the instant only; a computed time takes the shortest form.
        #expect(Timestamp(rfc3339: "2026-01-05T10:00:00.250Z") == Timestamp(rfc3339: "2026-01-05T10:00:00.25Z"))
        #expect(Timestamp(nanoseconds: 1_767_607_200_250_000_000).rfc3339 == "2026-01-05T10:00:00.25Z")
        #expect(Timestamp(rfc3339: "2024-02-29T23:59:59.123456789Z")?.rfc3339 == "2024-02-29T23:59:59.123456789Z")
        #expect(Timestamp(rfc3339: "1969-12-31T23:59:59.5Z")?.rfc3339 == "1969-12-31T23:59:59.5Z")
    }

    @Test(arguments: [
        "2026-01-05T10:00:00", "2026-01-05T10:00:00+01:00", "2026-01-05 10:00:00Z", "2026-13-05T10:00:00Z",
        "2025-02-29T10:00:00Z", "2026-01-05T24:00:00Z", "2026-01-05T10:00:00.Z", "2026-01-05T10:00:00.1234567890Z",
        "26-01-05T10:00:00Z", "yesterday",
    ])
    func rejects(_ s: String) {
        #expect(Timestamp(rfc3339: s) == nil)
    }

    @Test func roundTripsEveryThirdDayOfThreeCenturies() {
        var t = Timestamp(rfc3339: "1900-01-01T00:00:00Z")!
        let end = Timestamp(rfc3339: "2200-12-31T23:59:59Z")!
        var n = 0
        while t < end {
            #expect(Timestamp(rfc3339: t.rfc3339) == t)
            t = t.adding(seconds: 3 * 86_400 + 7)
            n += 1
        }
        #expect(n > 36_000)
        #expect(Timestamp(rfc3339: "2201-01-01T00:00:00Z") == nil)
    }
}

@Suite struct CardNumberTests {
    @Test(arguments: [
        "4111111111111111", "card 4111 1111 1111 1111 please", "4111-1111-1111-1111", "5500005555555559",
        "378282246310005", "6011 0009 9013 9424", "x4111111111111111y",
        // Since the contract's wider definition: runs of up to 3 separators.
        "4111  1111 1111 1111",
    ])
    func findsCardNumbers(_ s: String) {
        #expect(CardNumbers.contains(s))
    }

    @Test(arguments: [
        "4111111111111112", "411111111111", "41111111111111110000", "4111    1111 1111 1111", "call 555-1234",
        "2026-01-05T10:00:00Z", "4242", "ticket 12345678",
    ])
    func ignoresOtherDigits(_ s: String) {
        #expect(!CardNumbers.contains(s))
    }

    @Test func namesThePathInNestedData() throws {
        let v = try JSONParser.parse(#"{"answers":{"list":["ok","pay with 4111 1111 1111 1111"]}}"#)
        #expect(CardNumbers.firstPath(in: v, path: "data") == "data.answers.list[1]")
        #expect(CardNumbers.firstPath(in: .int(4_111_111_111_111_111), path: "data.n") == "data.n")
    }
}

@Suite struct PayloadCodecTests {
    @Test func roundTrips() throws {
        let data = try #require(JSONParser.parse(#"{"name":"Ada","x-custom":[1,2.5,null,{"nested":true}],"amount_minor":-42}"#).object)
        let bytes = PayloadCodec.standard.encode(type: "AccountSignedUp", data: data)
        #expect(try PayloadCodec.standard.decode(type: "AccountSignedUp", payload: bytes) == data)
        // Known field names cost one byte: the coding is smaller than the JSON.
        #expect(bytes.count < JSONValue.object(data).jsonText.utf8.count)
    }

    @Test func upcastsOlderSchemaVersions() throws {
        // Version 1 of a type wrote `last4`; version 2 renames it, version 3 adds a default.
        let v1 = PayloadCodec(currentVersions: ["Payment": 1])
        let old = v1.encode(type: "Payment", data: ["last4": "4242"])
        let v3 = PayloadCodec(
            currentVersions: ["Payment": 3],
            upcasters: ["Payment": [
                1: { d in var d = d; d["card_last4"] = d["last4"]; d["last4"] = nil; return d },
                2: { d in var d = d; d["currency"] = "USD"; return d },
            ]])
        #expect(try v3.decode(type: "Payment", payload: old) == ["card_last4": "4242", "currency": "USD"])
        // A payload newer than the build is refused, not misread.
        let newer = v3.encode(type: "Payment", data: ["card_last4": "4242"])
        #expect(throws: PayloadCodec.DecodingError.self) { try v1.decode(type: "Payment", payload: newer) }
    }

    /// The export writes payloads straight to JSON text (`writeJSON`): the same bytes as decoding
    /// them and writing the value, for every field name, string, number and nesting; older
    /// schema versions go through their upcasters; damage is refused as `decode` refuses it.
    @Test func writesJSONAsDecodingThenWritingDoes() throws {
        func viaValue(_ codec: PayloadCodec, _ type: String, _ payload: [UInt8]) throws -> [UInt8] {
            var w = JSONWriter()
            w.write(try codec.decode(type: type, payload: payload))
            return w.bytes
        }
        func direct(_ codec: PayloadCodec, _ type: String, _ payload: [UInt8]) throws -> [UInt8] {
            var w = JSONWriter()
            w.bytes = Array("prefix".utf8)
            try codec.writeJSON(type: type, payload: payload, into: &w)
            #expect(w.bytes.starts(with: Array("prefix".utf8)))
            return Array(w.bytes.dropFirst(6))
        }
        let codec = PayloadCodec.standard
        var checked = 0
        for e in try fixtureEnvelopes() {
            let payload = codec.encode(type: e.type.rawValue, data: e.data)
            #expect(try direct(codec, e.type.rawValue, payload) == viaValue(codec, e.type.rawValue, payload))
            checked += 1
        }
        #expect(checked > 100)
        let odd = try #require(JSONParser.parse(
            #"{"name":"quote \" back\\ tab\t nl\n \u0001 é 😀","x-custom":[1,-2,2.50,1e400,null,true,false,{"nested":{"deep":[[]]}}],"":{},"amount_minor":-9223372036854775808}"#).object)
        let payload = codec.encode(type: "AccountSignedUp", data: odd)
        #expect(try direct(codec, "AccountSignedUp", payload) == viaValue(codec, "AccountSignedUp", payload))
        // A double as builds before issue 10 wrote it (tag 4).
        var legacy = BinaryWriter(capacity: 16)
        legacy.u8(1); legacy.varint(1); legacy.u8(7); legacy.varint(1); legacy.varint(0); legacy.string("x"); legacy.u8(4); legacy.u64((2.5).bitPattern)
        #expect(try direct(codec, "PageViewed", legacy.bytes) == viaValue(codec, "PageViewed", legacy.bytes))
        // An older schema version is upcast.
        let old = PayloadCodec(currentVersions: ["Payment": 1]).encode(type: "Payment", data: ["last4": "4242"])
        let v2 = PayloadCodec(currentVersions: ["Payment": 2], upcasters: ["Payment": [1: { d in ["card_last4": d["last4"] ?? .null] }]])
        #expect(try direct(v2, "Payment", old) == Array(#"{"card_last4":"4242"}"#.utf8))
        // Every truncation, and a string that is not UTF-8, is refused like `decode` refuses it.
        for cut in 0..<payload.count {
            #expect(throws: PayloadCodec.DecodingError.self) { try direct(codec, "AccountSignedUp", Array(payload[..<cut])) }
        }
        #expect(throws: PayloadCodec.DecodingError.self) { try direct(codec, "PageViewed", [1, 1, 7, 1, 19, 0x82, 0xC3, 0x28]) }
    }

    /// Format 2 writes the schema version in the first byte and the object without its tag:
    /// two bytes fewer than format 1, which is still read (payloads sealed before) and still
    /// written for schema versions from 32.
    @Test func payloadsOfFormat1AreStillRead() throws {
        let codec = PayloadCodec.standard
        var checked = 0
        for e in try fixtureEnvelopes() {
            let version = codec.currentVersion(of: e.type.rawValue)
            var old = BinaryWriter()
            old.u8(1)
            old.varint(version)
            PayloadCodec.write(.object(e.data), to: &old)
            let new = codec.encode(type: e.type.rawValue, data: e.data)
            #expect(new.count == old.bytes.count - 2 && new[0] == 0x20 + UInt8(version))
            #expect(try codec.decode(type: e.type.rawValue, payload: old.bytes) == e.data)
            var direct = JSONWriter(), viaNew = JSONWriter()
            try codec.writeJSON(type: e.type.rawValue, payload: old.bytes, into: &direct)
            try codec.writeJSON(type: e.type.rawValue, payload: new, into: &viaNew)
            #expect(direct.bytes == viaNew.bytes)
            checked += 1
        }
        #expect(checked > 100)
        // From schema version 32 on, format 1.
        let late = PayloadCodec(currentVersions: ["PageViewed": 40])
        let payload = late.encode(type: "PageViewed", data: ["path": "/x"])
        #expect(payload[0] == 1)
        #expect(try late.decode(type: "PageViewed", payload: payload) == ["path": "/x"])
        // A header byte of neither format, a string that is not UTF-8, trailing bytes: refused.
        for bad: [UInt8] in [[0x40, 0], [0x1F, 0], [0x21, 1, 19, 0x82, 0xC3, 0x28], [0x21, 0, 0]] {
            #expect(throws: PayloadCodec.DecodingError.self) { try codec.decode(type: "PageViewed", payload: bad) }
            var w = JSONWriter()
            #expect(throws: PayloadCodec.DecodingError.self) { try codec.writeJSON(type: "PageViewed", payload: bad, into: &w) }
        }
    }

    @Test func refusesDamage() {
        let bytes = PayloadCodec.standard.encode(type: "PageViewed", data: ["path": "/x"])
        for cut in 0..<bytes.count {
            #expect(throws: PayloadCodec.DecodingError.self) { try PayloadCodec.standard.decode(type: "PageViewed", payload: Array(bytes[..<cut])) }
        }
    }
}

@Suite struct EnvelopeTests {
    func reason(_ line: String) -> String? {
        if case .failure(let r) = EnvelopeValidator.parse(line: Array(line.utf8)) { return r.description }
        return nil
    }

    @Test func acceptsTheContractExample() throws {
        let line = #"{"id":"evt_0001","type":"AccountSignedUp","account":"acc_42","at":"2026-01-05T10:00:00Z","data":{"name":"Ada Lovelace","company":"Analytical Engines Ltd","email":"ada@example.com"}}"#
        let e = try EnvelopeValidator.parse(line: Array(line.utf8)).get()
        #expect(e.id == "evt_0001" && e.type == .accountSignedUp && e.account == "acc_42")
        #expect(e.at == ts("2026-01-05T10:00:00Z"))
        #expect(e.data["email"] == "ada@example.com")
    }

    @Test func namesTheFieldAtFault() {
        let base = #""type":"PageViewed","account":"acc_1","at":"2026-01-05T10:00:00Z","data":{"path":"/"}"#
        #expect(reason("[1]") == "an event must be a JSON object, not array")
        #expect(reason("{\(base),\"extra\":1}")?.contains("unknown field") == true)
        #expect(reason(#"{"account":"acc_1","at":"2026-01-05T10:00:00Z","data":{}}"#) == "field type: missing")
        #expect(reason(#"{"type":"Nope","account":"acc_1","at":"2026-01-05T10:00:00Z","data":{}}"#) == "field type: unknown type \"Nope\"")
        #expect(reason(#"{"type":"AccountPurged","account":"acc_1","at":"2026-01-05T10:00:00Z","data":{}}"#)?.contains("engine only") == true)
        #expect(reason(#"{"type":"PageViewed","account":"acc 1","at":"2026-01-05T10:00:00Z","data":{}}"#)?.hasPrefix("field account") == true)
        #expect(reason(#"{"type":"PageViewed","account":1,"at":"2026-01-05T10:00:00Z","data":{}}"#) == "field account: must be a string, not number")
        #expect(reason(#"{"type":"PageViewed","account":"a","at":"2026-01-05T10:00:00+02:00","data":{}}"#)?.hasPrefix("field at") == true)
        #expect(reason(#"{"type":"PageViewed","account":"a","at":"2026-01-05T10:00:00Z","data":[]}"#) == "field data: must be an object, not array")
        #expect(reason(#"{"type":"PageViewed","account":"a","at":"2026-01-05T10:00:00Z"}"#) == "field data: missing")
        #expect(reason(#"{"id":7,"type":"PageViewed","account":"a","at":"2026-01-05T10:00:00Z","data":{}}"#) == "field id: must be a string, not number")
    }

    @Test func refusesCardNumbersWithoutEchoingThem() throws {
        // Outside free text: refused. In a body (free text): masked, and the event kept.
        let line = #"{"type":"SupportMessageReceived","account":"a","at":"2026-01-05T10:00:00Z","data":{"ticket":"4111 1111 1111 1111","from_email":"a@b.c","body":"use 4111 1111 1111 1111"}}"#
        let r = try #require(reason(line))
        #expect(r.hasPrefix("field data.ticket:"))
        #expect(!r.contains("4111") && !r.contains("1111"))
        let kept = try EnvelopeValidator.parse(line: Array(line.replacingOccurrences(of: #""ticket":"4111 1111 1111 1111""#, with: #""ticket":"t""#).utf8)).get()
        #expect(kept.data["body"] == "use **** **** **** 1111" && kept.masked == ["data.body"])
    }
}

@Suite struct LZ4Tests {
    @Test func everyTruncationOfAFrameIsRefused() throws {
        let content = Array((0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7 % 13) })
        let frame = try LZ4.compressFrame(content)
        #expect(try LZ4.decompressFrame(frame, limit: 1 << 20) == content)
        for cut in 0..<frame.count {
            #expect(throws: LZ4.Failure.self, "cut at \(cut)") { try LZ4.decompressFrame(Array(frame[..<cut]), limit: 1 << 20) }
        }
        #expect(throws: LZ4.Failure.self) { try LZ4.decompressFrame(frame + [0], limit: 1 << 20) }
        #expect(throws: LZ4.Failure.self) { try LZ4.decompressFrame(frame, limit: 100) }
    }
}

@Suite struct LineReaderTests {
    func lines(limit: Int = LineReader.maxLineBytes, of parts: Any...) throws -> (lines: [String], count: Int) {
        // Parts are strings, or byte counts of a run of "y".
        var input = Data()
        for part in parts {
            if let text = part as? String { input.append(contentsOf: Array(text.utf8)) }
            if let run = part as? Int { input.append(Data(repeating: UInt8(ascii: "y"), count: run)) }
        }
        let dir = try TempDir()
        let path = dir.path("input.ndjson")
        try input.write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var reader = LineReader(fd: fd, lineLimit: limit)
        var out: [String] = []
        while let line = try reader.next() {
            switch line {
            case .text(let bytes): out.append(bytes.count > 100 ? "\(bytes.count) bytes" : String(decoding: bytes, as: UTF8.self))
            case .tooLong: out.append("<too long>")
            }
        }
        return (out, reader.lineNumber)
    }

    @Test func splitsLinesAcrossReadsAndEndings() throws {
        // The long line straddles the first 1 MiB read; the last line has no newline.
        let (found, count) = try lines(of: "first\nsecond\r\n\n", (1 << 20) - 3, "\nlast")
        #expect(found == ["first", "second", "", "\((1 << 20) - 3) bytes", "last"])
        #expect(count == 5)
        #expect(try lines(of: "").lines == [])
        #expect(try lines(of: "only\n").lines == ["only"])
    }

    @Test func skipsALineAboveTheLimitAndGoesOn() throws {
        // A 1,000-byte limit: a line just above it whose end comes in the same 1 MiB read, one
        // that spans several reads, and one exactly at the limit.
        for (extra, why) in [(10, "just above"), (3 << 20, "several reads above")] {
            let (found, count) = try lines(limit: 1000, of: "before\n", 1000 + extra, "\nafter\n")
            #expect(found == ["before", "<too long>", "after"], "\(why)")
            #expect(count == 3)
        }
        #expect(try lines(limit: 1000, of: 1000, "\nnext").lines == ["1000 bytes", "next"])
    }
}

/// The events of `Fixtures/small.ndjson` that the contract accepts.
func fixtureEnvelopes() throws -> [Envelope] {
    let lines = try String(contentsOf: fixturesDirectory.appendingPathComponent("small.ndjson"), encoding: .utf8)
    return lines.split(separator: "\n").compactMap { line in
        guard case .success(let e) = EnvelopeValidator.parse(line: Array(line.utf8)) else { return nil }
        return e
    }
}
