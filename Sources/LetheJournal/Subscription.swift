/// Committed events from a sequence number on, as an `AsyncSequence` that waits for new ones.
///
/// A host that forwards events somewhere (erasure requests to processors, say) keeps the last
/// sequence number it handled and subscribes `after:` it again after a restart, so nothing is
/// missed and nothing is handled twice. The iterator reads the journal a chunk at a time on
/// demand (no unbounded buffer), sees appends by any process, and when it has caught up waits
/// for the next commit: one through this `Journal` wakes it at once, and so does one by any
/// instance on a backend that sends notice of commits (PostgreSQL's LISTEN/NOTIFY: the feed is
/// started by the first follower that waits, and started again if its connection is lost);
/// otherwise it reads again after `poll`. Ends when its task is cancelled. Reads run on
/// `BlockingPool.shared`.
public struct Subscription: AsyncSequence, Sendable {
    public typealias Element = StoredEvent

    let journal: Journal
    let after: Int64
    let poll: Duration
    static let chunk: Int64 = 1024
    /// With a live commit feed a follower that caught up reads nothing until it is woken, but
    /// for one read a minute: a safety net, should a notice ever be lost with its connection
    /// still up.
    static let safetyRead: Duration = .seconds(60)

    public struct AsyncIterator: AsyncIteratorProtocol {
        let journal: Journal
        let poll: Duration
        var last: Int64
        var buffer: [StoredEvent] = []
        var index = 0

        public mutating func next() async throws -> StoredEvent? {
            while index == buffer.count {
                if Task.isCancelled { return nil }  // cancelled between reads: the sequence ends too
                let from = last + 1
                // Read on the blocking pool's thread: a follower never holds a cooperative thread.
                let chunk = try await journal.read { reader in
                    var chunk: [StoredEvent] = []
                    try reader.events(from: from, through: from + Subscription.chunk - 1, transform: { $0 }) { chunk.append($0) }
                    return chunk
                }
                if chunk.isEmpty {
                    // Woken by the next commit this process makes or, on a backend that sends
                    // notice of commits (PostgreSQL), any instance makes; elsewhere other
                    // processes' commits are found by reading again after `poll`.
                    let commits = journal.commits
                    let watch: CommitSignal.Watch
                    if let known = commits.watching {
                        watch = known
                    } else {
                        watch = try await journal.run { $0.watchCommits() }
                    }
                    switch watch {
                    case .started: continue  // a commit made before the feed began went unnoticed: read again
                    case .live: await commits.wait(after: last, timeout: Swift.max(poll, Subscription.safetyRead))
                    case .polling: await commits.wait(after: last, timeout: poll)
                    }
                    if Task.isCancelled { return nil }  // cancelled while waiting: the sequence ends
                } else {
                    buffer = chunk
                    index = 0
                }
            }
            defer { index += 1 }
            last = buffer[index].header.seq
            return buffer[index]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(journal: journal, poll: poll, last: after) }
}

extension Journal {
    /// Every committed event with a sequence number above `after`, then each new one as it is
    /// committed. See `Subscription`.
    public func subscribe(after: Int64 = 0, poll: Duration = .milliseconds(100)) -> Subscription {
        Subscription(journal: self, after: after, poll: poll)
    }
}
