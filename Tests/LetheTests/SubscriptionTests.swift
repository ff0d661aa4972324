import Foundation
import LetheEvents
@testable import LetheJournal
import Synchronization
import Testing

@Suite struct SubscriptionTests {
    func page(_ i: Int) -> NewEvent {
        NewEvent(id: "s\(i)", account: "acc_\(i % 3)", type: "PageViewed", at: Timestamp(seconds: 1_767_225_600 + Int64(i)),
                 payload: codec.encode(type: "PageViewed", data: ["path": .string("/\(i)"), "visitor": "v"]))
    }

    @Test(arguments: TestBackend.allCases)
    func aSubscriberSeesEveryCommittedEventInOrderAndResumes(_ backend: TestBackend) async throws {
        let place = try TestPlace(backend)
        let j = try place.open(blockEvents: 16)
        for i in 0..<40 { try await j.append(page(i)) }
        // More arrive while the subscriber reads: in small batches, from another task.
        let writer = Task(executorPreference: OwnQueueExecutor("writer")) {
            for start in stride(from: 40, to: 100, by: 6) {
                _ = try await j.append((start..<min(start + 6, 100)).map(page))
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        // A subscriber that missed an event would wait for it forever: each read has a deadline.
        let (seen, paths) = try await withTimeLimit(.seconds(30), "the subscriber to see events 1...100") {
            var seen: [Int64] = []
            var paths: [String] = []
            for try await e in j.subscribe(after: 0, poll: .milliseconds(5)) {
                seen.append(e.header.seq)
                paths.append(try data(e)["path"]?.string ?? "no path")
                if seen.count == 100 { break }
            }
            return (seen, paths)
        }
        try await withTimeLimit(.seconds(30), "the writer's appends") { try await writer.value }
        #expect(seen == Array(1...100))
        #expect(paths == (0..<100).map { "/\($0)" })

        // After a restart, the host resumes from the last sequence number it handled.
        let restarted = try place.open(blockEvents: 16, seed: 2)
        let resumed = try await withTimeLimit(.seconds(30), "the resumed subscriber to see events 71...100") {
            var resumed: [Int64] = []
            for try await e in restarted.subscribe(after: 70, poll: .milliseconds(5)) {
                resumed.append(e.header.seq)
                if resumed.count == 30 { break }
            }
            return resumed
        }
        #expect(resumed == Array(71...100))
    }

    @Test(arguments: TestBackend.allCases)
    func cancellingEndsAWaitingSubscriber(_ backend: TestBackend) async throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        try await j.append(page(0))
        let seen = Atomic<Int>(0)
        // A ten-minute poll: only the cancellation itself can end the wait in time.
        let waiting = Task(executorPreference: OwnQueueExecutor("subscriber")) {
            for try await _ in j.subscribe(after: 0, poll: .seconds(600)) { seen.add(1, ordering: .sequentiallyConsistent) }
            return seen.load(ordering: .sequentiallyConsistent)
        }
        // Cancelled once it has caught up and waits for the next commit (not after a guessed sleep).
        try await waitUntil("the subscriber to see the only event") { seen.load(ordering: .sequentiallyConsistent) == 1 }
        try await waitUntil("the subscriber to wait for a commit") { j.commits.waiting == 1 }
        waiting.cancel()
        // A subscriber that ignored the cancellation would keep this test waiting forever.
        let count = try await withTimeLimit(.seconds(10), "the cancelled subscriber to end") { try await waiting.value }
        #expect(count == 1)
    }

    @Test(arguments: TestBackend.allCases)
    func aCommitInThisProcessWakesAWaitingSubscriberAtOnce(_ backend: TestBackend) async throws {
        // The poll is ten minutes: only the commit itself can wake the subscriber in time.
        let place = try TestPlace(backend)
        let j = try place.open()
        try await j.append(page(0))
        let seen = Atomic<Int>(0)
        let subscriber = Task(executorPreference: OwnQueueExecutor("subscriber")) {
            for try await e in j.subscribe(after: 0, poll: .seconds(600)) {
                seen.add(1, ordering: .sequentiallyConsistent)
                if e.header.seq == 3 { break }
            }
        }
        try await waitUntil("the subscriber to see the first event") { seen.load(ordering: .sequentiallyConsistent) == 1 }
        try await waitUntil("the subscriber to wait for a commit") { j.commits.waiting == 1 }
        try await j.append(page(1))
        try await waitUntil("the second event, woken by its commit", timeLimit: .seconds(10)) { seen.load(ordering: .sequentiallyConsistent) == 2 }
        // And by a commit made from another thread, through the synchronous API.
        try await withTimeLimit(.seconds(10), "the third event") {
            try await Task(executorPreference: OwnQueueExecutor("writer")) { _ = try j.append([page(2)]) }.value
            try await subscriber.value
        }
        #expect(seen.load(ordering: .sequentiallyConsistent) == 3)
    }

    @Test func appendsByAnotherWriterAreFoundByThePoll() async throws {
        // Another `Journal` on the same file stands for another process: its commits do not wake
        // this one's subscribers, the poll finds them.
        let dir = try TempDir()
        let mine = try openJournal(dir)
        let other = try openJournal(dir, seed: 2)
        let seen = try await withTimeLimit(.seconds(30), "the other writer's event") {
            async let first: Int64? = {
                for try await e in mine.subscribe(after: 0, poll: .milliseconds(20)) { return e.header.seq }
                return nil
            }()
            try await waitUntil("the subscriber to wait") { mine.commits.waiting == 1 }
            try await other.append(page(0))
            return try await first
        }
        #expect(seen == 1)
    }
}
