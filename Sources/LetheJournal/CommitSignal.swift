import Synchronization

/// Wakes the journal's waiting subscribers when a commit is known: a subscriber that has caught
/// up waits here instead of sleeping out its poll interval. Commits through this journal object
/// (any thread, any API) are known at once; other instances' through the backend's commit feed
/// where it has one (PostgreSQL's LISTEN/NOTIFY, see `watch`), else found by the poll.
final class CommitSignal: Sendable {
    private struct State {
        /// The highest sequence number known to be committed.
        var head: Int64 = 0
        var next = 0
        var waiting: [Int: CheckedContinuation<Void, Never>] = [:]
        var feed = Feed.notStarted
        /// Counts the feeds started, so that the end of an old one is told from the current one's.
        var feeds = 0
    }

    /// Whether other instances' commits wake the waiters.
    enum Feed {
        case notStarted
        /// The backend sends no notice of commits: waiters poll.
        case unavailable
        case live(CommitFeed, number: Int)
    }

    /// What a subscriber that caught up may rely on.
    enum Watch {
        /// Every commit wakes it: it may wait without polling.
        case live
        /// The feed has just begun: a commit made before it began was not noticed, so the
        /// subscriber reads once more before it waits.
        case started
        /// No feed: it polls.
        case polling
    }

    private let state = Mutex(State())

    /// How many subscribers wait now (for tests: a subscriber that is waiting, not about to).
    var waiting: Int { state.withLock { $0.waiting.count } }

    /// How many feeds were started (for tests: a lost feed is started again).
    var feedsStarted: Int { state.withLock { $0.feeds } }

    /// What `watch` would answer without starting anything; nil when it must start a feed.
    var watching: Watch? {
        state.withLock { s in
            switch s.feed {
            case .live: .live
            case .unavailable: .polling
            case .notStarted: nil
            }
        }
    }

    /// Makes sure other instances' commits wake the waiters, starting the backend's feed with
    /// `start` (which may block: call this off the cooperative pool) when there is none yet or
    /// the last one ended. A feed that cannot start now is tried again at the next call.
    func watch(
        start: (_ onCommit: @escaping @Sendable (Int64) -> Void, _ onEnd: @escaping @Sendable () -> Void) throws -> CommitFeed?
    ) -> Watch {
        let number = state.withLock { s -> Int? in
            switch s.feed {
            case .live, .unavailable: return nil
            case .notStarted:
                s.feeds += 1
                return s.feeds
            }
        }
        guard let number else { return watching ?? .polling }  // (live or unavailable: never nil here)
        let feed: CommitFeed?
        do {
            feed = try start({ [weak self] seq in self?.committed(through: seq) }, { [weak self] in self?.feedEnded(number) })
        } catch {
            return .polling  // (the server may be away: the reads will say so, and the next wait tries again)
        }
        let (watch, extra) = state.withLock { s -> (Watch, CommitFeed?) in
            if case .live = s.feed { return (.live, feed) }  // another subscriber started one meanwhile
            guard let feed else {
                s.feed = .unavailable
                return (.polling, nil)
            }
            s.feed = .live(feed, number: number)
            return (.started, nil)
        }
        extra?.stop()
        return watch
    }

    /// Feed `number` ended (its connection was lost): the waiters read again, and the next wait
    /// starts another feed.
    private func feedEnded(_ number: Int) {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard case .live(_, number) = s.feed else { return [] }
            s.feed = .notStarted
            defer { s.waiting.removeAll() }
            return Array(s.waiting.values)
        }
        for w in woken { w.resume() }
    }

    /// Stops the feed (the journal is going away).
    func stopFeed() {
        let feed = state.withLock { s -> CommitFeed? in
            defer { s.feed = .unavailable }
            if case .live(let feed, _) = s.feed { return feed }
            return nil
        }
        feed?.stop()
    }

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

/// A backend's notices of commits, by any instance (`JournalBackend.commitFeed`); `stop` ends it.
package final class CommitFeed: Sendable {
    private let end: Mutex<(@Sendable () -> Void)?>

    package init(stop: @escaping @Sendable () -> Void) { end = Mutex(stop) }

    package func stop() { end.withLock { e in defer { e = nil }; return e }?() }

    deinit { stop() }
}
