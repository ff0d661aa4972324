import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import LetheEvents
import LetheJournal
import LetheRetention
import LetheViews
import Logging
import Synchronization

/// The journal's events, or one account's, in journal order.
func forEachEvent(in journal: Journal, account: String?, _ body: (StoredEvent) throws -> Void) throws {
    try journal.read { reader in
        if let account { try reader.events(account: account, body) } else { try reader.events(body) }
    }
}

@main
struct Lethe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lethe",
        abstract: "The lifecycle of personal data: an event-sourced, encrypted, tamper-evident journal.",
        subcommands: [
            Import.self, Export.self, Follow.self, Verify.self, State.self, Replay.self, AccessLogCommand.self, Disclosures.self,
            PolicyNotices.self, SubjectReportCommand.self, Rebuild.self, ViewsCommand.self, RetentionCommand.self, BackupCommand.self,
            KeysCommand.self,
        ])
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append NDJSON events (EVENTS.md); valid lines are kept, each rejected line is reported, and so is each line kept with a card number masked.")

    @OptionGroup var options: JournalOptions

    @Argument(help: "The NDJSON file, or - for standard input.")
    var file: String

    func run() throws {
        try guarded("import") {
            let fd: Int32 = file == "-" ? 0 : Glibc.open(file, O_RDONLY)
            guard fd >= 0 else { throw JournalError(.storage, "cannot open \(file): \(String(cString: strerror(errno)))") }
            defer { if fd != 0 { close(fd) } }
            var st = stat()
            let total = fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG ? Int64(st.st_size) : 0
            let journal = try options.open(mustExist: false)
            var progress = Progress("import")
            let source = file == "-" ? "stdin" : file
            let summary = try Importer(journal: journal).run(
                LineReader(fd: fd),
                onRejection: { r in
                    progress.finish()
                    writeStderr("lethe import: \(source): \(r)\n")
                },
                progress: { progress.update($0, of: total, unit: "bytes") },
                onWarning: { w in
                    progress.finish()
                    writeStderr("lethe import: \(source): \(w)\n")
                })
            progress.finish()
            // Lines kept with a card number masked are counted at the end, when there are any, so
            // the line stays as it was for scripts that read it (a masked line is not rejected).
            let masked = summary.masked > 0 ? ", masked \(summary.masked)" : ""
            writeStdout("imported \(summary.imported), duplicates \(summary.duplicates), rejected \(summary.rejected) (of \(summary.lines) lines)\(masked)\n")
            if summary.rejected > 0 { throw ExitCode(1) }
        }
    }
}

/// Prints each committed event's header as it is committed: what a process that forwards
/// events elsewhere sees (`Journal.subscribe`), without their data.
struct Follow: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print each committed event's header (seq, id, type, account, at; never its data) as NDJSON, from after a sequence number on, as it is committed.",
        discussion: """
            On PostgreSQL a commit by any instance wakes it at once (LISTEN/NOTIFY); on a file, other \
            processes' commits are found every --poll milliseconds. Runs until --count events were \
            printed, or until interrupted.
            """)

    @OptionGroup var options: JournalOptions

    @Option(help: "Print the events after this sequence number (0: from the first).")
    var after: Int64 = 0

    @Option(help: "Stop after this many events (default: follow until interrupted).")
    var count: Int?

    @Option(help: "On a file journal, how often to look for other processes' commits (milliseconds).")
    var poll: Int = 100

    func validate() throws {
        guard after >= 0 else { throw ValidationError("--after must be 0 or more") }
        guard count.map({ $0 > 0 }) ?? true else { throw ValidationError("--count must be at least 1") }
        guard poll > 0 else { throw ValidationError("--poll must be at least 1") }
    }

    func run() throws {
        try guarded("follow") {
            let journal = try options.open()
            let (after, count, poll) = (after, count, Duration.milliseconds(poll))
            let failure = Mutex<(any Error)?>(nil)
            let done = DispatchSemaphore(value: 0)
            Task {
                defer { done.signal() }
                do {
                    var printed = 0
                    for try await e in journal.subscribe(after: after, poll: poll) {
                        let h = e.header
                        var line: JSONObject = ["seq": .int(h.seq)]
                        if let id = h.id { line["id"] = .string(id) }
                        line["type"] = .string(h.type)
                        line["account"] = .string(h.account)
                        line["at"] = .string(h.at.rfc3339)
                        printJSON(.object(line))
                        printed += 1
                        if let count, printed >= count { break }
                    }
                } catch {
                    failure.withLock { $0 = error }
                }
            }
            done.wait()
            if let error = failure.withLock({ $0 }) { throw error }
        }
    }
}

