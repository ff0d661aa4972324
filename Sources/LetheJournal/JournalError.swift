/// Why the journal refused or failed an operation.
///
/// `code` is for programs to switch on; `message` names the cause (file, event, field) for people
/// and never contains personal data. `underlying` keeps the lower-level error, if any.
public struct JournalError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The account's version was not the one the caller expected (optimistic concurrency).
        case versionConflict
        /// The event is older than the account's latest event.
        case timeOrder
        /// An argument broke the journal's own rules (empty account, oversized payload, ...).
        case invalidEvent
        /// The account's data key was destroyed: nothing more can be recorded for it.
        case accountShredded
        /// The domain's rules (`Journal.Options.rules`) refuse the event after the account's history.
        case refusedByRules
        /// The journal file is not a Lethe journal, or a newer format.
        case notAJournal
        /// Stored bytes do not match their checksums, hash chain or invariants.
        case corrupt
        /// The key store or the master key is missing, wrong or damaged.
        case keys
        /// SQLite or the file system failed.
        case storage
        /// Erasures were done, but a file still holds what they removed (a reader kept its WAL
        /// from being truncated); the next open or retention run finishes it.
        case erasureIncomplete
    }

    public var code: Code
    public var message: String
    public var underlying: String?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying.map { String(describing: $0) }
    }

    public var description: String {
        message + (underlying.map { " (\($0))" } ?? "")
    }
}

extension JournalError {
    package static func storage(_ what: String, _ error: any Error) -> JournalError {
        if let e = error as? JournalError { return e }
        return JournalError(.storage, what, underlying: error)
    }
}
