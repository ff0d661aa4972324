import Foundation
import LetheEvents
@testable import LetheJournal
import Synchronization
import Testing

/// A fresh directory per test, removed afterwards.
final class TempDir {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("lethe-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// A master key for tests, passed through the environment the way an operator would.
let testMasterKey = String(repeating: "ab", count: 32)

let testMaster = MasterKeySource.key(testMasterKey)

/// Verifies a journal with its key store and the test master key (the head authenticated).
func verified(_ j: Journal) throws -> JournalReader.VerifyReport {
    try JournalReader.verify(backend: j.backend, keys: j.keyStore, master: testMaster)
}

/// Why `verify` (with the key store beside the journal and the test master key) fails, or nil.
func verifyFailure(_ path: String, keys: String? = nil, master: MasterKeySource? = testMaster) -> String? {
    do {
        _ = try JournalReader.verify(path: path, keysPath: keys ?? path + ".keys", master: master)
        return nil
    } catch let e as JournalError {
        return e.message
    } catch {
        return "\(error)"
    }
}

/// A journal with deterministic randomness and the test master key.
func openJournal(_ dir: TempDir, name: String = "j.lethe", blockEvents: Int = 8, seed: UInt64 = 1,
                 recentPostingsLimit: Int? = nil, recentIDsLimit: Int? = nil) throws -> Journal {
    var options = Journal.Options()
    options.blockEvents = blockEvents
    if let recentPostingsLimit { options.recentPostingsLimit = recentPostingsLimit }
    if let recentIDsLimit { options.recentIDsLimit = recentIDsLimit }
    options.entropy = .seeded(seed)
    options.synchronous = .normal
    options.clock = .fixed(ts("2026-06-01T00:00:00Z"))
    let path = dir.path(name)
    return try Journal(path: path, master: testMaster, options: options)
}

/// A journal at `path` with the contract's rules (as the service and the CLI run it), the test
/// master key, and no fsync per commit.
func contractJournal(_ path: String) throws -> Journal {
    var options = Journal.Options()
    options.rules = ContractRules()
    options.synchronous = .normal
    return try Journal(path: path, master: testMaster, options: options)
}

func ts(_ s: String) -> Timestamp { Timestamp(rfc3339: s)! }

let codec = PayloadCodec.standard

func event(_ account: String, _ type: EventType = .pageViewed, at: String, id: String? = nil,
           data: JSONObject = ["path": "/pricing", "visitor": "v1"], expected: Int64? = nil) -> NewEvent {
    NewEvent(type, account: account, at: ts(at), data: data, id: id, expectedVersion: expected)
}

/// All events of the journal, decrypted, in order.
func allEvents(_ j: Journal) throws -> [StoredEvent] {
    var out: [StoredEvent] = []
    try j.read { try $0.events { out.append($0) } }
    return out
}

func data(_ e: StoredEvent) throws -> JSONObject {
    guard case .plaintext(let p) = e.payload else { throw Rejection("no payload") }
    return try codec.decode(type: e.header.type, payload: p)
}

/// Every event of a copy of a journal, read with the live key store `keys` straight through a
/// reader: what someone holding the copy could do with the library. (A `Journal` will not open
/// the copy at all: it is behind the key store's anchor.)
func readCopy(_ copy: any JournalBackend, keys: any KeyStoreBackend) throws -> [StoredEvent] {
    let reader = try JournalReader(backend: copy, keysPath: keys.place) {
        try KeyStore(keys, master: testMaster, dataPaths: copy.dataPaths, entropy: .system, synchronous: .normal)
    }
    var out: [StoredEvent] = []
    try reader.snapshot { try reader.events { out.append($0) } }
    return out
}

/// `readCopy` of a copy of a journal file, with the key store file `keysPath`.
func readCopy(_ path: String, keysPath: String) throws -> [StoredEvent] {
    try readCopy(SQLiteBackend(path: path), keys: SQLiteKeyBackend(path: keysPath))
}

/// Copies a journal's file and its WAL, as `cp` of the folder would: what an attacker or an
/// unlucky operator holds once they have a copy.
func copyJournal(_ from: String, to: String) throws {
    for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: from + suffix) {
        try FileManager.default.copyItem(atPath: from + suffix, toPath: to + suffix)
    }
}

/// Runs SQL on a journal file behind the engine's back (to simulate tampering), for at most a minute.
func tamper(_ path: String, _ sql: String) throws {
    let r = try run("/usr/bin/sqlite3", [path, sql], timeLimit: .seconds(60))
    #expect(r.status == 0, "sqlite3 failed on \(sql): \(r.stderr)")
}

/// The directory that holds the built products (the test bundle's own directory).
var productsDirectory: URL {
    get throws {
        URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")).deletingLastPathComponent()
    }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// A limit ran out: what was being waited for, and for how long. Thrown, so the test stops there
/// with this message instead of hanging the whole suite.
struct TimedOut: Error, CustomStringConvertible {
    var what: String
    var limit: Duration
    var description: String { "timed out after \(limit): \(what)" }
}

/// A test cannot go on: thrown from a helper or a closure with the reason.
struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `limit` from now, for the Dispatch waits.
func dispatchDeadline(_ limit: Duration) -> DispatchTime {
    let (seconds, attoseconds) = limit.components
    return .now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
}

/// A broken pipe (a child that exited without reading all its input) must be an error of the
/// write, not a SIGPIPE that kills the whole test process.
private let ignoreBrokenPipes: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

/// Reads a pipe to its end on a thread of its own, so a child never blocks on a full pipe
/// (64 KiB on Linux) while the test waits on another of its pipes or on its exit.
final class Drain: Sendable {
    private let read = Mutex<Result<Data, TestFailure>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            let result = Result { try handle.readToEnd() ?? Data() }.mapError { TestFailure("reading a pipe: \($0)") }
            read.withLock { $0 = result }
            done.signal()
        }
    }

