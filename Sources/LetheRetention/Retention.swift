import LetheEvents
import LetheJournal
import LetheViews
import Logging
import Synchronization

/// The retention report of EVENTS.md at one moment, with what the HTML page adds.
public struct RetentionReport: Sendable {
    public struct Obligation: Sendable, Equatable {
        public var account: String
        public var item: String?
        public var rule: String
        public var start: Timestamp
        public var due: Timestamp
        /// `due` (due <= as_of) or `upcoming`.
        public var status: String
        public var held: Bool
        /// The cases holding it, when held.
        public var cases: [String]
    }

    /// A purge that ran: how long after its due time.
    public struct Executed: Sendable, Equatable {
        public var account: String
        public var item: String?
        public var rule: String
        public var due: Timestamp
        public var ran: Timestamp
        public var delaySeconds: Int64 { max(0, (ran.nanoseconds - due.nanoseconds) / 1_000_000_000) }
    }

    public var asOf: Timestamp
    public var horizonDays: Int64
    /// Sorted by due, then account, then item (none first).
    public var obligations: [Obligation]
    public var executed: [Executed]
    /// For each processor, the accounts in the report whose purge will send it an erasure request.
    public var erasures: [(processor: String, accounts: [String])]

    /// Exactly the contract's JSON: `as_of`, `horizon_days`, `obligations` (`account`, `item`,
    /// `rule`, `due`, `status`, `held`).
    public var json: JSONObject {
        [
            "as_of": .string(asOf.rfc3339),
            "horizon_days": .int(horizonDays),
            "obligations": .array(obligations.map { o in
                .object([
                    "account": .string(o.account), "item": o.item.map(JSONValue.string) ?? .null, "rule": .string(o.rule),
                    "due": .string(o.due.rfc3339), "status": .string(o.status), "held": .bool(o.held),
                ])
            }),
        ]
    }
}

/// What one run did.
public struct RetentionRun: Sendable, Equatable {
    public var now: Timestamp
    public var accountsPurged: [String] = []
    public var itemsPurged = 0
    public var recordsExpired = 0
    public var processorRequests = 0
    /// Due obligations a legal hold stopped.
    public var held = 0
    /// Erasures left over by an interrupted run, finished first.
    public var finishedEarlier = 0

    public var summary: String {
        "retention run at \(now): \(accountsPurged.count) accounts purged, \(itemsPurged) items purged, "
            + "\(recordsExpired) records expired, \(processorRequests) processor erasure requests, \(held) due obligations held"
            + (finishedEarlier > 0 ? ", \(finishedEarlier) erasures of an interrupted run finished" : "")
    }
}

/// The retention policy at work on one journal: the dry-run report and the runs that purge.
///
/// Obligations come from the read models' index of start times (pending and ended), so a report
/// or a run costs in proportion to the obligations that matter at that moment, not to the number
/// of accounts. A run executes exactly what the report at the same moment lists as due and not
/// held; each account's purge events and erasures are appended together, with ids derived from
/// the obligation, so that a second run, or a run in another process at the same time, adds
/// nothing, and a run that crashed halfway is finished by the next one.
public final class Retention: Sendable {
    public let journal: Journal
    public let views: ReadModels
    public var policy: RetentionPolicy { views.policy }
    private let logger: Logger
    /// One run at a time in this process (other processes are kept apart by the journal).
    private let running = Mutex(())

    public init(journal: Journal, views: ReadModels, logger: Logger = Logger(label: "lethe.retention")) {
        self.journal = journal
        self.views = views
        self.logger = logger
    }

    // MARK: Report

    /// The report as of `asOf`: obligations pending then and due by `asOf + horizonDays`. Changes
    /// nothing in the journal (the read models are caught up first).
    public func report(asOf: Timestamp, horizonDays: Int64) throws -> RetentionReport {
        try report(asOf: asOf, horizonDays: horizonDays, executed: true)
    }

