import Foundation
import LetheEvents
import LetheJournal
import Synchronization
import Testing

/// Two OS processes that really contend for one journal's writer: SQLite's write lock (with its
/// busy timeout) is all that orders them, and each writer reloads the head the other moved.
@Suite struct ContentionTests {
    /// What each side's commands answered, in the order it ran them.
    final class Answers: Sendable {
        private let answers = Mutex<[String: [Result<CommandResult, TestFailure>]]>([:])
        func add(_ side: String, _ answer: Result<CommandResult, TestFailure>) { answers.withLock { $0[side, default: []].append(answer) } }
        var all: [String: [Result<CommandResult, TestFailure>]] { answers.withLock { $0 } }
    }

    @Test func twoProcessesImportingAtOnceTakeTurnsAndLoseNothing() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        // Each side is a loop of `lethe import` processes, started together on a journal that does
        // not exist yet. An import of fewer lines than `Importer.batchSize` is one batch, one
        // transaction: the two loops take turns at the writer import by import, while the other
        // side's next process is opening the journal and sealing its batch.
        let sides = ["a", "b"]
        let importsPerSide = 5, accountsPerImport = 4, eventsPerAccount = 150
        let eventsPerImport = accountsPerImport * eventsPerAccount
        var files: [String: [String]] = [:]
        var idsOf: [String: [String]] = [:]  // "side/k": the ids of import k, in file order
        for side in sides {
            for k in 0..<importsPerSide {
                var lines: [String] = []
                var ids: [String] = []
                for n in 0..<accountsPerImport {
                    let account = "\(side)\(k)_\(n)"
                    for i in 0..<eventsPerAccount {
                        let id = "\(side)-\(k)-\(n)-\(i)"
                        let at = String(format: "2026-01-01T%02d:%02d:00Z", i / 60, i % 60)
                        lines.append(i == 0
                            ? #"{"id":"\#(id)","type":"AccountSignedUp","account":"\#(account)","at":"\#(at)","data":{"name":"N","email":"n@example.com"}}"#
                            : #"{"id":"\#(id)","type":"PageViewed","account":"\#(account)","at":"\#(at)","data":{"path":"/p\#(i)","visitor":"v"}}"#)
                        ids.append(id)
                    }
                }
                let file = dir.path("\(side)\(k).ndjson")
                try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: file))
                files[side, default: []].append(file)
                idsOf["\(side)/\(k)"] = ids
            }
        }

        let answers = Answers()
        let done = DispatchSemaphore(value: 0)
        for side in sides {
            let mine = files[side] ?? []
            Thread.detachNewThread {
                defer { done.signal() }
                for file in mine {
                    do {
                        answers.add(side, .success(try run("lethe", ["import", file, "--journal", journal], timeLimit: .seconds(60))))
                    } catch {
                        answers.add(side, .failure(TestFailure("\(error)")))
                    }
                }
            }
        }
        for _ in sides where done.wait(timeout: dispatchDeadline(.seconds(120))) == .timedOut {
            throw TimedOut(what: "the two import loops", limit: .seconds(120))
        }

        // Every import was acknowledged whole: exit 0, all of its lines imported.
        for side in sides {
            let mine = answers.all[side] ?? []
            #expect(mine.count == importsPerSide)
            for (k, answer) in mine.enumerated() {
                let r = try answer.get()
                #expect(r.status == 0 && r.stderr.isEmpty, "\(side)\(k): \(r.stderr)")
                #expect(r.stdout == "imported \(eventsPerImport), duplicates 0, rejected 0 (of \(eventsPerImport) lines)\n", "\(side)\(k)")
            }
        }

        // Every acknowledged event is there exactly once, under sequence numbers 1...n without a gap.
        let export = try run("lethe", ["export", "--journal", journal])
        #expect(export.status == 0, "\(export.stderr)")
        var seqs: [Int64] = []
        var ids: [String] = []
        for line in export.stdout.split(separator: "\n") {
            let object = try #require(try JSONParser.parse(String(line)).object)
            guard case .int(let seq)? = object["seq"] else { throw TestFailure("no seq in \(line)") }
            seqs.append(seq)
            ids.append(try #require(object["id"]?.string))
        }
        let total = sides.count * importsPerSide * eventsPerImport
        #expect(seqs == Array(1...Int64(total)))
        #expect(ids.count == total && Set(ids) == Set(idsOf.values.joined()), "events lost or repeated")
        // Each import's events hold one run of sequence numbers, in its file's order: a batch is
        // one transaction, and the other process never slipped inside it.
        let position = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
        for (name, mine) in idsOf {
            let first = try #require(position[mine[0]])
            #expect(Array(ids[first..<min(first + mine.count, ids.count)]) == mine, "import \(name) was split or reordered")
        }
        // And the sides really interleaved: some event of one lies between two of the other.
        let sideOfEach = ids.map { $0.prefix(1) }
        let turns = zip(sideOfEach, sideOfEach.dropFirst()).filter { $0 != $1 }.count
        #expect(turns >= 2, "the two processes never interleaved (\(turns) turns): the test proved nothing about contention")

        // The chain is intact, and its head authenticated.
        let verify = try run("lethe", ["verify", "--journal", journal])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.hasPrefix("ok: \(total) events ("), "\(verify.stdout)")
        #expect(verify.stdout.contains(" of \(sides.count * importsPerSide * accountsPerImport) accounts;"), "\(verify.stdout)")
        // Both writers moved the key store's anchor, each forward only: it ends on the last event.
        #expect(verify.stdout.contains("(authenticated by the key store's anchor key); not behind the key store's anchor (event \(total))"), "\(verify.stdout)")
    }
}
