import Foundation
import LetheEvents
import LetheJournal
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
        return (journal, Retention(journal: journal, views: try ReadModels(journal: journal, path: place.viewsPath)))
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