/// Reads one account's events and records the read as an `AccountAccessed` event, before anything
/// is shown: no personal data leaves without its access on record. A purged account has nothing
/// left to read, so its read is not recorded.
///
/// Without `--actor`, the access names the operating-system user; without `--reason`, it says
/// so. An access is never recorded before the account's latest event: when the clock is behind
/// the account's history, the access takes that event's time, and stderr says so.
func readAccount(_ account: String, journal: Journal, access: AccessOptions, clock: Clock, command: String) throws -> [StoredEvent] {
    var events: [StoredEvent] = []
    try journal.read { try $0.events(account: account) { events.append($0) } }
    guard let latest = events.last?.header.at else { throw JournalError(.invalidEvent, "no account \(account) in \(journal.path)") }
    // A purged account has no personal data left to read: its headers say so, no need to decrypt.
    if events.contains(where: { $0.header.type == EventType.accountPurged.rawValue }) { return events }
    let actor = access.actor ?? ProcessInfo.processInfo.environment["USER"] ?? "unknown operator"
    var data: JSONObject = ["actor": .string(actor), "ip": .string(access.ip), "reason": .string(access.reason ?? "no reason given")]
    if let ticket = access.ticket { data["ticket"] = .string(ticket) }
    var at = clock.now()
    if at < latest {
        writeStderr("lethe \(command): the clock (\(at)) is behind \(account)'s latest event; the access is recorded at \(latest)\n")
        at = latest
    }
    if case .failure(let rejection) = EnvelopeValidator.validate(.object([
        "type": "AccountAccessed", "account": .string(account), "at": .string(at.rfc3339), "data": .object(data),
    ])) {
        throw JournalError(.invalidEvent, "cannot record the access, so nothing is shown: \(rejection)")
    }
    do {
        try journal.append(NewEvent(.accountAccessed, account: account, at: at, data: data))
    } catch let e as JournalError {
        throw JournalError(e.code, "cannot record the access, so nothing is shown: \(e.message)")
    }
    return events
}

struct State: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An account as of a moment (JSON): status, profile, items, open legal holds. The read is recorded as an access.")

    @OptionGroup var options: JournalOptions
    @OptionGroup var access: AccessOptions

    @Option(help: "The account.")
    var account: String

    @Option(help: "The moment, RFC 3339 in UTC (default: now).")
    var at: Timestamp?

    func run() throws {
        try guarded("state") {
            let journal = try options.open()
            let until = at ?? options.clock.now()
            let events = try readAccount(account, journal: journal, access: access, clock: options.clock, command: "state")
            var json = try AccountState.fold(events, account: account, until: until).json
            json["at"] = .string(until.rfc3339)
            printJSON(.object(json))
        }
    }
}

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An account's timeline as NDJSON, every event up to a moment, with its data where not purged. The read is recorded as an access.")

    @OptionGroup var options: JournalOptions
    @OptionGroup var access: AccessOptions

    @Option(help: "The account.")
    var account: String

    @Option(help: "The last moment to include, RFC 3339 in UTC (default: everything).")
    var until: Timestamp?

    func run() throws {
        try guarded("replay") {
            let journal = try options.open()
            let last = until ?? Timestamp(nanoseconds: .max)
            let exporter = Exporter()
            var out = Output()
            for e in try readAccount(account, journal: journal, access: access, clock: options.clock, command: "replay") where e.header.at <= last {
                out.write(try exporter.lineBytes(e))
            }
            out.flush()
        }
    }
}

