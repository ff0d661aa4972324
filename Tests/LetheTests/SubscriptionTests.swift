import Foundation
import LetheEvents
import LetheJournal
import Testing

@Suite struct SubscriptionTests {
    func page(_ i: Int) -> NewEvent {
        NewEvent(id: "s\(i)", account: "acc_\(i % 3)", type: "PageViewed", at: Timestamp(seconds: 1_767_225_600 + Int64(i)),
                 payload: codec.encode(type: "PageViewed", data: ["path": .string("/\(i)"), "visitor": "v"]))
    }

    @Test func aSubscriberSeesEveryCommittedEventInOrderAndResumes() async throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 16)
        for i in 0..<40 { try j.append(page(i)) }
        // More arrive while the subscriber reads: in small batches, from another task.
        let writer = Task {
            for start in stride(from: 40, to: 100, by: 6) {
                _ = try j.append((start..<min(start + 6, 100)).map(page))
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        var seen: [Int64] = []
        var paths: [String] = []
        for try await e in j.subscribe(after: 0, poll: .milliseconds(5)) {
            seen.append(e.header.seq)
            paths.append(try data(e)["path"]!.string!)
            if seen.count == 100 { break }
        }
        try await writer.value
        #expect(seen == Array(1...100))
        #expect(paths == (0..<100).map { "/\($0)" })

        // After a restart, the host resumes from the last sequence number it handled.
        var resumed: [Int64] = []
        for try await e in try openJournal(dir, blockEvents: 16, seed: 2).subscribe(after: 70, poll: .milliseconds(5)) {
            resumed.append(e.header.seq)
            if resumed.count == 30 { break }
        }
        #expect(resumed == Array(71...100))
    }

    @Test func cancellingEndsAWaitingSubscriber() async throws {
        let dir = try TempDir()
        let j = try openJournal(dir)
        try j.append(page(0))
        let waiting = Task {
            var n = 0
            for try await _ in j.subscribe(after: 0, poll: .milliseconds(5)) { n += 1 }
            return n
        }
        try await Task.sleep(for: .milliseconds(100))
        waiting.cancel()
        #expect(try await waiting.value == 1)
    }
}
