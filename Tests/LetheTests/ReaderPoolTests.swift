import Foundation
import LetheEvents
@testable import LetheJournal
import Synchronization
import Testing

/// `Journal.read` keeps its readers' connections for the next read (a server's take
/// milliseconds to open), and nothing else: no account's key, no reader a caller still holds.
@Suite struct ReaderPoolTests {
    func idle(_ j: Journal) -> [JournalReader] { j.idleReaders.withLock { $0.map(\.reader) } }

    @Test(arguments: TestBackend.allCases)
    func aReadKeepsItsReaderForTheNext(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = try place.open(blockEvents: 4)
        for i in 0..<6 { try journal.append(event("a", at: "2026-01-01T00:00:0\(i)Z")) }
        #expect(idle(journal).isEmpty)
        let first = try journal.read { reader in ObjectIdentifier(reader) }
        #expect(idle(journal).count == 1)
        let second = try journal.read { reader in ObjectIdentifier(reader) }
        #expect(first == second, "the second read opened a reader of its own")
        #expect(idle(journal).count == 1)
        // Reads at once each take a reader; at most `maxIdleReaders` are kept afterwards.
        let readers = Journal.maxIdleReaders + 2
        let inside = DispatchGroup()
        let release = DispatchSemaphore(value: 0)
        let seen = Mutex<[Int]>([])
        let done = DispatchGroup()
        for _ in 0..<readers {
            inside.enter()
            DispatchQueue.global().async(group: done) {
                let n = try? journal.read { reader -> Int in
                    inside.leave()
                    release.wait()
                    var n = 0
                    try reader.events(account: "a") { _ in n += 1 }
                    return n
                }
                seen.withLock { $0.append(n ?? -1) }
            }
        }
        inside.wait()
        for _ in 0..<readers { release.signal() }
        done.wait()
        #expect(seen.withLock { $0 } == Array(repeating: 6, count: readers))
        #expect(idle(journal).count == Journal.maxIdleReaders)
    }

    @Test(arguments: TestBackend.allCases)
    func aKeptReaderHoldsNoAccountsKey(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = try place.open(blockEvents: 4)
        for account in ["a", "b", "c"] {
            try journal.append(NewEvent(.accountSignedUp, account: account, at: ts("2026-01-01T00:00:00Z"), data: ["name": "N", "email": "n@example.com"]))
        }
        let (opened, held) = try journal.read { reader -> (Int, Int) in
            var opened = 0
            try reader.events { if case .plaintext = $0.payload { opened += 1 } }
            return (opened, reader.cachedSubjectKeys)
        }
        #expect(opened == 3)
        #expect(held >= 3, "the read cached no key: this test would prove nothing")
        let kept = try #require(idle(journal).first)
        #expect(kept.cachedSubjectKeys == 0)
    }

    @Test(arguments: TestBackend.allCases)
    func aKeyDestroyedByAnotherInstanceIsNotUsedByAKeptReader(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let service = try place.open(blockEvents: 4)
        try service.append(NewEvent(.accountSignedUp, account: "a", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ada", "email": "ada@example.com"]))
        let before = try service.read { reader -> [StoredEvent] in
            var out: [StoredEvent] = []
            try reader.events(account: "a") { out.append($0) }
            return out
        }
        #expect(before.count == 1 && before.allSatisfy { if case .plaintext = $0.payload { true } else { false } })
        #expect(idle(service).count == 1)
        // Another process (another instance, on the server) destroys the account's keys alone,
        // leaving its sealed payloads where they are.
        let other = try place.open(blockEvents: 4, seed: 2)
        try other.destroyKeys(of: "a", at: ts("2026-02-01T00:00:00Z"))
        let after = try service.read { reader -> [StoredEvent] in
            var out: [StoredEvent] = []
            try reader.events(account: "a") { out.append($0) }
            return out
        }
        #expect(after.count == 1)
        #expect(after.allSatisfy { if case .plaintext = $0.payload { false } else { true } }, "a kept reader opened a payload under a destroyed key")
    }

    @Test(arguments: TestBackend.allCases)
    func aReaderKeptByTheCallerOrThatFailedIsNotKept(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = try place.open(blockEvents: 4)
        try journal.append(event("a", at: "2026-01-01T00:00:00Z"))
        var escaped: JournalReader?
        try journal.read { escaped = $0 }
        #expect(idle(journal).isEmpty, "a reader the caller still holds was kept for others")
        #expect(escaped != nil)
        struct Stop: Error {}
        #expect(throws: Stop.self) { try journal.read { _ in throw Stop() } }
        #expect(idle(journal).isEmpty)
        try journal.read { _ in }
        #expect(idle(journal).count == 1)
    }
}

/// An account's read takes the tail's rows of that account alone, and still notices one of them
/// removed behind the engine's back (its versions go on from the blocks' one by one).
@Suite struct AccountReadTests {
    @Test(arguments: TestBackend.allCases)
    func anAccountsReadTakesItsOwnTailRowsAndNoticesOneRemoved(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = try place.open(blockEvents: 8)
        // 13 events: 8 sealed in a block, 5 in the tail (a's at 9, 11, 13; b's at 10, 12).
        for i in 0..<13 { try journal.append(event(i % 2 == 0 ? "a" : "b", at: "2026-01-01T00:00:\(String(format: "%02d", i))Z")) }
        func read(_ account: String) throws -> [Int64] {
            try journal.read { reader in
                var seqs: [Int64] = []
                try reader.events(account: account) { seqs.append($0.header.seq) }
                return seqs
            }
        }
        #expect(try read("a") == [1, 3, 5, 7, 9, 11, 13])
        #expect(try read("b") == [2, 4, 6, 8, 10, 12])
        #expect(try read("nobody") == [])
        // A row of a's in the middle of the tail, then the first of a's in the tail.
        for (seq, after) in [(11, 9), (9, 7)] as [(Int64, Int64)] {
            try place.tamper("DELETE FROM tail WHERE seq = \(seq)")
            let message = corruption { _ = try read("a") }
            #expect(message?.contains("account a is at version") == true && message?.contains("after \(after / 2 + 1)") == true, "\(message ?? "no error")")
        }
        // The other account's read is its own, and sound; verify names the gap.
        #expect(try read("b") == [2, 4, 6, 8, 10, 12])
        #expect(place.verifyFailure() != nil)
    }
}
