// Benchmarks for the README: batched import, single appends, full read, bytes per event and peak
// memory, on an NDJSON file in the contract's shape (make one with lethe-gen).
//
// Usage: lethe-bench FILE [--single N] [--block-events N] [--repeat N] [--keep DIR]
//        lethe-bench --postgres URL --keys DIR [--single N]   (built with the PostgreSQL trait)
// Run it on a release build: Tools/release-build.sh [--with-postgres]
//
// With --postgres: single appends with synchronous commit by 1, then 4, writers at once (each a
// Journal of its own, on a thread of its own) on one PostgreSQL journal, N each; prints each
// aggregate rate. Each run is in a schema of its own, dropped at the end.
import Foundation
import LetheEvents
import LetheJournal
import LetheRetention
import LetheViews
#if PostgreSQL
import LethePostgres
import Synchronization
#endif

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Peak and current resident memory of this process, in MiB (Linux /proc).
func memoryMiB() -> (peak: Double, now: Double) {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Double {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return 0 }
        return Double(line.split(separator: " ").dropFirst().first.map(String.init) ?? "0").map { $0 / 1024 } ?? 0
    }
    return (field("VmHWM:"), field("VmRSS:"))
}

func fileSize(_ path: String) -> Int64 {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int64) ?? 0
}

func fmt(_ v: Double, _ digits: Int = 0) -> String { String(format: "%.\(digits)f", v) }

let args = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}
let singles = Int(option("--single") ?? "20000")!
let master0 = String(repeating: "5a", count: 32)

