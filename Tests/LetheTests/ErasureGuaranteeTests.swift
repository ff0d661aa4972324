import Crypto
import Foundation
import LetheEvents
@testable import LetheJournal
import LetheRetention
import LetheViews
import Synchronization
import Testing

/// Many needles searched at once: each file is scanned once, every 8-byte window looked up in a
/// set of the needles' first 8 bytes, and a hit checked in full.
struct NeedleSearch {
    private var byPrefix: [UInt64: [[UInt8]]] = [:]

    init(_ needles: some Sequence<String>) {
        for needle in needles {
            let bytes = Array(needle.utf8)
            guard bytes.count >= 8 else { continue }
            byPrefix[Self.word(bytes, 0), default: []].append(bytes)
        }
    }

    var count: Int { byPrefix.values.reduce(0) { $0 + $1.count } }

    private static func word(_ b: UnsafeRawBufferPointer, _ i: Int) -> UInt64 { b.loadUnaligned(fromByteOffset: i, as: UInt64.self) }
    private static func word(_ b: [UInt8], _ i: Int) -> UInt64 { b.withUnsafeBytes { word($0, i) } }

    /// The needles found in `data`.
    func found(in data: Data) -> Set<String> {
        var out = Set<String>()
        data.withUnsafeBytes { b in
            guard b.count >= 8 else { return }
            for i in 0...(b.count - 8) {
                guard let candidates = byPrefix[Self.word(b, i)] else { continue }
                for c in candidates where i + c.count <= b.count && memcmp(b.baseAddress! + i, c, c.count) == 0 {
                    out.insert(String(decoding: c, as: UTF8.self))
                }
            }
        }
        return out
    }
}

@Suite struct ErasureGuaranteeTests {
    /// Every string value in an event's data, nested ones included.
    static func strings(_ value: JSONValue) -> [String] {
        switch value {
        case .string(let s): [s]
        case .array(let items): items.flatMap(strings)
        case .object(let o): o.fields.flatMap { [$0.key] + strings($0.value) }
        default: []
        }
    }

