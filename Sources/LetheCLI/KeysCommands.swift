// `lethe keys`: the master key (made, rotated) and the key store.
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

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "The master key: make one, or rotate the key store onto a new one.",
        subcommands: [Init.self, Rotate.self])

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new master key file (owner-only). Keep it outside the journal's and the key store's directory, ideally on another machine or in a secret store.")

        @Argument(help: "The key file to create (refused if anything is there).")
        var file: String

        func run() throws {
            try guarded("keys init") {
                try MasterKeySource.createKeyFile(at: file)
                writeStdout("created \(file) (owner-only); use it with --master-key \(file) or \(MasterKeySource.fileVariable)=\(file)\n")
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-wrap every key of the key store under a new master key, while the journal stays in use; run it again with the same keys to finish an interrupted rotation. Then destroy the old master key: every copy of the key store taken before is useless without it.")

        @OptionGroup var options: JournalOptions

        @Option(name: .customLong("new-master-key"), help: "The new master key file (made by `lethe keys init`).")
        var newMasterKey: String

        func run() throws {
            try guarded("keys rotate") {
                let keys = try options.keyStore()
                guard try keys.exists() else { throw JournalError(.keys, "no key store at \(keys.place)") }
                let data = try options.backend().dataPaths
                let next = try MasterKeySource(environment: [:], keyFile: newMasterKey).load(besides: data + keys.dataPaths)
                let store = try KeyStore(keys, master: options.master, dataPaths: data, entropy: .system, synchronous: .full)
                let moved = try store.rotate(to: next)
                if let left = try store.clearResidue(wait: .milliseconds(Int(max(0, options.walWait) * 1000))) {
                    throw JournalError(.erasureIncomplete, "rotated \(moved) keyrings, own keys and journal keys, but " + left)
                }
                writeStdout("rotated: \(moved) keyrings, own keys and journal keys of \(keys.place) re-wrapped under \(newMasterKey); destroy the old master key now\n")
            }
        }
    }
}
