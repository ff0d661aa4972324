/// Committed events from a sequence number on, as an `AsyncSequence` that waits for new ones.
///
/// A host that forwards events somewhere (erasure requests to processors, say) keeps the last
/// sequence number it handled and subscribes `after:` it again after a restart, so nothing is
/// missed and nothing is handled twice. The iterator reads the journal a chunk at a time on
/// demand (no unbounded buffer), sees appends by any process, and when it has caught up waits
/// for the next commit through this `Journal`, which wakes it at once, or `poll`, for appends by
/// other processes. Ends when its task is cancelled. Reads run on `BlockingPool.shared`.
public struct Subscription: AsyncSequence, Sendable {
    public typealias Element = StoredEvent

    let journal: Journal
    let after: Int64
    let poll: Duration
    static let chunk: Int64 = 1024

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
                    // Woken by this process's next commit, or after `poll` for other processes'.
                    await journal.commits.wait(after: last, timeout: poll)
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