    /// Every file of `dir`, raw, and each sealed block of `journal` decompressed with the standard
    /// `lz4` tool, as an investigator would.
    static func everyByte(_ dir: TempDir, journal: String) throws -> [(String, Data)] {
        var out: [(String, Data)] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.url.path) {
            out.append((name, try Data(contentsOf: dir.url.appendingPathComponent(name))))
        }
        let ids = try run("/usr/bin/sqlite3", [journal, "SELECT id FROM blocks"]).stdout.split(separator: "\n")
        for id in ids {
            let frame = FileManager.default.temporaryDirectory.appendingPathComponent("lethe-block-\(UUID().uuidString).lz4").path
            _ = try run("/usr/bin/sqlite3", [journal, "SELECT writefile('\(frame)', frame) FROM blocks WHERE id=\(id)"])
            _ = try run("/usr/bin/lz4", ["-d", "-f", "-q", frame, frame + ".out"])
            out.append(("block \(id) of \(journal)", try Data(contentsOf: URL(fileURLWithPath: frame + ".out"))))
            try? FileManager.default.removeItem(atPath: frame)
            try? FileManager.default.removeItem(atPath: frame + ".out")
        }
        return out
    }

    /// What a retention run purged, as values to search for: the data of every event the journal
    /// now shows redacted (`export`), against the generated `input`. What is still held (by a live
    /// event, or as the policy's anonymous page-view statistics) is not a purged value, even where
    /// a purged event held it too.
    static func purgedValues(_ input: String, export: String) throws -> (search: NeedleSearch, candidates: Set<String>, redactedEvents: Int) {
        let originals = Dictionary(uniqueKeysWithValues: try String(contentsOfFile: input, encoding: .utf8).split(separator: "\n").compactMap { line -> (String, JSONObject)? in
            guard let o = try? JSONParser.parse(String(line)).object, let id = o["id"]?.string else { return nil }
            return (id, o)
        })
        var purged = Set<String>(), held = Set<String>()
        var redactedEvents = 0
        for line in export.split(separator: "\n") {
            guard let o = try JSONParser.parse(String(line)).object, let id = o["id"]?.string, let original = originals[id] else { continue }
            let values = strings(original["data"] ?? .null)
            if o["redacted"] == .bool(true) {
                redactedEvents += 1
                purged.formUnion(values)
                if let path = original["data"]?.object?["path"]?.string { held.insert(path) }  // kept as anonymous counts
            } else {
                held.formUnion(values)
            }
        }
        // (A purged value inside a held one, "25 Broadway" in "125 Broadway", is not a finding.)
        let candidates = purged.subtracting(held)
        let search = NeedleSearch(candidates.subtracting(NeedleSearch(candidates).found(in: Data(held.joined(separator: "\u{0}").utf8))))
        #expect(redactedEvents > 1000 && search.count > 500, "\(redactedEvents) redacted events, \(search.count) purged values")
        return (search, candidates, redactedEvents)
    }

    @Test(arguments: [5, 6] as [UInt64])
    func purgedValuesAreInNoFileAndNoCopyTakenBeforeTheRunRevealsThem(seed: UInt64) throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("lethe-history-\(UUID().uuidString).ndjson").path
        defer { try? FileManager.default.removeItem(atPath: input) }
        #expect(try run("lethe-gen", ["--accounts", "2000", "--events", "24000", "--seed", "\(seed)", "--output", input]).status == 0)
        #expect(try run("lethe", ["import", input, "--journal", journal]).status == 0)
        #expect(try run("lethe", ["views", "--journal", journal]).status == 0)  // the read models hold every record
        // An old copy of the whole folder (journal, key store, read models, their WALs), taken
        // before the run, as a VM snapshot or a careless `cp -r` would.
        let old = try TempDir()
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.url.path) {
            try FileManager.default.copyItem(atPath: dir.path(name), toPath: old.path(name))
        }
        let r = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2027-01-15T00:00:00Z"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains(" accounts purged") && !r.stdout.contains(" 0 accounts purged"), "\(r.stdout)")

        let (search, candidates, redactedEvents) = try Self.purgedValues(input, export: try run("lethe", ["export", "--journal", journal]).stdout)

        // The search finds what it looks for, also in a WAL: a purged value planted in a file.
        let planted = candidates.sorted().first { $0.utf8.count >= 8 && search.found(in: Data($0.utf8)).contains($0) }!
        try Data(("x" + planted + "x").utf8).write(to: URL(fileURLWithPath: dir.path("planted.lethe-wal")))
        #expect(try Self.everyByte(dir, journal: journal).contains { search.found(in: $0.1).contains(planted) })
        try FileManager.default.removeItem(atPath: dir.path("planted.lethe-wal"))

        // No purged value in any file of the folder (WALs included) or any decompressed block.
        for (name, bytes) in try Self.everyByte(dir, journal: journal) {
            let found = search.found(in: bytes)
            #expect(found.isEmpty, "\(found.count) purged values in \(name), such as \(found.prefix(3))")
        }
        // The old copy still holds them as ciphertext. `lethe` will not read it with the live key
        // store (it is behind the store's anchor), and read around that check it reveals none:
        // their keys are gone.
        let export = try run("lethe", ["export", "--journal", old.path("j.lethe"), "--keys", journal + ".keys"])
        #expect(export.status != 0 && export.stderr.contains("rolled back"), "\(export.stderr)")
        var lines = JSONWriter()
        for e in try readCopy(old.path("j.lethe"), keysPath: journal + ".keys") {
            if case .plaintext(let p) = e.payload { lines.write(.object(try codec.decode(type: e.header.type, payload: p))) }
        }
        let revealed = search.found(in: Data(lines.bytes))
        #expect(revealed.isEmpty, "the copy taken before the run reveals \(revealed.count) purged values, such as \(revealed.prefix(3))")
        let shredded = try readCopy(old.path("j.lethe"), keysPath: journal + ".keys").filter { $0.payload == .shredded }.count
        #expect(shredded >= redactedEvents - 10)
    }

    /// The same guarantee on the server: the journal, its read models and its key store in
    /// PostgreSQL. After the run no purged value is in any row, in any data file of the three
    /// schemas (after a checkpoint: what a copy of the data directory holds), nor in any block
    /// decompressed; a copy of the journal's tables taken before the run reveals none of them.
    /// (Dead row versions and WAL segments are bounded by the key destruction: see the README.)
    @Test func purgedValuesAreInNoRowNoDataFileAndNoCopyOnTheServer() throws {
        let place = try TestPlace(.postgres)
        let journal = ["--journal", place.journalArgument, "--keys", place.keysArgument]
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("lethe-history-\(UUID().uuidString).ndjson").path
        defer { try? FileManager.default.removeItem(atPath: input) }
        #expect(try run("lethe-gen", ["--accounts", "2000", "--events", "24000", "--seed", "5", "--output", input]).status == 0)
        #expect(try run("lethe", ["import", input] + journal).status == 0)
        #expect(try run("lethe", ["views"] + journal).status == 0)  // the read models hold every record
        let old = try place.copy("old")  // (the journal's tables, as a dump taken before the run)
        let r = try run("lethe", ["retention", "run"] + journal + ["--now", "2027-01-15T00:00:00Z"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains(" accounts purged") && !r.stdout.contains(" 0 accounts purged"), "\(r.stdout)")
        let (search, candidates, redactedEvents) = try Self.purgedValues(input, export: try run("lethe", ["export"] + journal).stdout)

        func everyByte() throws -> [Data] {
            var out = try place.storedFiles()
            let store = try place.journalBackend.openReader()
            defer { store.close() }
            try store.snapshot {
                for block in try store.blocks(firstSeqIn: 0, .max, limit: .max) { out.append(Data(try LZ4.decompressFrame(block.frame, limit: 1 << 30))) }
            }
            return out
        }
        // The search finds what it looks for in the schemas' files: a purged value planted in a table.
        let planted = candidates.sorted().first { $0.utf8.count >= 8 && search.found(in: Data($0.utf8)).contains($0) }!
        try place.psql("CREATE TABLE planted(v text); INSERT INTO planted VALUES ('x' || '\(planted.replacingOccurrences(of: "'", with: "''"))' || 'x')")
        #expect(try everyByte().contains { search.found(in: $0).contains(planted) })
        try place.psql("DROP TABLE planted")

        // Item ids are ids, not personal data (the contract's rule, as for account ids, which the
        // journal keeps in clear for good): the read models key items by them, and on the server
        // the rows a purge deleted stay in the tables' free space until it is reused.
        let itemIDs = Set(try String(contentsOfFile: input, encoding: .utf8).split(separator: "\n").compactMap {
            (try? JSONParser.parse(String($0)).object)?["data"]?.object?["item"]?.string
        })
        let files = try everyByte()
        #expect(files.count > 30)  // the tables, their indexes and TOAST of three schemas, and the blocks
        for bytes in files {
            let found = search.found(in: bytes).subtracting(itemIDs)
            #expect(found.isEmpty, "\(found.count) purged values in a data file or block, such as \(found.prefix(3))")
        }
        #expect(files.contains { !search.found(in: $0).intersection(itemIDs).isEmpty })  // (what the next step clears)
        // A rebuild of the read models writes them into new tables and drops the old ones, files
        // and all: then not even those ids are left in any data file.
        #expect(try run("lethe", ["rebuild"] + journal).status == 0)
        for bytes in try everyByte() {
            let found = search.found(in: bytes)
            #expect(found.isEmpty, "\(found.count) purged values in a data file or block after the rebuild, such as \(found.prefix(3))")
        }
        // The copy taken before the run still holds them as ciphertext; `lethe` will not read it
        // with the live key store, and read around that check it reveals none.
        let export = try run("lethe", ["export", "--journal", try TestBackend.serverURL() + "?schema=\(place.schema)_old", "--keys", place.keysArgument])
        #expect(export.status != 0 && export.stderr.contains("rolled back"), "\(export.stderr)")
        let events = try readCopy(old, keys: place.keyStore)
        var lines = JSONWriter()
        for e in events {
            if case .plaintext(let p) = e.payload { lines.write(.object(try codec.decode(type: e.header.type, payload: p))) }
        }
        let revealed = search.found(in: Data(lines.bytes))
        #expect(revealed.isEmpty, "the copy taken before the run reveals \(revealed.count) purged values, such as \(revealed.prefix(3))")
        #expect(events.filter { $0.payload == .shredded }.count >= redactedEvents - 10)
    }

    /// A `sqlite3` shell holding a read transaction open on `file` until `release` is called.
    final class Reader {
        let child: Child

        init(_ file: String) throws {
            child = try Child("/usr/bin/sqlite3", [file], environment: ProcessInfo.processInfo.environment)
            child.input.write(Data("BEGIN; SELECT count(*) FROM sqlite_master;\n".utf8))
            // The snapshot is held once the answer is out.
            _ = child.output.availableData
        }

        func release() {
            try? child.input.close()
            _ = child.wait(until: .distantFuture)
        }
    }

    @Test(arguments: ["j.lethe", "j.lethe.keys", "j.lethe.views"])
    func aReaderHoldingASnapshotMakesTheRunFailLoudlyAndTheNextOneFinishes(file: String) throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        var lines: [String] = []
        for n in 0..<20 {
            lines.append(#"{"type":"AccountSignedUp","account":"a\#(n)","at":"2026-01-01T00:00:00Z","data":{"name":"Name \#(n)","email":"n\#(n)@example.com"}}"#)
            if n < 10 { lines.append(#"{"type":"ErasureRequested","account":"a\#(n)","at":"2026-01-02T00:00:00Z","data":{}}"#) }
        }
        #expect(try run("lethe", ["import", "-", "--journal", journal], stdin: lines.joined(separator: "\n")).status == 0)
        #expect(try run("lethe", ["views", "--journal", journal]).status == 0)
        let reader = try Reader(dir.path(file))
        let r = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2026-02-01T00:00:00Z", "--wal-wait", "0.3"])
        reader.release()
        // Loud: a non-zero exit naming the file, and what holds it.
        #expect(r.status != 0)
        #expect(r.stderr.contains("\(dir.path(file))-wal still holds purged data (a reader holds an old snapshot: process"), "\(r.stderr)")
        #expect(r.stderr.contains("(sqlite3)") && r.stderr.contains("10 accounts purged"), "\(r.stderr)")
        // The mark it left makes the next run finish the job, and say all is well.
        let again = try run("lethe", ["retention", "run", "--journal", journal, "--now", "2026-02-01T00:00:00Z", "--wal-wait", "5"])
        #expect(again.status == 0, "\(again.stderr)")
        for f in ["j.lethe", "j.lethe.keys", "j.lethe.views"] {
            let wal = dir.path(f) + "-wal"
            #expect((try? FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int) ?? 0 == 0, "\(wal)")
            #expect(try run("/usr/bin/sqlite3", [dir.path(f), "SELECT count(*) FROM meta WHERE key='wal_dirty'"]).stdout == "0\n", "\(f)")
        }
        #expect(try run("lethe", ["export", "--journal", journal]).stdout.components(separatedBy: #""type":"AccountPurged""#).count - 1 == 10)
    }

    @Test func theMasterKeyNeverLivesBesideTheDataAndIsNeverMadeSilently() throws {
        let dir = try TempDir(), secrets = try TempDir()
        let journal = dir.path("j.lethe")
        let line = #"{"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}"#
        /// `lethe` with neither master key variable set, but those of `environment`.
        func lethe(_ args: [String], _ environment: [String: String], stdin: String? = nil) throws -> CommandResult {
            try run("/usr/bin/env", ["-u", MasterKeySource.environmentVariable, "-u", MasterKeySource.fileVariable]
                    + environment.map { "\($0.key)=\($0.value)" } + [productsDirectory.appendingPathComponent("lethe").path] + args,
                    stdin: stdin)
        }
        // No key at all: one line saying how to give one, and nothing created.
        let missing = try lethe(["import", "-", "--journal", journal], [:], stdin: line)
        #expect(missing.status != 0 && missing.stderr.split(separator: "\n").count == 1)
        #expect(missing.stderr.contains("LETHE_MASTER_KEY") && missing.stderr.contains("--master-key") && missing.stderr.contains("lethe keys init"), "\(missing.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).isEmpty)

        // `keys init` makes an owner-only key file, and refuses to overwrite anything or follow a link.
        let key = secrets.path("master.key")
        #expect(try lethe(["keys", "init", key], [:]).status == 0)
        #expect((try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int) == 0o600)
        #expect(try lethe(["keys", "init", key], [:]).status != 0)
        try FileManager.default.createSymbolicLink(atPath: secrets.path("link.key"), withDestinationPath: secrets.path("target.key"))
        #expect(try lethe(["keys", "init", secrets.path("link.key")], [:]).status != 0)
        #expect(!FileManager.default.fileExists(atPath: secrets.path("target.key")))

        // With it, by option or by variable, everything works.
        #expect(try lethe(["import", "-", "--journal", journal, "--master-key", key], [:], stdin: line).status == 0)
        #expect(try lethe(["verify", "--journal", journal], [MasterKeySource.fileVariable: key]).status == 0)

        // A key file beside the journal or the key store is refused, even owner-only.
        let beside = dir.path("master.key")
        try FileManager.default.copyItem(atPath: key, toPath: beside)
        let besideRun = try lethe(["verify", "--journal", journal, "--master-key", beside], [:])
        #expect(besideRun.status != 0 && besideRun.stderr.contains("same directory"), "\(besideRun.stderr)")
        // A key file that group or others can read is refused, with the fix.
        chmod(key, 0o640)
        let open = try lethe(["verify", "--journal", journal, "--master-key", key], [:])
        #expect(open.status != 0 && open.stderr.contains("chmod 600"), "\(open.stderr)")
        chmod(key, 0o600)
        // Without the master key, verify checks what it can, says so, and fails unless told.
        let unauthenticated = try lethe(["verify", "--journal", journal], [:])
        #expect(unauthenticated.status != 0 && unauthenticated.stdout.contains("(not authenticated: no master key given)"))
        #expect(try lethe(["verify", "--journal", journal, "--unauthenticated"], [:]).status == 0)
    }

    @Test func everyFileTheEngineWritesIsOwnerOnlyAndNoOutputFollowsALink() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        let fixture = fixturesDirectory.appendingPathComponent("small.ndjson").path
        // A permissive umask, as on many servers.
        func lethe(_ args: [String]) throws -> CommandResult {
            try run("/bin/sh", ["-c", "umask 022; exec \"$0\" \"$@\"", productsDirectory.appendingPathComponent("lethe").path] + args)
        }
        _ = try lethe(["import", fixture, "--journal", journal])
        #expect(try lethe(["views", "--journal", journal]).status == 0)
        #expect(try lethe(["retention", "dry-run", "--journal", journal, "--as-of", "2027-01-15T00:00:00Z", "--format", "csv", "-o", dir.path("report.csv")]).status == 0)
        #expect(try lethe(["subject-report", "--journal", journal, "--account", "acc_1", "--format", "html", "-o", dir.path("acc_1.html")]).status == 0)
        #expect(try lethe(["backup", "create", dir.path("j.backup"), "--journal", journal]).status == 0)
        #expect(try lethe(["retention", "run", "--journal", journal, "--now", "2027-01-15T00:00:00Z"]).status == 0)
        #expect(try lethe(["backup", "restore", dir.path("j.backup"), "--journal", dir.path("restored.lethe"), "--keys", journal + ".keys", "--now", "2027-01-15T00:00:00Z"]).status == 0)
        #expect(try lethe(["rebuild", "--journal", journal]).status == 0)
        // A report over an existing world-readable file, and over a link: both replaced by a
        // new owner-only file; the link's target is left alone.
        _ = FileManager.default.createFile(atPath: dir.path("existing.json"), contents: Data("old".utf8), attributes: [.posixPermissions: 0o644])
        #expect(try lethe(["subject-report", "--journal", journal, "--account", "acc_41", "-o", dir.path("existing.json")]).status == 0)
        let target = try TempDir()
        _ = FileManager.default.createFile(atPath: target.path("victim"), contents: Data("untouched".utf8), attributes: [.posixPermissions: 0o644])
        try FileManager.default.createSymbolicLink(atPath: dir.path("link.json"), withDestinationPath: target.path("victim"))
        #expect(try lethe(["subject-report", "--journal", journal, "--account", "acc_3", "-o", dir.path("link.json")]).status == 0)
        #expect(try String(contentsOfFile: target.path("victim"), encoding: .utf8) == "untouched")
        #expect((try FileManager.default.attributesOfItem(atPath: dir.path("link.json"))[.type] as? FileAttributeType) == .typeRegular)

        let names = try FileManager.default.contentsOfDirectory(atPath: dir.url.path)
        #expect(names.contains("j.lethe.views") && names.contains("restored.lethe") && names.contains("j.backup"))
        // Nothing in clear beside the backup, and no temporary file left.
        #expect(!names.contains { $0.contains("snapshot") || $0.contains(".tmp-") || $0.hasSuffix(".restoring") }, "\(names)")
        for name in names {
            let mode = try FileManager.default.attributesOfItem(atPath: dir.path(name))[.posixPermissions] as? Int ?? 0o777
            #expect(mode & 0o077 == 0, "\(name) has mode \(String(mode, radix: 8))")
        }
    }

    /// A statement that changes more than SQLite keeps of its journal in memory (64 KiB) spills
    /// it to a temporary file: copies of the pages it changed, in a file that is unlinked at once
    /// but whose blocks nothing overwrites. The control connection, set to spill to files as
    /// SQLite does by default, shows that the check sees such a file; the engine's connections
    /// never make one.
    @Test func sqliteTemporaryFilesNeverReachTheDisk() throws {
        let dir = try TempDir()
        func spilled() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap { fd in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")).flatMap { $0.contains("etilqs_") ? $0 : nil }
            }
        }
        for control in [true, false] {
            let db = try SQLiteDatabase(path: dir.path(control ? "control.db" : "engine.db"))
            if control { try db.execute("PRAGMA temp_store=FILE") }
            try db.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB UNIQUE)")
            try db.transaction {
                try db.execute("WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 2000) INSERT INTO t SELECT k, randomblob(1000) FROM n")
                // Changes every page the insert wrote, in a statement that may fail half way (the
                // unique column): its journal holds them all.
                try db.execute("UPDATE t SET v = randomblob(1000)")
                let files = try spilled()
                if control {
                    #expect(!files.isEmpty, "the control connection spilled nothing: the check cannot see a temporary file")
                } else {
                    #expect(files.isEmpty, "\(files)")
                }
            }
        }
    }

    @Test(arguments: TestBackend.allCases)
    func aKeyDestroyedByAnotherProcessIsNeverUsedAgain(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        // A long-running service, which has used (and cached) the account's keys...
        let service = try place.open(blockEvents: 4)
        try service.append(NewEvent(.accountSignedUp, account: "a", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ada", "email": "ada@example.com"]))
        try service.append(event("a", at: "2026-01-01T00:00:01Z"))
        // ...while another process (another instance, on the server) purges the account.
        let other = try place.open(blockEvents: 4, seed: 2)
        try other.append([NewEvent(.accountPurged, account: "a", at: ts("2026-02-01T00:00:00Z"), data: ["rule": "erasure-request"])],
                         erasing: [.account("a", keeping: EventType.chainsOutlivingAccount)])
        // The service seals nothing more under the destroyed keys, whether it prepares first or appends at once.
        let prepared = try service.prepare([NewEvent(.profileUpdated, account: "a", at: ts("2026-02-02T00:00:00Z"), data: ["name": "Ada L."])])
        #expect(try service.append(prepared).allSatisfy { if case .rejected(let e) = $0 { e.code == .accountShredded } else { false } })
        #expect { try service.append(event("a", at: "2026-02-02T00:00:01Z")) } throws: { ($0 as? JournalError)?.code == .accountShredded }
        // Nor do its read models open the account's fields.
        let views = try ReadModels(journal: service, place: place.defaultViews)
        try views.catchUp()
        #expect(try views.account("a")?.name == nil)
        #expect(try allEvents(service).filter { $0.header.account == "a" && $0.header.type != "AccountPurged" }.allSatisfy { $0.payload == .purged })
    }

    @Test(arguments: TestBackend.allCases)
    func aLegalHoldPlacedWhileARunDecidesStopsThatPurge(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let journal = try place.open(seed: 3, rules: ContractRules())
        for account in ["held", "free"] {
            try journal.append(NewEvent(.accountSignedUp, account: account, at: ts("2026-01-01T00:00:00Z"), data: ["name": "N", "email": "n@example.com"]))
            try journal.append(NewEvent(.erasureRequested, account: account, at: ts("2026-01-02T00:00:00Z"), data: [:]))
        }
        let views = try ReadModels(journal: journal, place: place.defaultViews)
        let placed = Mutex(false)
        let retention = Retention(journal: journal, views: views) {
            // Between the run's decision and its append: a case is opened on one account.
            guard placed.withLock({ done in defer { done = true }; return !done }) else { return }
            try journal.append(NewEvent(.legalHoldPlaced, account: "held", at: ts("2026-01-03T00:00:00Z"), data: ["case": "C-7", "reason": "litigation"]))
        }
        let result = try retention.run(now: ts("2026-02-01T00:00:00Z"))
        #expect(result.accountsPurged == ["free"] && result.held == 1 && result.replanned == 1, "\(result)")
        try views.catchUp()
        #expect(try views.account("held")?.status == "active" && views.account("held")?.name == "N")
        #expect(try views.account("free")?.status == "purged")
    }

    @Test func rotatingTheMasterKeyIsCrashSafeAndLeavesOldCopiesOfTheKeyStoreUseless() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 8)
        for n in 0..<25 {
            try j.append(NewEvent(.accountSignedUp, account: "a\(n)", at: ts("2026-01-01T00:00:00Z"), data: ["name": "N", "email": "n@example.com"]))
        }
        // Two own keys (items), one record chain: every kind of wrapped key is re-wrapped.
        for item in ["i1", "i2"] {
            try j.append(NewEvent(.itemCreated, account: "a0", at: ts("2026-01-02T00:00:00Z"), data: ["item_id": .string(item), "kind": "file", "label": "L"]))
        }
        try j.append(NewEvent(.pageViewed, account: "a1", at: ts("2026-01-02T00:00:00Z"), data: ["path": "/pricing"]))
        let keys = j.keysPath, path = j.path
        try copyJournal(keys, to: dir.path("old-copy.keys"))
        let newHex = String(repeating: "5e", count: 32)
        let newKey = SymmetricKey(data: Hex.decode(newHex)!)
        func store(_ path: String, _ master: MasterKeySource) throws -> KeyStore {
            try KeyStore(path: path, master: master, dataPaths: [j.path], entropy: .seeded(9), synchronous: .normal)
        }
        // Interrupted after its first batch (ten keyrings, the two own keys, the journal's keys), as a crash would leave it.
        #expect(try store(keys, testMaster).rotate(to: newKey, batch: 10, stopAfter: 1) == 13)
        #expect { try Journal(path: path, master: testMaster) } throws: {
            ($0 as? JournalError)?.message.contains("a rotation is in progress") == true
        }
        // Run again with the same two keys, it finishes; with a third key, it refuses.
        #expect { try store(keys, testMaster).rotate(to: SymmetricKey(size: .bits256)) } throws: {
            ($0 as? JournalError)?.message.contains("being rotated to another master key") == true
        }
        #expect(try store(keys, testMaster).rotate(to: newKey) == 15)
        // Now only the new key opens the live store, and every payload still opens with it.
        #expect { try store(keys, testMaster) } throws: { ($0 as? JournalError)?.message.contains("does not open the key store") == true }
        let after = try Journal(path: path, master: .key(newHex))
        #expect(try allEvents(after).allSatisfy { if case .plaintext = $0.payload { true } else { false } })
        #expect(try JournalReader.verify(path: path, keysPath: keys, master: .key(newHex)).anchored)
        // A copy of the store taken before opens only with the old key: destroy that, and the copy is useless.
        #expect { try store(dir.path("old-copy.keys"), .key(newHex)) } throws: { ($0 as? JournalError)?.code == .keys }
        #expect(throws: Never.self) { try store(dir.path("old-copy.keys"), testMaster) }
    }

    @Test func theCommandRotatesTheMasterKey() throws {
        let dir = try TempDir(), secrets = try TempDir()
        let journal = dir.path("j.lethe")
        let line = #"{"type":"AccountSignedUp","account":"a","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}"#
        #expect(try run("lethe", ["import", "-", "--journal", journal], stdin: line).status == 0)
        #expect(try run("lethe", ["keys", "init", secrets.path("new.key")]).status == 0)
        let r = try run("lethe", ["keys", "rotate", "--journal", journal, "--new-master-key", secrets.path("new.key")])
        #expect(r.status == 0 && r.stdout.hasPrefix("rotated: 2 keyrings, own keys and journal keys"), "\(r.stdout)\(r.stderr)")
        #expect(try run("lethe", ["export", "--journal", journal]).status != 0)  // the old key no longer opens it
        let export = try run("lethe", ["export", "--journal", journal, "--master-key", secrets.path("new.key")])
        #expect(export.status == 0 && export.stdout.contains("ada@example.com"), "\(export.stderr)")
    }
}
