import Foundation
import LetheEvents
import LetheJournal
@testable import LethePostgres
import LetheRetention
import LetheViews
import Logging
import Synchronization
import Testing

@Suite struct RetentionPolicyTests {
    @Test func theShippedPolicyIsTheContracts() throws {
        let p = RetentionPolicy.standard
        #expect(p.purgeDays == ["trash-30d": 30, "cancellation-30d": 30, "erasure-request": 0])
        #expect(p.records.map { "\($0.rule) \($0.type.rawValue) \($0.afterDays)" }
            == ["page-views-90d PageViewed 90", "surveys-365d SurveyAnswered 365", "access-log-400d AccountAccessed 400"])
        #expect(p.processors.map(\.name) == ["Spark", "Amazon Web Services", "Zendesk", "VMS"])
        // The file the operator reviews is the one in force.
        let printed = try run("lethe", ["retention", "policy"]).stdout
        #expect(try RetentionPolicy(json: Array(printed.utf8), source: "printed") == p)
    }

    @Test(arguments: [
        (#""purges":{"trash-30d":{"after_days":30},"cancellation-30d":{"after_days":-1},"erasure-request":{"after_days":0}}"#, "purges.cancellation-30d.after_days: must be a whole number of days"),
        (#""purges":{"trash-30d":{"after_days":30},"erasure-request":{"after_days":0}}"#, "purges.cancellation-30d: is missing"),
        (#""purges":{"trash-30d":{"after_days":30},"cancellation-30d":{"after_days":30},"erasure-request":{"after_days":0},"forever":{"after_days":1}}"#, "purges.forever: unknown field"),
    ])
    func anInvalidPolicyIsRefusedNamingTheField(purges: String, expected: String) throws {
        let text = RetentionPolicy.standardText.replacing(#/"purges": \{[^}]*\}[^}]*\}[^}]*\}\s*\}/#, with: purges)
        #expect(text != RetentionPolicy.standardText)
        #expect { try RetentionPolicy(json: Array(text.utf8), source: "p.json") } throws: {
            ($0 as? RetentionPolicy.Invalid)?.description.hasPrefix("p.json: \(expected)") == true
        }
    }

    @Test func theCommandRefusesAnInvalidPolicyAtStart() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", "-", "--journal", journal],
                    stdin: #"{"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"A","email":"a@example.com"}}"#)
        let bad = dir.path("bad.json")
        try Data(#"{"format":"lethe-retention-policy/1","purges":{},"records":[],"processors":[]}"#.utf8).write(to: URL(fileURLWithPath: bad))
        let r = try run("lethe", ["retention", "run", "--journal", journal, "--policy", bad, "--now", "2026-02-01T00:00:00Z"])
        #expect(r.status != 0 && r.stderr == "lethe retention run: invalid retention policy: \(bad): purges.trash-30d: is missing (the contract's rule)\n")
        #expect(try run("lethe", ["retention", "policy", "--policy", bad]).status != 0)
        // Nothing was done.
        #expect(!(try run("lethe", ["export", "--journal", journal]).stdout.contains("Purged")))
    }

    @Test(arguments: TestBackend.allCases)
    func aRunInterruptedAfterItsPurgeEventIsFinishedByTheNext(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = ["--journal", place.journalArgument, "--keys", place.keysArgument] + place.viewsArguments
        _ = try run("lethe", ["import", "-"] + journal, stdin: """
            {"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
            {"type":"ErasureRequested","account":"a","at":"2026-01-02T00:00:00Z","data":{}}
            """)
        // What a crash right after the purge's events were committed leaves: the erasure recorded, not done.
        do {
            let j = try place.open(rules: ContractRules())
            try j.append([NewEvent(.accountPurged, account: "a", at: ts("2026-01-03T00:00:00Z"), data: ["rule": "erasure-request"], id: "lethe:erasure-request:a")],
                         erasing: [.account("a", keeping: ["access-log"])], allOrNothing: true, finish: false)
        }
        let r = try run("lethe", ["retention", "run"] + journal + ["--now", "2026-01-03T00:00:00Z"])
        #expect(r.stdout.contains("0 accounts purged") && r.stdout.contains("1 erasures of an interrupted run finished; their keys destroyed"), "\(r.stdout)")
        let state = try run("lethe", ["state", "--account", "a"] + journal + ["--actor", "t", "--reason", "test"])
        #expect(state.stdout.contains("\"purged\"") && !state.stdout.contains("Ada"), "\(state.stdout)")
        let again = try run("lethe", ["retention", "run"] + journal + ["--now", "2026-01-03T00:00:00Z"])
        #expect(again.stdout.contains("0 accounts purged, 0 items purged, 0 records expired") && !again.stdout.contains("interrupted"))
    }

    @Test("one retention run at a time, across processes; a dead holder's lease is let go and the next run does the work", arguments: TestBackend.allCases)
    func oneRunAtATimeAndADeadHoldersRunIsFinishedByTheNext(_ backend: TestBackend) async throws {
        let place = try TestPlace(backend)
        let journal = try place.open(rules: ContractRules())
        for n in 0..<5 {
            try await journal.record(Events.AccountSignedUp(name: "N", email: "n\(n)@example.com"), account: "a\(n)", at: ts("2026-01-01T00:00:00Z"))
            try await journal.record(Events.ErasureRequested(channel: "support"), account: "a\(n)", at: ts("2026-01-02T00:00:00Z"))
        }
        let retention = Retention(journal: journal, views: try ReadModels(journal: journal, path: place.viewsPath))
        let now = ts("2026-02-01T00:00:00Z")
        // Another process holds the lease (as a run in another instance would), with the same
        // lock the engine takes: flock(1) on the journal's lock file (`-o`: its command, which
        // outlives it, holds neither the lock nor the test's pipes), or psql holding the
        // journal's advisory lock on the server.
        let holder: RunningCommand
        let leaseName: String
        switch backend {
        case .sqlite:
            let path = place.dir.path("j.lethe")
            leaseName = path + ".retention.lock"
            holder = try start("/usr/bin/flock", ["-o", leaseName, "/bin/sh", "-c", "exec sleep 60 </dev/null >/dev/null 2>&1"],
                               timeLimit: .seconds(90))
        case .postgres:
            let key = PostgresBackend(try PostgresAddress(place.url!)).lockKey("retention")
            leaseName = "advisory lock \(key) on "
            // An idle session, as the engine's own lease is (a server notices at once that an
            // idle session's client is gone, not one busy in a statement): psql reads its
            // input from a pipe that stays open.
            holder = try start("/bin/bash", ["-c", #"exec psql "$0" -q < <(echo "SELECT pg_advisory_lock($1);"; exec sleep 60 2>/dev/null)"#,
                                             try TestBackend.serverURL(), String(key)], timeLimit: .seconds(90))
        }
        defer { holder.send(SIGKILL); _ = try? holder.finish() }
        try await waitUntil("the other process to hold the lease") {
            guard let probe = try journal.lease("retention") else { return true }
            probe.release()
            return false
        }
        for wait in [Duration.zero, .milliseconds(300)] {
            do {
                _ = try await retention.run(now: now, waitingForAnotherRun: wait)
                Issue.record("a run went ahead while another process held the lease")
            } catch let e as JournalError {
                #expect(e.code == .busy && e.message.contains(leaseName), "\(e)")
            }
        }
        // A scheduler's ticks are skipped meanwhile: quietly at first, then each reported as
        // `.busy` (a lease never let go must not stop erasures silently). Ticks are counted by
        // the scheduler's reads of its clock.
        final class Ticks: Sendable { let count = Atomic<Int>(0) }
        let ticks = Ticks()
        let reports = Mutex<[String]>([])
        let scheduler = RetentionScheduler(retention: retention, period: .milliseconds(10), clock: Clock { [ticks] in
            ticks.count.add(1, ordering: .sequentiallyConsistent)
            return now
        })
        let ticking = Task(executorPreference: OwnQueueExecutor("scheduler")) {
            await scheduler.run { result in
                let text: String
                switch result {
                case .success(let run): text = "ran: \(run.summary)"
                case .failure(let error): text = "\(error)"
                }
                reports.withLock { $0.append(text) }
            }
        }
        let quiet = RetentionScheduler.quietBusyTicks
        try await waitUntil("\(quiet + 2) ticks of the scheduler") { ticks.count.load(ordering: .sequentiallyConsistent) >= quiet + 2 }
        ticking.cancel()
        try await withTimeLimit(.seconds(10), "the cancelled scheduler to return") { await ticking.value }
        let seen = reports.withLock { $0 }
        #expect(seen.count == ticks.count.load(ordering: .sequentiallyConsistent) - quiet, "\(seen)")
        #expect(seen.allSatisfy { $0.contains("another retention run holds this journal") }, "\(seen)")
        #expect(try await journal.read { reader in
            var purged = 0
            try reader.events { if $0.header.type == "AccountPurged" { purged += 1 } }
            return purged
        } == 0)
        // The holder dies without letting go: the kernel (or the server, seeing its connection
        // end) drops its lock, and the next run goes ahead.
        holder.send(SIGKILL)
        _ = try holder.finish()
        let result = try await retention.run(now: now, waitingForAnotherRun: .seconds(5))
        #expect(result.accountsPurged.count == 5)
        #expect(try await retention.run(now: now).accountsPurged.isEmpty)
    }

    /// The run's lease goes while it runs, after its purge events are appended (its lock file
    /// removed; its connection to the server cut): the run stops before it erases anything, and
    /// the next run, under a lease of its own, finishes the erasures and does nothing twice.
    @Test("a run whose lease goes while it runs stops before its next step; the next finishes it", arguments: TestBackend.allCases)
    func aRunThatLosesItsLeaseStops(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let cut = CutOnSealing()
        let journal = try place.open(blockEvents: 4, rules: ContractRules(),
                                     logger: Logger(label: "test") { _ in cut })
        for n in 0..<5 {
            try journal.record(Events.AccountSignedUp(name: "N", email: "n\(n)@example.com"), account: "a\(n)", at: ts("2026-01-01T00:00:00Z"))
            try journal.record(Events.ErasureRequested(channel: "support"), account: "a\(n)", at: ts("2026-01-02T00:00:00Z"))
        }
        let retention = Retention(journal: journal, views: try ReadModels(journal: journal, path: place.viewsPath))
        let now = ts("2026-02-01T00:00:00Z")
        // When the run's purge events fill a block (10 events are stored, 2 of them unsealed).
        let admin: Connection? = backend == .postgres ? try Connection(try PostgresAddress(try TestBackend.serverURL())) : nil
        defer { admin?.close() }
        let lockFile = journal.leaseName("retention")
        let leaseConnection = try (place.journalBackend as? PostgresBackend)?.leaseConnectionName("retention")
        cut.arm {
            switch backend {
            case .sqlite:
                unlink(lockFile)
            case .postgres:
                try? admin?.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(leaseConnection ?? "?")'")
            }
        }
        #expect { _ = try retention.run(now: now) } throws: { error in
            guard let e = error as? JournalError else { return false }
            return e.code == .busy && e.message.contains("is no longer held")
        }
        #expect(cut.fired)
        // The purge events are there, the erasures recorded and not done.
        #expect(try allEvents(journal).filter { $0.header.type == "AccountPurged" }.count == 5)
        #expect(try place.verify().pendingErasures == 5)
        let next = try retention.run(now: now)
        #expect(next.finishedEarlier == 5 && next.accountsPurged.isEmpty, "\(next.summary)")
        #expect(try allEvents(journal).filter { $0.header.type == "AccountPurged" }.count == 5)
        #expect(try place.verify().pendingErasures == 0)
        #expect(try allEvents(journal).filter { $0.header.type == "AccountSignedUp" }.allSatisfy { $0.payload == .purged })
    }

    @Test func theLeaseIsOneWhateverPathReachesTheJournal() throws {
        // Two instances configured with two names for one file (a link to the journal) must
        // still exclude each other: the lock is beside the file's real path.
        let dir = try TempDir()
        let real = dir.path("j.lethe")
        let one = try contractJournal(real)
        try FileManager.default.createSymbolicLink(atPath: dir.path("alias.lethe"), withDestinationPath: real)
        var options = Journal.Options()
        options.synchronous = .normal
        let other = try Journal(path: dir.path("alias.lethe"), keysPath: real + ".keys", master: testMaster, options: options)
        let held = try #require(try one.lease("retention"))
        #expect(held.path == real + ".retention.lock")
        #expect(try other.lease("retention") == nil, "a second lease through the link")
        held.release()
        let taken = try #require(try other.lease("retention"), "the lease, once let go")
        #expect(taken.path == held.path)
    }

    @Test func theSchedulerRunsEveryPeriodUntilCancelled() async throws {
        let dir = try TempDir()
        let path = dir.path("s.lethe")
        let journal = try contractJournal(path)
        try await journal.record(Events.AccountSignedUp(name: "Ada", email: "ada@example.com"), account: "a", at: ts("2026-01-01T00:00:00Z"))
        try await journal.record(Events.ErasureRequested(channel: "support"), account: "a", at: ts("2026-01-02T00:00:00Z"))
        let retention = Retention(journal: journal, views: try ReadModels(journal: journal))
        let scheduler = RetentionScheduler(retention: retention, period: .milliseconds(20), clock: .fixed(ts("2026-01-03T00:00:00Z")))
        // Failed runs are kept too: a scheduler whose runs all fail must fail the test with their
        // errors, not keep it waiting for a third success. It runs on an executor of its own (and
        // its runs on threads of their own), so the time limit is its own time, not that of the
        // suite's other tests on the shared pool.
        let runs = Mutex<[Result<RetentionRun, TestFailure>]>([])
        let task = Task(executorPreference: OwnQueueExecutor("scheduler")) { await scheduler.run { result in runs.withLock { $0.append(result.mapError { TestFailure("\($0)") }) } } }
        try await waitUntil("three runs of the scheduler (period 20 ms)", timeLimit: .seconds(30)) { runs.withLock { $0.count } >= 3 }
        task.cancel()
        try await withTimeLimit(.seconds(10), "the cancelled scheduler to return") { await task.value }
        let done = try runs.withLock { $0 }.map { try $0.get() }
        #expect(done[0].accountsPurged == ["a"] && done.dropFirst().allSatisfy { $0.accountsPurged.isEmpty }, "\(done)")
    }
}

/// A log handler that calls its armed action once, when the writer logs that it sealed blocks.
final class CutOnSealing: LogHandler, @unchecked Sendable {
    private let state = Mutex<(action: (@Sendable () -> Void)?, fired: Bool)>((nil, false))
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    func arm(_ action: @escaping @Sendable () -> Void) { state.withLock { $0.action = action } }
    var fired: Bool { state.withLock { $0.fired } }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        guard event.message.description == "sealed blocks" else { return }
        let action = state.withLock { s -> (@Sendable () -> Void)? in
            defer { s.action = nil }
            if s.action != nil { s.fired = true }
            return s.action
        }
        action?()
    }
}
