import Foundation
import LetheEvents
import LetheJournal
@testable import LethePostgres
import LetheRetention
import LetheViews
import Synchronization
import Testing

/// Obligations, runs and purges against a small independent model of EVENTS.md's retention rules.
@Suite struct RetentionTests {
    static let day: Int64 = 86_400

    /// The contract's retention rules, written without any of the engine's code: a fold over the
    /// events and runs up to a moment, recomputed from scratch for every question.
    struct Model {
        enum Step {
            case event(account: String, type: EventType, item: String?, holdCase: String?, at: Int64)
            case run(at: Int64)
        }
        var steps: [Step] = []

        struct Obligation: Equatable, CustomStringConvertible {
            var account: String, item: String?, rule: String, due: Int64, held: Bool
            var description: String { "\(account) \(item ?? "-") \(rule) due \(due) held \(held)" }
        }

        struct Account {
            var status = "active"
            var items: [String: String] = [:]
            var trashStart: [String: Int64] = [:]
            var cancelStart: Int64?
            var erasureStarts: [Int64] = []
            var holds: Set<String> = []
        }

        /// Every account as of `t` (events and runs at or before `t`, in order).
        func accounts(at t: Int64) -> [String: Account] {
            var accounts: [String: Account] = [:]
            for step in steps {
                switch step {
                case .event(let a, let type, let item, let c, let at):
                    guard at <= t else { continue }
                    if type == .accountSignedUp { accounts[a] = Account(); continue }
                    guard var acc = accounts[a], acc.status != "purged" else { continue }
                    switch type {
                    case .itemCreated: acc.items[item!] = "live"
                    case .itemDeleted: acc.items[item!] = "trash"; acc.trashStart[item!] = at
                    case .itemRestored: acc.items[item!] = "live"; acc.trashStart[item!] = nil
                    case .accountCancelled where acc.status == "active": acc.status = "cancelled"; acc.cancelStart = at
                    case .accountReactivated where acc.status == "cancelled": acc.status = "active"; acc.cancelStart = nil
                    case .erasureRequested: acc.erasureStarts.append(at)
                    case .legalHoldPlaced: acc.holds.insert(c!)
                    case .legalHoldReleased: acc.holds.remove(c!)
                    default: break
                    }
                    accounts[a] = acc
                case .run(let at):
                    guard at <= t else { continue }
                    for (a, acc) in accounts where acc.status != "purged" && acc.holds.isEmpty {
                        var acc = acc
                        let accountDue = (acc.cancelStart.map { $0 + 30 * day <= at } ?? false) || acc.erasureStarts.contains { $0 <= at }
                        if accountDue {
                            acc = Account(status: "purged")
                        } else {
                            for (item, start) in acc.trashStart where start + 30 * day <= at {
                                acc.items[item] = nil
                                acc.trashStart[item] = nil
                            }
                        }
                        accounts[a] = acc
                    }
                }
            }
            return accounts
        }

        func report(asOf t: Int64, horizonDays: Int64) -> [Obligation] {
            var out: [Obligation] = []
            for (a, acc) in accounts(at: t) where acc.status != "purged" {
                let held = !acc.holds.isEmpty
                for (item, start) in acc.trashStart { out.append(.init(account: a, item: item, rule: "trash-30d", due: start + 30 * day, held: held)) }
                if let start = acc.cancelStart { out.append(.init(account: a, item: nil, rule: "cancellation-30d", due: start + 30 * day, held: held)) }
                for start in acc.erasureStarts { out.append(.init(account: a, item: nil, rule: "erasure-request", due: start, held: held)) }
            }
            return out.filter { $0.due <= t + horizonDays * day }.sorted { a, b in
                (a.due, a.account, a.item ?? "", a.item == nil ? 0 : 1, a.rule) < (b.due, b.account, b.item ?? "", b.item == nil ? 0 : 1, b.rule)
            }
        }
    }

    static let base: Int64 = 1_767_225_600  // 2026-01-01

    func stamp(_ t: Int64) -> Timestamp { Timestamp(seconds: t) }

    func open(_ place: TestPlace, seed: UInt64) throws -> (Journal, Retention) {
        let journal = try place.open(blockEvents: 8, seed: seed, rules: ContractRules())
        return (journal, Retention(journal: journal, views: try ReadModels(journal: journal)))
    }

    func newEvent(_ account: String, _ type: EventType, _ data: JSONObject, at: Int64) -> NewEvent {
        NewEvent(type, account: account, at: Timestamp(seconds: at), data: data)
    }

