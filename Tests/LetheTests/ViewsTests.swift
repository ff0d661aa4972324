import Foundation
import LetheEvents
import LetheJournal
import LetheViews
import Synchronization
import Testing

/// The read models against a plain model of the policy, and rebuild against catch-up.
@Suite struct ViewsTests {
    func journal(_ place: TestPlace, seed: UInt64) throws -> Journal {
        try place.open(blockEvents: 16, seed: seed, rules: ContractRules())
    }

    /// What the read models should say, kept without any of the engine's code.
    struct Model {
        struct Account {
            var status = "active"
            var name: String?, email: String?, company: String?
            var items: [String: String] = [:]
            var holds: Set<String> = []
            var tickets: Set<String> = []
            var consents: Set<String> = []
            var mergerNoticed = false
            var policyVersions: Set<String> = []
        }
        var accounts: [String: Account] = [:]
        /// In journal order, which is time order here (one clock for every account).
        var accesses: [(account: String, authorized: Bool)] = []
        var disclosures: [(account: String, withoutConsent: Bool, withoutNotice: Bool)] = []
        var pageViews: [String: Int64] = [:]
    }

    /// One random event that the contract accepts, applied to the model.
    func step(_ model: inout Model, _ rng: inout SplitMix, at: Timestamp, counter: inout Int) -> NewEvent {
        let account = "acc_\(rng.next() % 6)"
        func pick<T>(_ values: [T]) -> T { values[Int(rng.next() % UInt64(values.count))] }
        func make(_ type: EventType, _ data: JSONObject) -> NewEvent {
            NewEvent(type, account: account, at: at, data: data)
        }
        guard var a = model.accounts[account] else {
            let name = pick(["Ada", "Grace", "Edsger"])
            model.accounts[account] = Model.Account(name: name, email: "\(account)@example.com")
            return make(.accountSignedUp, ["name": .string(name), "email": .string("\(account)@example.com")])
        }
        defer { model.accounts[account] = a }
        counter += 1
        switch rng.next() % 14 {
        case 0:
            let name = pick(["Ada L.", "Grace H.", "Barbara"])
            a.name = name
            return make(.profileUpdated, ["name": .string(name)])
        case 1:
            let item = "i\(counter)"
            a.items[item] = "live"
            return make(.itemCreated, ["item": .string(item), "kind": "site", "label": "my site"])
        case 2:
            guard let item = a.items.filter({ $0.value == "live" }).keys.sorted().first else { fallthrough }
            a.items[item] = "trash"
            return make(.itemDeleted, ["item": .string(item)])
        case 3:
            guard let item = a.items.filter({ $0.value == "trash" }).keys.sorted().last else { fallthrough }
            a.items[item] = "live"
            return make(.itemRestored, ["item": .string(item)])
        case 4:
            if a.status == "active" {
                a.status = "cancelled"
                return make(.accountCancelled, ["reason": "too expensive"])
            }
            a.status = "active"
            return make(.accountReactivated, [:])
        case 5:
            let ticket = "T-\(account)-\(rng.next() % 3)"
            a.tickets.insert(ticket)
            return make(.supportMessageReceived, ["ticket": .string(ticket), "from_email": "c@example.com", "body": "help"])
        case 6, 7:
            let ticket: String? = pick([nil, "T-\(account)-0", "T-\(account)-1", "T-acc_0-0"])
            model.accesses.append((account, ticket.map(a.tickets.contains) == true || !a.holds.isEmpty))
            var data: JSONObject = ["actor": "staff_1", "ip": "203.0.113.9", "reason": "support"]
            if let ticket { data["ticket"] = .string(ticket) }
            return make(.accountAccessed, data)
        case 8:
            let c = "C-\(rng.next() % 2)"
            if a.holds.contains(c) {
                a.holds.remove(c)
                return make(.legalHoldReleased, ["case": .string(c)])
            }
            a.holds.insert(c)
            return make(.legalHoldPlaced, ["case": .string(c), "reason": "subpoena"])
        case 9:
            if a.consents.contains("share:partner-x") {
                a.consents.remove("share:partner-x")
                return make(.consentRevoked, ["purpose": "share:partner-x"])
            }
            a.consents.insert("share:partner-x")
            return make(.consentGranted, ["purpose": "share:partner-x"])
        case 10:
            let basis = pick(["consent", "merger", "legal"])
            model.disclosures.append((account, basis == "consent" && !a.consents.contains("share:partner-x"), basis == "merger" && !a.mergerNoticed))
            return make(.dataShared, ["recipient": "partner-x", "basis": .string(basis), "categories": ["profile", "billing"]])
        case 11:
            if rng.next() % 2 == 0 {
                a.mergerNoticed = true
                return make(.noticeSent, ["topic": "merger"])
            }
            let version = pick(["v1", "v2"])
            a.policyVersions.insert(version)
            return make(.noticeSent, ["topic": "policy-change", "version": .string(version)])
        case 12:
            return make(.paymentRecorded, ["transaction": .string("tx\(counter)"), "amount_minor": 1200, "currency": "EUR", "card_last4": "4242"])
        default:
            let path = pick(["/", "/pricing", "/about"])
            model.pageViews["\(at.rfc3339.prefix(10))|\(path)", default: 0] += 1
            return make(.pageViewed, ["path": .string(path), "visitor": "v9"])
        }
    }

