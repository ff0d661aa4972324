import Foundation
import LetheEvents
import LetheJournal
import Testing

/// Seeded random batches of appends, checked event by event against a plain model of the
/// journal's rules: ids are idempotent, versions count per account, time never goes back within
/// an account, an expected version must match, and a refused event leaves no trace.
@Suite struct ModelTests {
    struct Model {
        var versions: [String: Int64] = [:]
        var lastAt: [String: Int64] = [:]
        var ids: [String: Int64] = [:]
        var events: [(seq: Int64, account: String, version: Int64, path: String)] = []

        mutating func apply(_ e: NewEvent, path: String) -> String {
            if let id = e.id, ids[id] != nil { return "duplicate" }
            let version = versions[e.account] ?? 0
            if let expected = e.expectedVersion, expected != version { return "rejected" }
            if e.at.nanoseconds < lastAt[e.account] ?? .min { return "rejected" }
            let seq = Int64(events.count + 1)
            versions[e.account] = version + 1
            lastAt[e.account] = e.at.nanoseconds
            if let id = e.id { ids[id] = seq }
            events.append((seq, e.account, version + 1, path))
            return "appended"
        }
    }

    @Test(arguments: TestBackend.allCases, [1, 2, 3, 4, 5] as [UInt64])
    func randomHistoriesMatchTheModel(_ backend: TestBackend, seed: UInt64) throws {
        let place = try TestPlace(backend)
        var rng = SplitMix(seed: seed)
        var model = Model()
        var journal = try place.open(blockEvents: 1 + Int(rng.next() % 50), seed: seed)
        let base = ts("2026-01-01T00:00:00Z").nanoseconds
        var seen: [String: Int] = [:]
        for round in 0..<40 {
            var batch: [NewEvent] = []
            var paths: [String] = []
            for _ in 0..<(1 + rng.next() % 60) {
                let account = "acc_\(rng.next() % 12)"
                let id: String? = rng.next() % 4 == 0 ? nil : "id_\(rng.next() % 900)"
                let at = Timestamp(nanoseconds: base + Int64(round) * 1_000_000_000_000 + Int64(rng.next() % 2_000_000_000_000))
                let expected: Int64? = rng.next() % 5 == 0 ? (model.versions[account] ?? 0) + Int64(rng.next() % 2) : nil
                let path = "/r\(round)/\(rng.next() % 1000)"
                batch.append(NewEvent(id: id, account: account, type: "PageViewed", at: at,
                                      payload: codec.encode(type: "PageViewed", data: ["path": .string(path)]), expectedVersion: expected))
                paths.append(path)
            }
            // The model sees the batch in order, as the journal does.
            var expectedKinds: [String] = []
            var copy = model
            for (e, p) in zip(batch, paths) { expectedKinds.append(copy.apply(e, path: p)) }
            let outcomes = try journal.append(batch)
            #expect(outcomes.map(kind) == expectedKinds, "seed \(seed) round \(round)")
            model = copy
            for k in expectedKinds { seen[k, default: 0] += 1 }
            // Now and then, a restart: a new session must carry on exactly where the last one stopped.
            if rng.next() % 7 == 0 { journal = try place.open(blockEvents: 1 + Int(rng.next() % 50), seed: rng.next()) }
        }
        // The history exercised every path, or the comparison proved little.
        #expect(seen["appended", default: 0] > 200 && seen["duplicate", default: 0] > 20 && seen["rejected", default: 0] > 20, "\(seen)")
        let stored = try allEvents(journal)
        #expect(stored.count == model.events.count)
        for (s, m) in zip(stored, model.events) {
            #expect(s.header.seq == m.seq && s.header.account == m.account && s.header.version == m.version)
            #expect(try data(s)["path"]?.string == m.path)
        }
        for account in Set(model.events.map(\.account)) {
            var mine: [Int64] = []
            try journal.read { try $0.events(account: account) { mine.append($0.header.seq) } }
            #expect(mine == model.events.filter { $0.account == account }.map(\.seq))
        }
        let report = try place.verify()
        #expect(report.events == Int64(model.events.count) && report.anchored)
    }
}
