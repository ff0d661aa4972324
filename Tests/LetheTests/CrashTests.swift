import Foundation
import LetheEvents
@testable import LetheJournal
import Testing

/// Kills a writer process at random instants and checks that every append it saw return survives
/// and that the journal reopens and verifies.
@Suite struct CrashTests {
    @Test(arguments: TestBackend.allCases)
    func aKilledWriterLosesNoAcknowledgedAppend(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let path = place.url ?? place.dir.path("j.lethe")  // where `place.journalBackend` reads
        let keys = place.keysArgument
        var acknowledged = Set<String>()
        var generator = SplitMix(seed: 2026)
        let rounds = 25
        for round in 0..<rounds {
            // Its acknowledgements are read as they come: a full pipe would stall it before the kill.
            let before = try? headSeq(place)
            let writer = try start("lethe-crash-writer", [path, String(round + 1), "64", keys], timeLimit: .seconds(60))
            // Every other round, first wait for its first commit: opening (a server's connection and
            // schema above all) can take longer than the random while on a loaded machine.
            if round % 2 == 0 {
                try waitUntil("the writer's first commit", timeLimit: .seconds(30)) { ((try? headSeq(place)) ?? 0) > (before ?? 0) }
            }
            // Let it write for a random while (it may still be opening), then SIGKILL it mid-write.
            usleep(UInt32(20_000 + generator.next() % 180_000))
            writer.send(SIGKILL)
            let text = try writer.finish().stdout
            // The kill may cut the last line short: only whole lines are acknowledgements.
            let whole = text.hasSuffix("\n") ? text[...] : text[..<(text.lastIndex(of: "\n") ?? text.startIndex)]
            for line in whole.split(separator: "\n") where line.hasPrefix("ack ") {
                acknowledged.insert(String(line.dropFirst(4)))
            }
            // Reopen the way a restarted service would (a writer killed before it created the file
            // leaves none, or an empty one), verify, then read everything back.
            let journal = try Journal(backend: try place.journalBackend, keys: try place.keyStore, master: testMaster)
            let report = try place.verify()
            var ids = Set<String>()
            try journal.read { try $0.events { if let id = $0.header.id { ids.insert(id) } } }
            #expect(report.events == Int64(ids.count))
            let lost = acknowledged.subtracting(ids)
            #expect(lost.isEmpty, "round \(round): \(lost.count) acknowledged events lost, \(lost.sorted().prefix(3)) among them")
        }
        #expect(acknowledged.count > 100, "the writer hardly wrote anything; the test proved little")
    }

    @Test("four processes append to one PostgreSQL journal at once, are killed, and every acknowledged append is there exactly once")
    func fourProcessesOnOnePostgresJournal() throws {
        let place = try TestPlace(.postgres)
        let url = try #require(place.url)
        _ = try place.open()  // the journal and its keys, made once
        var acknowledged = Set<String>()
        for round in 0..<3 {
            let writers = try (1...4).map { w in
                try start("lethe-crash-writer", [url, String(round * 10 + w), "64", place.keysArgument], timeLimit: .seconds(60))
            }
            usleep(UInt32(900_000 + 300_000 * round))
            for writer in writers { writer.send(SIGKILL) }
            for writer in writers {
                let text = try writer.finish().stdout
                let whole = text.hasSuffix("\n") ? text[...] : text[..<(text.lastIndex(of: "\n") ?? text.startIndex)]
                for line in whole.split(separator: "\n") where line.hasPrefix("ack ") { acknowledged.insert(String(line.dropFirst(4))) }
            }
            let report = try place.verify()
            var ids: [String] = []
            var versions: [String: Int64] = [:]
            var inOrder = true
            try place.open().read {
                try $0.events { e in
                    ids.append(e.header.id ?? "")
                    inOrder = inOrder && e.header.version == versions[e.header.account, default: 0] + 1
                    versions[e.header.account] = e.header.version
                }
            }
            #expect(report.events == Int64(ids.count))
            #expect(Set(ids).count == ids.count, "round \(round): an id is there twice")
            #expect(acknowledged.subtracting(ids).isEmpty, "round \(round): \(acknowledged.subtracting(ids).count) acknowledged appends lost")
            #expect(inOrder, "round \(round): an account's versions have a gap or a repeat")
        }
        // The writers got through side by side: most of the twelve appended, many events in all.
        let writers = Set(acknowledged.map { $0.split(separator: "-")[0] })
        #expect(writers.count >= 8, "only \(writers.sorted()) appended anything")
        #expect(acknowledged.count > 200, "the writers hardly wrote anything; the test proved little")
    }
}

/// The journal's last sequence number, read as a reader would (nil-like errors: no journal yet).
private func headSeq(_ place: TestPlace) throws -> Int64 {
    let reader = try JournalReader(backend: try place.journalBackend, openKeys: nil)
    defer { reader.store.close() }
    return try reader.snapshot { try reader.headSeq() }
}

/// A small deterministic generator for test schedules.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
