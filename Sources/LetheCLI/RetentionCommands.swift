// `lethe retention`: dry-run reports, runs that purge, the policy in force.
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

struct RetentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retention",
        abstract: "The retention policy at work: dry-run reports, runs that purge, and the policy itself.",
        subcommands: [DryRun.self, Run.self, Policy.self])

    struct DryRun: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dry-run",
            abstract: "Every pending obligation as of a moment, due or coming within the horizon (EVENTS.md's report). Changes nothing.")

        enum Format: String, ExpressibleByArgument, CaseIterable {
            case table, json, csv, html
        }

        @OptionGroup var options: JournalOptions

        @Option(name: .customLong("as-of"), help: "The moment of the report, RFC 3339 in UTC.")
        var asOf: Timestamp

        @Option(help: "Days after --as-of to include upcoming obligations for.")
        var horizon: Int64 = 30

        @Option(help: "table, json, csv or html.")
        var format = Format.table

        @Option(name: .shortAndLong, help: "Write to this file instead of standard output.")
        var output: String?

        func validate() throws {
            guard (0...36_500).contains(horizon) else { throw ValidationError("--horizon must be from 0 to 36500 days") }
        }

        func run() throws {
            try guarded("retention dry-run") {
                let journal = try options.open()
                let retention = Retention(journal: journal, views: try options.readModels(journal))
                let report = try retention.report(asOf: asOf, horizonDays: horizon)
                let text: [UInt8]
                switch format {
                case .json:
                    text = jsonLine(.object(report.json))
                case .table: text = Array(report.table.utf8)
                case .csv: text = Array(report.csv.utf8)
                case .html: text = Array(report.html.utf8)
                }
                try writeOutput(text, to: output)
            }
        }
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Execute every due, unheld obligation as of now (--now) and expire raw records past their windows; running it again at the same time does nothing more.")

        @OptionGroup var options: JournalOptions

        func run() throws {
            try guarded("retention run") {
                let journal = try options.open()
                var logger = Logger(label: "lethe.retention")
                logger.logLevel = .warning  // the summary goes to stdout
                let retention = Retention(journal: journal, views: try options.readModels(journal), logger: logger)
                let result = try retention.run(now: options.clock.now())
                writeStdout(result.summary + "\n")
            }
        }
    }

    struct Policy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the retention policy in force (JSON): the shipped one, or the one --policy or JOURNAL.policy.json names, after checking it.")

        @Option(help: "A policy file to check and print.")
        var policy: String?

        func run() throws {
            guard let policy else {
                writeStdout(RetentionPolicy.standardText)
                return
            }
            do {
                _ = try RetentionPolicy(path: policy)
            } catch let e as RetentionPolicy.Invalid {
                writeStderr("lethe retention policy: \(e.description)\n")
                throw ExitCode(1)
            }
            writeStdout("ok: \(policy) is a valid retention policy\n")
        }
    }
}