    /// `executed: false` leaves out the purges already run (a run does not need that history).
    private func report(asOf: Timestamp, horizonDays: Int64, executed withExecuted: Bool) throws -> RetentionReport {
        try views.catchUp()
        let limit = asOf.adding(seconds: horizonDays * RetentionPolicy.day)
        var cases: [String: [String]] = [:]
        var obligations: [RetentionReport.Obligation] = []
        for o in try views.obligations(pendingAt: asOf) {
            let due = o.start.adding(seconds: policy.window(o.rule))
            guard due <= limit else { continue }
            if cases[o.account] == nil { cases[o.account] = try views.openCases(account: o.account, at: asOf) }
            let open = cases[o.account]!
            obligations.append(.init(
                account: o.account, item: o.item, rule: o.rule, start: o.start, due: due,
                status: due <= asOf ? "due" : "upcoming", held: !open.isEmpty, cases: open))
        }
        obligations.sort { a, b in
            if a.due != b.due { return a.due < b.due }
            if a.account != b.account { return a.account < b.account }
            switch (a.item, b.item) {
            case (nil, nil): return a.rule < b.rule
            case (nil, _): return true
            case (_, nil): return false
            case (let x?, let y?): return x != y ? x < y : a.rule < b.rule
            }
        }
        let executed = try (withExecuted ? views.executedObligations(through: asOf) : []).map { o in
            RetentionReport.Executed(account: o.account, item: o.item, rule: o.rule, due: o.start.adding(seconds: policy.window(o.rule)), ran: o.end!)
        }
        var erasures: [String: Set<String>] = [:]
        for account in Set(obligations.filter { $0.item == nil }.map(\.account)) {
            for p in policy.recipients(of: try views.categoriesHeld(account: account)) { erasures[p.name, default: []].insert(account) }
        }
        let listed = policy.processors.compactMap { p in erasures[p.name].map { (p.name, $0.sorted()) } }
        return RetentionReport(asOf: asOf, horizonDays: horizonDays, obligations: obligations, executed: executed, erasures: listed)
    }

    // MARK: Run

    /// Executes every obligation due at `now` and not held, and expires the raw records past
    /// their windows; then the read models drop what was purged and their WAL is truncated.
    public func run(now: Timestamp) throws -> RetentionRun {
        try running.withLock { _ in
            var result = RetentionRun(now: now)
            result.finishedEarlier = try journal.finishErasures()
            let report = try report(asOf: now, horizonDays: 0, executed: false)
            var work: [String: (obligations: [RetentionReport.Obligation], records: [(RetentionPolicy.RecordRule, [Views.Record])])] = [:]
            for o in report.obligations where o.status == "due" {
                if o.held { result.held += 1 } else { work[o.account, default: ([], [])].obligations.append(o) }
            }
            for rule in policy.records {
                let cutoff = Timestamp(nanoseconds: now.nanoseconds - rule.afterDays * RetentionPolicy.day * 1_000_000_000)
                for (account, due) in try views.records(of: rule.type, through: cutoff) {
                    // A legal hold keeps everything of the account as it is, raw records too.
                    if try !views.openCases(account: account, at: now).isEmpty { continue }
                    work[account, default: ([], [])].records.append((rule, due))
                }
            }
            for account in work.keys.sorted() {
                try execute(account: account, work[account]!.obligations, work[account]!.records, now: now, into: &result)
            }
            // The erasures all at once: each block is rewritten once, however many accounts it holds.
            try journal.finishErasures()
            try views.catchUp()
            try views.checkpointWAL()
            logger.info("\(result.summary)")
            return result
        }
    }

    /// Purges the accounts whose key was destroyed but whose journal has no `AccountPurged`: what
    /// a journal restored from a backup shows of the purges made after the backup (the live key
    /// store remembers them). The rule is that of the account's pending account obligation, or
    /// `erasure-request` when it has none (a purge with no obligation pending at the backup came
    /// from a request made after it). Returns the accounts purged.
    public func purgeShreddedAccounts(now: Timestamp) throws -> [String] {
        try views.catchUp()
        var purged: [String] = []
        let pending = try views.obligations(pendingAt: now).filter { $0.item == nil }
        for account in try journal.accountsWithDestroyedKeys() {
            guard try views.account(account)?.status != "purged" else { continue }
            let rule = pending.filter { $0.account == account }.min { $0.start < $1.start }?.rule ?? RetentionPolicy.erasure
            guard let last = try journal.latestTime(of: account) else { continue }
            let at = max(now, last)
            let event = NewEvent(
                id: "lethe:\(rule):\(account):restored", account: account, type: EventType.accountPurged.rawValue, at: at,
                payload: PayloadCodec.standard.encode(type: EventType.accountPurged.rawValue, data: ["rule": .string(rule)]), scope: .journal)
            if case .appended = try journal.append([event], erasing: [.account(account)], finish: false)[0] { purged.append(account) }
        }
        try journal.finishErasures()
        try views.catchUp()
        try views.checkpointWAL()
        return purged
    }

