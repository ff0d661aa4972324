import Foundation
import LetheEvents
import LetheJournal
import Testing

/// Kills a writer process at random instants and checks that every append it saw return survives
/// and that the journal reopens and verifies.
@Suite struct CrashTests {
    @Test func aKilledWriterLosesNoAcknowledgedAppend() throws {
        let dir = try TempDir()
        let path = dir.path("crash.lethe")
        var acknowledged = Set<String>()
        var generator = SplitMix(seed: 2026)
        let rounds = 25
        for round in 0..<rounds {
            // Its acknowledgements are read as they come: a full pipe would stall it before the kill.
            let writer = try start("lethe-crash-writer", [path, String(round + 1), "64"], timeLimit: .seconds(60))
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
            let journal = try Journal(path: path, keysPath: path + ".keys", master: testMaster)
            let report = try JournalReader.verify(path: path)
            var ids = Set<String>()
            try journal.read { try $0.events { if let id = $0.header.id { ids.insert(id) } } }
            #expect(report.events == Int64(ids.count))
            let lost = acknowledged.subtracting(ids)
            #expect(lost.isEmpty, "round \(round): \(lost.count) acknowledged events lost")
        }
        #expect(acknowledged.count > 100, "the writer hardly wrote anything; the test proved little")
    }
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
