import Foundation
import LetheEvents
@testable import LetheJournal
import Testing

/// Runs the built `lethe` binary the way scripts and investigators do.
@Suite struct CLITests {
    let fixture = fixturesDirectory.appendingPathComponent("small.ndjson").path

    @Test(arguments: TestBackend.allCases)
    func importReportsEachRejectedLineAndKeepsTheRest(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, keys) = (place.journalArgument, place.keysArgument)
        let input = """
            {"id":"e1","type":"AccountSignedUp","account":"acc_1","at":"2026-01-05T10:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
            {"id":"e2","type":"PaymentRecorded","account":"acc_1","at":"2026-01-05T10:01:00Z","data":{"transaction":"t1","amount_minor":500,"currency":"EUR","card_last4":"4242","note":"card 5500 0055 5555 5559"}}
            not json at all
            {"id":"e3","type":"PageViewed","account":"acc_1","at":"2026-01-05T10:02:00Z","data":{"path":"/pricing","visitor":"v1"}}
            {"id":"e4","type":"PageViewed","account":"acc_1","at":"2026-01-04T10:02:00Z","data":{"path":"/old","visitor":"v1"}}
            {"id":"e1","type":"AccountSignedUp","account":"acc_1","at":"2026-01-05T10:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
            {"id":"e5","type":"AccountPurged","account":"acc_1","at":"2026-01-06T10:00:00Z","data":{"rule":"x"}}

            {"id":"e6","type":"ItemCreated","account":"acc_2","at":"2026-01-01T00:00:00Z","data":{"item":"i1","kind":"site"}}
            """
        let r = try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: input)
        #expect(r.status != 0)
        #expect(r.stdout == "imported 2, duplicates 1, rejected 5 (of 8 lines)\n")
        let lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(lines.count == 5)
        #expect(lines[0] == "lethe import: stdin: line 2: field data.note: holds what looks like a full card number; only the last 4 digits may be stored")
        #expect(lines[1].hasPrefix("lethe import: stdin: line 3: malformed JSON"))
        #expect(lines[2].hasPrefix("lethe import: stdin: line 5: field at:"))
        #expect(lines[3] == "lethe import: stdin: line 7: field type: AccountPurged is written by the engine only")
        #expect(lines[4] == "lethe import: stdin: line 9: account acc_2 has not signed up: AccountSignedUp comes first")
        #expect(!r.stderr.contains("5500") && !r.stderr.contains("5559"))

        let export = try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments)
        #expect(export.status == 0)
        let ids = try export.stdout.split(separator: "\n").map { line in
            try JSONParser.parse(String(line)).object?["id"]?.string
        }
        #expect(ids == ["e1", "e3"])
        // Times go out exactly as they came in.
        #expect(export.stdout.contains(#""at":"2026-01-05T10:02:00Z""#))
        let first = try JSONParser.parse(String(export.stdout.split(separator: "\n")[0])).object
        #expect(first?.keys == ["seq", "id", "type", "account", "at", "data"])
        #expect(first?["seq"] == 1 && first?["data"]?.object?["email"] == "ada@example.com")

        // Importing the same file again records nothing new.
        let again = try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: input)
        #expect(again.stdout == "imported 0, duplicates 3, rejected 5 (of 8 lines)\n")
    }

    @Test func thousandsOfRejectedLinesAreAllReportedWithoutStallingTheCommand() throws {
        // 4,000 rejections make about 200 KiB of stderr, past a pipe's 64 KiB, while stdout stays
        // one line and stdin is as large: a test helper that read one pipe to its end before the
        // other, or wrote all of stdin first, would wait on `lethe` while it waits on the helper.
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        let count = 4000
        let input = (1...count).map { #"{"type":"PageViewed","account":"acc_\#($0)","at":"yesterday","data":{}}"# }.joined(separator: "\n")
        let r = try run("lethe", ["import", "-", "--journal", journal], stdin: input, timeLimit: .seconds(60))
        #expect(r.status == 1)
        #expect(r.stdout == "imported 0, duplicates 0, rejected \(count) (of \(count) lines)\n")
        #expect(r.stderr.utf8.count > 3 * 65536, "\(r.stderr.utf8.count) bytes")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == count)
        #expect(lines.enumerated().allSatisfy { n, line in
            line == "lethe import: stdin: line \(n + 1): field at: must be RFC 3339 in UTC, like 2026-01-05T10:00:00Z"
        }, "\(lines.prefix(2))")
    }

    @Test func theJournalComesFromLETHEJOURNALWhenNotGivenAndAServerAddressNeedsItsOwnKeyStore() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        #expect(try run("lethe", ["import", fixture], environment: ["LETHE_JOURNAL": journal]).stdout.contains("imported"))
        let fromEnvironment = try run("lethe", ["verify"], environment: ["LETHE_JOURNAL": journal])
        #expect(fromEnvironment.status == 0 && fromEnvironment.stdout.hasPrefix("ok:"), "\(fromEnvironment.stderr)")
        // `--journal` wins over the environment.
        let given = try run("lethe", ["verify", "--journal", journal], environment: ["LETHE_JOURNAL": dir.path("elsewhere.lethe")])
        #expect(given.status == 0, "\(given.stderr)")
        let none = try run("lethe", ["verify"], environment: ["LETHE_JOURNAL": ""])
        #expect(none.status != 0 && none.stderr.contains("no journal: give --journal PATH, or set LETHE_JOURNAL"), "\(none.stderr)")
        // A server's address is not taken for a file name (nor its key store put beside one), and
        // its password is not repeated.
        let url = "postgres://lethe:s3cret-pw@127.0.0.1:5432/lethe"
        let server = try run("lethe", ["import", fixture, "--journal", url])
        #expect(server.status != 0 && server.stderr.contains("a journal in PostgreSQL needs --keys"), "\(server.stderr)")
        #expect(!server.stderr.contains("s3cret-pw"))
        #expect(!FileManager.default.fileExists(atPath: "postgres:"))
        let malformed = try run("lethe", ["import", fixture, "--journal", "postgres://lethe:s3cret-pw@/lethe", "--keys", dir.path("k")])
        #expect(malformed.status != 0 && malformed.stderr.contains("the PostgreSQL address is malformed: no host"), "\(malformed.stderr)")
        #expect(!malformed.stderr.contains("s3cret-pw"))
    }

    @Test(arguments: TestBackend.allCases)
    func exportsOneAccountAndRoundTripsTheFixture(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, keys) = (place.journalArgument, place.keysArgument)
        let imported = try run("lethe", ["import", fixture, "--journal", journal, "--keys", keys] + place.viewsArguments)
        let good = try String(contentsOfFile: fixture, encoding: .utf8).split(separator: "\n").compactMap { line -> JSONObject? in
            guard case .success(let e) = EnvelopeValidator.parse(line: Array(line.utf8)) else { return nil }
            let at = try? JSONParser.parse(String(line)).object?["at"]
            return ["id": e.id.map(JSONValue.string) ?? .null, "account": .string(e.account), "data": .object(e.data), "at": at ?? .null]
        }
        #expect(imported.stdout.hasPrefix("imported "))
        let exported = try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments)
        let lines = try exported.stdout.split(separator: "\n").map { try JSONParser.parse(String($0)).object! }
        // Every line the fixture holds that passed the checks comes back with the same data.
        let byID = Dictionary(uniqueKeysWithValues: lines.map { ($0["id"]!.string!, $0) })
        var matched = 0
        for g in good {
            guard let id = g["id"]?.string, let back = byID[id] else { continue }
            #expect(back["data"] == g["data"] && back["account"] == g["account"] && back["at"] == g["at"])
            matched += 1
        }
        #expect(matched == lines.count && matched > 100)
        let account = lines[0]["account"]!.string!
        // The fixture runs to the end of 2026: the read (and its recorded access) happens after that.
        let one = try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", account, "--actor", "staff_9", "--reason", "audit",
                                    "--now", "2027-06-01T00:00:00Z"])
        #expect(one.status == 0, "\(one.stderr)")
        let mine = try one.stdout.split(separator: "\n").map { try JSONParser.parse(String($0)).object! }
        #expect(mine.map { $0["id"] } == lines.filter { $0["account"]?.string == account }.map { $0["id"] })
        // A clock behind the account's history: the access is recorded at its latest event, and stderr says so.
        let early = try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", account, "--actor", "staff_9", "--reason", "audit",
                                      "--now", "2026-01-01T00:00:00Z"])
        #expect(early.status == 0 && early.stderr.contains("the clock (2026-01-01T00:00:00Z) is behind \(account)'s latest event"))
        let recorded = try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments).stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(recorded.contains(#""type":"AccountAccessed""#) && recorded.contains(#""actor":"staff_9""#))
    }

    @Test func verifyPassesThenNamesTheDamagedBlock() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", fixture, "--journal", journal])
        let ok = try run("lethe", ["verify", "--journal", journal])
        #expect(ok.status == 0 && ok.stdout.hasPrefix("ok: 3012 events (1 sealed blocks, 964 unsealed, 0 purged) of 60 accounts"))
        #expect(ok.stdout.contains("(authenticated by the key store's anchor key); not behind the key store's anchor (event 3012)"))
        #expect(ok.stdout.hasSuffix("block index, event ids, accounts and 0 pending erasures checked\n"))
        // Flip one byte in the middle of the first block, as a disk or an intruder might.
        let db = try SQLiteDatabase(path: journal)
        let read = try db.statement("SELECT frame FROM blocks WHERE id = 1")
        #expect(try read.step())
        var frame = read.blob(0)
        frame[frame.count / 2] ^= 0x01
        try db.statement("UPDATE blocks SET frame = ? WHERE id = 1").bind(1, frame).run()
        db.close()
        let bad = try run("lethe", ["verify", "--journal", journal])
        #expect(bad.status != 0)
        #expect(bad.stderr.hasPrefix("lethe verify: block 1 (events 1–"), "\(bad.stderr)")
    }

    @Test func aBlockDecodesWithTheStandardTools() throws {
        // An investigator extracts a block with sqlite3 and decodes it with `lz4 -d`.
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", fixture, "--journal", journal])
        let frame = dir.path("block1.lz4")
        try tamper(journal, "SELECT writefile('\(frame)', frame) FROM blocks WHERE id = 1")
        let lz4 = try run("/usr/bin/lz4", ["-d", "-f", frame, dir.path("block1.bin")], timeLimit: .seconds(60))
        #expect(lz4.status == 0, "\(lz4.stderr)")
        let content = try Data(contentsOf: URL(fileURLWithPath: dir.path("block1.bin")))
        #expect(content.prefix(4) == Data("LTHB".utf8))
        #expect(content.range(of: Data("AccountSignedUp".utf8)) != nil)
    }

    @Test func anotherKeyStoreCannotReadTheJournal() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        let keys = dir.path("elsewhere.keys")
        _ = try run("lethe", ["import", fixture, "--journal", journal, "--keys", keys])
        #expect(FileManager.default.fileExists(atPath: keys) && !FileManager.default.fileExists(atPath: journal + ".keys"))
        let good = try run("lethe", ["export", "--journal", journal, "--keys", keys])
        #expect(good.status == 0 && good.stdout.split(separator: "\n").count == 3012)
        // The default key store (empty, new) holds none of this journal's keys, and makes none up.
        let wrong = try run("lethe", ["export", "--journal", journal])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.hasPrefix("lethe export: the key store \(journal).keys has no keys for journal "), "\(wrong.stderr)")
    }

    @Test func progressShowsOnATerminalOnly() throws {
        let dir = try TempDir()
        let lethe = try productsDirectory.appendingPathComponent("lethe").path
        let journal = dir.path("j.lethe")
        // script(1) gives the command a terminal; through a pipe there is no progress.
        let tty = try run("/usr/bin/script", ["-qec", "\(lethe) import \(fixture) --journal \(journal)", "/dev/null"])
        #expect(tty.stdout.contains("\rimport: ") && tty.stdout.contains("bytes (100%)"), "\(tty.stdout)")
        let piped = try run("lethe", ["verify", "--journal", journal])
        #expect(!piped.stderr.contains("verify: ") && !piped.stdout.contains("\r"))
    }

    /// A small history with every state transition, in the contract's shape.
    static let history = """
        {"id":"h1","type":"AccountSignedUp","account":"acc_1","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
        {"id":"h2","type":"ItemCreated","account":"acc_1","at":"2026-01-02T00:00:00Z","data":{"item":"i1","kind":"site"}}
        {"id":"h3","type":"ItemCreated","account":"acc_1","at":"2026-01-03T00:00:00Z","data":{"item":"i2","kind":"database"}}
        {"id":"h4","type":"ProfileUpdated","account":"acc_1","at":"2026-01-04T00:00:00Z","data":{"company":"Engines Ltd"}}
        {"id":"h5","type":"ItemDeleted","account":"acc_1","at":"2026-01-05T00:00:00Z","data":{"item":"i1"}}
        {"id":"h6","type":"LegalHoldPlaced","account":"acc_1","at":"2026-01-06T00:00:00Z","data":{"case":"C-7","reason":"subpoena"}}
        {"id":"h7","type":"AccountCancelled","account":"acc_1","at":"2026-01-07T00:00:00Z","data":{}}
        {"id":"h8","type":"ItemRestored","account":"acc_1","at":"2026-01-08T00:00:00Z","data":{"item":"i1"}}
        {"id":"h9","type":"LegalHoldReleased","account":"acc_1","at":"2026-01-09T00:00:00Z","data":{"case":"C-7"}}
        {"id":"h10","type":"AccountReactivated","account":"acc_1","at":"2026-01-10T00:00:00Z","data":{}}
        """

    @Test(arguments: TestBackend.allCases)
    func stateAtAMomentAndTheAccessItLeaves(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, keys) = (place.journalArgument, place.keysArgument)
        #expect(try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: Self.history).status == 0)
        let who = ["--actor", "staff_3", "--reason", "ticket T-9", "--ip", "203.0.113.9"]
        func state(_ at: String) throws -> String {
            let r = try run("lethe", ["state", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "acc_1", "--at", at, "--now", "2026-02-01T00:00:00Z"] + who)
            #expect(r.status == 0, "\(r.stderr)")
            return r.stdout
        }
        #expect(try state("2026-01-06T12:00:00Z") == #"{"account":"acc_1","status":"active","profile":{"name":"Ada","company":"Engines Ltd","email":"ada@example.com"},"items":[{"item":"i1","kind":"site","state":"trash"},{"item":"i2","kind":"database","state":"live"}],"legal_holds":["C-7"],"at":"2026-01-06T12:00:00Z"}"# + "\n")
        #expect(try state("2026-01-07T00:00:00Z").contains(#""status":"cancelled""#))
        #expect(try state("2026-01-31T00:00:00Z") == #"{"account":"acc_1","status":"active","profile":{"name":"Ada","company":"Engines Ltd","email":"ada@example.com"},"items":[{"item":"i1","kind":"site","state":"live"},{"item":"i2","kind":"database","state":"live"}],"legal_holds":[],"at":"2026-01-31T00:00:00Z"}"# + "\n")
        #expect(try state("2025-12-31T00:00:00Z").contains(#""profile":{"name":null,"company":null,"email":null},"items":[]"#))

        // Each read left an AccountAccessed, with the reader, the reason, the address and the time.
        let export = try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments)
        let accesses = export.stdout.split(separator: "\n").filter { $0.contains("AccountAccessed") }
        #expect(accesses.count == 4)
        #expect(accesses.first?.contains(#""at":"2026-02-01T00:00:00Z","data":{"actor":"staff_3","ip":"203.0.113.9","reason":"ticket T-9"}"#) == true)

        // Without --actor and --reason the read is still recorded: by the operating-system user, reason not given.
        let anonymous = try run("lethe", ["state", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "acc_1", "--now", "2026-02-02T00:00:00Z"],
                                environment: ["USER": "operator7"])
        #expect(anonymous.status == 0 && anonymous.stdout.contains(#""status":"active""#))
        let last = try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments).stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.contains(#""data":{"actor":"operator7","ip":"127.0.0.1","reason":"no reason given"}"#))
        let unknown = try run("lethe", ["state", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "acc_404"] + who)
        #expect(unknown.status != 0 && unknown.stderr.contains("no account acc_404"))
        #expect(try run("lethe", ["export", "--journal", journal, "--keys", keys] + place.viewsArguments).stdout.split(separator: "\n").count == 15)
    }

    @Test(arguments: TestBackend.allCases)
    func replayShowsTheTimelineUpToAMoment(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, keys) = (place.journalArgument, place.keysArgument)
        #expect(try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: Self.history).status == 0)
        let r = try run("lethe", ["replay", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "acc_1", "--until", "2026-01-05T00:00:00Z",
                                  "--actor", "staff_3", "--reason", "investigation", "--now", "2026-02-01T00:00:00Z"])
        #expect(r.status == 0)
        let ids = try r.stdout.split(separator: "\n").map { try JSONParser.parse(String($0)).object?["id"]?.string }
        #expect(ids == ["h1", "h2", "h3", "h4", "h5"])
    }

    @Test(arguments: TestBackend.allCases)
    func accessLogJudgesEachAccess(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, keys) = (place.journalArgument, place.keysArgument)
        let input = """
            {"type":"AccountSignedUp","account":"acc_1","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
            {"type":"AccountAccessed","account":"acc_1","at":"2026-01-02T00:00:00Z","data":{"actor":"staff_1","ip":"203.0.113.1","reason":"curious"}}
            {"type":"SupportMessageReceived","account":"acc_1","at":"2026-01-03T00:00:00Z","data":{"ticket":"T-1","from_email":"ada@example.com","body":"help"}}
            {"type":"AccountAccessed","account":"acc_1","at":"2026-01-03T00:00:00Z","data":{"actor":"staff_2","ip":"2001:db8::2","reason":"support","ticket":"T-1"}}
            {"type":"AccountAccessed","account":"acc_1","at":"2026-01-04T00:00:00Z","data":{"actor":"staff_3","ip":"203.0.113.3","reason":"support","ticket":"T-2"}}
            {"type":"LegalHoldPlaced","account":"acc_1","at":"2026-01-05T00:00:00Z","data":{"case":"C-1","reason":"subpoena"}}
            {"type":"AccountAccessed","account":"acc_1","at":"2026-01-06T00:00:00Z","data":{"actor":"legal_1","ip":"203.0.113.4","reason":"case"}}
            {"type":"LegalHoldReleased","account":"acc_1","at":"2026-01-07T00:00:00Z","data":{"case":"C-1"}}
            {"type":"AccountAccessed","account":"acc_1","at":"2026-01-08T00:00:00Z","data":{"actor":"legal_1","ip":"203.0.113.4","reason":"case"}}
            {"type":"AccountSignedUp","account":"acc_2","at":"2026-01-01T00:00:00Z","data":{"name":"Bob","email":"bob@example.com"}}
            {"type":"AccountAccessed","account":"acc_2","at":"2026-01-03T12:00:00Z","data":{"actor":"staff_2","ip":"203.0.113.2","reason":"support","ticket":"T-1"}}
            """
        #expect(try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: input).status == 0)
        let json = try run("lethe", ["access-log", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--format", "json"])
        #expect(json.status == 0)
        let entries = try JSONParser.parse(json.stdout.trimmingCharacters(in: .newlines))
        guard case .array(let list) = entries else { Issue.record("not an array"); return }
        #expect(list.map { $0.object?["authorized"] } == [false, true, false, false, true, false].map { JSONValue.bool($0) })
        // In time order across accounts: acc_2's access on the 3rd at noon comes fourth.
        #expect(list.map { $0.object?["account"]?.string } == ["acc_1", "acc_1", "acc_2", "acc_1", "acc_1", "acc_1"])
        #expect(list[0].object?.keys == ["at", "account", "actor", "ip", "reason", "ticket", "authorized"])
        #expect(list[0].object?["ticket"] == .null && list[1].object?["ip"] == "2001:db8::2")
        // A ticket opened by another account does not authorize.
        #expect(list[2].object?["ticket"] == "T-1" && list[2].object?["authorized"] == false)

        let one = try run("lethe", ["access-log", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "acc_2", "--format", "json"])
        #expect(try JSONParser.parse(one.stdout.trimmingCharacters(in: .newlines)) == .array([list[2]]))
        let table = try run("lethe", ["access-log", "--journal", journal, "--keys", keys] + place.viewsArguments)
        let rows = table.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(rows.first == ["at", "account", "actor", "ip", "reason", "ticket", "authorized"])
        #expect(rows.dropFirst().first == ["2026-01-02T00:00:00Z", "acc_1", "staff_1", "203.0.113.1", "curious", "-", "NO"])
        #expect(table.stdout.hasSuffix("6 accesses, 4 not authorized\n"))

        // A read through the CLI for the account's own ticket is an authorized access.
        let read = try run("lethe", ["state", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "acc_1", "--actor", "staff_8", "--reason", "support",
                                     "--ticket", "T-1", "--now", "2026-02-01T00:00:00Z"])
        #expect(read.status == 0)
        let after = try JSONParser.parse(try run("lethe", ["access-log", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "acc_1", "--format", "json"])
            .stdout.trimmingCharacters(in: .newlines))
        guard case .array(let mine) = after else { Issue.record("not an array"); return }
        #expect(mine.last?.object?["actor"] == "staff_8" && mine.last?.object?["ticket"] == "T-1" && mine.last?.object?["authorized"] == true)
    }

    @Test func theExampleServiceRuns() throws {
        let dir = try TempDir()
        let r = try run("lethe-example-service", [dir.path("svc")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains(#""account":"acc_ada","status":"active""#))
        #expect(r.stdout.hasSuffix("followed 9 committed events\n"))
        #expect(r.stderr.contains("refused") && r.stderr.contains("erasure requested"))
    }

    @Test(arguments: TestBackend.allCases)
    func disclosuresAndPolicyNotices(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, keys) = (place.journalArgument, place.keysArgument)
        let input = """
            {"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"A","email":"a@example.com"}}
            {"type":"DataShared","account":"a","at":"2026-01-02T00:00:00Z","data":{"recipient":"vms","basis":"consent","categories":["billing"]}}
            {"type":"ConsentGranted","account":"a","at":"2026-01-03T00:00:00Z","data":{"purpose":"share:vms"}}
            {"type":"DataShared","account":"a","at":"2026-01-04T00:00:00Z","data":{"recipient":"vms","basis":"consent","categories":["billing"]}}
            {"type":"DataShared","account":"a","at":"2026-01-05T00:00:00Z","data":{"recipient":"partner","basis":"consent","categories":["profile"]}}
            {"type":"ConsentRevoked","account":"a","at":"2026-01-06T00:00:00Z","data":{"purpose":"share:vms"}}
            {"type":"DataShared","account":"a","at":"2026-01-07T00:00:00Z","data":{"recipient":"vms","basis":"consent","categories":["billing"]}}
            {"type":"DataShared","account":"a","at":"2026-01-08T00:00:00Z","data":{"recipient":"newco","basis":"merger","categories":["profile"]}}
            {"type":"NoticeSent","account":"a","at":"2026-01-09T00:00:00Z","data":{"topic":"merger"}}
            {"type":"DataShared","account":"a","at":"2026-01-10T00:00:00Z","data":{"recipient":"newco","basis":"merger","categories":["profile"]}}
            {"type":"DataShared","account":"a","at":"2026-01-11T00:00:00Z","data":{"recipient":"court","basis":"legal","categories":["support"]}}
            {"type":"NoticeSent","account":"a","at":"2026-01-12T00:00:00Z","data":{"topic":"policy-change","version":"2026-02"}}
            {"type":"AccountSignedUp","account":"b","at":"2026-01-01T00:00:00Z","data":{"name":"B","email":"b@example.com"}}
            {"type":"NoticeSent","account":"b","at":"2026-01-12T00:00:00Z","data":{"topic":"policy-change","version":"2025-06"}}
            {"type":"AccountSignedUp","account":"c","at":"2026-01-01T00:00:00Z","data":{"name":"C","email":"c@example.com"}}
            {"type":"AccountCancelled","account":"c","at":"2026-01-02T00:00:00Z","data":{}}
            {"type":"AccountSignedUp","account":"d","at":"2026-01-01T00:00:00Z","data":{"name":"D","email":"d@example.com"}}
            """
        #expect(try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: input).status == 0)
        let shares = try JSONParser.parse(try run("lethe", ["disclosures", "--journal", journal, "--keys", keys] + place.viewsArguments).stdout.trimmingCharacters(in: .newlines))
        guard case .array(let list) = shares else { Issue.record("not an array"); return }
        #expect(list.map { $0.object?["without_consent"] } == [true, false, true, true, false, false, false].map { JSONValue.bool($0) })
        #expect(list.map { $0.object?["without_merger_notice"] } == [false, false, false, false, true, false, false].map { JSONValue.bool($0) })
        #expect(list.first?.object?.keys == ["at", "account", "recipient", "basis", "categories", "without_consent", "without_merger_notice"])

        let notices = try run("lethe", ["policy-notices", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--version", "2026-02"])
        #expect(notices.stdout == #"{"version":"2026-02","pending":["b","d"],"count":2}"# + "\n")
    }

    @Test(arguments: TestBackend.allCases)
    func subjectReportHoldsEverythingAndIsRecorded(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (dir, journal, keys) = (place.dir, place.journalArgument, place.keysArgument)
        let input = """
            {"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com","company":"<b>Engines</b> & Co"}}
            {"type":"BillingAddressSet","account":"a","at":"2026-01-02T00:00:00Z","data":{"line1":"12 St James's Square","city":"London","country":"GB"}}
            {"type":"PaymentRecorded","account":"a","at":"2026-01-03T00:00:00Z","data":{"transaction":"tx1","amount_minor":2900,"currency":"GBP","card_last4":"4242"}}
            {"type":"SupportMessageReceived","account":"a","at":"2026-01-04T00:00:00Z","data":{"ticket":"T-1","from_email":"ada@example.com","body":"My site is down"}}
            {"type":"SurveyAnswered","account":"a","at":"2026-01-05T00:00:00Z","data":{"survey":"nps","answers":{"score":9}}}
            {"type":"ItemCreated","account":"a","at":"2026-01-06T00:00:00Z","data":{"item":"site_1","kind":"site","label":"engines.example"}}
            {"type":"ItemDeleted","account":"a","at":"2026-01-07T00:00:00Z","data":{"item":"site_1"}}
            {"type":"ConsentGranted","account":"a","at":"2026-01-08T00:00:00Z","data":{"purpose":"share:partner-x"}}
            {"type":"DataShared","account":"a","at":"2026-01-09T00:00:00Z","data":{"recipient":"partner-x","basis":"consent","categories":["profile"]}}
            {"type":"PageViewed","account":"a","at":"2026-01-10T00:00:00Z","data":{"path":"/pricing","visitor":"v1"}}
            {"type":"AccountCancelled","account":"a","at":"2026-01-11T00:00:00Z","data":{}}
            """
        #expect(try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: input).status == 0)
        let r = try run("lethe", ["subject-report", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "a", "--actor", "support_7", "--reason", "subject access request",
                                  "--now", "2026-01-12T00:00:00Z"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(try JSONParser.parse(r.stdout.trimmingCharacters(in: .newlines)).object)
        #expect(report["status"] == "cancelled" && report["profile"]?.object?["email"] == "ada@example.com")
        func list(_ key: String) -> [JSONObject] {
            guard case .array(let items)? = report[key] else { return [] }
            return items.compactMap(\.object)
        }
        #expect(list("billing_addresses").first?["city"] == "London")
        #expect(list("payments").first?["card_last4"] == "4242")
        #expect(list("support_messages").first?["body"] == "My site is down")
        #expect(list("surveys").first?["survey"] == "nps")
        #expect(list("items").first?["state"] == "trash" && list("items").first?["label"] == "engines.example")
        #expect(list("consents").first?["purpose"] == "share:partner-x")
        #expect(list("disclosures").first?["recipient"] == "partner-x")
        #expect(list("page_views").count == 1)
        let processors = Dictionary(uniqueKeysWithValues: list("processors").map { ($0["processor"]?.string ?? "", $0["categories"]!) })
        #expect(processors["Spark"] == ["payments"] && processors["Zendesk"] == ["support"] && processors["VMS"] == ["billing", "payments"])
        #expect(processors["Amazon Web Services"] == ["billing", "items", "page-views", "payments", "profile", "support", "surveys"])
        let purges = list("scheduled_purges")
        #expect(purges.map { $0["rule"]?.string ?? "" } == ["trash-30d", "cancellation-30d", "page-views-90d", "surveys-365d"])
        #expect(purges[0]["due"] == "2026-02-06T00:00:00Z" && purges[0]["item"] == "site_1" && purges[1]["due"] == "2026-02-10T00:00:00Z")
        #expect(purges.allSatisfy { $0["overdue"] == false && $0["held"] == false })

        // The read is itself an access, recorded before the report was shown.
        let log = try run("lethe", ["access-log", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "a", "--format", "json"])
        #expect(log.stdout.contains(#""actor":"support_7","ip":"127.0.0.1","reason":"subject access request""#))

        // The HTML page is self-contained, and what the customer typed is shown, never interpreted.
        let page = dir.path("a.html")
        let h = try run("lethe", ["subject-report", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--account", "a", "--format", "html", "-o", page, "--now", "2026-01-12T00:00:00Z"])
        #expect(h.status == 0, "\(h.stderr)")
        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect((try FileManager.default.attributesOfItem(atPath: page)[.posixPermissions] as? Int) == 0o600)
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.contains("<h2>Scheduled purges</h2>") && html.contains("<table>"))
        #expect(html.contains("&lt;b&gt;Engines&lt;/b&gt; &amp; Co") && !html.contains("<b>Engines"))
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href="))
    }

    @Test(arguments: TestBackend.allCases)
    func rebuildEqualsCatchUpAndChecksIt(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, keys) = (place.journalArgument, place.keysArgument)
        let lines = try String(contentsOfFile: fixture, encoding: .utf8).split(separator: "\n")
        // Imported in two parts, with the read models caught up in between.
        _ = try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: lines.prefix(1500).joined(separator: "\n"))
        let first = try run("lethe", ["views", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--digest"])
        #expect(first.status == 0, "\(first.stderr)")
        _ = try run("lethe", ["import", "-", "--journal", journal, "--keys", keys] + place.viewsArguments, stdin: lines.dropFirst(1500).joined(separator: "\n"))
        let caughtUp = try run("lethe", ["views", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--digest"]).stdout
        #expect(caughtUp != first.stdout && caughtUp.count == 65)
        let summary = try #require(try JSONParser.parse(try run("lethe", ["views", "--journal", journal, "--keys", keys] + place.viewsArguments).stdout.trimmingCharacters(in: .newlines)).object)
        #expect(summary["checkpoint"] == 3012 && summary["digest"] == .string(String(caughtUp.dropLast())))
        // Counts, not rows: no personal value (the place's address has a user@host of its own).
        #expect(summary["tables"]?.object?["accounts"] == 60 && !JSONValue.object(JSONObject(summary.fields.filter { $0.key != "path" })).jsonText.contains("@"))
        #expect(try run("lethe", ["rebuild", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--check"]).stdout.hasPrefix("ok: the read models equal a rebuild"))
        let rebuilt = try run("lethe", ["rebuild", "--journal", journal, "--keys", keys] + place.viewsArguments)
        #expect(rebuilt.status == 0 && rebuilt.stdout.contains("from 3012 events") && rebuilt.stdout.hasSuffix("digest \(caughtUp)"))

        // A read model altered behind the engine's back is caught, and named.
        try place.tamperWithViews("UPDATE accounts SET email=\(backend == .sqlite ? "" : "convert_to(")'someone@else.example'\(backend == .sqlite ? "" : ", 'UTF8')") WHERE account=(SELECT min(account) FROM accounts)")
        let check = try run("lethe", ["rebuild", "--journal", journal, "--keys", keys] + place.viewsArguments + ["--check"])
        let viewsPlace = try place.defaultViews.description
        #expect(check.status != 0 && check.stderr.hasPrefix("lethe rebuild: the read models at \(viewsPlace) ("), "\(check.stderr)")
        #expect(try run("lethe", ["rebuild", "--journal", journal, "--keys", keys] + place.viewsArguments).stdout.hasSuffix("digest \(caughtUp)"))
    }

    @Test func badArgumentsFailCleanly() throws {
        let dir = try TempDir()
        let missing = try run("lethe", ["verify", "--journal", dir.path("nope.lethe")])
        #expect(missing.status != 0 && missing.stderr == "lethe verify: no journal at \(dir.path("nope.lethe"))\n")
        let now = try run("lethe", ["export", "--journal", dir.path("x"), "--now", "tomorrow"])
        #expect(now.status != 0 && now.stderr.contains("'tomorrow' is invalid for '--now"))
        let file = try run("lethe", ["import", dir.path("none.ndjson"), "--journal", dir.path("x")])
        #expect(file.status != 0 && file.stderr.hasPrefix("lethe import: cannot open"))
    }
}