    /// One account's due work, from the read models alone (no pass over the account's events):
    /// its purge events and the erasures they announce, appended together.
    private func execute(
        account: String, _ obligations: [RetentionReport.Obligation], _ records: [(RetentionPolicy.RecordRule, [Views.Record])],
        now: Timestamp, into result: inout RetentionRun
    ) throws {
        guard let last = try journal.latestTime(of: account) else { return }
        // A purge is recorded after everything the account already holds (its own time order).
        // When the account has events after `now`, what is purged must still be pending then:
        // an item restored, an account reactivated, or a case opened after `now` stops it.
        let at = max(now, last)
        var obligations = obligations
        if at > now {
            let stillPending = Set(try views.obligations(account: account, pendingAt: at).map { "\($0.item ?? "")\u{0}\($0.rule)\u{0}\($0.start.nanoseconds)" })
            obligations = obligations.filter { stillPending.contains("\($0.item ?? "")\u{0}\($0.rule)\u{0}\($0.start.nanoseconds)") }
            if try !views.openCases(account: account, at: at).isEmpty {
                result.held += obligations.count
                return
            }
        }
        let codec = PayloadCodec.standard
        func event(_ type: EventType, id: String, _ data: JSONObject) -> NewEvent {
            NewEvent(id: id, account: account, type: type.rawValue, at: at, payload: codec.encode(type: type.rawValue, data: data), scope: type.scope)
        }
        /// What expired page views leave behind: anonymous counts per day and path.
        func counts(_ records: [Views.Record]) -> JSONValue {
            var counts: [String: Int64] = [:]
            for r in records { if let day = r.day, let path = r.path { counts["\(day)\u{0}\(path)", default: 0] += 1 } }
            return .array(counts.keys.sorted().map { key in
                let parts = key.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                return .object(["day": .string(parts[0]), "path": .string(parts[1]), "views": .int(counts[key]!)])
            })
        }
        func expiry(_ rule: String, category: String, _ records: [Views.Record], id: String) -> NewEvent {
            var data: JSONObject = ["category": .string(category), "rule": .string(rule), "through": .string(records.map(\.at).max()!.rfc3339)]
            if records.contains(where: { $0.path != nil }) { data["counts"] = counts(records) }
            return event(.recordsExpired, id: id, data)
        }
        var events: [NewEvent] = []
        var erasures: [Erasure] = []
        var expired = 0
        let purge = obligations.filter({ $0.item == nil }).min(by: { ($0.due, $0.rule) < ($1.due, $1.rule) })
        // Raw records past their windows. Before an account purge, only those that would outlive
        // it (sealed under the engine key); the others go with the account's key.
        for (rule, due) in records where !due.isEmpty && (purge == nil || rule.type.scope == .journal) {
            events.append(expiry(rule.rule, category: rule.category, due, id: "lethe:\(rule.rule):\(account):\(due.last!.seq)"))
            erasures.append(.events(account: account, seqs: due.map(\.seq)))
            expired += due.count
        }
        if let purge {
            // The whole account: its page views leave their anonymous counts, each processor that
            // received its data is asked to erase it, then the account is purged and its key destroyed.
            let key = "lethe:\(purge.rule):\(account):\(purge.start.nanoseconds)"
            let pageViews = try views.records(of: .pageViewed, account: account)
            if !pageViews.isEmpty { events.append(expiry(purge.rule, category: "page-views", pageViews, id: key + ":page-views")) }
            let processors = policy.recipients(of: try views.categoriesHeld(account: account))
            for p in processors {
                events.append(event(.processorErasureRequested, id: key + ":" + p.name, ["processor": .string(p.name)]))
            }
            events.append(event(.accountPurged, id: key, ["rule": .string(purge.rule)]))
            erasures.append(.account(account))
            result.accountsPurged.append(account)
            result.processorRequests += processors.count
        } else {
            for o in obligations {
                guard let item = o.item else { continue }
                // The item's own data (ItemCreated: kind, label, content) is erased; its trash
                // moves and this purge event keep only its id.
                events.append(event(.itemPurged, id: "lethe:\(o.rule):\(account):\(o.start.nanoseconds):\(item)", ["item": .string(item), "rule": .string(o.rule)]))
                if let seq = try views.itemCreatedSeq(account: account, item: item) {
                    erasures.append(.events(account: account, seqs: [seq]))
                }
                result.itemsPurged += 1
            }
        }
        guard !events.isEmpty else { return }
        var refused = false
        for outcome in try journal.append(events, erasing: erasures, finish: false) {
            if case .rejected(let error) = outcome {
                refused = true
                logger.warning("a purge event was refused", metadata: ["account": "\(account)", "why": "\(error.message)"])
            }
        }
        if !refused { result.recordsExpired += expired }
    }
}

/// The scheduler the account service runs in-process: a retention run every `period`, until its
/// task is cancelled. Safe to run in several processes at once (see `Retention`).
public struct RetentionScheduler: Sendable {
    public let retention: Retention
    public let period: Duration
    public let clock: LetheJournal.Clock

    public init(retention: Retention, period: Duration, clock: LetheJournal.Clock = .system) {
        self.retention = retention
        self.period = period
        self.clock = clock
    }

    /// Runs now, then every `period`; returns when the task is cancelled. A failed run is
    /// reported to `onRun` and the next one goes ahead (what it left undone is due then too).
    public func run(onRun: @Sendable (Result<RetentionRun, any Error>) -> Void = { _ in }) async {
        while !Task.isCancelled {
            onRun(Result { try retention.run(now: clock.now()) })
            do {
                try await Task.sleep(for: period)
            } catch {
                return
            }
        }
    }
}
