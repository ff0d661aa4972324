import Foundation
import LetheEvents
import LetheJournal
import Testing

/// The contract's history-dependent rules, checked by the writer.
@Suite struct RulesTests {
    func journal(_ place: TestPlace, seed: UInt64 = 1) throws -> Journal {
        try place.open(blockEvents: 5, seed: seed, rules: ContractRules())
    }

    func e(_ account: String, _ type: EventType, _ data: JSONObject = [:], at second: Int) -> NewEvent {
        NewEvent(type, account: account, at: Timestamp(seconds: 1_767_225_600 + Int64(second)), data: data)
    }

    @Test(arguments: TestBackend.allCases)
    func theKeyIsDecidedByTheType(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try journal(place)
        var access = e("a", .accountAccessed, ["actor": "s", "ip": "203.0.113.1", "reason": "r"], at: 1)
        access.scope = .account
        var item = e("a", .itemCreated, ["item": "doc", "kind": "file"], at: 2)
        item.scope = .account
        var hold = e("a", .legalHoldPlaced, ["case": "C-1", "reason": "r"], at: 3)
        hold.scope = .account
        let outcomes = try j.append([e("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: 0), access, item, hold])
        #expect(reasons(outcomes) == [
            nil, "AccountAccessed is sealed under another key than its type's", "ItemCreated is sealed under another key than its type's",
            "LegalHoldPlaced is sealed under another key than its type's",
        ])
    }

    func reasons(_ outcomes: [AppendOutcome]) -> [String?] {
        outcomes.map { if case .rejected(let error) = $0 { error.message } else { nil } }
    }

    @Test(arguments: TestBackend.allCases)
    func refusesWhatTheHistoryForbids(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try journal(place)
        let outcomes = try j.append([
            e("a", .pageViewed, ["path": "/", "visitor": "v"], at: 0),
            e("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: 1),
            e("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: 2),
            e("a", .itemCreated, ["item": "i1", "kind": "site"], at: 3),
            e("a", .itemCreated, ["item": "i1", "kind": "site"], at: 4),
            e("a", .itemRestored, ["item": "i1"], at: 5),
            e("a", .itemDeleted, ["item": "i1"], at: 6),
            e("a", .itemDeleted, ["item": "i1"], at: 7),
            e("a", .accountReactivated, at: 8),
            e("a", .accountCancelled, at: 9),
            e("a", .accountReactivated, at: 10),
            e("a", .itemRestored, ["item": "i1"], at: 11),
        ])
        #expect(reasons(outcomes) == [
            "account a has not signed up: AccountSignedUp comes first", nil, "account a has already signed up", nil,
            "item i1 already exists in account a", "item i1 is not in the trash of account a", nil,
            "item i1 is not live in account a", "account a is not cancelled", nil, nil, nil,
        ])
        // A refused event leaves no trace: versions count only what was accepted.
        #expect(try j.version(of: "a") == 6)
        #expect(try place.verify().events == 6)
    }

    @Test(arguments: TestBackend.allCases)
    func aPurgedAccountTakesNothingMore(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try journal(place)
        _ = try j.append([
            e("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: 0),
            e("a", .accountPurged, ["rule": "erasure-request"], at: 1),
        ])
        let after = try j.append([e("a", .pageViewed, ["path": "/", "visitor": "v"], at: 2), e("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: 3)])
        #expect(reasons(after) == ["account a was purged; it takes no new events", "account a was purged; it takes no new events"])
    }

    @Test(arguments: TestBackend.allCases)
    func theRulesRememberAcrossSessions(_ backend: TestBackend) throws {
        // A new session rebuilds each account's state from its stored history (blocks and tail).
        let place = try TestPlace(backend)
        do {
            let j = try journal(place, seed: 1)
            _ = try j.append([e("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: 0)]
                + (1...7).map { e("a", .itemCreated, ["item": .string("i\($0)"), "kind": "site"], at: $0) })
            _ = try j.append([e("a", .itemDeleted, ["item": "i2"], at: 8)])
        }
        let j = try journal(place, seed: 2)
        let outcomes = try j.append([
            e("a", .itemCreated, ["item": "i3", "kind": "site"], at: 9),
            e("a", .itemRestored, ["item": "i2"], at: 10),
            e("a", .itemDeleted, ["item": "i7"], at: 11),
            e("a", .accountSignedUp, ["name": "Ada", "email": "ada@example.com"], at: 12),
        ])
        #expect(reasons(outcomes) == ["item i3 already exists in account a", nil, nil, "account a has already signed up"])
    }

    /// A random life of a few accounts, against a plain model written without `AccountState`.
    @Test(arguments: TestBackend.allCases, [11, 12, 13] as [UInt64])
    func randomLivesMatchAPlainModel(_ backend: TestBackend, seed: UInt64) throws {
        let place = try TestPlace(backend)
        let j = try journal(place, seed: seed)
        var rng = SplitMix(seed: seed)
        var signedUp = Set<String>(), cancelled = Set<String>(), live = Set<String>(), trash = Set<String>()
        var accepted = 0, refused = 0
        for round in 0..<30 {
            var batch: [NewEvent] = []
            var expected: [Bool] = []
            for k in 0..<20 {
                let account = "acc_\(rng.next() % 3)"
                let item = "\(account)/i\(rng.next() % 4)"
                let at = round * 100 + k
                let event: NewEvent
                let ok: Bool
                switch rng.next() % 7 {
                case 0:
                    event = e(account, .accountSignedUp, ["name": "N", "email": "n@example.com"], at: at)
                    ok = !signedUp.contains(account)
                    if ok { signedUp.insert(account) }
                case 1:
                    event = e(account, .itemCreated, ["item": .string(item), "kind": "site"], at: at)
                    ok = signedUp.contains(account) && !live.contains(item) && !trash.contains(item)
                    if ok { live.insert(item) }
                case 2:
                    event = e(account, .itemDeleted, ["item": .string(item)], at: at)
                    ok = signedUp.contains(account) && live.contains(item)
                    if ok { live.remove(item); trash.insert(item) }
                case 3:
                    event = e(account, .itemRestored, ["item": .string(item)], at: at)
                    ok = signedUp.contains(account) && trash.contains(item)
                    if ok { trash.remove(item); live.insert(item) }
                case 4:
                    event = e(account, .accountCancelled, at: at)
                    ok = signedUp.contains(account)
                    if ok { cancelled.insert(account) }
                case 5:
                    event = e(account, .accountReactivated, at: at)
                    ok = signedUp.contains(account) && cancelled.contains(account)
                    if ok { cancelled.remove(account) }
                default:
                    event = e(account, .pageViewed, ["path": "/", "visitor": "v"], at: at)
                    ok = signedUp.contains(account)
                }
                batch.append(event)
                expected.append(ok)
            }
            let outcomes = try j.append(batch)
            #expect(outcomes.map { if case .appended = $0 { true } else { false } } == expected, "seed \(seed) round \(round)")
            accepted += expected.filter { $0 }.count
            refused += expected.filter { !$0 }.count
        }
        #expect(accepted > 150 && refused > 50)
        // And the state the CLI would show agrees with the model.
        for n in 0..<3 {
            let account = "acc_\(n)"
            var events: [StoredEvent] = []
            try j.read { try $0.events(account: account) { events.append($0) } }
            let state = try AccountState.fold(events, account: account, until: Timestamp(nanoseconds: .max))
            #expect(state.exists == signedUp.contains(account))
            #expect(Set(state.items.filter { !$0.inTrash }.map(\.item)) == live.filter { $0.hasPrefix(account + "/") })
            #expect(Set(state.items.filter { $0.inTrash }.map(\.item)) == trash.filter { $0.hasPrefix(account + "/") })
            #expect((state.status == .cancelled) == cancelled.contains(account))
        }
    }
}