    /// What was read, once the pipe closed; nil if it is still open after `limit`.
    func wait(_ limit: Duration) throws -> Data? {
        guard done.wait(timeout: dispatchDeadline(limit)) == .success else { return nil }
        done.signal()  // a later wait returns at once
        return try read.withLock { $0 }?.get()
    }
}

/// A program started by `start`: its output drained as it comes, its exit awaited with a deadline.
final class RunningCommand {
    let child: Child
    let name: String
    private let out: Drain, err: Drain
    private let deadline: DispatchTime
    private let timeLimit: Duration

    fileprivate init(_ product: String, _ args: [String], stdin: String?, environment: [String: String], timeLimit: Duration) throws {
        _ = ignoreBrokenPipes
        name = ([product] + args).joined(separator: " ")
        self.timeLimit = timeLimit
        let path = product.hasPrefix("/") ? product : try productsDirectory.appendingPathComponent(product).path
        var env = ProcessInfo.processInfo.environment
        env[MasterKeySource.environmentVariable] = testMasterKey
        for (k, v) in environment { env[k] = v }
        deadline = dispatchDeadline(timeLimit)
        child = try Child(path, args, environment: env)
        out = Drain(child.output)
        err = Drain(child.errors)
        // Fed from a thread of its own as well: a child that writes before it reads all of its
        // input would otherwise wait on us while we wait on it.
        let input = child.input
        Thread.detachNewThread {
            if let stdin { try? input.write(contentsOf: Data(stdin.utf8)) }
            try? input.close()
        }
    }

    /// Whether the program has not been seen to exit yet.
    var isRunning: Bool { child.isRunning }

    /// Sends `signal` to the program, if it still runs.
    func send(_ signal: Int32 = SIGKILL) { child.send(signal) }

    /// Waits for the program to exit and its output to close. At the deadline the program is
    /// killed and `TimedOut` thrown, naming it and what it had written.
    func finish() throws -> CommandResult {
        guard let status = child.wait(until: deadline) else {
            send(SIGKILL)
            _ = child.wait(until: dispatchDeadline(.seconds(10)))
            let partial = String(decoding: ((try? err.wait(.seconds(5))) ?? Data()).suffix(2000), as: UTF8.self)
            throw TimedOut(what: "`\(name)` did not exit (killed); its stderr ended with: \(partial)", limit: timeLimit)
        }
        // A child of the program may still hold the pipes open; that too is bounded.
        guard let o = try out.wait(.seconds(30)), let e = try err.wait(.seconds(30)) else {
            throw TimedOut(what: "the output of `\(name)` stayed open after it exited", limit: .seconds(30))
        }
        return CommandResult(status: status, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

/// Starts a built executable of this package (or, given an absolute path, any program) with
/// `args`, feeding `stdin`; `finish()` collects it. The master key is in its environment.
func start(_ product: String, _ args: [String], stdin: String? = nil, environment: [String: String] = [:],
           timeLimit: Duration = .seconds(180)) throws -> RunningCommand {
    try RunningCommand(product, args, stdin: stdin, environment: environment, timeLimit: timeLimit)
}

/// Runs a built executable of this package (or, given an absolute path, any program) with `args`,
/// feeding `stdin`, and waits for it, for at most `timeLimit` (then it is killed and `TimedOut`
/// thrown). Standard output and standard error are read as they come, each on its own thread.
@discardableResult
func run(_ product: String, _ args: [String], stdin: String? = nil, environment: [String: String] = [:],
         timeLimit: Duration = .seconds(180)) throws -> CommandResult {
    try start(product, args, stdin: stdin, environment: environment, timeLimit: timeLimit).finish()
}

/// Polls `condition` every `interval` until it holds; throws `TimedOut` naming `what` after `timeLimit`.
func waitUntil(_ what: @autoclosure () -> String, timeLimit: Duration = .seconds(30), interval: Duration = .milliseconds(20),
               _ condition: () throws -> Bool) throws {
    let deadline = ContinuousClock.now + timeLimit
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what(), limit: timeLimit) }
        Thread.sleep(forTimeInterval: Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18)
    }
}