struct AccessLogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access-log",
        abstract: "Staff accesses in time order, each judged: authorized when it named a ticket the account had opened by then, or the account had an open legal case.")

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json
    }

    @OptionGroup var options: JournalOptions

    @Option(help: "Only this account's accesses.")
    var account: String?

    @Option(help: "table or json.")
    var format = Format.table

    func run() throws {
        try guarded("access-log") {
            let models = try options.readModels(try options.open())
            var out = Output()
            switch format {
            case .json:
                // Streamed: the log can be longer than memory should hold.
                var first = true
                out.write([UInt8]("[".utf8))
                try models.accessLog(account: account) { entry in
                    var w = JSONWriter()
                    if !first { w.bytes.append(UInt8(ascii: ",")) }
                    first = false
                    w.write(JSONValue.object(entry.json))
                    out.write(w.bytes)
                }
                out.write([UInt8]("]\n".utf8))
            case .table:
                var entries: [Views.Access] = []
                try models.accessLog(account: account) { entries.append($0) }
                let rows = [["at", "account", "actor", "ip", "reason", "ticket", "authorized"]] + entries.map {
                    [$0.at, $0.account, $0.actor ?? "-", $0.ip ?? "-", $0.reason ?? "-", $0.ticket ?? "-",
                     $0.authorized.map { $0 ? "yes" : "NO" } ?? "purged"]
                }
                let widths = (0..<7).map { c in rows.map { $0[c].count }.max() ?? 0 }
                for row in rows {
                    let line = row.enumerated().map { c, cell in cell.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
                    out.write(Array((line.joined(separator: "  ").trimmingTrailingSpaces + "\n").utf8))
                }
                let refused = entries.filter { $0.authorized == false }.count
                out.write(Array("\(entries.count) accesses, \(refused) not authorized\n".utf8))
            }
            out.flush()
        }
    }
}

struct Disclosures: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Every DataShared, flagged where basis consent had no matching consent, or basis merger no prior merger notice (JSON).")

    @OptionGroup var options: JournalOptions

    @Option(help: "Only this account's disclosures.")
    var account: String?

    func run() throws {
        try guarded("disclosures") {
            let models = try options.readModels(try options.open())
            printJSON(.array(try models.disclosures(account: account).map { .object($0.json) }))
        }
    }
}

struct PolicyNotices: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy-notices",
        abstract: "The active accounts not yet sent a NoticeSent (topic policy-change) for a policy version (JSON).")

    @OptionGroup var options: JournalOptions

    @Option(help: "The policy version, as NoticeSent's version field names it.")
    var version: String

    func run() throws {
        try guarded("policy-notices") {
            let models = try options.readModels(try options.open())
            let pending = try models.accountsPendingNotice(version: version)
            printJSON(.object(["version": .string(version), "pending": .array(pending.map(JSONValue.string)), "count": .int(Int64(pending.count))]))
        }
    }
}

struct Rebuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the read models again from the journal alone; prints the digest of their canonical dump.")

    @OptionGroup var options: JournalOptions

    @Flag(help: "Rebuild into a scratch file and compare with the caught-up read models instead; non-zero exit when they differ.")
    var check = false

    func run() throws {
        try guarded("rebuild") {
            let journal = try options.open()
            let started = Clock.system.now()
            var progress = Progress("rebuild")
            if check {
                let models = try options.readModels(journal)
                let (a, b) = try models.check { progress.update($0, of: $1, unit: "events") }
                progress.finish()
                guard a == b else {
                    throw JournalError(.corrupt, "the read models at \(models.path) (\(a)) differ from a rebuild from the journal (\(b)); run lethe rebuild")
                }
                writeStdout("ok: the read models equal a rebuild from the journal (\(a))\n")
                return
            }
            let models = try ReadModels(journal: journal, place: try options.viewsPlace(journal), policy: try options.retentionPolicy())
            let applied = try models.rebuild { progress.update($0, of: $1, unit: "events") }
            progress.finish()
            let seconds = Double(Clock.system.now().nanoseconds - started.nanoseconds) / 1e9
            writeStdout("rebuilt \(models.path) from \(applied) events in \(String(format: "%.2f", seconds)) s; digest \(try models.digest())\n")
        }
    }
}

struct ViewsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "views",
        abstract: "Catch the read models up with the journal; print their checkpoint, rows per table and the digest of their canonical dump (JSON).")

    @OptionGroup var options: JournalOptions

    @Flag(help: "Print only the digest (SHA-256 of the canonical dump).")
    var digest = false

    func run() throws {
        try guarded("views") {
            let models = try options.readModels(try options.open())
            if digest {
                writeStdout(try models.digest() + "\n")
                return
            }
            // Counts, not rows: the rows are personal data, and reading them is an access.
            let tables = JSONObject(try models.rowCounts().map { .init(key: $0.table, value: .int($0.rows)) })
            printJSON(.object([
                "path": .string(models.path), "checkpoint": .int(try models.checkpoint), "tables": .object(tables),
                "digest": .string(try models.digest()),
            ]))
        }
    }
}

