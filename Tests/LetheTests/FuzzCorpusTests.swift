import CLZ4
import Crypto
import Foundation
@_spi(Fuzzing) import LetheEvents
@_spi(Fuzzing) @testable import LetheJournal
import Testing

/// The fuzz targets' seed corpora (`Fixtures/fuzz/TARGET/`), replayed through the same entry
/// points the fuzzers call, so every input a fuzzer once crashed on (kept there) stays a test.
/// `LETHE_WRITE_FUZZ_SEEDS=1 swift test --filter FuzzCorpusTests` makes the seeds again from a
/// small journal and `Fixtures/small.ndjson`.
@Suite struct FuzzCorpusTests {
    static let corpus = fixturesDirectory.appendingPathComponent("fuzz")

    /// Each target (`Tools/fuzz.sh` names) and its entry point.
    static let targets: [(name: String, run: @Sendable ([UInt8]) -> String?)] = [
        ("ndjson", EventsFuzzing.ndjsonLine),
        ("payload", EventsFuzzing.payload),
        ("block", JournalFuzzing.blockContent),
        ("lz4", JournalFuzzing.blockFrame),
        ("backup", JournalFuzzing.backupStream),
        ("index", JournalFuzzing.indexRun),
    ]

    @Test(arguments: targets.map(\.name))
    func theCorpusReplaysClean(_ target: String) throws {
        let run = try #require(FuzzCorpusTests.targets.first { $0.name == target }?.run)
        let dir = FuzzCorpusTests.corpus.appendingPathComponent(target)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(files.count >= 3, "seeds of \(target)")
        for file in files {
            let bytes = try [UInt8](Data(contentsOf: dir.appendingPathComponent(file)))
            #expect(run(bytes) == nil, "\(target)/\(file)")
        }
    }

