import Foundation
import Synchronization

/// Entry points for the fuzz targets in `Tools/Fuzz`: the block decoder, the LZ4 frame reader and
/// the backup reader, each run on untrusted bytes the way the engine runs it, followed by checks of
/// what must hold of whatever it accepted. Each returns what did not hold, or nil; a decoding
/// error is the expected answer to most inputs, not a failure. A trap inside is a finding.
///
/// The fuzz targets live in a package of their own (their executables get `main` from libFuzzer,
/// so a plain `swift build` of this package could not link them), which `package` access does
/// not reach: hence public, under `@_spi(Fuzzing)`, which no client sees without asking for it
/// (`@_spi(Fuzzing) import LetheJournal`). The unit tests replay `Fixtures/fuzz` through them.
@_spi(Fuzzing) public enum JournalFuzzing {
    /// A block's content (the layout documented on `Block`), as a decompressed frame holds it.
    public static func blockContent(_ bytes: [UInt8]) -> String? {
        guard let block = try? Block.decode(bytes, where: "fuzz") else { return nil }
        return check(block)
    }

    /// A stored frame: the LZ4 frame reader with the limit `JournalReader` gives it, then the
    /// block decoder on what it returns. (And the reader alone with a backup chunk's limit.)
    public static func blockFrame(_ bytes: [UInt8]) -> String? {
        if let chunk = try? LZ4.decompressFrame(bytes, limit: Backup.chunkBytes) {
            guard chunk.count <= Backup.chunkBytes else { return "a frame of \(chunk.count) bytes passed a \(Backup.chunkBytes)-byte limit" }
        }
        let limit = Block.maxContentBytes(frameBytes: bytes.count)
        guard let content = try? LZ4.decompressFrame(bytes, limit: limit) else { return nil }
        guard content.count <= limit, content.count <= bytes.count * LZ4.maxExpansion else {
            return "\(bytes.count) bytes of frame gave \(content.count) bytes of content (limit \(limit))"
        }
        guard let again = try? LZ4.decompressFrame(try LZ4.compressFrame(content), limit: limit), again == content else {
            return "the content does not survive compression again"
        }
        return blockContent(content)
    }

    /// The indexes' runs. The input as a run of the block index (`BlockIndex`), keyed by the
    /// block it begins with: what it accepts codes again to the same blocks. Then as a chunk of
    /// the event id index (`EventIDIndex`): its first byte is the length of its key, then the
    /// key, then the chunk; what it accepts codes again (cut at `chunkBytes`) to the same ids and
    /// numbers, and each id is found with its number.
    public static func indexRun(_ bytes: [UInt8]) -> String? {
        var r = BinaryReader(bytes)
        if (try? r.varint()) != nil, let first = try? r.varint(), first <= UInt64(Int64.max),
           let blocks = try? BlockIndex.decode(bytes, account: 1, first: Int64(first)) {
            var again: [Int64] = []
            for (key, run) in BlockIndex.encode(blocks) {
                guard run.count <= BlockIndex.runBytes else { return "a run of \(run.count) bytes was written" }
                guard let decoded = try? BlockIndex.decode(run, account: 1, first: key) else { return "a run written again does not decode" }
                again += decoded
            }
            guard again == blocks else { return "the blocks do not survive coding again" }
        }
        return idChunk(bytes)
    }

    private static func idChunk(_ bytes: [UInt8]) -> String? {
        guard let n = bytes.first.map(Int.init), bytes.count > n else { return nil }
        let key = String(decoding: bytes[1..<(n + 1)], as: UTF8.self)
        guard let run = try? EventIDIndex.decode(Array(bytes[(n + 1)...]), first: key) else { return nil }
        var chunks: [(first: String, bytes: [UInt8])] = []
        var out = EventIDIndex.RunWriter { chunks.append(($0, $1)) }
        for i in 0..<run.count { try! out.add(run.id(i), seq: run.seqs[i]) }
        try! out.cut()
        var ids: [ArraySlice<UInt8>] = [], seqs: [Int64] = []
        for chunk in chunks {
            guard chunk.bytes.count <= EventIDIndex.chunkBytes else { return "a chunk of \(chunk.bytes.count) bytes was written" }
            guard let again = try? EventIDIndex.decode(chunk.bytes, first: chunk.first) else { return "a chunk written again does not decode" }
            for i in 0..<again.count { ids.append(again.id(i)) }
            seqs += again.seqs
        }
        guard seqs == run.seqs, ids.elementsEqual((0..<run.count).map(run.id)) else { return "the ids do not survive coding again" }
        for i in 0..<run.count where run.seq(of: String(decoding: run.id(i), as: UTF8.self)) != run.seqs[i] {
            return "id \(i + 1) of the chunk is not found"
        }
        return nil
    }