    @Test(arguments: TestBackend.allCases, [31, 32, 33, 34] as [UInt64])
    func randomHistoriesMatchTheModelAtManyMoments(_ backend: TestBackend, seed: UInt64) throws {
        let place = try TestPlace(backend)
        let dir = place.dir
        var (journal, retention) = try open(place, seed: seed)
        var rng = SplitMix(seed: seed)
        var model = Model()
        var clock = RetentionTests.base
        var itemCounter = 0
        for step in 0..<160 {
            clock += Int64(rng.next() % (4 * UInt64(RetentionTests.day))) + 1
            if rng.next() % 9 == 0 {
                // A run, sometimes in a fresh engine (a restart).
                if rng.next() % 2 == 0 { (journal, retention) = try open(place, seed: seed &+ UInt64(step)) }
                _ = try retention.run(now: stamp(clock))
                model.steps.append(.run(at: clock))
                continue
            }
            let account = "acc_\(rng.next() % 6)"
            let state = model.accounts(at: clock)[account]
            var type: EventType
            var data: JSONObject = [:]
            var item: String?
            var holdCase: String?
            if state == nil {
                type = .accountSignedUp
                data = ["name": "N", "email": "n@example.com"]
            } else if state!.status == "purged" {
                continue
            } else {
                let live = state!.items.filter { $0.value == "live" }.keys.sorted()
                let trash = state!.items.filter { $0.value == "trash" }.keys.sorted()
                let choice = rng.next() % 12
                switch choice {
                case 0, 1:
                    itemCounter += 1
                    type = .itemCreated
                    item = "i\(itemCounter)"
                    data = ["item": .string(item!), "kind": "site", "label": .string("label \(item!)")]
                case 2 where !live.isEmpty, 3 where !live.isEmpty:
                    type = .itemDeleted
                    item = live[Int(rng.next() % UInt64(live.count))]
                    data = ["item": .string(item!)]
                case 4 where !trash.isEmpty:
                    type = .itemRestored
                    item = trash[Int(rng.next() % UInt64(trash.count))]
                    data = ["item": .string(item!)]
                case 5 where state!.status == "active":
                    type = .accountCancelled
                case 6 where state!.status == "cancelled":
                    type = .accountReactivated
                case 7 where rng.next() % 3 == 0:
                    type = .erasureRequested
                case 8:
                    holdCase = "C-\(rng.next() % 2)"
                    type = state!.holds.contains(holdCase!) ? .legalHoldReleased : .legalHoldPlaced
                    data = type == .legalHoldPlaced ? ["case": .string(holdCase!), "reason": "subpoena"] : ["case": .string(holdCase!)]
                default:
                    type = .pageViewed
                    data = ["path": "/pricing", "visitor": "v1"]
                }
            }
            let outcome = try journal.append([newEvent(account, type, data, at: clock)])[0]
            guard case .appended = outcome else { Issue.record("seed \(seed) step \(step): \(type) refused: \(outcome)"); continue }
            model.steps.append(.event(account: account, type: type, item: item, holdCase: holdCase, at: clock))
        }
        let end = clock
        _ = try retention.run(now: stamp(end))
        model.steps.append(.run(at: end))
        // The dry run at many moments, before and after runs, agrees with the model.
        var moments: [Int64] = (0..<30).map { _ in RetentionTests.base + Int64(rng.next() % UInt64(end - RetentionTests.base + 40 * RetentionTests.day)) }
        moments += model.steps.compactMap { if case .run(let t) = $0 { t } else { nil } }
        for t in moments {
            let horizon = Int64(rng.next() % 45)
            let report = try retention.report(asOf: stamp(t), horizonDays: horizon)
            let got = report.obligations.map {
                Model.Obligation(account: $0.account, item: $0.item, rule: $0.rule, due: $0.due.nanoseconds / 1_000_000_000, held: $0.held)
            }
            #expect(got == model.report(asOf: t, horizonDays: horizon), "seed \(seed) as of \(t)")
            #expect(report.obligations.allSatisfy { $0.status == ($0.due <= stamp(t) ? "due" : "upcoming") })
        }
        // And the accounts themselves: status and items, after every run.
        for (account, expected) in model.accounts(at: .max) {
            var events: [StoredEvent] = []
            try journal.read { try $0.events(account: account) { events.append($0) } }
            let state = try AccountState.fold(events, account: account, until: Timestamp(nanoseconds: .max))
            #expect(state.status.rawValue == expected.status, "seed \(seed) \(account)")
            #expect(Dictionary(uniqueKeysWithValues: state.items.map { ($0.item, $0.inTrash ? "trash" : "live") }) == expected.items, "seed \(seed) \(account)")
        }
        // Running again at the end changes nothing more, and a rebuild equals the caught-up models.
        let again = try retention.run(now: stamp(end))
        #expect(again.accountsPurged.isEmpty && again.itemsPurged == 0)
        let fresh = try ReadModels(journal: journal, path: dir.path("fresh.views"))
        try fresh.rebuild()
        #expect(try fresh.digest() == retention.views.digest())
    }

