import Synchronization

/// Wakes the journal's waiting subscribers when this process commits: a subscriber that has
/// caught up waits here instead of sleeping out its poll interval, and sees an append made by
/// this process (any thread, any API) at once. Appends by other processes are still found by
/// the poll. (On a server-side store, the store's own notifications will feed this too.)
final class CommitSignal: Sendable {
    private struct State {
        /// The highest sequence number committed through this journal object.
        var head: Int64 = 0
        var next = 0
        var waiting: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    /// How many subscribers wait now (for tests: a subscriber that is waiting, not about to).
    var waiting: Int { state.withLock { $0.waiting.count } }

    /// Records that events up to `head` are committed and wakes every waiter.
    func committed(through head: Int64) {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.head = max(s.head, head)
            defer { s.waiting.removeAll() }
            return Array(s.waiting.values)
        }
        for w in woken { w.resume() }
    }

    /// Returns once this process commits past `seq`, `timeout` has passed, or the task is
    /// cancelled, whichever comes first. (A commit made before the call returns at once.)
    func wait(after seq: Int64, timeout: Duration) async {
        let id = state.withLock { s -> Int in
            s.next += 1
            return s.next
        }
        // The waiter is registered before its timer starts, and a cancellation that comes first
        // is seen at registration: whichever of commit, timer and cancellation comes first
        // resumes it, and the others find it gone.
        var timer: Task<Void, Never>?
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.head > seq || Task.isCancelled { return true }
                    s.waiting[id] = c
                    return false
                }
                if now {
                    c.resume()
                    return
                }
                timer = Task { [self] in
                    guard (try? await Task.sleep(for: timeout)) != nil else { return }  // cancelled: done already
                    wake(id)
                }
            }
        } onCancel: {
            wake(id)
        }
        timer?.cancel()
    }

    private func wake(_ id: Int) {
        state.withLock { $0.waiting.removeValue(forKey: id) }?.resume()
    }
}
