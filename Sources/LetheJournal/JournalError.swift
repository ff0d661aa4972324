/// Why the journal refused or failed an operation.
///
/// `code` is for programs to switch on; `message` names the cause (file, event, field) for people
/// and never contains personal data. `underlying` keeps the lower-level error, if any.
public struct JournalError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure: compare with `==`, or switch with a `default:` case.
    ///
    /// A struct of named values rather than an enum, so that a new kind of failure (a server that
    /// cannot be reached, say) is not a source-breaking change for every host that switches on it.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's name, as in `lethe`'s messages and logs (`versionConflict`, ...).
        public let name: String

        private init(_ name: String) { self.name = name }

        public var description: String { name }

        /// The account's version was not the one the caller expected (optimistic concurrency).
        public static let versionConflict = Code("versionConflict")
        /// The event is older than the account's latest event.
        public static let timeOrder = Code("timeOrder")
        /// An argument broke the journal's own rules (empty account, oversized payload, ...).
        public static let invalidEvent = Code("invalidEvent")
        /// The account's data key was destroyed: nothing more can be recorded for it.
        public static let accountShredded = Code("accountShredded")
        /// The domain's rules (`Journal.Options.rules`) refuse the event after the account's history.
        public static let refusedByRules = Code("refusedByRules")
        /// The journal file is not a Lethe journal, or a newer format.
        public static let notAJournal = Code("notAJournal")
        /// Stored bytes do not match their checksums, hash chain or invariants.
        public static let corrupt = Code("corrupt")
        /// The key store or the master key is missing, wrong or damaged.
        public static let keys = Code("keys")
        /// SQLite or the file system failed.
        public static let storage = Code("storage")
        /// The connection to the journal's server was lost (a restart, the network). Nothing of
        /// the operation under way was written, unless the message says it was lost while
        /// committing: then it may have been (a batch with event ids can be appended again; its
        /// events already there come back as duplicates). The next call connects again.
        public static let connectionLost = Code("connectionLost")
        /// Another holder has the lease for this work (another retention run, say); nothing was done.
        public static let busy = Code("busy")
        /// Erasures were done, but a file still holds what they removed (a reader kept its WAL
        /// from being truncated); the next open or retention run finishes it.
        public static let erasureIncomplete = Code("erasureIncomplete")
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
