// Appends events to a journal until killed, acknowledging each committed event on stdout.
//
// Usage: lethe-crash-writer JOURNAL SEED [BLOCK_EVENTS [KEYS]]
// JOURNAL is a file or a postgres:// address (whose key store KEYS then names: a file, or a
// postgres:// address of a database of its own).
// The crash test (Tests/LetheTests/CrashTests.swift) kills it at random instants with SIGKILL,
// reopens the journal, verifies it, and checks that every acknowledged event is there; several
// of it append to one PostgreSQL journal at once in another.
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import LetheEvents
import LetheJournal
import LethePostgres

let args = CommandLine.arguments
guard args.count >= 3, let seed = UInt64(args[2]) else {
    print("usage: lethe-crash-writer JOURNAL SEED [BLOCK_EVENTS [KEYS]]")
    exit(2)
}
var options = Journal.Options()
options.blockEvents = args.count > 3 ? Int(args[3]) ?? 64 : 64
options.entropy = .seeded(seed)
let journal = PostgresAddress.isAddress(args[1])
    ? (PostgresAddress.isAddress(args[4])
        ? try Journal(postgres: args[1], keyStore: args[4], options: options)
        : try Journal(postgres: args[1], keysPath: args[4], options: options))
    : try Journal(path: args[1], keysPath: args.count > 4 ? args[4] : nil, options: options)
/// xorshift64: the workload is reproducible from the seed.
struct Rng {
    var state: UInt64
    mutating func next(_ n: UInt64) -> Int {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return Int(state % n)
    }
}
var rng = Rng(state: seed | 1)
let codec = PayloadCodec.standard
var counter = 0
let start = journal.headSeq
while true {
    let size = rng.next(4) == 0 ? 1 + rng.next(300) : 1
    var batch: [NewEvent] = []
    for _ in 0..<size {
        counter += 1
        let data: JSONObject = ["path": .string("/pricing/\(counter)"), "visitor": .string("v\(rng.next(1000))")]
        batch.append(NewEvent(
            id: "s\(seed)-\(start)-\(counter)", account: "acc_\(rng.next(50))", type: "PageViewed",
            at: Timestamp(seconds: 1_767_225_600 + Int64(start) + Int64(counter)),
            payload: codec.encode(type: "PageViewed", data: data)))
    }
    let outcomes = try journal.append(batch)
    var acks = ""
    for (e, outcome) in zip(batch, outcomes) {
        switch outcome {
        case .appended:
            acks += "ack \(e.id!)\n"
        case .rejected(let why) where why.code == .timeOrder:
            // Another writer on the same journal gave the account a later event first: refused,
            // as it must be, and not acknowledged.
            continue
        default:
            fatalError("unexpected outcome for \(e.id!): \(outcome)")
        }
    }
    let bytes = Array(acks.utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}
