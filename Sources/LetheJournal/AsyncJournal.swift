/// The journal's API for async hosts (a service on Hummingbird or Vapor, say): each call runs the
/// synchronous API on a thread of `BlockingPool.shared` and suspends the caller meanwhile, so the
/// cooperative thread pool never blocks on SQLite, an fsync or the write lock. Same semantics,
/// same errors. Inside an async function these are the overloads Swift picks (awaited); a
/// closure with no `await` of its own still picks the synchronous ones.
extension Journal {
    /// Opens the journal at `path` (creating it when missing), as `init` does, off the caller's thread.
    public static func open(path: String, keysPath: String? = nil, master: MasterKeySource = MasterKeySource(),
                            options: Options = Options()) async throws -> Journal {
        try await BlockingPool.shared.run { try Journal(path: path, keysPath: keysPath, master: master, options: options) }
    }

    /// Runs `body` with the journal on a thread of the blocking pool: the way to reach any part
    /// of the synchronous API from async code (several calls in one hop, say).
    public func run<T: Sendable>(_ body: @escaping @Sendable (Journal) throws -> T) async throws -> T {
        try await BlockingPool.shared.run { try body(self) }
    }

    /// `append(_:)` for async callers.
    public func append(_ events: [NewEvent]) async throws -> [AppendOutcome] {
        try await run { try $0.append(events) }
    }

    /// `append(_:)` of one event for async callers; a rejection is thrown.
    @discardableResult
    public func append(_ event: NewEvent) async throws -> EventHeader {
        try await run { try $0.append(event) }
    }

    /// `append(_:erasing:allOrNothing:finish:)` for async callers.
    @discardableResult
    public func append(_ events: [NewEvent], erasing erasures: [Erasure], allOrNothing: Bool = false,
                       finish: Bool = true) async throws -> [AppendOutcome] {
        try await run { try $0.append(events, erasing: erasures, allOrNothing: allOrNothing, finish: finish) }
    }

    /// `version(of:)` for async callers.
    public func version(of account: String) async throws -> Int64 {
        try await run { try $0.version(of: account) }
    }

    /// `latestTime(of:)` for async callers.
    public func latestTime(of account: String) async throws -> Timestamp? {
        try await run { try $0.latestTime(of: account) }
    }

    /// `read(authenticated:_:)` for async callers: `body` runs on the pool's thread, in the snapshot.
    public func read<T: Sendable>(authenticated: Bool = false, _ body: @escaping @Sendable (JournalReader) throws -> T) async throws -> T {
        try await run { try $0.read(authenticated: authenticated, body) }
    }

    /// `settle()` for async callers.
    public func settle() async throws {
        try await run { try $0.settle() }
    }

    /// `destroyKeys(of:keeping:at:)` for async callers.
    public func destroyKeys(of account: String, keeping: Set<String> = [], at time: Timestamp) async throws {
        try await run { try $0.destroyKeys(of: account, keeping: keeping, at: time) }
    }
}
