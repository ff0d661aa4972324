import Foundation
import Synchronization

/// Threads of Lethe's own for the blocking work (SQLite calls, fsync, decryption of long
/// histories) that async hosts start: the `async` API runs each call here and suspends the
/// caller meanwhile, so that the cooperative thread pool (one thread per core) never waits on
/// the disk or on the journal's write lock.
///
/// A fixed number of threads, started one per call until there are `threads` of them, then kept
/// for the life of the process; work beyond them waits in line, in order. A call whose task is
/// cancelled still finishes (the work may already have committed) and returns its outcome.
public final class BlockingPool: Sendable {
    /// The pool the async API uses: as many threads as cores, at least two.
    public static let shared = BlockingPool(threads: max(2, ProcessInfo.processInfo.activeProcessorCount), name: "lethe-blocking")

    private struct State {
        /// Calls in line; a taken one's slot is emptied at once, so that what it captured (a
        /// batch, a continuation) is not kept until the line runs dry.
        var queue: [(@Sendable () -> Void)?] = []
        var head = 0
        var started = 0
    }

    /// Marks each of a pool's threads with the pool (see `isCurrentThread`).
    private static let owner: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "no thread-specific key left")
        return key
    }()

    private let state = Mutex(State())
    /// Signalled once per queued call: a thread that gets past it finds one to take.
    private let ready = DispatchSemaphore(value: 0)
    /// How many threads the pool may start.
    public let threads: Int
    /// The name given to the pool's threads, for `ps -L` and debuggers (best effort: on Linux,
    /// Foundation or Dispatch may name a thread again).
    public let name: String

    public init(threads: Int, name: String) {
        precondition(threads > 0, "a pool of no threads")
        self.threads = threads
        self.name = name
    }

    /// Whether the calling thread is one of this pool's.
    public var isCurrentThread: Bool {
        pthread_getspecific(BlockingPool.owner) == Unmanaged.passUnretained(self).toOpaque()
    }

    /// Runs `body` on a thread started for it, which ends with it: for long work (a retention
    /// run) that must not hold one of a pool's few threads while other calls wait in line.
    public static func runOnOwnThread<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<T, any Error>) in
            Thread.detachNewThread {
                Thread.current.name = name
                done.resume(with: Result { try body() })
            }
        }
    }

    /// Runs `body` on one of the pool's threads and returns (or throws) what it did.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<T, any Error>) in
            submit { done.resume(with: Result { try body() }) }
        }
    }

    private func submit(_ work: @escaping @Sendable () -> Void) {
        let startThread = state.withLock { s -> Bool in
            s.queue.append(work)
            guard s.started < threads else { return false }
            s.started += 1
            return true
        }
        if startThread {
            // (Named from inside: on Linux a name given before `start` never reaches the thread.)
            Thread.detachNewThread { [self] in
                Thread.current.name = name
                pthread_setspecific(BlockingPool.owner, Unmanaged.passUnretained(self).toOpaque())
                while true { take()() }
            }
        }
        ready.signal()
    }

    /// The next call in line, waiting for one.
    private func take() -> @Sendable () -> Void {
        ready.wait()
        return state.withLock { s in
            let work = s.queue[s.head]!
            s.queue[s.head] = nil
            s.head += 1
            if s.head == s.queue.count {
                s.queue.removeAll(keepingCapacity: true)
                s.head = 0
            }
            return work
        }
    }
}
