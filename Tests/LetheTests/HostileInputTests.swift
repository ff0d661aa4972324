import Foundation
import LetheEvents
import LetheJournal
import Testing

/// Input written to hurt: lines that would take hours to parse, numbers that change on the way,
/// card numbers in the forms customers really type, control characters in ids, and report
/// cells that a spreadsheet would run as formulas (issue 10).

/// One NDJSON line of `type` with `data` (JSON text).
func hostileLine(_ type: String, account: String = "acc_1", id: String? = nil, at: String = "2026-01-05T10:00:00Z", data: String) -> String {
    let idField = id.map { #""id":"\#($0)","# } ?? ""
    return #"{\#(idField)"type":"\#(type)","account":"\#(account)","at":"\#(at)","data":\#(data)}"#
}

/// What the importer makes of a line: the event's data as stored, or the reason it was refused.
func validated(_ line: String) -> Result<JSONObject, Rejection> {
    EnvelopeValidator.parse(line: Array(line.utf8)).map(\.data)
}

/// `value` as a JSON string literal.
func quoted(_ value: String) -> String { JSONValue.string(value).jsonText }

@Suite struct HostileJSONTests {
    /// A line `{"k0000000":"v…","k0000001":"v…",…}` of `count` fields, each `fieldBytes` long.
    static func wideObject(_ count: Int, fieldBytes: Int = 20) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(count * fieldBytes + 2)
        let pad = [UInt8](repeating: UInt8(ascii: "v"), count: max(0, fieldBytes - 16))
        for k in 0..<count {
            if k > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: Array(#""k\#(String(k + 10_000_000))":""#.utf8))  // 8-digit keys: never a card number
            out.append(contentsOf: pad)
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    static func seconds(_ work: () throws -> Void) rethrows -> Double {
        let start = ContinuousClock.now
        try work()
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    @Test func aWideObjectParsesInLinearTime() throws {
        // Scaling first (a quadratic check takes 256 times as long for 16 times the keys), so a
        // regression fails in seconds instead of hanging the suite.
        let small = Self.wideObject(2_000), large = Self.wideObject(32_000)
        let tSmall = try (0..<5).map { _ in try Self.seconds { _ = try JSONParser.parse(small) } }.min()!
        let tLarge = try Self.seconds { _ = try JSONParser.parse(large) }
        try #require(tLarge < max(tSmall, 0.002) * 64, "2,000 keys: \(tSmall) s, 32,000 keys: \(tLarge) s")

        // The issue's case: a valid 16 MiB line of 500,000 keys, then the same as a survey's answers.
        let huge = Self.wideObject(500_000, fieldBytes: 33)
        #expect(huge.count > 15_000_000 && huge.count <= LineReader.maxLineBytes)
        var parsed: JSONValue = .null
        let tHuge = try Self.seconds { parsed = try JSONParser.parse(huge) }
        #expect(parsed.object?.fields.count == 500_000)
        #expect(tHuge < 5, "500,000 keys took \(tHuge) s")
        let survey = Array(#"{"type":"SurveyAnswered","account":"acc_1","at":"2026-01-05T10:00:00Z","data":{"survey":"s","answers":"#.utf8)
            + Self.wideObject(480_000, fieldBytes: 33) + Array("}}".utf8)
        #expect(survey.count <= LineReader.maxLineBytes)
        var accepted = false
        let tSurvey = Self.seconds { accepted = (try? EnvelopeValidator.parse(line: survey).get()) != nil }
        #expect(accepted)
        #expect(tSurvey < 10, "a survey of 480,000 answers took \(tSurvey) s to check")
    }

    @Test func keysAreComparedByTheirBytes() throws {
        // "é" precomposed (NFC) and "e" + combining acute (NFD): equal as Swift strings, two
        // different names for RFC 8259, which compares code units.
        let nfc = "\u{E9}", nfd = "e\u{301}"
        #expect(nfc == nfd)  // what makes String == the wrong tool here
        let o = try #require(try JSONParser.parse(#"{"\#(nfc)":1,"\#(nfd)":2}"#).object)
        #expect(o.fields.count == 2)
        #expect(o[nfc] == 1 && o[nfd] == 2)
        // Past the small-object path too (the set of names).
        var text = "{" + (0..<40).map { #""k\#($0)":0,"# }.joined()
        text += #""\#(nfc)":1,"\#(nfd)":2}"#
        let wide = try #require(try JSONParser.parse(text).object)
        #expect(wide.fields.count == 42 && wide[nfc] == 1 && wide[nfd] == 2)
        // A real duplicate is still refused, in a small and in a wide object.
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(#"{"\#(nfd)":1,"\#(nfd)":2}"#) }
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(String(text.dropLast()) + #","k7":1}"#) }
        // Setting through the subscript keeps the two apart as well.
        var edited = o
        edited[nfd] = 3
        #expect(edited[nfc] == 1 && edited[nfd] == 3 && edited.fields.count == 2)
    }

    @Test func limitsAreEnforcedAndNamed() throws {
        func reason(_ text: String, _ limits: JSONParser.Limits = .init()) -> String? {
            do {
                _ = try JSONParser.parse(text, limits: limits)
                return nil
            } catch {
                return error.reason
            }
        }
        // The documented defaults, and each limit refused with an error that names it.
        #expect(JSONParser.maxDepth == 64 && JSONParser.maxMembers == 1 << 20)
        let small = JSONParser.Limits(depth: 3, members: 4)
        #expect(reason(#"{"a":1,"b":2,"c":3,"d":4}"#, small) == nil)
        #expect(reason(#"{"a":1,"b":2,"c":3,"d":4,"e":5}"#, small) == "more than 4 fields in one object")
        #expect(reason("[1,2,3,4,5]", small) == "more than 4 items in one array")
        #expect(reason("[[[1]]]", small) == nil)
        #expect(reason("[[[[1]]]]", small) == "nested deeper than 3")
        // The standard member limit, on an array (2 bytes an item: cheap to build).
        let items = { (n: Int) in "[" + Array(repeating: "0", count: n).joined(separator: ",") + "]" }
        #expect(reason(items(JSONParser.maxMembers)) == nil)
        #expect(reason(items(JSONParser.maxMembers + 1)) == "more than \(JSONParser.maxMembers) items in one array")
        #expect(reason(String(repeating: "[", count: 65) + String(repeating: "]", count: 65)) == "nested deeper than 64")
    }

    static let exactNumbers = [
        "-9223372036854775810", "9223372036854775808", "18446744073709551616", "123456789012345678901234567890", "1.000000000000000005",
        "1e-999", "1E+400", "-0", "-0.0", "2.50", "0.1", "1e2", "6.02214076e23", "-1.5E-7",
    ]

    @Test(arguments: exactNumbers)
    func numbersComeBackAsWritten(_ literal: String) throws {
        // Through the parser and writer, and through the journal's payload coding.
        let value = try JSONParser.parse("[\(literal)]")
        #expect(value.jsonText == "[\(literal)]")
        let data: JSONObject = ["answers": .object(["n": value])]
        let stored = try PayloadCodec.standard.decode(type: "SurveyAnswered", payload: PayloadCodec.standard.encode(type: "SurveyAnswered", data: data))
        #expect(JSONValue.object(stored).jsonText == #"{"answers":{"n":[\#(literal)]}}"#)
    }

    @Test func numbersRoundTripThroughImportAndExport() throws {
        let dir = TempDir()
        let journal = dir.path("j.lethe")
        let answers = "{" + Self.exactNumbers.enumerated().map { #""q\#($0.offset)":\#($0.element)"# }.joined(separator: ",") + "}"
        let input = [
            hostileLine("AccountSignedUp", data: #"{"name":"Ada","email":"ada@example.com"}"#),
            hostileLine("SurveyAnswered", at: "2026-01-06T10:00:00Z", data: #"{"survey":"s","answers":\#(answers)}"#),
        ].joined(separator: "\n")
        let imported = try run("lethe", ["import", "-", "--journal", journal], stdin: input)
        #expect(imported.status == 0, "\(imported.stderr)")
        let export = try run("lethe", ["export", "--journal", journal])
        #expect(export.stdout.contains(#""answers":\#(answers)"#), "\(export.stdout)")
    }

    @Test func payloadsOfTheOldDoubleCodingStillDecode() throws {
        // Journals written before numbers were kept as text hold doubles under tag 4 (8 bytes,
        // little-endian); they read back as the text the old writer gave them.
        func old(_ d: Double) -> [UInt8] {
            var bytes: [UInt8] = [1, 1, 7, 1, 0, 1, UInt8(ascii: "n"), 4]
            withUnsafeBytes(of: d.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
            return bytes
        }
        for (d, text) in [(2.5, "2.5"), (3.0, "3.0"), (-0.125, "-0.125"), (1e300, "1e+300")] {
            let decoded = try PayloadCodec.standard.decode(type: "SurveyAnswered", payload: old(d))
            #expect(JSONValue.object(decoded).jsonText == #"{"n":\#(text)}"#)
        }
    }
}

@Suite struct HostileStringTests {
    @Test func controlCharactersAreRefusedInIdsAccountsAndTypes() throws {
        let base = (account: "acc_1", id: "e1", type: "PageViewed")
        let cases: [(field: String, account: String, id: String, type: String)] = [
            ("id", base.account, #"e1\u0000other"#, base.type), ("id", base.account, #"e\u001f1"#, base.type),
            ("id", base.account, #"e\u007f1"#, base.type), ("id", base.account, #"e\n1"#, base.type),
            ("id", base.account, #"e\u0085"#, base.type),
            ("account", #"acc\u0000"#, base.id, base.type), ("account", #"acc\t1"#, base.id, base.type),
            ("type", base.account, base.id, #"PageViewed\u0000"#),
        ]
        for c in cases {
            let line = #"{"id":"\#(c.id)","type":"\#(c.type)","account":"\#(c.account)","at":"2026-01-05T10:00:00Z","data":{"path":"/","visitor":"v"}}"#
            guard case .failure(let r) = validated(line) else {
                Issue.record("\(line) was accepted")
                continue
            }
            #expect(r.field == c.field && r.reason.contains("control character"), "\(line): \(r)")
            #expect(!r.description.contains("other") && !r.description.contains("PageViewed"))
        }
        // The journal refuses them too, whoever calls it.
        let dir = TempDir()
        let j = try openJournal(dir)
        for (bad, field) in [(event("acc_1", at: "2026-01-05T10:00:00Z", id: "e1\u{0}x"), "id"), (event("acc\u{7F}", at: "2026-01-05T10:00:00Z"), "account")] {
            #expect { try j.append(bad) } throws: { e in
                (e as? JournalError)?.code == .invalidEvent && "\(e)".hasPrefix("field \(field):")
            }
        }
        #expect(j.headSeq == 0)
    }

    @Test func aNULInAnIdLosesNothingElse() throws {
        // The id cut at its NUL used to clash with "e1" and abort the whole batch.
        let dir = TempDir()
        let journal = dir.path("j.lethe")
        let input = [
            hostileLine("AccountSignedUp", id: "e1", data: #"{"name":"Ada","email":"ada@example.com"}"#),
            hostileLine("PageViewed", id: #"e1\u0000other"#, at: "2026-01-05T10:01:00Z", data: #"{"path":"/","visitor":"v"}"#),
            hostileLine("PageViewed", id: "e2", at: "2026-01-05T10:02:00Z", data: #"{"path":"/","visitor":"v"}"#),
        ].joined(separator: "\n")
        let r = try run("lethe", ["import", "-", "--journal", journal], stdin: input)
        #expect(r.stdout == "imported 2, duplicates 0, rejected 1 (of 3 lines)\n")
        #expect(r.stderr.hasPrefix("lethe import: stdin: line 2: field id: ") && !r.stderr.contains("other"), "\(r.stderr)")
        #expect(try run("lethe", ["verify", "--journal", journal]).status == 0)
    }
}