    @Test(arguments: TestBackend.allCases)
    func aLegalHoldStopsPurgesUntilTheLastCaseIsReleased(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let (journal, retention) = try open(place, seed: 1)
        let t0 = RetentionTests.base, d = RetentionTests.day
        _ = try journal.append([
            newEvent("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: t0),
            newEvent("a", .legalHoldPlaced, ["case": "C-1", "reason": "subpoena"], at: t0 + 1),
            newEvent("a", .legalHoldPlaced, ["case": "C-2", "reason": "audit"], at: t0 + 2),
            newEvent("a", .erasureRequested, [:], at: t0 + 3),
            newEvent("a", .legalHoldReleased, ["case": "C-1"], at: t0 + 10 * d),
        ])
        let held = try retention.run(now: stamp(t0 + 20 * d))
        #expect(held.accountsPurged.isEmpty && held.held == 1)
        let report = try retention.report(asOf: stamp(t0 + 20 * d), horizonDays: 0)
        #expect(report.obligations.map(\.cases) == [["C-2"]] && report.obligations[0].held)
        _ = try journal.append([newEvent("a", .legalHoldReleased, ["case": "C-2"], at: t0 + 21 * d)])
        #expect(try retention.run(now: stamp(t0 + 22 * d)).accountsPurged == ["a"])
        // The delete-persistence figure: due at t0 + 3 s, ran 22 days later.
        let executed = try retention.report(asOf: stamp(t0 + 30 * d), horizonDays: 0).executed
        #expect(executed.count == 1 && executed[0].delaySeconds == 22 * d - 3)
    }

    @Test(arguments: TestBackend.allCases)
    func aRunNeverPurgesWhatLaterEventsSaved(_ backend: TestBackend) throws {
        // The account's history runs past `now`: the purge would be recorded after it, so it must
        // still be pending then. Here the item was restored after `now`; the other is still due.
        let place = try TestPlace(backend)
        let (journal, retention) = try open(place, seed: 5)
        let t0 = RetentionTests.base, d = RetentionTests.day
        _ = try journal.append([
            newEvent("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: t0),
            newEvent("a", .itemCreated, ["item": "kept", "kind": "site"], at: t0 + 1),
            newEvent("a", .itemCreated, ["item": "gone", "kind": "site"], at: t0 + 2),
            newEvent("a", .itemDeleted, ["item": "kept"], at: t0 + 3),
            newEvent("a", .itemDeleted, ["item": "gone"], at: t0 + 4),
            newEvent("a", .itemRestored, ["item": "kept"], at: t0 + 45 * d),
        ])
        let result = try retention.run(now: stamp(t0 + 40 * d))
        #expect(result.itemsPurged == 1)
        let items = try retention.views.items(account: "a")
        #expect(items.map(\.item) == ["kept"] && items[0].state == "live")
    }

    @Test(arguments: TestBackend.allCases)
    func twoRunsAtOnceInTwoProcessesPurgeOnce(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = place.url ?? place.dir.path("j.lethe")
        let keys = ["--keys", place.keysPath]
        var lines: [String] = []
        for n in 0..<40 {
            lines.append(#"{"type":"AccountSignedUp","account":"a\#(n)","at":"2026-01-01T00:00:00Z","data":{"name":"N","email":"n\#(n)@example.com"}}"#)
            lines.append(#"{"type":"ErasureRequested","account":"a\#(n)","at":"2026-01-02T00:00:00Z","data":{}}"#)
        }
        #expect(try run("lethe", ["import", "-", "--journal", journal] + keys, stdin: lines.joined(separator: "\n")).status == 0)
        let processes = try (0..<2).map { _ in
            try start("lethe", ["retention", "run", "--journal", journal, "--now", "2026-02-01T00:00:00Z"] + keys, timeLimit: .seconds(120))
        }
        for r in try processes.map({ try $0.finish() }) { #expect(r.status == 0, "\(r.stderr)") }
        let export = try run("lethe", ["export", "--journal", journal] + keys).stdout
        #expect(export.components(separatedBy: "\"type\":\"AccountPurged\"").count - 1 == 40)
        #expect(export.components(separatedBy: "\"type\":\"ProcessorErasureRequested\"").count - 1 == 40)  // Amazon Web Services: the profile
    }

    /// Runs a system tool, which must succeed within a minute; its standard output.
    @discardableResult
    func tool(_ path: String, _ args: [String]) throws -> String {
        let r = try run(path, args, timeLimit: .seconds(60))
        #expect(r.status == 0, "\(path) exited with \(r.status): \(r.stderr)")
        return r.stdout
    }

    /// Every file the engine keeps for `journal`, and each block's decompressed content.
    func everyByte(_ journal: String) throws -> [(String, Data)] {
        var out: [(String, Data)] = []
        let dir = URL(fileURLWithPath: journal).deletingLastPathComponent()
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) {
            out.append((name, try Data(contentsOf: dir.appendingPathComponent(name))))
        }
        // Blocks, decompressed with the standard tool, as an investigator would.
        let frames = try tool("/usr/bin/sqlite3", [journal, "SELECT id FROM blocks"]).split(separator: "\n")
        for id in frames {
            let frame = dir.appendingPathComponent("block-\(id).lz4").path
            try tool("/usr/bin/sqlite3", [journal, "SELECT writefile('\(frame)', frame) FROM blocks WHERE id=\(id)"])
            try tool("/usr/bin/lz4", ["-d", "-f", "-q", frame, frame + ".out"])
            out.append(("block \(id)", try Data(contentsOf: URL(fileURLWithPath: frame + ".out"))))
            try? FileManager.default.removeItem(atPath: frame)
            try? FileManager.default.removeItem(atPath: frame + ".out")
        }
        return out
    }

    @Test func purgedValuesAreGoneFromEveryFile() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        let secrets = ["Zenobia Quarterfield", "zenobia@quarterfield.example", "Quarterfield Holdings", "17 Larkspur Mews",
                       "my dog ate the invoice", "zq-private-site.example"]
        var lines = [
            #"{"type":"AccountSignedUp","account":"zq","at":"2026-01-01T00:00:00Z","data":{"name":"Zenobia Quarterfield","email":"zenobia@quarterfield.example","company":"Quarterfield Holdings"}}"#,
            #"{"type":"BillingAddressSet","account":"zq","at":"2026-01-02T00:00:00Z","data":{"line1":"17 Larkspur Mews","city":"Bath","country":"GB"}}"#,
            #"{"type":"SupportMessageReceived","account":"zq","at":"2026-01-03T00:00:00Z","data":{"ticket":"T-9","from_email":"zenobia@quarterfield.example","body":"my dog ate the invoice"}}"#,
            #"{"type":"ItemCreated","account":"zq","at":"2026-01-04T00:00:00Z","data":{"item":"s1","kind":"site","label":"zq-private-site.example"}}"#,
            #"{"type":"AccountAccessed","account":"zq","at":"2026-01-05T00:00:00Z","data":{"actor":"staff_1","ip":"203.0.113.1","reason":"support","ticket":"T-9"}}"#,
            #"{"type":"ErasureRequested","account":"zq","at":"2026-01-06T00:00:00Z","data":{"channel":"support"}}"#,
        ]
        // Others, so the purged account shares blocks with accounts that stay.
        for n in 0..<30 {
            lines.append(#"{"type":"AccountSignedUp","account":"k\#(n)","at":"2026-01-01T00:00:00Z","data":{"name":"Kept \#(n)","email":"k\#(n)@example.com"}}"#)
        }
        #expect(try run("lethe", ["import", "-", "--journal", journal], stdin: lines.joined(separator: "\n")).status == 0)
        _ = try run("lethe", ["access-log", "--journal", journal])  // the read models now hold the profile (sealed)
        func found() throws -> [String] {
            try everyByte(journal).flatMap { name, bytes in secrets.filter { bytes.range(of: Data($0.utf8)) != nil }.map { "\($0) in \(name)" } }
        }
        // The search reads every file, WALs included: it finds the secrets planted in one.
        let planted = dir.path("planted.lethe-wal")
        try Data(secrets.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: planted))
        #expect(try found() == secrets.map { "\($0) in planted.lethe-wal" })
        try FileManager.default.removeItem(atPath: planted)
        // Nothing of them in clear anywhere, even before the purge: the journal seals them, the
        // read models too.
        #expect(try found() == [])

        let r = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2026-01-07T00:00:00Z"])
        #expect(r.status == 0 && r.stdout.contains("1 accounts purged"), "\(r.stderr)")
        #expect(try found() == [])
        // What remains: the id, the types and times, and the engine's events; the chain verifies.
        let export = try run("lethe", ["export", "--journal", journal]).stdout.split(separator: "\n").filter { $0.contains(#""account":"zq""#) }
        #expect(export.count == 10 && export.filter { $0.contains(#""redacted":true"#) }.count == 5, "\(export.joined(separator: "\n"))")
        #expect(export.last?.contains(#""type":"AccountPurged","account":"zq","at":"2026-01-07T00:00:00Z","data":{"rule":"erasure-request"}"#) == true)
        #expect(try run("lethe", ["verify", "--journal", journal]).status == 0)
        let state = try run("lethe", ["state", "--journal", journal, "--account", "zq"]).stdout
        #expect(state.contains(#""status":"purged","profile":{"name":null,"company":null,"email":null},"items":[]"#))
    }

    /// Runs headless Chromium on a page, for at most a minute; its standard output and standard error.
    func chromium(_ args: [String]) throws -> (out: String, err: String) {
        // Both pipes are drained as they fill (see `run`), so neither stalls the browser.
        let r = try run("/usr/bin/chromium", ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0"] + args,
                        timeLimit: .seconds(60))
        #expect(r.status == 0, "chromium exited with \(r.status): \(r.stderr)")
        return (r.stdout, r.stderr)
    }

    @Test func theHTMLReportRendersInARealBrowser() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium") else {
            Issue.record("Chromium is missing: Tools/setup.sh installs it")
            return
        }
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", fixturesDirectory.appendingPathComponent("small.ndjson").path, "--journal", journal])
        let page = dir.path("report.html")
        let r = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-07-01T00:00:00Z", "--horizon", "30",
                                  "--format", "html", "-o", page])
        #expect(r.status == 0, "\(r.stderr)")
        let url = URL(fileURLWithPath: page).absoluteString
        let dom = try chromium(["--dump-dom", url])
        // It loads without a script error, and its chart and tables are in the rendered DOM.
        #expect(!dom.err.contains("Uncaught") && !dom.err.contains("Page load failed"), "\(dom.err)")
        #expect(dom.out.contains("<svg id=\"purges-per-day\"") && dom.out.contains("<rect class=\"bar\""))
        #expect(dom.out.contains("<table id=\"overdue\">") && dom.out.contains("<tr class=\"overdue\">") && dom.out.contains("<table id=\"upcoming\">"))
        #expect(dom.out.contains("<table id=\"processors\">") && dom.out.contains("Amazon Web Services"))
        // A screenshot of it is not blank: far more to encode than an empty page's.
        let shot = dir.path("report.png"), blank = dir.path("blank.png")
        _ = try chromium(["--screenshot=\(shot)", "--window-size=1200,1600", url])
        _ = try chromium(["--screenshot=\(blank)", "--window-size=1200,1600", "about:blank"])
        let shotBytes = (try FileManager.default.attributesOfItem(atPath: shot)[.size] as? Int) ?? 0
        let blankBytes = (try FileManager.default.attributesOfItem(atPath: blank)[.size] as? Int) ?? 0
        #expect(blankBytes > 0 && shotBytes > 10 * blankBytes, "screenshot \(shotBytes) bytes, blank page \(blankBytes)")
    }
}

@Suite struct RetentionPolicyTests {
    @Test func theShippedPolicyIsTheContracts() throws {
        let p = RetentionPolicy.standard
        #expect(p.purgeDays == ["trash-30d": 30, "cancellation-30d": 30, "erasure-request": 0])
        #expect(p.records.map { "\($0.rule) \($0.type.rawValue) \($0.afterDays)" }
            == ["page-views-90d PageViewed 90", "surveys-365d SurveyAnswered 365", "access-log-400d AccountAccessed 400"])
        #expect(p.processors.map(\.name) == ["Spark", "Amazon Web Services", "Zendesk", "VMS"])
        // The file the operator reviews is the one in force.
        let printed = try run("lethe", ["retention", "policy"]).stdout
        #expect(try RetentionPolicy(json: Array(printed.utf8), source: "printed") == p)
    }