struct SubjectReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subject-report",
        abstract: "Everything held about one account (the customer's right of access), as JSON or a self-contained HTML page. The read is recorded as an access.")

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case json, html
    }

    @OptionGroup var options: JournalOptions
    @OptionGroup var access: AccessOptions

    @Option(help: "The account.")
    var account: String

    @Option(help: "json or html.")
    var format = Format.json

    @Option(name: .shortAndLong, help: "Write to this file instead of standard output.")
    var output: String?

    func run() throws {
        try guarded("subject-report") {
            let journal = try options.open()
            let now = options.clock.now()
            var report = SubjectReport(account: account, policy: try options.retentionPolicy())
            for e in try readAccount(account, journal: journal, access: access, clock: options.clock, command: "subject-report") {
                guard let type = EventType(rawValue: e.header.type) else { continue }
                var data: JSONObject?
                if case .plaintext(let bytes) = e.payload { data = try PayloadCodec.standard.decode(type: e.header.type, payload: bytes) }
                report.add(type: type, data: data, at: e.header.at)
            }
            let json = report.json(now: now)
            var bytes: [UInt8]
            switch format {
            case .json:
                bytes = jsonLine(.object(json))
            case .html:
                bytes = Array(HTML.page(
                    title: "What we hold about \(account)",
                    subtitle: "Everything the engine holds about account \(account), as of \(now.rfc3339).",
                    report: json).utf8)
            }
            try writeOutput(bytes, to: output)
        }
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write events as NDJSON in journal order, with \"seq\"; purged payloads appear as \"redacted\":true.")

    @OptionGroup var options: JournalOptions

    @Option(help: "Only this account's events (a read of its personal data: recorded as an access).")
    var account: String?

    @OptionGroup var access: AccessOptions

    func run() throws {
        try guarded("export") {
            let journal = try options.open()
            let exporter = Exporter()
            var out = Output()
            var progress = Progress("export")
            if let account {
                // One account's export is a read of its personal data: recorded first.
                for e in try readAccount(account, journal: journal, access: access, clock: options.clock, command: "export") {
                    out.write(try exporter.lineBytes(e))
                }
            } else {
                try journal.read { reader in
                    let head = try reader.headSeq()
                    var count: Int64 = 0
                    // Lines are made on every core, a block at a time, and written in order.
                    try reader.events(transform: { try exporter.lineBytes($0) }) { line in
                        out.write(line)
                        count += 1
                        if count % 4096 == 0 { progress.update(count, of: head, unit: "events") }
                    }
                }
            }
            out.flush()
            progress.finish()
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every block, the sequence, each account's history, the hash chain, and the head against the master key and the key store.")

    @OptionGroup var options: JournalOptions

    @Flag(help: "Without the master key: check what can be checked and exit 0 if that is intact (the head is then not authenticated).")
    var unauthenticated = false

    func run() throws {
        try guarded("verify") {
            // No writer: verification reads only what is stored, so it works on a damaged journal.
            // The key store is read even without the master key: the head it remembers is not secret.
            var progress = Progress("verify")
            let authenticate = options.master.isGiven
            let keys = try options.keyStore()
            let report = try JournalReader.verify(backend: try options.backend(), keys: keys, master: authenticate ? options.master : nil) {
                progress.update($0, of: $1, unit: "events")
            }
            progress.finish()
            let rollback = report.anchoredSeq.map { "not behind the key store's anchor (event \($0))" }
                ?? "rollback not checked: no key store at \(keys.place)"
            writeStdout("""
                ok: \(report.events) events (\(report.blocks) sealed blocks, \(report.tailEvents) unsealed, \
                \(report.purgedEvents) purged) of \(report.accounts) accounts; chain head \(report.headLink) \
                \(report.anchored ? "(authenticated by the key store's anchor key)" : "(not authenticated: no master key given)"); \
                \(rollback); block index, event ids, accounts and \(report.pendingErasures) pending erasures checked

                """)
            if !report.otherFiles.isEmpty {
                writeStdout("note: the key store also anchors \(report.otherFiles.count) other file(s) of this journal (restores, each a history of its own): "
                    + report.otherFiles.map { "instance \($0.instance) at event \($0.seq)" }.joined(separator: ", ") + "\n")
            }
            if !report.anchored && !unauthenticated {
                writeStderr("lethe verify: the chain head and the recorded erasures could not be authenticated (\(MasterKeySource.missing)); pass --unauthenticated to accept that\n")
                throw ExitCode(1)
            }
        }
    }
}