    /// A backup's content stream (the records inside its chunks, once authenticated and
    /// decompressed), cut into pieces of 61 bytes so that records span pieces as they span
    /// chunks; loaded into an in-memory journal, its indexes rebuilt, and every event read back
    /// as a restored journal is read. The same bytes are parsed as a backup's header too.
    public static func backupStream(_ bytes: [UInt8]) -> String? {
        _ = try? Backup.parseHeader(Data(bytes), path: "fuzz")
        return scratch.withLock { scratch in
            do {
                // One in-memory journal for every input, emptied first (making one per input
                // was most of an input's cost).
                if scratch == nil {
                    let db = try SQLiteDatabase(path: ":memory:")
                    try db.transaction { try Journal.createSchema(db) }
                    scratch = db
                }
                return try backupStream(bytes, into: scratch!)
            } catch {
                scratch = nil
                return nil
            }
        }
    }

    private static let scratch = Mutex<SQLiteDatabase?>(nil)

    private static func backupStream(_ bytes: [UInt8], into db: SQLiteDatabase) throws -> String? {
        try db.transaction {
            // Every table of the schema, whatever it holds now.
            let tables = try db.statement("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            var names: [String] = []
            while try tables.step() { names.append(tables.text(0) ?? "") }
            tables.reset()
            for name in names { try db.execute("DELETE FROM \"\(name)\"") }
        }
        do {
            var loader = Backup.Loader(db: db)
            var pending: [UInt8] = []
            let starts = Array(stride(from: 0, to: max(bytes.count, 1), by: 61))
            for (k, start) in starts.enumerated() {
                pending += bytes[start..<min(start + 61, bytes.count)]
                let last = k == starts.count - 1
                let ended = try loader.load(&pending, last: last) { JournalError(.corrupt, "piece \(k + 1): \($0)") }
                if ended != last { return nil }  // refused by the restore's own check
            }
            try loader.rebuildIndexes()
            let reader = JournalReader(store: SQLiteJournalStore(db), lookupKey: { _, _ in .none })
            // The id index made by the restore (merged into runs) holds exactly the events' ids.
            let key: (UInt64, UInt64) = (1, 2)
            var tally = PairTally(key: key)
            var ids: [(String, Int64)] = []
            try reader.scanGroups { group in
                for e in group {
                    if let problem = check(e) { throw Violation(problem) }
                    if let id = e.header.id {
                        tally.add(id, seq: e.header.seq)
                        ids.append((id, e.header.seq))
                    }
                }
            }
            let index = EventIDIndex(store: SQLiteJournalStore(db))
            guard try index.tally(key: key) == tally else { return "the restored id index does not hold the events' ids" }
            let found = try index.seqs(of: ids.map(\.0))
            for (id, seq) in ids where found[ExactID(id)] != seq { return "the restored id index does not find event \(seq)'s id" }
        } catch let v as Violation {
            return v.problem
        } catch {
            return nil
        }
        return nil
    }

    private struct Violation: Error {
        let problem: String
        init(_ problem: String) { self.problem = problem }
    }

    /// What must hold of a decoded block: it encodes again (the encoder's preconditions hold for
    /// everything the decoder accepts) to bytes that decode to the same block, and each event
    /// chains and prints as the reader and the export do.
    static func check(_ block: Block) -> String? {
        guard !block.events.isEmpty, block.lastSeq - block.firstSeq == Int64(block.events.count - 1) else {
            return "block of \(block.events.count) events spans \(block.firstSeq)–\(block.lastSeq)"
        }
        guard let again = try? Block.decode(block.encode(), where: "again"), again == block else { return "the block does not round-trip" }
        for e in block.events {
            if let problem = check(e) { return problem }
        }
        return nil
    }

    /// What must hold of a stored event, wherever it was read: its digest and chain link can be
    /// computed and its time printed.
    static func check(_ e: SealedEvent) -> String? {
        guard e.digest.count == 32 else { return "event \(e.header.seq) has a digest of \(e.digest.count) bytes" }
        let link = Chain.link(previous: [UInt8](repeating: 0, count: 32), header: e.header, digest: e.digest)
        guard link.count == Chain.linkBytes else { return "event \(e.header.seq) chains to \(link.count) bytes" }
        guard e.header.at.rfc3339.utf8.count >= 20 else { return "event \(e.header.seq) prints its time as \(e.header.at.rfc3339)" }
        return nil
    }
}