    func compare(_ views: ReadModels, _ model: Model, _ note: Comment) throws {
        for (name, a) in model.accounts {
            let row = try #require(try views.account(name), note)
            #expect(row.status == a.status && row.name == a.name && row.email == a.email, note)
            #expect(Dictionary(uniqueKeysWithValues: try views.items(account: name).map { ($0.item, $0.state) }) == a.items, note)
            #expect(Set(try views.legalHolds(account: name).map(\.case)) == a.holds, note)
            #expect(Set(try views.consents(account: name).map(\.purpose)) == a.consents, note)
            #expect(Set(try views.tickets(account: name).map(\.ticket)) == a.tickets, note)
        }
        var accesses: [(String, Bool)] = []
        try views.accessLog { accesses.append(($0.account, $0.authorized ?? false)) }
        #expect(accesses.map(\.0) == model.accesses.map(\.account) && accesses.map(\.1) == model.accesses.map(\.authorized), note)
        let disclosures = try views.disclosures()
        #expect(disclosures.map { "\($0.account) \($0.withoutConsent) \($0.withoutMergerNotice)" }
            == model.disclosures.map { "\($0.account) \($0.withoutConsent) \($0.withoutNotice)" }, note)
        let counts = Dictionary(uniqueKeysWithValues: try views.pageViews().map { ("\($0.day)|\($0.path)", $0.views) })
        #expect(counts == model.pageViews, note)
        let pending = model.accounts.filter { $0.value.status == "active" && !$0.value.policyVersions.contains("v2") }.keys.sorted()
        #expect(try views.accountsPendingNotice(version: "v2") == pending, note)
    }

    @Test(arguments: TestBackend.allCases, [21, 22, 23] as [UInt64])
    func randomHistoriesMatchAPlainModelAndRebuildEqualsCatchUp(_ backend: TestBackend, seed: UInt64) throws {
        let place = try TestPlace(backend)
        let j = try journal(place, seed: seed)
        var rng = SplitMix(seed: seed)
        var model = Model()
        var counter = 0
        var views = try ReadModels(journal: j, place: try place.views("v"), chunkEvents: 7)
        var clock = ts("2026-01-01T00:00:00Z")
        for round in 0..<25 {
            var batch: [NewEvent] = []
            for _ in 0..<12 {
                clock = clock.adding(seconds: 3 * 3600 + 17)
                batch.append(step(&model, &rng, at: clock, counter: &counter))
            }
            let outcomes = try j.append(batch)
            #expect(outcomes.allSatisfy { if case .appended = $0 { true } else { false } }, "seed \(seed) round \(round)")
            switch rng.next() % 4 {
            case 0: try views.catchUp()
            case 1: views = try ReadModels(journal: j, place: try place.views("v"), chunkEvents: 7)  // a restart
            default: break
            }
        }
        try views.catchUp()
        #expect(try views.checkpoint == j.headSeq)
        try compare(views, model, "seed \(seed)")

        // A rebuild from the journal alone gives the same read models, byte for byte.
        let fresh = try ReadModels(journal: j, place: try place.views("fresh"))
        try fresh.rebuild()
        #expect(try fresh.digest() == views.digest())

        // Purges: the engine's events remove the data from the read models, and a rebuild, which
        // finds the purged account's payloads unreadable, still gives the same rows.
        let trashed = model.accounts.flatMap { name, a in a.items.filter { $0.value == "trash" }.map { (name, $0.key) } }.sorted { $0 < $1 }
        var purges: [NewEvent] = []
        clock = clock.adding(seconds: 60)
        if let (account, item) = trashed.first {
            purges.append(NewEvent(.itemPurged, account: account, at: clock, data: ["item": .string(item), "rule": "trash-30d"]))
        }
        let victim = "acc_1"
        purges.append(NewEvent(.accountPurged, account: victim, at: clock, data: ["rule": "erasure-request"]))
        #expect(try j.append(purges, erasing: [.account(victim, keeping: EventType.chainsOutlivingAccount)]).allSatisfy { if case .appended = $0 { true } else { false } })
        try views.catchUp()
        let gone = try #require(try views.account(victim))
        #expect(gone.status == "purged" && gone.name == nil && gone.email == nil && gone.purgedAt == clock.rfc3339)
        #expect(try views.items(account: victim).isEmpty && views.tickets(account: victim).isEmpty && views.payments(account: victim).isEmpty)
        var victimAccesses: [Views.Access] = []
        try views.accessLog(account: victim) { victimAccesses.append($0) }
        #expect(!victimAccesses.isEmpty && victimAccesses.allSatisfy { $0.actor == "staff_1" && $0.authorized == nil })
        if let (account, item) = trashed.first, account != victim {
            #expect(try !views.items(account: account).contains { $0.item == item })
        }
        try fresh.rebuild()
        #expect(try fresh.digest() == views.digest())
        var dump = ""
        try views.dump { dump += String(decoding: $0, as: UTF8.self) }
        #expect(!dump.contains("acc_1@example.com"))
    }

    @Test(arguments: TestBackend.allCases)
    func readModelsFollowTheirJournal(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        _ = try j.append([
            event("a", .accountSignedUp, at: "2026-01-01T00:00:00Z", data: ["name": "Ada", "email": "ada@example.com"]),
            event("a", .pageViewed, at: "2026-01-01T01:00:00Z"),
        ])
        do {
            let views = try ReadModels(journal: j, place: try place.views("j"))
            #expect(try views.catchUp() == 2)
            #expect(try views.catchUp() == 0)
        }
        // Another process (here: another instance) finds the checkpoint and goes on from it.
        _ = try j.append([event("a", .pageViewed, at: "2026-01-02T01:00:00Z")])
        let again = try ReadModels(journal: j, place: try place.views("j"))
        #expect(try again.checkpoint == 2)
        #expect(try again.catchUp() == 1)
        #expect(try again.pageViews().map(\.views) == [1, 1])

        // Read models made from another journal are not trusted: they are made again for this one.
        let otherPlace = try TestPlace(backend)
        let other = try otherPlace.open(seed: 2)
        _ = try other.append([event("b", .accountSignedUp, at: "2026-01-01T00:00:00Z", data: ["name": "Bo", "email": "bo@example.com"])])
        let mixed = try ReadModels(journal: other, place: try place.views("j"))
        #expect(try mixed.checkpoint == 0)
        try mixed.catchUp()
        #expect(try mixed.account("a") == nil && mixed.account("b")?.name == "Bo")

        // A file that is not a database at all is made anew.
        if backend == .sqlite {
            try Data("not a database, just bytes".utf8).write(to: URL(fileURLWithPath: place.dir.path("junk.views")))
            let junk = try ReadModels(journal: j, path: place.dir.path("junk.views"))
            #expect(try junk.catchUp() == 3 && junk.account("a")?.name == "Ada")
        }
    }

    @Test(arguments: TestBackend.allCases)
    func aRebuildReplacesTheContentUnderAnotherReader(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        _ = try j.append([event("a", .accountSignedUp, at: "2026-01-01T00:00:00Z", data: ["name": "Ada", "email": "ada@example.com"])])
        let reader = try ReadModels(journal: j, place: try place.views("j"))  // another process, as far as the store can tell
        try reader.catchUp()
        let rebuilder = try ReadModels(journal: j, place: try place.views("j"))
        _ = try j.append([event("a", .profileUpdated, at: "2026-01-02T00:00:00Z", data: ["name": "Ada L."])])
        try rebuilder.rebuild()
        // The reader's connection sees the rebuilt content in the same place.
        #expect(try reader.checkpoint == 2 && reader.account("a")?.name == "Ada L.")
        #expect(try reader.digest() == rebuilder.digest())
        // No scratch is left behind.
        if backend == .sqlite {
            let left = try FileManager.default.contentsOfDirectory(atPath: place.dir.path("")).filter { $0.contains("scratch") }
            #expect(left.isEmpty, "\(left)")
        } else {
            #expect(try place.schemas().filter { $0.contains("_s") && $0 != place.schema }.isEmpty)
        }
    }

    /// Instances of a service sharing read models on the server: while all of them catch up at
    /// once, each event is applied exactly once (they take turns, each going on from where the
    /// last left off), and every instance reads what any of them projected.
    @Test func instancesShareReadModelsOnTheServer() throws {
        let place = try TestPlace(.postgres)
        let j = try place.open(blockEvents: 16, rules: ContractRules())
        var batch: [NewEvent] = []
        for k in 0..<600 {
            let account = "acc_\(k % 40)"
            let at = ts("2026-01-01T00:00:00Z").adding(seconds: Int64(k) * 61)
            batch.append(k < 40
                ? event(account, .accountSignedUp, at: at.rfc3339, data: ["name": .string("N\(k)"), "email": .string("n\(k)@example.com")])
                : event(account, .pageViewed, at: at.rfc3339))
        }
        _ = try j.append(batch)
        let instances = try (0..<4).map { _ in try ReadModels(journal: try place.open(blockEvents: 16, rules: ContractRules()), chunkEvents: 37) }
        let applied = Mutex<[Int64]>([])
        DispatchQueue.concurrentPerform(iterations: instances.count) { i in
            let n = (try? instances[i].catchUp()) ?? -1_000_000
            applied.withLock { $0.append(n) }
        }
        #expect(applied.withLock { $0.reduce(0, +) } == 600)
        for views in instances {
            #expect(try views.checkpoint == 600)
            #expect(try views.account("acc_7")?.name == "N7")
        }
        // They are the read models of the journal's database, and equal a rebuild.
        #expect(instances[0].path == (try place.defaultViews).description)
        let fresh = try ReadModels(journal: j, place: try place.views("fresh"))
        try fresh.rebuild()
        #expect(try fresh.digest() == instances[3].digest())
        let check = try instances[1].check()
        #expect(check.current == check.rebuilt)
    }

    /// Values an attacker chooses (account names, item ids, cases, topics) go into the batches the
    /// server runs as literals: quotes, backslashes, the batch's own quote tag and SQL of their own
    /// stay values. The read models on the server equal those in a file, row for row, whether the
    /// projection knows the store (from empty) or reads it (a catch-up after another instance's).
    @Test func hostileValuesStayValuesOnTheServer() throws {
        let place = try TestPlace(.postgres)
        let j = try place.open(rules: ContractRules())
        let hostile = ["o'brien$lethe$", "x'); DROP TABLE accounts; --", "back\\slash\\'", "$$dollar$$", "semi;colon -- ", "ünï'cödé"]
        var minute: Int64 = 0
        func at() -> String { minute += 1; return ts("2026-01-01T00:00:00Z").adding(seconds: minute * 60).rfc3339 }
        // Two instances take turns catching up, one account's events at a time: each finds the
        // store moved by the other, and reads what the checks need from it.
        let instances = try (0..<2).map { _ in try ReadModels(journal: j, place: try place.views("r")) }
        for (k, name) in hostile.enumerated() {
            let batch = [
                event(name, .accountSignedUp, at: at(), data: ["name": .string(name), "email": .string("e\(k)@example.com")]),
                event(name, .itemCreated, at: at(), data: ["item": .string(name), "kind": "site", "label": .string(name)]),
                event(name, .legalHoldPlaced, at: at(), data: ["case": .string(name), "reason": .string(name)]),
                event(name, .noticeSent, at: at(), data: ["topic": .string(name), "version": .string(name)]),
                event(name, .supportMessageReceived, at: at(), data: ["ticket": .string(name), "subject": .string(name), "body": "hi"]),
                event(name, .accountAccessed, at: at(), data: ["actor": "staff_1", "ip": "10.0.0.1", "ticket": .string(name), "reason": "x"]),
                event(name, .legalHoldReleased, at: at(), data: ["case": .string(name)]),
                event(hostile[0], .accountAccessed, at: at(), data: ["actor": "staff_1", "ip": "10.0.0.1", "ticket": .string(name), "reason": "x"]),
            ]
            let outcomes = try j.append(batch)
            #expect(outcomes.allSatisfy { if case .appended = $0 { true } else { false } }, "\(outcomes)")
            #expect(try instances[k % 2].catchUp() == Int64(batch.count))
        }
        let onServer = try ReadModels(journal: j)
        try onServer.catchUp()
        let inFile = try ReadModels(journal: j, path: place.dir.path("f.views"))
        try inFile.catchUp()
        #expect(try onServer.digest() == inFile.digest())
        for name in hostile {
            #expect(try onServer.items(account: name).map(\.item) == [name])
            #expect(try onServer.account(name)?.name == name)
        }
        #expect(try instances[0].digest() == inFile.digest())
    }
}
