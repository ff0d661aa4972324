import Foundation
import LetheEvents
@testable import LetheJournal
@testable import LethePostgres
import Logging
import Synchronization
import Testing

/// What only a journal on a server has: several instances at once, connections that are lost
/// and replaced, leases as advisory locks, addresses and credentials, followers woken by
/// LISTEN/NOTIFY, statements sent without waiting for their answers. (What must hold the same on
/// both backends is in `BackendTests`.)
@Suite struct PostgresServerTests {
    @Test("a statement sent on inside a transaction, whose answer fails its check, rolls the transaction back")
    func aSentStatementsFailedCheckRollsBack() throws {
        let place = try TestPlace(.postgres)
        let connection = try Connection(try PostgresAddress(try TestBackend.serverURL()))
        defer { connection.close() }
        try connection.execute("CREATE SCHEMA \(place.schema)")
        try connection.execute("CREATE TABLE \(place.schema).t(n bigint)")
        struct Refused: Error {}
        // The server runs the insert; the check refuses what it answered, and nothing is queried
        // after it: the transaction must still not commit.
        #expect(throws: Refused.self) {
            try connection.transaction {
                connection.send("INSERT INTO \(unescaped: place.schema).t VALUES (1) RETURNING n") { _ in throw Refused() }
            }
        }
        #expect(try place.psql("SELECT count(*) FROM t") == "0")
        try connection.transaction { connection.send("INSERT INTO \(unescaped: place.schema).t VALUES (2)") }
        #expect(try place.psql("SELECT count(*) FROM t") == "1")
    }

    @Test("the block index's recent postings are read back in account and block order, a page at a time")
    func recentPostingsAreReadInOrderPageByPage() throws {
        let place = try TestPlace(.postgres)
        let store = try #require(try place.journalBackend.openWriter(options: Journal.Options()) as? PostgresJournalStore)
        defer { store.close() }
        let postings: [(account: Int64, block: Int64)] = [(3, 1), (1, 2), (2, 1), (1, 1), (3, 4), (1, 7), (2, 9), (.max, .min)]
        try store.write { try store.addRecentPostings(postings) }
        let ordered = postings.map { [$0.account, $0.block] }.sorted { $0.lexicographicallyPrecedes($1) }
        // Pages that end inside an account's postings, at its end, and one page for all.
        for page in [1, 2, 3, 8, 20_000] {
            store.recentPostingsPage = page
            var read: [[Int64]] = []
            try store.forEachRecentPosting { read.append([$0, $1]) }
            #expect(read == ordered, "pages of \(page)")
        }
        try store.write { try store.clearRecentPostings() }
        var left = 0
        try store.forEachRecentPosting { _, _ in left += 1 }
        #expect(left == 0)
    }

    @Test("several instances append to one PostgreSQL journal at once: no gap, no duplicate, one chain")
    func concurrentInstancesOnPostgres() throws {
        let place = try TestPlace(.postgres)
        let instances = 4, perInstance = 40
        let journals = try (0..<instances).map { try place.open(seed: UInt64($0 + 1)) }
        let acknowledged = Mutex<[String: Int64]>([:])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: instances) { i in
            for n in 0..<perInstance {
                let id = "w\(i)_\(n)"
                // Each instance appends to its own accounts and to one they share.
                let account = n % 3 == 0 ? "shared" : "acc_\(i)"
                let e = event(account, at: "2026-03-01T00:00:00Z", id: id)
                do {
                    let header = try journals[i].append(e)
                    acknowledged.withLock { $0[id] = header.seq }
                } catch {
                    failures.withLock { $0.append("instance \(i) event \(n): \(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let acks = acknowledged.withLock { $0 }
        #expect(acks.count == instances * perInstance)
        let events = try allEvents(try place.open())
        #expect(events.map(\.header.seq) == Array(1...Int64(instances * perInstance)))
        #expect(Dictionary(uniqueKeysWithValues: events.map { ($0.header.id!, $0.header.seq) }) == acks)
        // Versions per account have no gap either: the writers decided one after the other.
        for account in Set(events.map(\.header.account)) {
            #expect(events.filter { $0.header.account == account }.map(\.header.version) == Array(1...Int64(events.filter { $0.header.account == account }.count)))
        }
        #expect(try place.verify().events == Int64(instances * perInstance))
    }

    @Test("a lease on PostgreSQL is held by one holder at a time and freed with it")
    func leaseOnPostgres() throws {
        let place = try TestPlace(.postgres)
        let a = try place.open(), b = try place.open(seed: 2)
        let held = try #require(try a.lease("retention"))
        #expect(try b.lease("retention") == nil)
        #expect(try b.lease("retention", wait: .milliseconds(200)) == nil)
        #expect(try b.lease("other") != nil)
        held.release()
        #expect(try b.lease("retention") != nil)
    }

    @Test("bad PostgreSQL addresses and credentials get one clear message, without the password")
    func badConfiguration() throws {
        let url = try TestBackend.serverURL()
        let address = try PostgresAddress(url)
        let dir = try TempDir()
        func failure(_ url: String) -> String {
            do {
                _ = try Journal(postgres: url, keysPath: dir.path("k"), master: testMaster)
                return "opened"
            } catch {
                return "\(error)"
            }
        }
        let secret = "s3cret-Pa55"
        for (bad, says) in [
            ("postgres://lethe:\(secret)@/lethe", "no host"),
            ("postgres://lethe:\(secret)@127.0.0.1:99999/lethe", "port"),
            ("postgres://:\(secret)@127.0.0.1/lethe", "no user"),
            ("postgres://lethe:\(secret)@127.0.0.1:5/", "no database"),
            ("postgres://lethe:\(secret)@127.0.0.1:5/lethe?schema=Robert'); DROP", "schema"),
        ] {
            let message = failure(bad)
            #expect(message.contains("malformed") && message.contains(says), "\(bad): \(message)")
            #expect(!message.contains(secret))
        }
        let wrong = failure("postgres://lethe:\(secret)@\(address.host!):\(address.port)/lethe")
        #expect(wrong.contains("password authentication failed"), "\(wrong)")
        #expect(!wrong.contains(secret))
        // A port nobody listens on.
        let closed = failure("postgres://lethe:\(secret)@127.0.0.1:1/lethe")
        #expect(closed.contains("cannot reach PostgreSQL at postgres://lethe@127.0.0.1:1/lethe"), "\(closed)")
        #expect(!closed.contains(secret))
        // A reader of a database without the journal's schema.
        #expect(throws: JournalError.self) { try JournalReader.verify(postgres: url + "?schema=nothing_here") }
        do {
            _ = try JournalReader.verify(postgres: url + "?schema=nothing_here")
        } catch let e as JournalError {
            #expect(e.code == .notAJournal)
            #expect(e.message.contains("no Lethe journal"))
        }
    }

    @Test("a follower of a PostgreSQL journal is woken by another instance's commits (LISTEN/NOTIFY, no polling), in order, and resumes by sequence number")
    func followerOnPostgres() async throws {
        let place = try TestPlace(.postgres)
        let mine = try place.open(), other = try place.open(seed: 2)
        try await mine.append(event("a", at: "2026-04-01T00:00:00Z", id: "first"))
        // A poll of an hour: only a notice of the other instance's commit can wake it in time.
        let seen = try await withTimeLimit(.seconds(30), "the other instance's events") {
            async let followed: [Int64] = {
                var seqs: [Int64] = []
                for try await e in mine.subscribe(after: 0, poll: .seconds(3600)) {
                    seqs.append(e.header.seq)
                    if seqs.count == 3 { break }
                }
                return seqs
            }()
            try await waitUntil("the subscriber to wait") { mine.commits.waiting == 1 }
            try await other.append(event("b", at: "2026-04-01T00:00:01Z"))
            try await waitUntil("the subscriber to wait again") { mine.commits.waiting == 1 }
            try await other.append(event("a", at: "2026-04-01T00:00:02Z"))
            return try await followed
        }
        #expect(seen == [1, 2, 3])
        // Resumed after 2, from a fresh instance: only what follows.
        var resumed: [String] = []
        for try await e in try place.open(seed: 3).subscribe(after: 2, poll: .seconds(3600)) {
            resumed.append(e.header.account)
            break
        }
        #expect(resumed == ["a"])
    }

    @Test("a follower whose commit feed loses its connection starts another and misses no commit")
    func followerFeedReconnects() async throws {
        let place = try TestPlace(.postgres)
        let mine = try place.open(), other = try place.open(seed: 2)
        let address = try PostgresAddress(place.url!)
        let admin = try Connection(address)
        final class Seen: Sendable {
            let seqs = Mutex<[Int64]>([])
            func withLock<T>(_ body: (inout [Int64]) -> T) -> T { seqs.withLock { body(&$0) } }
        }
        let seen = Seen()
        try await withTimeLimit(.seconds(30), "the events after the feed was cut") {
            async let followed: Void = {
                for try await e in mine.subscribe(after: 0, poll: .seconds(3600)) {
                    if seen.withLock({ $0.append(e.header.seq); return $0.count }) == 3 { break }
                }
            }()
            try await waitUntil("the subscriber to wait") { mine.commits.waiting == 1 }
            try await other.append(event("b", at: "2026-04-01T00:00:01Z"))
            try await waitUntil("the first event") { seen.withLock { $0 } == [1] && mine.commits.waiting == 1 }
            #expect(mine.commits.feedsStarted == 1)
            // The feed's connection is cut (a server restart, a proxy's timeout): the follower
            // reads again and starts another feed.
            let cut = try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(commitChannel(schema: address.schema))")
            #expect(cut.count == 1)
            try await waitUntil("another feed") { mine.commits.feedsStarted == 2 && mine.commits.waiting == 1 }
            try await other.append(event("b", at: "2026-04-01T00:00:02Z"))
            try await waitUntil("the second event") { seen.withLock { $0 } == [1, 2] && mine.commits.waiting == 1 }
            // A commit made while there is no feed (cut, and no follower waiting to start
            // another) is read when the next feed begins.
            _ = try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(commitChannel(schema: address.schema))")
            try await other.append(event("b", at: "2026-04-01T00:00:03Z"))
            try await followed
        }
        #expect(seen.withLock { $0 } == [1, 2, 3])
    }

    @Test("the PostgreSQL server restarted under load: the writers connect again on their own, and every acknowledged append is there exactly once")
    func serverRestartUnderLoad() throws {
        // A server of the test's own (the suite's is shared with tests running meanwhile).
        let root = packageDirectory
        let dir = root.appendingPathComponent(".build/pg-restart-\(UUID().uuidString.prefix(8))").path
        let pg = root.appendingPathComponent("Tools/pg.sh").path
        let started = try run("/bin/bash", [pg, "start", dir], timeLimit: .seconds(120))
        defer { _ = try? run("/bin/bash", [pg, "stop", dir], timeLimit: .seconds(60)) }
        try #require(started.status == 0, "\(started.stderr)")
        let url = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let tmp = try TempDir()
        let keys = tmp.path("j.keys")
        func open(_ seed: UInt64) throws -> Journal {
            var options = Journal.Options()
            options.entropy = .seeded(seed)
            options.blockEvents = 16
            return try Journal(postgres: url, keysPath: keys, master: testMaster, options: options)
        }
        _ = try open(1)  // the journal and its keys, made once

        final class Tally: Sendable {
            let acknowledged = Mutex<[String]>([])
            let errors = Mutex<[String]>([])
            let stop = Atomic<Bool>(false)
        }
        let tallies = [Tally(), Tally()]
        let done = DispatchGroup()
        for (w, tally) in tallies.enumerated() {
            let journal = try open(UInt64(w + 2))
            DispatchQueue.global().async(group: done) {
                var i = 0
                while !tally.stop.load(ordering: .relaxed) {
                    let id = "w\(w)-\(i)"
                    let at = Timestamp(nanoseconds: 1_780_000_000_000_000_000 + Int64(i) * 1_000_000_000)
                    do {
                        _ = try journal.append(NewEvent(id: id, account: "acct-\(w)-\(i % 7)", type: "Note", at: at, payload: Array("event \(i)".utf8)))
                        tally.acknowledged.withLock { $0.append(id) }
                        i += 1
                    } catch {
                        // Reported, not acknowledged: the same id is tried again (it may have
                        // committed just before the connection was cut: then it is a duplicate).
                        tally.errors.withLock { $0.append("\(error)") }
                        usleep(20_000)
                    }
                }
            }
        }
        func acks(_ t: Tally) -> Int { t.acknowledged.withLock { $0.count } }
        try waitUntil("appends before the restart", timeLimit: .seconds(60)) { tallies.allSatisfy { acks($0) >= 30 } }
        // A service that reads keeps its reader's connection between reads (`Journal.read`).
        let reading = try open(8)
        let headBefore = try reading.read { try $0.headSeq() }
        // An instance that appended before the restart and sits idle through it.
        let idle = try open(10)
        _ = try idle.append(NewEvent(id: "idle-0", account: "acct-idle", type: "Note", at: Timestamp(nanoseconds: 1_780_000_000_000_000_000), payload: Array("before".utf8)))
        #expect(reading.idleReaders.withLock { $0.count } == 1)
        let before = tallies.map(acks)
        let restarted = try run("/bin/bash", [pg, "restart", dir], timeLimit: .seconds(120))
        #expect(restarted.status == 0, "\(restarted.stderr)")
        try waitUntil("appends after the restart (errors: \(Array(Set(tallies.flatMap { $0.errors.withLock { $0 } })).prefix(3)))", timeLimit: .seconds(60)) { zip(tallies, before).allSatisfy { acks($0) >= $1 + 30 } }
        for t in tallies { t.stop.store(true, ordering: .relaxed) }
        done.wait()
        // The kept connection went with the restart: the next read takes a new one on its own.
        #expect(try reading.read { try $0.headSeq() } > headBefore)
        // So does the idle writer's, at its next append: the first try succeeds.
        #expect(try idle.append(NewEvent(id: "idle-1", account: "acct-idle", type: "Note", at: Timestamp(nanoseconds: 1_780_000_001_000_000_000), payload: Array("after".utf8))).version == 2)

        let acknowledged = tallies.flatMap { $0.acknowledged.withLock { $0 } } + ["idle-0", "idle-1"]
        var ids: [String] = []
        try open(9).read { try $0.events { ids.append($0.header.id ?? "") } }
        #expect(Set(ids).count == ids.count, "an id is there twice")
        #expect(Set(acknowledged).subtracting(ids).isEmpty, "\(Set(acknowledged).subtracting(ids).count) acknowledged appends lost")
        // Every event there was acknowledged, or was the one under way when the connection went.
        #expect(ids.count - acknowledged.count <= 2)
        let report = try JournalReader.verify(postgres: url, keysPath: keys, master: testMaster)
        #expect(report.events == Int64(ids.count))
        // What the writers were told while the server was away: one line each, no password.
        let password = try #require(url.split(separator: ":").dropFirst(2).first?.split(separator: "@").first)
        for message in tallies.flatMap({ $0.errors.withLock { $0 } }) {
            #expect(!message.contains(password), "a message holds the password")
        }
    }
}