/// Polls `condition` every `interval` until it holds, without blocking a thread of the
/// cooperative pool; throws `TimedOut` naming `what` after `timeLimit`.
func waitUntil(_ what: @autoclosure () -> String, timeLimit: Duration = .seconds(30), interval: Duration = .milliseconds(10),
               _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeLimit
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what(), limit: timeLimit) }
        try await Task.sleep(for: interval)
    }
}

/// Runs the tasks that prefer it on a serial Dispatch queue of its own, off the cooperative pool.
///
/// On two cores that pool has two threads, and the suite's synchronous tests hold them for
/// seconds at a time (waiting on a `lethe` process, say): an async test whose work is timed
/// must not wait for them, or its deadline measures the rest of the suite.
final class OwnQueueExecutor: TaskExecutor {
    private let queue: DispatchQueue

    init(_ label: String) { queue = DispatchQueue(label: "lethe-tests.\(label)") }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}

/// Runs `operation` for at most `timeLimit`, on an executor of its own (see `OwnQueueExecutor`):
/// past the limit, the operation is cancelled and `TimedOut` thrown at once, even if the
/// operation ignores its cancellation (the very bug a test may be after).
func withTimeLimit<T: Sendable>(_ timeLimit: Duration, _ what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let outcome = FirstOutcome<T>()
    return try await withCheckedThrowingContinuation { continuation in
        outcome.set(continuation)
        outcome.cancelOnResume(Task {
            do { try await Task.sleep(for: timeLimit) } catch { return }
            outcome.resume(with: .failure(TimedOut(what: what, limit: timeLimit)))
        })
        outcome.cancelOnResume(Task(executorPreference: OwnQueueExecutor("time-limited")) {
            do { outcome.resume(with: .success(try await operation())) } catch { outcome.resume(with: .failure(error)) }
        })
    }
}

/// A continuation resumed by whichever task comes first; the others are cancelled then.
private final class FirstOutcome<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var tasks: [Task<Void, Never>] = []
        var done = false
    }
    private let state = Mutex(State())

    func set(_ c: CheckedContinuation<T, any Error>) { state.withLock { $0.continuation = c } }

    func cancelOnResume(_ task: Task<Void, Never>) {
        let done = state.withLock { s in
            if !s.done { s.tasks.append(task) }
            return s.done
        }
        if done { task.cancel() }
    }

    func resume(with result: Result<T, any Error>) {
        let (continuation, tasks) = state.withLock { s -> (CheckedContinuation<T, any Error>?, [Task<Void, Never>]) in
            guard !s.done else { return (nil, []) }
            s.done = true
            defer { s.continuation = nil; s.tasks = [] }
            return (s.continuation, s.tasks)
        }
        continuation?.resume(with: result)
        for task in tasks { task.cancel() }
    }
}

/// The package's root folder (where `Tools/` and `.build/` are).
var packageDirectory: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// The package's Fixtures/ folder.
var fixturesDirectory: URL { packageDirectory.appendingPathComponent("Fixtures") }

/// The message of the error `body` throws (nil if none), which must be a `JournalError` with
/// code `.corrupt` (damage to a journal; `.notAJournal` is for a file that is no journal at all).
func corruption(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let e as JournalError {
        #expect(e.code == .corrupt, "\(e)")
        return e.message
    } catch {
        Issue.record("not a JournalError: \(type(of: error)): \(error)")
        return "\(error)"
    }
}