#if PostgreSQL
if let url = option("--postgres"), let keys = option("--keys") {
    try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
    let payload = PayloadCodec.standard.encode(type: "PageViewed", data: ["path": "/pricing", "visitor": "v_bench"])
    let base = Timestamp(rfc3339: "2030-01-01T00:00:00Z")!
    var rates: [Int: Double] = [:]
    for writers in [1, 4] {
        let schema = "bench_writers_\(writers)_\(getpid())"
        let backend = PostgresBackend(try PostgresAddress(url + "?schema=" + schema))
        defer { try? backend.drop() }
        var options = Journal.Options()
        options.synchronous = .full  // each append waits for its commit to be durable
        options.rules = nil
        let journals = try (0..<writers).map { w -> Journal in
            options.entropy = .seeded(UInt64(w + 1))
            return try Journal(postgres: url + "?schema=" + schema, keysPath: keys + "/\(schema).keys", master: .key(master0), options: options)
        }
        let done = DispatchGroup()
        let failures = Atomic<Int>(0)
        let t = seconds {
            for (w, journal) in journals.enumerated() {
                done.enter()
                Thread.detachNewThread {
                    defer { done.leave() }
                    for i in 0..<singles {
                        do {
                            try journal.append(NewEvent(id: "w\(w)-\(i)", account: "bench_\(w)_\(i % 100)", type: "PageViewed",
                                                        at: base.adding(seconds: Int64(i)), payload: payload, scope: EventType.pageViewed.keyScope))
                        } catch {
                            failures.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
            done.wait()
        }
        let total = writers * singles
        rates[writers] = Double(total) / t
        if writers == 1 {
            // What a service meets per request: one account's events, each read a `Journal.read` of its own.
            let reads = 200
            var found = 0
            let r = try seconds {
                for i in 0..<reads {
                    try journals[0].read { try $0.events(account: "bench_0_\(i % 100)") { _ in found += 1 } }
                }
            }
            print("reads of one account's events on PostgreSQL: \(reads) in \(fmt(r, 2)) s = \(fmt(r / Double(reads) * 1000, 2)) ms each (\(found / reads) events each)")
        }
        print("single appends on PostgreSQL, synchronous commit: \(writers) writer(s) x \(singles) = \(total) in \(fmt(t, 2)) s = \(fmt(Double(total) / t)) events/s"
            + (failures.load(ordering: .relaxed) > 0 ? " (\(failures.load(ordering: .relaxed)) failed)" : ""))
    }
    print("4 writers against 1: \(fmt(rates[4]! / rates[1]!, 2))x the aggregate rate")
    exit(0)
}
#endif
let blockEvents = Int(option("--block-events") ?? "0")!
let repeats = max(1, Int(option("--repeat") ?? "3")!)
let keep = option("--keep")
guard let file = args.first, !file.hasPrefix("--") else {
    print("usage: lethe-bench FILE [--single N] [--block-events N] [--repeat N] [--keep DIR]")
    exit(2)
}

let dir = keep ?? NSTemporaryDirectory() + "lethe-bench-\(getpid())"
try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
defer { if keep == nil { try? FileManager.default.removeItem(atPath: dir) } }
let master = master0
func open(_ name: String, _ configure: (inout Journal.Options) -> Void = { _ in }) throws -> Journal {
    var options = Journal.Options()
    options.rules = ContractRules()
    if blockEvents > 0 { options.blockEvents = blockEvents }
    configure(&options)
    let path = dir + "/" + name
    return try Journal(path: path, master: .key(master), options: options)
}

let inputBytes = fileSize(file)
print("input: \(file), \(inputBytes) bytes")

// 1. Parse, validate and encode only: the front half of an import.
var lines = 0
let parseTime = try seconds {
    let fd = Glibc.open(file, O_RDONLY)
    defer { close(fd) }
    var reader = LineReader(fd: fd)
    while let line = try reader.next() {
        guard case .text(let bytes) = line, case .success(let e) = EnvelopeValidator.parse(line: bytes) else { continue }
        _ = PayloadCodec.standard.encode(type: e.type.rawValue, data: e.data)
        lines += 1
    }
}
print("parse+validate+encode: \(lines) events in \(fmt(parseTime, 2)) s = \(fmt(Double(lines) / parseTime)) events/s")

// 2. Batched import, with memory sampled as the journal grows. The journal is closed afterwards,
// which checkpoints the WAL into the database file, so the file size is everything stored.
func batchedImport() throws -> (Importer.Summary, Double, [String]) {
    for suffix in ["", "-wal", "-shm", ".keys", ".keys-wal", ".keys-shm"] { try? FileManager.default.removeItem(atPath: dir + "/bench.lethe" + suffix) }
    let journal = try open("bench.lethe")
    var summary = Importer.Summary()
    var samples: [String] = []
    let time = try seconds {
        let fd = Glibc.open(file, O_RDONLY)
        defer { close(fd) }
        var nextSample: Int64 = inputBytes / 4
        var quarterStart = DispatchTime.now().uptimeNanoseconds
        var quarterBytes: Int64 = 0
        summary = try Importer(journal: journal).run(LineReader(fd: fd), onRejection: { _ in }) { read in
            if read >= nextSample {
                // Rate over this quarter of the input, in MB of NDJSON per second: flat if appends
                // do not slow down as the journal grows.
                let now = DispatchTime.now().uptimeNanoseconds
                let rate = Double(read - quarterBytes) / (Double(now - quarterStart) / 1e9) / 1e6
                samples.append("\(fmt(memoryMiB().now)) MiB and \(fmt(rate, 1)) MB/s at \(read * 100 / max(inputBytes, 1))%")
                quarterStart = now
                quarterBytes = read
                nextSample += inputBytes / 4
            }
        }
    }
    return (summary, time, samples)
}
// The machine is shared and noisy: the import runs `repeats` times into a new journal, and the
// median is reported with the range.
var runs: [(Importer.Summary, Double, [String])] = []
for _ in 0..<repeats { runs.append(try batchedImport()) }
let (summary, _, samples) = runs.last!
let times = runs.map(\.1).sorted()
let importTime = times[times.count / 2]
let imported = Double(summary.imported)
print("import (batched): \(summary.imported) events, median of \(repeats): \(fmt(importTime, 2)) s = \(fmt(imported / importTime)) events/s (range \(fmt(imported / times.last!))–\(fmt(imported / times.first!))); rejected \(summary.rejected)")
print("during import (memory, and input rate over each quarter): \(samples.joined(separator: ", ")); peak \(fmt(memoryMiB().peak)) MiB")
let journalPath = dir + "/bench.lethe"
let stored = fileSize(journalPath) + fileSize(journalPath + "-wal")
let keyStore = fileSize(journalPath + ".keys") + fileSize(journalPath + ".keys-wal")
print("size: journal \(stored) bytes = \(fmt(Double(stored) / imported, 1)) bytes/event (NDJSON \(fmt(Double(inputBytes) / imported, 1)) bytes/event, ratio \(fmt(Double(inputBytes) / Double(stored), 2))x); key store \(keyStore) bytes = \(fmt(Double(keyStore) / imported, 1)) bytes/event; both \(fmt(Double(stored + keyStore) / imported, 1)) bytes/event")
let journal = try open("bench.lethe")

// 3. Full read: every event decrypted and its data decoded into JSON objects, in journal order
// (median of `repeats`), two ways: decoding on the reading thread, and decoding beside the
// decryption on both cores (`events(transform:)`).
func fullRead(parallelDecode: Bool) throws -> (Int, Double) {
    var count = 0
    var times: [Double] = []
    for _ in 0..<repeats {
        count = 0
        times.append(try seconds {
            try journal.read { reader in
                if parallelDecode {
                    try reader.events(transform: { e -> JSONObject? in
                        guard case .plaintext(let p) = e.payload else { return nil }
                        return try PayloadCodec.standard.decode(type: e.header.type, payload: p)
                    }) { _ in count += 1 }
                } else {
                    try reader.events { e in
                        if case .plaintext(let p) = e.payload { _ = try PayloadCodec.standard.decode(type: e.header.type, payload: p) }
                        count += 1
                    }
                }
            }
        })
    }
    return (count, times.sorted()[times.count / 2])
}
let (readCount, readTime) = try fullRead(parallelDecode: false)
print("full read (decrypt on both cores, decode on the reader): \(readCount) events, median \(fmt(readTime, 2)) s = \(fmt(Double(readCount) / readTime)) events/s")
let (_, readTime2) = try fullRead(parallelDecode: true)
print("full read (decrypt and decode on both cores): \(readCount) events, median \(fmt(readTime2, 2)) s = \(fmt(Double(readCount) / readTime2)) events/s")

// What a service meets per request: one account's events, each read a `Journal.read` of its own.
var sampleAccounts: [String] = []
try journal.read { reader in
    var seen = Set<String>()
    try reader.scan { e in
        if seen.count < 1000, seen.insert(e.header.account).inserted { sampleAccounts.append(e.header.account) }
    }
}
var accountEvents = 0
let accountReads = try seconds {
    for account in sampleAccounts {
        try journal.read { try $0.events(account: account) { _ in accountEvents += 1 } }
    }
}
print("reads of one account's events: \(sampleAccounts.count) accounts in \(fmt(accountReads, 2)) s = \(fmt(accountReads / Double(sampleAccounts.count) * 1000, 2)) ms each (\(accountEvents / max(1, sampleAccounts.count)) events each)")

// 4. Verify.
let verifyTime = try seconds { _ = try JournalReader.verify(path: journal.path) }
print("verify: \(fmt(Double(readCount) / verifyTime)) events/s")

// 5. Rebuild the read models from the journal alone (the median of `repeats`).
var rebuildTimes: [Double] = []
let models = try ReadModels(journal: journal)
for _ in 0..<repeats { rebuildTimes.append(try seconds { try models.rebuild() }) }
rebuildTimes.sort()
let rebuildTime = rebuildTimes[rebuildTimes.count / 2]
print("rebuild read models: \(readCount) events, median \(fmt(rebuildTime, 2)) s = \(fmt(Double(readCount) / rebuildTime)) events/s; views file \(fileSize(models.path)) bytes; peak resident memory so far \(fmt(memoryMiB().peak)) MiB")

// 6. Retention: the dry run over every account (as of the last event, 30 days ahead), then a run.
var lastAt = Timestamp(nanoseconds: 0)
try journal.read { try $0.scan { lastAt = max(lastAt, $0.header.at) } }
let retention = Retention(journal: journal, views: models)
var dryRunTimes: [Double] = []
var report: RetentionReport?
for _ in 0..<repeats { dryRunTimes.append(try seconds { report = try retention.report(asOf: lastAt, horizonDays: 30) }) }
dryRunTimes.sort()
let accounts = try models.rowCounts().first { $0.table == "accounts" }?.rows ?? 0
print("retention dry run: \(accounts) accounts, \(report!.obligations.count) obligations listed, median \(fmt(dryRunTimes[dryRunTimes.count / 2], 2)) s")
var runResult: RetentionRun?
let runTime = try seconds { runResult = try retention.run(now: lastAt) }
print("retention run: \(runResult!.accountsPurged.count) accounts and \(runResult!.itemsPurged) items purged, \(runResult!.recordsExpired) records expired in \(fmt(runTime, 2)) s; peak resident memory so far \(fmt(memoryMiB().peak)) MiB")

// 7. Single appends, one transaction each, on a journal that already holds the import.
for (n, sync) in [Journal.Synchronous.full, .normal].enumerated() {
    // The journal alone (no contract rules): these synthetic page views have no signup.
    let single = try open("bench.lethe") {
        $0.synchronous = sync
        $0.rules = nil
    }
    let base = Timestamp(rfc3339: "203\(n)-01-01T00:00:00Z")!
    let payload = PayloadCodec.standard.encode(type: "PageViewed", data: ["path": "/pricing", "visitor": "v_bench"])
    let t = try seconds {
        for i in 0..<singles {
            try single.append(NewEvent(id: "single-\(sync)-\(i)", account: "bench_\(i % 1000)", type: "PageViewed",
                                       at: base.adding(seconds: Int64(i)), payload: payload, scope: EventType.pageViewed.keyScope))
        }
    }
    print("single appends (synchronous=\(sync)): \(singles) in \(fmt(t, 2)) s = \(fmt(Double(singles) / t)) events/s")
}
print("peak resident memory: \(fmt(memoryMiB().peak)) MiB")