    /// The seeds must be worth something: most are accepted by their decoder (a corpus of
    /// refusals would start every run at the first check).
    @Test func theSeedsAreAcceptedByTheirDecoders() throws {
        func accepted(_ target: String, _ decode: ([UInt8]) throws -> Void) throws -> Int {
            let dir = FuzzCorpusTests.corpus.appendingPathComponent(target)
            return try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { file in
                let bytes = try [UInt8](Data(contentsOf: dir.appendingPathComponent(file)))
                return (try? decode(bytes)) != nil
            }.count
        }
        #expect(try accepted("ndjson") { _ = try EnvelopeValidator.parse(line: $0).get() } >= 10)
        #expect(try accepted("payload") { bytes in
            _ = try codec.decode(type: EventType.allCases[Int(bytes[0]) % EventType.allCases.count].rawValue, payload: Array(bytes.dropFirst()))
        } >= 10)
        #expect(try accepted("block") { _ = try Block.decode($0, where: "seed") } >= 3)
        #expect(try accepted("lz4") { _ = try Block.decode(LZ4.decompressFrame($0, limit: 1 << 24), where: "seed") } >= 3)
        #expect(try accepted("index") { bytes in
            let n = Int(bytes[0])
            _ = try EventIDIndex.decode(Array(bytes[(n + 1)...]), first: String(decoding: bytes[1..<(n + 1)], as: UTF8.self))
        } >= 3)
        #expect(try accepted("index") { bytes in
            var r = BinaryReader(bytes)
            _ = try r.varint()
            _ = try BlockIndex.decode(bytes, account: 1, first: Int64(try r.varint()))
        } >= 3)
        // The backup seeds are in this build's format: the header parses, the streams load whole.
        #expect(try accepted("backup") { bytes in
            if bytes.starts(with: Array("LETHE-BACKUP ".utf8)) {
                _ = try Backup.parseHeader(Data(bytes), path: "seed")
                return
            }
            let db = try SQLiteDatabase(path: ":memory:")
            defer { db.close() }
            try db.transaction { try Journal.createSchema(db) }
            var loader = Backup.Loader(db: db)
            var pending = bytes
            guard try loader.load(&pending, last: true, place: { JournalError(.corrupt, $0) }) else { throw Rejection("no end record") }
            try loader.rebuildIndexes()
        } == 3)
    }

    // MARK: Making the seeds

    /// An LZ4 frame of `content` with its size declared and no block or content checksum.
    static func uncheckedFrame(_ content: [UInt8]) throws -> [UInt8] {
        var prefs = LZ4F_preferences_t()
        prefs.frameInfo.contentSize = UInt64(content.count)
        let bound = LZ4F_compressFrameBound(content.count, &prefs)
        var out = [UInt8](repeating: 0, count: bound)
        let written = content.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { LZ4F_compressFrame($0.baseAddress, bound, src.baseAddress, src.count, &prefs) }
        }
        try #require(LZ4F_isError(written) == 0)
        return Array(out[..<written])
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["LETHE_WRITE_FUZZ_SEEDS"] == "1"))
    func writeSeeds() throws {
        let root = FuzzCorpusTests.corpus
        func write(_ target: String, _ name: String, _ bytes: [UInt8]) throws {
            let dir = root.appendingPathComponent(target)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(bytes).write(to: dir.appendingPathComponent(name))
        }
        // (Files are overwritten, never removed: inputs that fuzzing found stay seeds.)
        // The first line of each type in the fixture (a few are refused: unknown or engine-only
        // types), and their payloads.
        let lines = try String(contentsOf: fixturesDirectory.appendingPathComponent("small.ndjson"), encoding: .utf8)
            .split(separator: "\n").map { Array($0.utf8) }
        var seen = Set<String>()
        var accepted: [Envelope] = []
        for line in lines {
            guard case .object(let o)? = try? JSONParser.parse(line), let type = o["type"]?.string, seen.insert(type).inserted else { continue }
            try write("ndjson", "\(type).ndjson", line)
            if case .success(let e) = EnvelopeValidator.parse(line: line) {
                accepted.append(e)
                let index = UInt8(EventType.allCases.firstIndex(of: e.type)!)
                try write("payload", "\(type).bin", [index] + codec.encode(type: e.type.rawValue, data: e.data))
            }
        }
        // A small journal: blocks of 8 (sealed and purged payloads, own keys and records), a tail.
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 8)
        let first = lines.prefix(60).compactMap { line -> NewEvent? in
            guard case .success(let e) = EnvelopeValidator.parse(line: line) else { return nil }
            return NewEvent(e.type, account: e.account, at: e.at, data: e.data, id: e.id)
        }
        _ = try j.append(first)
        let gone = first[0].account
        _ = try j.append([], erasing: [.account(gone)])
        let db = try SQLiteDatabase(path: j.path, readOnly: true)
        let blocks = try db.statement("SELECT id, frame FROM blocks ORDER BY id")
        var purgedSeen = false
        while try blocks.step() {
            let frame = blocks.blob(1)
            let content = try LZ4.decompressFrame(frame, limit: 1 << 24)
            purgedSeen = try purgedSeen || Block.decode(content, where: "seed").events.contains { $0.isPurged }
            try write("lz4", "frame-\(blocks.int(0)).lz4", frame)
            // The same content in a frame without checksums (which the reader accepts too): most
            // mutations of a checksummed frame stop at the checksum, these reach the content.
            if blocks.int(0) <= 3 { try write("lz4", "frame-\(blocks.int(0))-unchecked.lz4", try FuzzCorpusTests.uncheckedFrame(content)) }
            try write("block", "block-\(blocks.int(0)).bin", content)
        }
        blocks.reset()
        db.close()
        #expect(purgedSeen, "a seed block holds a purged event")
        // Chunks of the id index: the fixture's ids, ids sharing long prefixes, out of time order.
        var idRuns: [[(String, Int64)]] = [first.compactMap(\.id).enumerated().map { ($1, Int64($0 + 1)) }]
        idRuns.append((0..<300).map { (String(format: "evt_%07d", $0), Int64($0 * 3 + 1)) })
        idRuns.append([("a", 9), ("ab", 2), ("b\u{301}", 40), ("é", 1), ("\u{1F600}x", 7)])
        for (k, var entries) in idRuns.enumerated() {
            entries.sort { utf8Precedes($0.0, $1.0) }
            var chunks: [(String, [UInt8])] = []
            var out = EventIDIndex.RunWriter { chunks.append(($0, $1)) }
            for (id, seq) in entries { try out.add(Array(id.utf8)[...], seq: seq) }
            try out.cut()
            let (key, chunk) = chunks[0]
            try write("index", "ids-\(k + 1).bin", [UInt8(key.utf8.count)] + Array(key.utf8) + chunk)
        }
        // Runs of the block index: one block, blocks close together, far apart.
        for (k, blocks) in [[7], Array(1...200), [1, 2, 1_000, 1 << 40]].enumerated() {
            try write("index", "blocks-\(k + 1).bin", BlockIndex.encode(blocks.map(Int64.init))[0].1)
        }
        // Its backup's content stream, opened as the restore opens it, and the header alone.
        let file = dir.path("seed.backup")
        try Backup.create(j, to: file, now: ts("2026-06-01T00:00:00Z"))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        let (manifest, header) = try Backup.parseHeader(bytes, path: file)
        let id = try #require(Hex.decode(manifest.id))
        var content: [UInt8] = []
        var offset = header.count, index = 0
        while offset < bytes.count {
            var r = BinaryReader([UInt8](bytes[offset..<(offset + 4)]))
            let length = Int(try r.u32())
            let sealed = bytes[(offset + 4)..<(offset + 4 + length)]
            offset += 4 + length
            let box = try AES.GCM.SealedBox(nonce: Backup.nonce(id: id, index: index), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
            let plain = try AES.GCM.open(box, using: j.backupKey, authenticating: Backup.aad(header: header, index: index, last: offset == bytes.count))
            content += try LZ4.decompressFrame(Array(plain), limit: Backup.chunkBytes)
            index += 1
        }
        try write("backup", "content.bin", content)
        try write("backup", "header.txt", header)
        // A one-event journal's stream too: short enough for the fuzzer to change as a whole.
        let small = try openJournal(dir, name: "small.lethe", blockEvents: 1)
        try small.append(first[1])
        try small.append(first[2])
        let smallFile = dir.path("small.backup")
        try Backup.create(small, to: smallFile, now: ts("2026-06-01T00:00:00Z"))
        let smallBytes = try Data(contentsOf: URL(fileURLWithPath: smallFile))
        let (smallManifest, smallHeader) = try Backup.parseHeader(smallBytes, path: smallFile)
        let sealed = smallBytes[(smallHeader.count + 4)...]
        let box = try AES.GCM.SealedBox(
            nonce: Backup.nonce(id: try #require(Hex.decode(smallManifest.id)), index: 0), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
        let plain = try AES.GCM.open(box, using: small.backupKey, authenticating: Backup.aad(header: smallHeader, index: 0, last: true))
        try write("backup", "small.bin", try LZ4.decompressFrame(Array(plain), limit: Backup.chunkBytes))
    }
}
