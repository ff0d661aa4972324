import LetheEvents
import LetheJournal
import Logging

/// The read models' API for async hosts: each call runs on a thread of `BlockingPool.shared`
/// (see `Journal.run`), so the cooperative thread pool never blocks on SQLite.
extension ReadModels {
    /// Opens the read models of `journal` (as `init` does), off the caller's thread.
    public static func open(journal: Journal, path: String? = nil, policy: RetentionPolicy = .standard,
                            codec: PayloadCodec = .standard, logger: Logger = Logger(label: "lethe.views")) async throws -> ReadModels {
        try await BlockingPool.shared.run { try ReadModels(journal: journal, path: path, policy: policy, codec: codec, logger: logger) }
    }

    /// Runs `body` with the read models on a thread of the blocking pool: the way to reach any
    /// query (`account`, `items`, `accessLog`, ...) from async code.
    public func run<T: Sendable>(_ body: @escaping @Sendable (ReadModels) throws -> T) async throws -> T {
        try await BlockingPool.shared.run { try body(self) }
    }

    /// `catchUp()` for async callers: the new checkpoint.
    @discardableResult
    public func catchUp() async throws -> Int64 {
        try await run { try $0.catchUp() }
    }

    /// `rebuild()` for async callers: the new checkpoint.
    @discardableResult
    public func rebuild() async throws -> Int64 {
        try await run { try $0.rebuild() }
    }
}
