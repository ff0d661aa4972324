// `lethe backup`: create, restore, list and inspect encrypted backups.
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

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Encrypted, compressed, consistent backups of the journal (never of its key store).",
        subcommands: [Create.self, Restore.self, List.self, Inspect.self])

    /// One line about a backup, from its header alone (no key needed).
    static func describe(_ path: String, _ b: Backup.Summary) -> String {
        let m = b.manifest
        return "\(path): journal \(m.journal), created \(m.created), events \(m.firstSeq)–\(m.lastSeq), \(b.fileBytes) bytes in \(b.chunks) chunks"
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write an encrypted backup of the journal to FILE while it may be written to.")

        @OptionGroup var options: JournalOptions

        @Argument(help: "The backup file to write.")
        var file: String

        func run() throws {
            try guarded("backup create") {
                let journal = try options.open()
                let summary = try Backup.create(journal, to: file, now: options.clock.now())
                writeStdout("backed up: " + BackupCommand.describe(file, summary) + "\n")
            }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a backup whole, then restore it as a new journal; purges made since the backup are applied again.")

        @OptionGroup var options: JournalOptions

        @Argument(help: "The backup file.")
        var file: String

        @Flag(help: "Replace the journal at --journal if there is one (by default restore refuses).")
        var replace = false

        func run() throws {
            try guarded("backup restore") {
                let keys = try options.keyStore()
                // The backup holds no keys: without the live key store nothing in it could be read.
                guard try keys.exists() else {
                    throw JournalError(.keys, "no key store at \(keys.place): pass --keys with the live key store (backups never hold one)")
                }
                // Into a file, or into a server's database (through a scratch file beside the key store's file, or a temporary one).
                let summary = options.isServer
                    ? try Backup.restore(file, into: options.backend(), keys: keys, master: options.master, replace: replace)
                    : try Backup.restore(file, to: options.journal, keys: keys, master: options.master, replace: replace)
                writeStdout("restored: " + BackupCommand.describe(file, summary) + "\n")
                // The live key store knows what was purged since: those accounts stay purged (with
                // their whole audit trail), and every purge due now is applied again.
                let journal = try options.open()
                // The read models were made from the journal before the restore: made again.
                let models = try ReadModels(journal: journal, place: try options.viewsPlace(journal), policy: try options.retentionPolicy())
                try models.rebuild()
                var logger = Logger(label: "lethe.retention")
                logger.logLevel = .warning
                let retention = Retention(journal: journal, views: models, logger: logger)
                let shredded = try retention.purgeShreddedAccounts(now: options.clock.now())
                let reapplied = try retention.run(now: options.clock.now())
                writeStdout("purged again since the backup: \(shredded.count + reapplied.accountsPurged.count) accounts "
                    + "(\(shredded.count) whose keys were destroyed after it, \(reapplied.accountsPurged.count) due now); \(reapplied.summary)\n")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the backups in a directory, from their headers (no key needed).")

        @Argument(help: "The directory (default: the current one).")
        var directory = "."

        func run() throws {
            try guarded("backup list") {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
                var found = 0
                for name in names.sorted() {
                    let path = directory + "/" + name
                    guard let summary = try? Backup.inspect(path) else { continue }
                    writeStdout(BackupCommand.describe(path, summary) + "\n")
                    found += 1
                }
                if found == 0 { writeStdout("no backups in \(directory)\n") }
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Say what a backup holds, from its header (no key needed).")

        @Argument(help: "The backup file.")
        var file: String

        func run() throws {
            try guarded("backup inspect") {
                let b = try Backup.inspect(file)
                let m = b.manifest
                printJSON(.object([
                    "file": .string(file), "journal": .string(m.journal), "created": .string(m.created.rfc3339), "backup": .string(m.id),
                    "first_seq": .int(m.firstSeq), "last_seq": .int(m.lastSeq), "head_link": .string(m.headLink),
                    "file_bytes": .int(b.fileBytes), "chunks": .int(Int64(b.chunks)),
                ]))
            }
        }
    }
}