    @Test(arguments: [
        (#""purges":{"trash-30d":{"after_days":30},"cancellation-30d":{"after_days":-1},"erasure-request":{"after_days":0}}"#, "purges.cancellation-30d.after_days: must be a whole number of days"),
        (#""purges":{"trash-30d":{"after_days":30},"erasure-request":{"after_days":0}}"#, "purges.cancellation-30d: is missing"),
        (#""purges":{"trash-30d":{"after_days":30},"cancellation-30d":{"after_days":30},"erasure-request":{"after_days":0},"forever":{"after_days":1}}"#, "purges.forever: unknown field"),
    ])
    func anInvalidPolicyIsRefusedNamingTheField(purges: String, expected: String) throws {
        let text = RetentionPolicy.standardText.replacing(#/"purges": \{[^}]*\}[^}]*\}[^}]*\}\s*\}/#, with: purges)
        #expect(text != RetentionPolicy.standardText)
        #expect { try RetentionPolicy(json: Array(text.utf8), source: "p.json") } throws: {
            ($0 as? RetentionPolicy.Invalid)?.description.hasPrefix("p.json: \(expected)") == true
        }
    }

    @Test func theCommandRefusesAnInvalidPolicyAtStart() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", "-", "--journal", journal],
                    stdin: #"{"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"A","email":"a@example.com"}}"#)
        let bad = dir.path("bad.json")
        try Data(#"{"format":"lethe-retention-policy/1","purges":{},"records":[],"processors":[]}"#.utf8).write(to: URL(fileURLWithPath: bad))
        let r = try run("lethe", ["retention", "run", "--journal", journal, "--policy", bad, "--now", "2026-02-01T00:00:00Z"])
        #expect(r.status != 0 && r.stderr == "lethe retention run: invalid retention policy: \(bad): purges.trash-30d: is missing (the contract's rule)\n")
        #expect(try run("lethe", ["retention", "policy", "--policy", bad]).status != 0)
        // Nothing was done.
        #expect(!(try run("lethe", ["export", "--journal", journal]).stdout.contains("Purged")))
    }

    @Test func aRunInterruptedAfterItsPurgeEventIsFinishedByTheNext() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", "-", "--journal", journal], stdin: """
            {"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
            {"type":"ErasureRequested","account":"a","at":"2026-01-02T00:00:00Z","data":{}}
            """)
        // What a crash right after the purge's events were committed leaves: the erasure recorded, not done.
        do {
            var options = Journal.Options()
            options.rules = ContractRules()
            let j = try Journal(path: journal, master: testMaster, options: options)
            try j.append([NewEvent(.accountPurged, account: "a", at: ts("2026-01-03T00:00:00Z"), data: ["rule": "erasure-request"], id: "lethe:erasure-request:a")],
                         erasing: [.account("a", keeping: ["access-log"])], allOrNothing: true, finish: false)
        }
        let r = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2026-01-03T00:00:00Z"])
        #expect(r.stdout.contains("0 accounts purged") && r.stdout.contains("1 erasures of an interrupted run finished; their keys destroyed"), "\(r.stdout)")
        let state = try run("lethe", ["state", "--account", "a", "--journal", journal, "--actor", "t", "--reason", "test"])
        #expect(state.stdout.contains("\"purged\"") && !state.stdout.contains("Ada"), "\(state.stdout)")
        let again = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2026-01-03T00:00:00Z"])
        #expect(again.stdout.contains("0 accounts purged, 0 items purged, 0 records expired") && !again.stdout.contains("interrupted"))
    }

    @Test("one retention run at a time, across processes; a dead holder's lease is let go and the next run does the work", arguments: TestBackend.allCases)
    func oneRunAtATimeAndADeadHoldersRunIsFinishedByTheNext(_ backend: TestBackend) async throws {
        let place = try TestPlace(backend)
        let journal = try place.open(rules: ContractRules())
        for n in 0..<5 {
            try await journal.record(Events.AccountSignedUp(name: "N", email: "n\(n)@example.com"), account: "a\(n)", at: ts("2026-01-01T00:00:00Z"))
            try await journal.record(Events.ErasureRequested(channel: "support"), account: "a\(n)", at: ts("2026-01-02T00:00:00Z"))
        }
        let retention = Retention(journal: journal, views: try ReadModels(journal: journal))
        let now = ts("2026-02-01T00:00:00Z")
        // Another process holds the lease (as a run in another instance would), with the same
        // lock the engine takes: flock(1) on the journal's lock file (`-o`: its command, which
        // outlives it, holds neither the lock nor the test's pipes), or psql holding the
        // journal's advisory lock on the server.
        let holder: RunningCommand
        let leaseName: String
        switch backend {
        case .sqlite:
            let path = place.dir.path("j.lethe")
            leaseName = path + ".retention.lock"
            holder = try start("/usr/bin/flock", ["-o", leaseName, "/bin/sh", "-c", "exec sleep 60 </dev/null >/dev/null 2>&1"],
                               timeLimit: .seconds(90))
        case .postgres:
            let key = PostgresBackend(try PostgresAddress(place.url!)).lockKey("retention")
            leaseName = "advisory lock \(key) on "
            // An idle session, as the engine's own lease is (a server notices at once that an
            // idle session's client is gone, not one busy in a statement): psql reads its
            // input from a pipe that stays open.
            holder = try start("/bin/bash", ["-c", #"exec psql "$0" -q < <(echo "SELECT pg_advisory_lock($1);"; exec sleep 60 2>/dev/null)"#,
                                             try TestBackend.serverURL(), String(key)], timeLimit: .seconds(90))
        }
        defer { holder.send(SIGKILL); _ = try? holder.finish() }
        try await waitUntil("the other process to hold the lease") {
            guard let probe = try journal.lease("retention") else { return true }
            probe.release()
            return false
        }
        for wait in [Duration.zero, .milliseconds(300)] {
            do {
                _ = try await retention.run(now: now, waitingForAnotherRun: wait)
                Issue.record("a run went ahead while another process held the lease")
            } catch let e as JournalError {
                #expect(e.code == .busy && e.message.contains(leaseName), "\(e)")
            }
        }
        // A scheduler's ticks are skipped meanwhile: quietly at first, then each reported as
        // `.busy` (a lease never let go must not stop erasures silently). Ticks are counted by
        // the scheduler's reads of its clock.
        final class Ticks: Sendable { let count = Atomic<Int>(0) }
        let ticks = Ticks()
        let reports = Mutex<[String]>([])
        let scheduler = RetentionScheduler(retention: retention, period: .milliseconds(10), clock: Clock { [ticks] in
            ticks.count.add(1, ordering: .sequentiallyConsistent)
            return now
        })
        let ticking = Task(executorPreference: OwnQueueExecutor("scheduler")) {
            await scheduler.run { result in
                let text: String
                switch result {
                case .success(let run): text = "ran: \(run.summary)"
                case .failure(let error): text = "\(error)"
                }
                reports.withLock { $0.append(text) }
            }
        }
        let quiet = RetentionScheduler.quietBusyTicks
        try await waitUntil("\(quiet + 2) ticks of the scheduler") { ticks.count.load(ordering: .sequentiallyConsistent) >= quiet + 2 }
        ticking.cancel()
        try await withTimeLimit(.seconds(10), "the cancelled scheduler to return") { await ticking.value }
        let seen = reports.withLock { $0 }
        #expect(seen.count == ticks.count.load(ordering: .sequentiallyConsistent) - quiet, "\(seen)")
        #expect(seen.allSatisfy { $0.contains("another retention run holds this journal") }, "\(seen)")
        #expect(try await journal.read { reader in
            var purged = 0
            try reader.events { if $0.header.type == "AccountPurged" { purged += 1 } }
            return purged
        } == 0)
        // The holder dies without letting go: the kernel (or the server, seeing its connection
        // end) drops its lock, and the next run goes ahead.
        holder.send(SIGKILL)
        _ = try holder.finish()
        let result = try await retention.run(now: now, waitingForAnotherRun: .seconds(5))
        #expect(result.accountsPurged.count == 5)
        #expect(try await retention.run(now: now).accountsPurged.isEmpty)
    }

    @Test func theLeaseIsOneWhateverPathReachesTheJournal() throws {
        // Two instances configured with two names for one file (a link to the journal) must
        // still exclude each other: the lock is beside the file's real path.
        let dir = try TempDir()
        let real = dir.path("j.lethe")
        let one = try contractJournal(real)
        try FileManager.default.createSymbolicLink(atPath: dir.path("alias.lethe"), withDestinationPath: real)
        var options = Journal.Options()
        options.synchronous = .normal
        let other = try Journal(path: dir.path("alias.lethe"), keysPath: real + ".keys", master: testMaster, options: options)
        let held = try #require(try one.lease("retention"))
        #expect(held.path == real + ".retention.lock")
        #expect(try other.lease("retention") == nil, "a second lease through the link")
        held.release()
        let taken = try #require(try other.lease("retention"), "the lease, once let go")
        #expect(taken.path == held.path)
    }

    @Test func theSchedulerRunsEveryPeriodUntilCancelled() async throws {
        let dir = try TempDir()
        let path = dir.path("s.lethe")
        let journal = try contractJournal(path)
        try await journal.record(Events.AccountSignedUp(name: "Ada", email: "ada@example.com"), account: "a", at: ts("2026-01-01T00:00:00Z"))
        try await journal.record(Events.ErasureRequested(channel: "support"), account: "a", at: ts("2026-01-02T00:00:00Z"))
        let retention = Retention(journal: journal, views: try ReadModels(journal: journal))
        let scheduler = RetentionScheduler(retention: retention, period: .milliseconds(20), clock: .fixed(ts("2026-01-03T00:00:00Z")))
        // Failed runs are kept too: a scheduler whose runs all fail must fail the test with their
        // errors, not keep it waiting for a third success. It runs on an executor of its own (and
        // its runs on threads of their own), so the time limit is its own time, not that of the
        // suite's other tests on the shared pool.
        let runs = Mutex<[Result<RetentionRun, TestFailure>]>([])
        let task = Task(executorPreference: OwnQueueExecutor("scheduler")) { await scheduler.run { result in runs.withLock { $0.append(result.mapError { TestFailure("\($0)") }) } } }
        try await waitUntil("three runs of the scheduler (period 20 ms)", timeLimit: .seconds(30)) { runs.withLock { $0.count } >= 3 }
        task.cancel()
        try await withTimeLimit(.seconds(10), "the cancelled scheduler to return") { await task.value }
        let done = try runs.withLock { $0 }.map { try $0.get() }
        #expect(done[0].accountsPurged == ["a"] && done.dropFirst().allSatisfy { $0.accountsPurged.isEmpty }, "\(done)")
    }
}

/// The dry run's formats, as scripts read them (EVENTS.md's JSON exactly).
@Suite struct RetentionReportFormatTests {
    let history = """
        {"type":"AccountSignedUp","account":"acc_42","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
        {"type":"AccountCancelled","account":"acc_42","at":"2026-01-21T10:00:00Z","data":{}}
        {"type":"AccountSignedUp","account":"acc_7","at":"2026-01-01T00:00:00Z","data":{"name":"Bo","email":"bo@example.com"}}
        {"type":"ItemCreated","account":"acc_7","at":"2026-01-02T00:00:00Z","data":{"item":"itm_3","kind":"site"}}
        {"type":"ItemDeleted","account":"acc_7","at":"2026-02-10T08:30:00Z","data":{"item":"itm_3"}}
        {"type":"ItemCreated","account":"acc_7","at":"2026-02-11T00:00:00Z","data":{"item":"itm, \\"quoted\\"","kind":"site"}}
        {"type":"ItemDeleted","account":"acc_7","at":"2026-02-12T00:00:00Z","data":{"item":"itm, \\"quoted\\""}}
        {"type":"LegalHoldPlaced","account":"acc_7","at":"2026-02-13T00:00:00Z","data":{"case":"C-9","reason":"audit"}}
        {"type":"AccountSignedUp","account":"acc_9","at":"2026-01-01T00:00:00Z","data":{"name":"Cy","email":"cy@example.com"}}
        {"type":"ErasureRequested","account":"acc_9","at":"2026-03-05T00:00:00Z","data":{}}
        """

    @Test func jsonIsTheContractsReport() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        #expect(try run("lethe", ["import", "-", "--journal", journal], stdin: history).status == 0)
        let r = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z", "--horizon", "30", "--format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == #"""
            {"as_of":"2026-03-01T00:00:00Z","horizon_days":30,"obligations":[\#
            {"account":"acc_42","item":null,"rule":"cancellation-30d","due":"2026-02-20T10:00:00Z","status":"due","held":false},\#
            {"account":"acc_7","item":"itm_3","rule":"trash-30d","due":"2026-03-12T08:30:00Z","status":"upcoming","held":true},\#
            {"account":"acc_7","item":"itm, \"quoted\"","rule":"trash-30d","due":"2026-03-14T00:00:00Z","status":"upcoming","held":true}]}

            """#)
        // acc_9's request comes after the moment: not taken into account, though due within the
        // horizon. A moment before anything happened: nothing; a horizon of 0: only what is due.
        let early = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-01-01T00:00:00Z", "--format", "json"])
        #expect(early.stdout == #"{"as_of":"2026-01-01T00:00:00Z","horizon_days":30,"obligations":[]}"# + "\n")
        let zero = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z", "--horizon", "0", "--format", "json"])
        #expect(zero.stdout.components(separatedBy: "\"account\"").count - 1 == 1)
    }

    @Test func csvAndTableListTheSameObligations() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", "-", "--journal", journal], stdin: history)
        let csv = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z", "--format", "csv"]).stdout
        #expect(csv.components(separatedBy: "\r\n") == [
            "account,item,rule,due,status,held",
            "acc_42,,cancellation-30d,2026-02-20T10:00:00Z,due,false",
            "acc_7,itm_3,trash-30d,2026-03-12T08:30:00Z,upcoming,true",
            #"acc_7,"itm, ""quoted""",trash-30d,2026-03-14T00:00:00Z,upcoming,true"#,
            "",
        ])
        let table = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z"]).stdout
        #expect(table.hasPrefix("due  ") && table.contains("held (C-9)"))
        #expect(table.hasSuffix("as of 2026-03-01T00:00:00Z, horizon 30 days: 3 obligations, 1 due (0 held), 2 upcoming\n"))
        // A dry run changes nothing.
        #expect(!(try run("lethe", ["export", "--journal", journal]).stdout.contains("Purged")))
    }
}
