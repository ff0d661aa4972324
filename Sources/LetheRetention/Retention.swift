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
    /// Times the run decided again because an account changed while it was deciding.
    public var replanned = 0

    public var summary: String {
        "retention run at \(now): \(accountsPurged.count) accounts purged, \(itemsPurged) items purged, "
            + "\(recordsExpired) records expired, \(processorRequests) processor erasure requests, \(held) due obligations held"
            + (finishedEarlier > 0 ? ", \(finishedEarlier) erasures of an interrupted run finished" : "")
            + (accountsPurged.isEmpty && itemsPurged == 0 && recordsExpired == 0 && finishedEarlier == 0 ? ""
               : "; their keys destroyed, their payloads removed, and the WALs of the journal, key store and read models truncated")
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
    /// How long a run waits by default for another one (in this process or another) to finish.
    public static let defaultWait: Duration = .seconds(600)
    /// Called after a run has decided and before it appends (tests put a concurrent event there).
    private let beforeAppend: @Sendable () throws -> Void

    public init(journal: Journal, views: ReadModels, logger: Logger = Logger(label: "lethe.retention")) {
        self.journal = journal
        self.views = views
        self.logger = logger
        beforeAppend = {}
    }

    package init(journal: Journal, views: ReadModels, logger: Logger = Logger(label: "lethe.retention"), beforeAppend: @escaping @Sendable () throws -> Void) {
        self.journal = journal
        self.views = views
        self.logger = logger
        self.beforeAppend = beforeAppend
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

    /// How often a run decides again when accounts change under it before it gives up.
    static let attempts = 3

    /// Executes every obligation due at `now` and not held, and expires the raw records past
    /// their windows; then the read models drop what was purged, and the WAL of every file is
    /// truncated.
    ///
    /// The run's events are decided on one view of the read models (at their checkpoint) and
    /// appended all or nothing, each account's first one expecting the account's version at that
    /// checkpoint: an event appended meanwhile (a legal hold placed, an item restored, an account
    /// reactivated, another run) refuses the whole batch, and the run decides again.
    ///
    /// Throws `.erasureIncomplete` naming the files whose WAL a reader kept from being truncated:
    /// the purges are done (keys destroyed, payloads removed), and the next open or run truncates it.
    ///
    /// One run at a time over the journal, across threads, processes and instances: a run takes
    /// the journal's `retention` lease first, waiting at most `wait` for another run to end, and
    /// throws `.busy` if it is still held then (having done nothing). A run whose process died
    /// lets go of the lease with it, and the next run finishes what it left. A run that finds
    /// its lease gone before one of its steps (`Lease.ensureHeld`: its lock file removed, its
    /// connection to the server lost) stops there with `.busy`.
    public func run(now: Timestamp, waitingForAnotherRun wait: Duration = Retention.defaultWait) throws -> RetentionRun {
        guard let lease = try journal.lease("retention", wait: wait) else {
            throw JournalError(.busy, "another retention run holds this journal (\(journal.leaseName("retention"))) and did not end within \(wait); this run did nothing")
        }
        defer { lease.release() }
        var result = RetentionRun(now: now)
        var incomplete: [String] = []
        func noting(_ body: () throws -> Void) throws {
            do { try body() } catch let e as JournalError where e.code == .erasureIncomplete { incomplete.append(e.message) }
        }
        // Before each step that acts after this first one, the lease is checked to be still
        // this run's (it was just taken).
        try noting { result.finishedEarlier = try journal.finishErasures() }
        for attempt in 1...Retention.attempts {
            var attemptResult = RetentionRun(now: now)
            attemptResult.finishedEarlier = result.finishedEarlier
            do {
                try lease.ensureHeld()
                try decideAndAppend(now: now, into: &attemptResult)
                result = attemptResult
                result.replanned = attempt - 1
                break
            } catch let e as JournalError where e.code == .versionConflict || e.code == .refusedByRules {
                guard attempt < Retention.attempts else {
                    throw JournalError(e.code, "the journal kept changing under the retention run (\(Retention.attempts) attempts); nothing was purged: \(e.message)")
                }
                logger.info("accounts changed while the run decided; deciding again", metadata: ["why": "\(e.message)"])
            }
        }
        // The erasures all at once: each block is rewritten once, however many accounts it holds.
        try lease.ensureHeld()
        try noting { try journal.finishErasures() }
        try views.catchUp()
        if let left = try views.clearResidue(wait: journal.options.truncateWait) {
            incomplete.append(left)
        }
        logger.info("\(result.summary)")
        guard incomplete.isEmpty else {
            throw JournalError(.erasureIncomplete, "\(result.summary); but \(incomplete.joined(separator: "; "))")
        }
        return result
    }

    /// `run(now:waitingForAnotherRun:)` for async callers: the run on a thread started for it
    /// (not the shared blocking pool, whose few threads other calls need meanwhile), and the wait
    /// for another run's lease as a sleep of the task, not of a thread.
    public func run(now: Timestamp, waitingForAnotherRun wait: Duration = Retention.defaultWait) async throws -> RetentionRun {
        let deadline = ContinuousClock.now + wait
        while true {
            do {
                return try await BlockingPool.runOnOwnThread(name: "lethe-retention") { [self] in
                    try run(now: now, waitingForAnotherRun: .zero)
                }
            } catch let e as JournalError where e.code == .busy && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// What a run does to one account.
    private struct Work {
        var obligations: [RetentionReport.Obligation] = []
        var records: [(RetentionPolicy.RecordRule, [Views.Record])] = []
    }

    /// Decides every purge due at `now` from the read models and appends it, all or nothing.
    private func decideAndAppend(now: Timestamp, into result: inout RetentionRun) throws {
        // The versions the batch expects are those at a checkpoint no later than what the
        // decision reads (another process may move the shared read models on meanwhile): an
        // event in between can only make the append refuse and the run decide again.
        try views.catchUp()
        let checkpoint = try views.checkpoint
        let report = try report(asOf: now, horizonDays: 0, executed: false)
        var work: [String: Work] = [:]
        for o in report.obligations where o.status == "due" {
            if o.held { result.held += 1 } else { work[o.account, default: Work()].obligations.append(o) }
        }
        for rule in policy.records {
            let cutoff = Timestamp(nanoseconds: now.nanoseconds - rule.afterDays * RetentionPolicy.day * 1_000_000_000)
            for (account, due) in try views.records(of: rule.type, through: cutoff) {
                // A legal hold keeps everything of the account as it is, raw records too.
                if try !views.openCases(account: account, at: now).isEmpty { continue }
                work[account, default: Work()].records.append((rule, due))
            }
        }
        guard !work.isEmpty else { return }
        var plan = Plan(now: now)
        for account in work.keys.sorted() {
            try decide(account: account, work[account]!, plan: &plan, into: &result)
        }
        guard !plan.events.isEmpty else { return }
        plan.addStatistics(policy)
        // Every account's first event expects the version the decision was made on.
        let versions = try journal.versions(of: Set(plan.events.map(\.account)), asOf: checkpoint)
        var expecting = Set<String>()
        for k in plan.events.indices where expecting.insert(plan.events[k].account).inserted {
            plan.events[k].expectedVersion = versions[plan.events[k].account]
        }
        try beforeAppend()
        try journal.append(plan.events, erasing: plan.erasures, allOrNothing: true, finish: false)
    }

    /// A run's events and erasures, and the page views it expires (for the anonymous counts).
    private struct Plan {
        var now: Timestamp
        var events: [NewEvent] = []
        var erasures: [Erasure] = []
        var pageViews: [String: Int64] = [:]

        /// One `RecordsExpired` of the engine's statistics account with the daily per-path
        /// counts of every page view this run expires, tied to no account.
        mutating func addStatistics(_ policy: RetentionPolicy) {
            guard !pageViews.isEmpty else { return }
            let counts: [JSONValue] = pageViews.keys.sorted().map { key in
                let parts = key.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                return .object(["day": .string(parts[0]), "path": .string(parts[1]), "views": .int(pageViews[key]!)])
            }
            let rule = policy.recordRule(for: .pageViewed)?.rule ?? "page-views"
            events.append(NewEvent(
                .recordsExpired, account: RetentionPolicy.statisticsAccount, at: now,
                data: ["category": "page-views", "rule": .string(rule), "counts": .array(counts)],
                id: "lethe:page-view-statistics:\(now.nanoseconds):\(events.count)"))
        }

        mutating func count(_ records: [Views.Record]) {
            for r in records { if let day = r.day, let path = r.path { pageViews["\(day)\u{0}\(path)", default: 0] += 1 } }
        }
    }

    /// Purges the accounts whose keys were destroyed but whose journal has no `AccountPurged`:
    /// what a journal restored from a backup shows of the purges made after the backup (the live
    /// key store remembers them). Each is purged again with its whole audit trail: a
    /// `ProcessorErasureRequested` for each processor that received a category of its data (the
    /// categories read from its events' types, its data being unreadable), then `AccountPurged`,
    /// under the rule of its pending account obligation, or `erasure-request` when it has none (a
    /// purge with no obligation pending at the backup came from a request made after it).
    /// Returns the accounts purged.
    public func purgeShreddedAccounts(now: Timestamp) throws -> [String] {
        try views.catchUp()
        var purged: [String] = []
        let pending = try views.obligations(pendingAt: now).filter { $0.item == nil }
        for account in try journal.accountsWithDestroyedKeys() {
            guard try views.account(account)?.status != "purged", let last = try journal.latestTime(of: account) else { continue }
            let rule = pending.filter { $0.account == account }.min { $0.start < $1.start }?.rule ?? RetentionPolicy.erasure
            var categories = Set<String>()
            try journal.read { reader in
                try reader.events(account: account) { e in
                    if e.payload != .purged, let type = EventType(rawValue: e.header.type), let c = RetentionPolicy.category(of: type) { categories.insert(c) }
                }
            }
            let at = max(now, last)
            let id = "lethe:\(rule):\(account):restored"
            var events = policy.recipients(of: categories).map { p in
                NewEvent(.processorErasureRequested, account: account, at: at, data: ["processor": .string(p.name)], id: id + ":" + p.name)
            }
            events.append(NewEvent(.accountPurged, account: account, at: at, data: ["rule": .string(rule)], id: id))
            let outcomes = try journal.append(events, erasing: [.account(account, keeping: EventType.chainsOutlivingAccount)], finish: false)
            if case .appended = outcomes.last { purged.append(account) }
        }
        try journal.finishErasures()
        try views.catchUp()
        if let left = try views.clearResidue(wait: journal.options.truncateWait) {
            throw JournalError(.erasureIncomplete, "\(purged.count) accounts purged again, but \(left)")
        }
        return purged
    }

    /// One account's due work, from the read models alone (no pass over the account's events).
    private func decide(account: String, _ work: Work, plan: inout Plan, into result: inout RetentionRun) throws {
        guard let last = try journal.latestTime(of: account) else { return }
        // A purge is recorded after everything the account already holds (its own time order).
        // When the account has events after `now`, what is purged must still be pending then:
        // an item restored, an account reactivated, or a case opened after `now` stops it.
        let at = max(plan.now, last)
        var obligations = work.obligations
        if at > plan.now {
            let stillPending = Set(try views.obligations(account: account, pendingAt: at).map { "\($0.item ?? "")\u{0}\($0.rule)\u{0}\($0.start.nanoseconds)" })
            obligations = obligations.filter { stillPending.contains("\($0.item ?? "")\u{0}\($0.rule)\u{0}\($0.start.nanoseconds)") }
            if try !views.openCases(account: account, at: at).isEmpty {
                result.held += obligations.count
                return
            }
        }
        func event(_ type: EventType, id: String, _ data: JSONObject) -> NewEvent {
            NewEvent(type, account: account, at: at, data: data, id: id)
        }
        let purge = obligations.filter({ $0.item == nil }).min(by: { ($0.due, $0.rule) < ($1.due, $1.rule) })
        // Raw records past their windows. Before an account purge, only those that outlive it
        // (the access log); the others go with the account's keys.
        for (rule, due) in work.records where !due.isEmpty {
            let chain = rule.type.recordChain ?? rule.category
            guard purge == nil || EventType.chainsOutlivingAccount.contains(chain) else { continue }
            let through = due.map(\.at).max()!
            plan.events.append(event(.recordsExpired, id: "lethe:\(rule.rule):\(account):\(due.last!.seq)",
                                     ["category": .string(rule.category), "rule": .string(rule.rule), "through": .string(through.rfc3339)]))
            plan.erasures.append(.records(account: account, category: chain, through: through))
            plan.count(due)
            result.recordsExpired += due.count
        }
        if let purge {
            // The whole account: its page views leave their anonymous counts, each processor that
            // received its data is asked to erase it, then the account is purged and its keys destroyed.
            let key = "lethe:\(purge.rule):\(account):\(purge.start.nanoseconds)"
            plan.count(try views.records(of: .pageViewed, account: account))
            let processors = policy.recipients(of: try views.categoriesHeld(account: account))
            for p in processors {
                plan.events.append(event(.processorErasureRequested, id: key + ":" + p.name, ["processor": .string(p.name)]))
            }
            plan.events.append(event(.accountPurged, id: key, ["rule": .string(purge.rule)]))
            plan.erasures.append(.account(account, keeping: EventType.chainsOutlivingAccount))
            result.accountsPurged.append(account)
            result.processorRequests += processors.count
        } else {
            for o in obligations {
                guard let item = o.item else { continue }
                // The item's own data (ItemCreated: kind, label, content) goes with its own key;
                // its trash moves and this purge event keep only its id.
                plan.events.append(event(.itemPurged, id: "lethe:\(o.rule):\(account):\(o.start.nanoseconds):\(item)", ["item": .string(item), "rule": .string(o.rule)]))
                if let seq = try views.itemCreatedSeq(account: account, item: item) {
                    plan.erasures.append(.event(account: account, seq: seq))
                }
                result.itemsPurged += 1
            }
        }
    }
}

/// The scheduler the account service runs in-process: a retention run every `period`, until its
/// task is cancelled. Every instance of the service may run one: at each tick, the instance that
/// takes the journal's retention lease runs, and the others, finding it taken, skip that tick
/// (see `Retention.run`).
public struct RetentionScheduler: Sendable {
    public let retention: Retention
    public let period: Duration
    public let clock: LetheJournal.Clock

    public init(retention: Retention, period: Duration, clock: LetheJournal.Clock = .system) {
        self.retention = retention
        self.period = period
        self.clock = clock
    }

    /// How many ticks in a row may find the lease taken before each further one is reported to
    /// `onRun` as a failure (`.busy`): a run that never ends, or a lease never let go, must not
    /// stop erasures silently.
    public static let quietBusyTicks = 3

    /// Runs now, then every `period`; returns when the task is cancelled. A failed run is
    /// reported to `onRun` and the next one goes ahead (what it left undone is due then too). A
    /// tick at which another run holds the journal is skipped without a report, up to
    /// `quietBusyTicks` in a row.
    public func run(onRun: @Sendable (Result<RetentionRun, any Error>) -> Void = { _ in }) async {
        var busyTicks = 0
        while !Task.isCancelled {
            do {
                // (The async run: on a thread of its own, none of the cooperative pool's or the
                // blocking pool's.)
                onRun(.success(try await retention.run(now: clock.now(), waitingForAnotherRun: .zero)))
                busyTicks = 0
            } catch let e as JournalError where e.code == .busy {
                // Another instance holds the lease: it is running it, or something is wrong.
                busyTicks += 1
                if busyTicks > RetentionScheduler.quietBusyTicks { onRun(.failure(e)) }
            } catch {
                busyTicks = 0
                onRun(.failure(error))
            }
            do {
                try await Task.sleep(for: period)
            } catch {
                return
            }
        }
    }
}
