import Dispatch
import Foundation
import LetheEvents
@testable import LetheJournal
import LetheViews
import Synchronization
import Testing

/// The async API: calls run on Lethe's own threads, the cooperative pool stays free, and the
/// answers and errors are those of the synchronous API.
struct AsyncTests {
    @Test(arguments: TestBackend.allCases)
    func callsRunOnThePoolsThreadsAndAnswerAsTheSynchronousAPIDoes(_ backend: TestBackend) async throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        // (By the pool's mark on its threads, not their name: a thread's name once read back as
        // its creator's in a full run, Foundation or Dispatch naming it meanwhile.)
        let onPool = try await j.run { _ in BlockingPool.shared.isCurrentThread }
        #expect(onPool && !BlockingPool.shared.isCurrentThread)
        let outcomes = try await j.append([event("acc_1", at: "2026-01-01T00:00:00Z"), event("acc_1", at: "2026-01-01T00:01:00Z")])
        #expect(outcomes.count == 2)
        let header = try await j.append(event("acc_1", at: "2026-01-01T00:02:00Z", expected: 2))
        #expect(header.seq == 3 && header.version == 3)
        #expect(try await j.version(of: "acc_1") == 3)
        #expect(try await j.latestTime(of: "acc_1") == ts("2026-01-01T00:02:00Z"))
        let seqs = try await j.read { reader in
            var seqs: [Int64] = []
            try reader.events(account: "acc_1") { seqs.append($0.header.seq) }
            return seqs
        }
        #expect(seqs == [1, 2, 3])
        // A refusal is the same error, and its code is switched on as a host would (with a default).
        do {
            try await j.append(event("acc_1", at: "2026-01-01T00:03:00Z", expected: 1))
            Issue.record("a stale expected version was accepted")
        } catch let e as JournalError {
            switch e.code {
            case .versionConflict: #expect("\(e.code)" == "versionConflict" && e.message.contains("acc_1"))
            default: Issue.record("refused with \(e.code): \(e.message)")
            }
        }
    }

    @Test func blockedCallsLeaveTheCallersThreadsFree() async throws {
        // Every call starts from one serial executor: a cooperative pool at its smallest, one
        // thread (and not the suite's real pool, which its synchronous tests keep busy). Had a
        // call blocked its caller's thread, the second would never start, nor anything after it.
        let callers = OwnQueueExecutor("callers")
        let threads = ProcessInfo.processInfo.activeProcessorCount + 1
        let pool = BlockingPool(threads: threads, name: "lethe-test-pool")
        final class Gate: Sendable {
            let release = DispatchSemaphore(value: 0)
            let started = Atomic<Int>(0)
        }
        let gate = Gate()
        // Released however the test ends: a failed wait below must not leave the calls blocked.
        let released = Atomic<Bool>(false)
        defer { if !released.load(ordering: .sequentiallyConsistent) { for _ in 0..<threads { gate.release.signal() } } }
        var calls: [Task<Bool, any Error>] = []
        for _ in 0..<threads {
            calls.append(Task(executorPreference: callers) { [gate, pool] in
                try await pool.run { () -> Bool in
                    gate.started.add(1, ordering: .sequentiallyConsistent)
                    gate.release.wait()
                    return true
                }
            })
        }
        try await waitUntil("all \(threads) blocked calls to start") { gate.started.load(ordering: .sequentiallyConsistent) == threads }
        // The callers' executor still runs other work while every call blocks.
        let sum = try await withTimeLimit(.seconds(30), "other work on the callers' executor") {
            await Task(executorPreference: callers) { (1...100).reduce(0, +) }.value
        }
        #expect(sum == 5050)
        released.store(true, ordering: .sequentiallyConsistent)
        for _ in 0..<threads { gate.release.signal() }
        for call in calls { #expect(try await call.value) }
    }

    @Test(arguments: TestBackend.allCases)
    func manyConcurrentCallersEachGetTheirOutcome(_ backend: TestBackend) async throws {
        let place = try TestPlace(backend)
        let j = try place.open()
        // Many more callers than the pool has threads: the rest wait in line.
        let callers = 4 * BlockingPool.shared.threads * 8
        let headers = try await withThrowingTaskGroup(of: EventHeader.self) { group in
            for i in 0..<callers {
                group.addTask { try await j.append(event("acc_\(i % 8)", at: "2026-01-01T00:00:00Z", id: "e\(i)")) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(headers.map(\.seq)) == Set(1...Int64(callers)))
        for a in 0..<8 { #expect(try await j.version(of: "acc_\(a)") == Int64(callers / 8)) }
        #expect(try verified(j).events == Int64(callers))
    }

    @Test(arguments: TestBackend.allCases)
    func readModelsAreOpenedCaughtUpAndQueriedFromAsyncCode(_ backend: TestBackend) async throws {
        let place = try TestPlace(backend)
        let j: Journal
        switch backend {
        case .sqlite:
            var options = Journal.Options()
            options.rules = ContractRules()
            options.synchronous = .normal
            j = try await Journal.open(path: place.dir.path("j.lethe"), master: testMaster, options: options)
        case .postgres:
            j = try place.open(rules: ContractRules())
        }
        try await j.record(Events.AccountSignedUp(name: "Ada", email: "ada@example.com"), account: "acc_ada", at: ts("2026-01-01T00:00:00Z"))
        try await j.record(Events.ItemCreated(item: "site_1", kind: "site"), account: "acc_ada", at: ts("2026-01-01T00:01:00Z"))
        // Beside the journal: its file, or its database (where every instance finds them).
        let views = try await ReadModels.open(journal: j)
        #expect(views.path == (try place.defaultViews).description)
        #expect(try await views.catchUp() == 2)
        let account = try await views.run { try $0.account("acc_ada") }
        #expect(account?.name == "Ada" && account?.status == "active")
        #expect(try await views.run { try $0.items(account: "acc_ada").map(\.item) } == ["site_1"])
        #expect(try await views.rebuild() == 2)
        #expect(FileManager.default.fileExists(atPath: place.dir.path("j.lethe.views")) == (backend == .sqlite))
    }

    @Test func theExampleServiceRunsEndToEnd() throws {
        // The embedding example, built with the tests: the async API as a host uses it. Its
        // follower must see all nine events (woken by the commits) and its reader the account.
        let dir = try TempDir()
        let r = try run("lethe-example-service", [dir.path("service")], timeLimit: .seconds(120))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("followed 9 committed events"), "\(r.stdout)")
        #expect(r.stdout.contains(#""account":"acc_ada","status":"active""#), "\(r.stdout)")
        #expect(r.stderr.contains("refused") && r.stderr.contains("erasure requested"), "\(r.stderr)")
        #expect(verifyFailure(dir.path("service/accounts.lethe")) == nil)
    }
}
