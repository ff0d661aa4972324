import Foundation
import LetheEvents
@testable import LetheJournal
import Testing

/// A fresh directory per test, removed afterwards.
final class TempDir {
    let url: URL

    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("lethe-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// A master key for tests, passed through the environment the way an operator would.
let testMasterKey = String(repeating: "ab", count: 32)

let testMaster = MasterKeySource.key(testMasterKey)

/// Verifies a journal with its key store and the test master key (the head authenticated).
func verified(_ j: Journal) throws -> JournalReader.VerifyReport {
    try JournalReader.verify(path: j.path, keysPath: j.keysPath, master: testMaster)
}

/// A journal with deterministic randomness and the test master key.
func openJournal(_ dir: TempDir, name: String = "j.lethe", blockEvents: Int = 8, seed: UInt64 = 1,
                 recentPostingsLimit: Int? = nil) throws -> Journal {
    var options = Journal.Options()
    options.blockEvents = blockEvents
    if let recentPostingsLimit { options.recentPostingsLimit = recentPostingsLimit }
    options.entropy = .seeded(seed)
    options.synchronous = .normal
    options.clock = .fixed(ts("2026-06-01T00:00:00Z"))
    let path = dir.path(name)
    return try Journal(path: path, master: testMaster, options: options)
}

func ts(_ s: String) -> Timestamp { Timestamp(rfc3339: s)! }

let codec = PayloadCodec.standard

func event(_ account: String, _ type: EventType = .pageViewed, at: String, id: String? = nil,
           data: JSONObject = ["path": "/pricing", "visitor": "v1"], expected: Int64? = nil) -> NewEvent {
    NewEvent(type, account: account, at: ts(at), data: data, id: id, expectedVersion: expected)
}

/// All events of the journal, decrypted, in order.
func allEvents(_ j: Journal) throws -> [StoredEvent] {
    var out: [StoredEvent] = []
    try j.read { try $0.events { out.append($0) } }
    return out
}

func data(_ e: StoredEvent) throws -> JSONObject {
    guard case .plaintext(let p) = e.payload else { throw Rejection("no payload") }
    return try codec.decode(type: e.header.type, payload: p)
}

/// Every event of an old copy of a journal, read with the live key store `keysPath` straight
/// through a reader: what someone holding the copy could do with the library. (A `Journal` will
/// not open the copy at all: it is behind the key store's anchor.)
func readCopy(_ path: String, keysPath: String) throws -> [StoredEvent] {
    let reader = try JournalReader(path: path, keysPath: keysPath) {
        try KeyStore(path: keysPath, master: testMaster, dataPaths: [path], entropy: .system, synchronous: .normal)
    }
    var out: [StoredEvent] = []
    try reader.snapshot { try reader.events { out.append($0) } }
    return out
}

/// Copies a journal's file and its WAL, as `cp` of the folder would: what an attacker or an
/// unlucky operator holds once they have a copy.
func copyJournal(_ from: String, to: String) throws {
    for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: from + suffix) {
        try FileManager.default.copyItem(atPath: from + suffix, toPath: to + suffix)
    }
}

/// Runs SQL on a journal file behind the engine's back (to simulate tampering).
func tamper(_ path: String, _ sql: String) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
    p.arguments = [path, sql]
    try p.run()
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "sqlite3 failed on \(sql)")
}

/// The directory that holds the built products (the test bundle's own directory).
var productsDirectory: URL {
    URL(fileURLWithPath: try! FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")).deletingLastPathComponent()
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a built executable of this package (or, given an absolute path, any program) with `args`, feeding `stdin`.
@discardableResult
func run(_ product: String, _ args: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> CommandResult {
    let p = Process()
    p.executableURL = product.hasPrefix("/") ? URL(fileURLWithPath: product) : productsDirectory.appendingPathComponent(product)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env[MasterKeySource.environmentVariable] = testMasterKey
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CommandResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// The package's Fixtures/ folder.
var fixturesDirectory: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
}
