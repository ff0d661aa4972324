import CLZ4
import Crypto
import Foundation
import LetheEvents
import LetheViews
@testable import LetheJournal
import Testing

/// Crafted files and rows: every decoder that reads bytes off the disk or out of a backup throws
/// an error naming the block, event, chunk or row, and never traps, hangs or allocates what the
/// bytes merely declare. Each test here failed (or crashed the test process) before its fix.
@Suite struct CorruptInputTests {
    /// A block's content written column by column with any values, wrong ones included (the
    /// layout documented on `Block`).
    struct RawBlock {
        var firstSeq: UInt64 = 1
        var accounts = ["acc_1"], types = ["PageViewed"]
        var sessions: [(UInt64, UInt64)] = [(1, 2)]
        var accountIndex: [UInt64], typeIndex: [UInt64], versions: [UInt64]
        var atDeltas: [Int64], fractionDigits: [UInt8], sessionIndex: [UInt64], counterDeltas: [Int64]
        var ids: [String], states: [UInt8], kinds: [UInt8], numbers: [UInt64], indices: [UInt64]
        var payloads: [[UInt8]], digests: [[UInt8]] = []
        var links: [UInt8] = [UInt8](repeating: 7, count: 64)

        init(count: Int) {
            accountIndex = Array(repeating: 0, count: count)
            typeIndex = accountIndex
            sessionIndex = accountIndex
            versions = (1...UInt64(count)).map { $0 }
            atDeltas = [1_780_000_000_000_000_000] + Array(repeating: 1_000_000_000, count: count - 1)
            fractionDigits = Array(repeating: 0, count: count)
            counterDeltas = Array(repeating: 1, count: count)
            ids = Array(repeating: "", count: count)
            states = fractionDigits
            kinds = fractionDigits
            numbers = accountIndex
            indices = accountIndex
            payloads = Array(repeating: [UInt8](repeating: 0xC5, count: 17), count: count)
        }

        var bytes: [UInt8] {
            var w = BinaryWriter()
            w.raw(Block.magic)
            w.u8(Block.wholeIDsFormat)  // (format 3, still read: ids written whole)
            w.u64(firstSeq)
            w.varint(versions.count)
            w.varint(accounts.count)
            for a in accounts { w.string(a) }
            w.varint(types.count)
            for t in types { w.string(t) }
            w.varint(sessions.count)
            for s in sessions { w.u64(s.0); w.u64(s.1) }
            for v in accountIndex { w.varint(v) }
            for v in typeIndex { w.varint(v) }
            for v in versions { w.varint(v) }
            for v in atDeltas { w.zigzag(v) }
            for v in fractionDigits { w.u8(v) }
            for v in sessionIndex { w.varint(v) }
            for v in counterDeltas { w.zigzag(v) }
            for v in ids { w.string(v) }
            for v in states { w.u8(v) }
            for v in kinds { w.u8(v) }
            for v in numbers { w.varint(v) }
            for v in indices { w.varint(v) }
            for p in payloads { w.varint(p.count) }
            for p in payloads { w.raw(p) }
            for d in digests { w.raw(d) }
            w.raw(links)
            return w.bytes
        }
    }


    /// Decodes `content` as the frame of block 7 holding events `first`–`last`; an account's read
    /// of it (`only`, what `events(account:)` does) must refuse what the whole decode refuses, in
    /// the same words (but for the UTF-8 of names and ids it does not make into strings).
    func decode(_ content: [UInt8], first: Int64 = 1, last: Int64) throws {
        let frame = try LZ4.compressFrame(content)
        let whole = corruption { _ = try JournalReader.decodeFrame(frame, id: 7, first: first, last: last) }
        let account = corruption { _ = try JournalReader.decodeFrame(frame, id: 7, first: first, last: last, only: "acc_1") }
        #expect(account == whole || whole?.contains("UTF-8") == true, "an account's read: \(account ?? "no error"); the whole block's: \(whole ?? "no error")")
        _ = try JournalReader.decodeFrame(frame, id: 7, first: first, last: last)
    }

    @Test func theRawBlockHelperWritesWhatTheDecoderReads() throws {
        let block = try Block.decode(RawBlock(count: 3).bytes, where: "test")
        #expect(block.events.map(\.header.seq) == [1, 2, 3])
        #expect(block.events.map(\.nonce.counter) == [1, 2, 3])
    }

    // MARK: Blocks

    @Test func aBlockWhoseCounterDeltasOverflowIsNamed() throws {
        var raw = RawBlock(count: 2)
        raw.counterDeltas = [.max, .max]
        let message = corruption { try decode(raw.bytes, last: 2) }
        #expect(message?.hasPrefix("block 7 (events 1–2): ") == true, "\(message ?? "no error")")
        raw.counterDeltas = [5, -6]
        #expect(corruption { try decode(raw.bytes, last: 2) }?.hasPrefix("block 7 (events 1–2): ") == true)
    }

    /// Times are stored as wrapping deltas, and any two times have one: even the extremes, which
    /// the Swift API accepts, come back exactly (wrapping here is the format, not an overflow).
    @Test func timesAtTheExtremesRoundTripThroughTheirWrappingDeltas() throws {
        var raw = RawBlock(count: 3)
        raw.atDeltas = [.min, -1, .min &+ 1]
        let block = try Block.decode(raw.bytes, where: "test")
        #expect(block.events.map(\.header.at.nanoseconds) == [.min, .max, 0])
        #expect(try Block.decode(block.encode(), where: "test") == block)
    }

    @Test func fractionDigitsOutOfRangeAreNamedAndNeverTrapWhenPrinted() throws {
        var raw = RawBlock(count: 2)
        raw.fractionDigits = [3, 100]
        let message = corruption { try decode(raw.bytes, last: 2) }
        #expect(message == "block 7 (events 1–2): event 2 has 100 fractional digits (at most 9)", "\(message ?? "no error")")
        // A time made by a caller with such digits prints in its shortest form (export traps no more).
        #expect(Timestamp(nanoseconds: 1_500_000_000, fractionDigits: 100).rfc3339 == "1970-01-01T00:00:01.5Z")
        #expect(Timestamp(nanoseconds: 0, fractionDigits: -7).rfc3339 == "1970-01-01T00:00:00Z")
    }

    @Test func aBlockWhoseFirstSequenceWouldOverflowIsNamed() throws {
        var raw = RawBlock(count: 3)
        raw.firstSeq = UInt64(Int64.max) - 1
        let message = corruption { try decode(raw.bytes, first: .max - 1, last: .max) }
        #expect(message?.hasPrefix("block 7 (events \(Int64.max - 1)–\(Int64.max)): ") == true, "\(message ?? "no error")")
    }

    @Test func stringsLongerThanTheJournalAcceptsAreRefused() throws {
        var raw = RawBlock(count: 1)
        raw.accounts = [String(repeating: "a", count: Journal.maxAccountBytes + 1)]
        #expect(corruption { try decode(raw.bytes, last: 1) }?.hasPrefix("block 7 (events 1–1): ") == true)
        raw = RawBlock(count: 1)
        raw.ids = [String(repeating: "i", count: Journal.maxIDBytes + 1)]
        #expect(corruption { try decode(raw.bytes, last: 1) }?.hasPrefix("block 7 (events 1–1): ") == true)
    }

    /// A record's key index of 2^64 - 1 reached the erasure plan's `newest + 1`.
    @Test func keyIndicesOutOfRangeAreNamed() throws {
        var raw = RawBlock(count: 2)
        raw.kinds = [4, 4]
        raw.numbers = [1, 1]
        raw.indices = [0, .max]
        let message = corruption { try decode(raw.bytes, last: 2) }
        #expect(message == "block 7 (events 1–2): event 2 has a key number or index out of range", "\(message ?? "no error")")
    }

    /// An LZ4 frame that declares `size` bytes of content and holds no block: liblz4's own
    /// header (with its checksum), then the end mark.
    func frameDeclaring(_ size: UInt64) throws -> [UInt8] {
        var ctx: OpaquePointer?
        _ = LZ4F_createCompressionContext(&ctx, UInt32(LZ4F_VERSION))
        defer { LZ4F_freeCompressionContext(ctx) }
        var prefs = LZ4F_preferences_t()
        prefs.frameInfo.contentSize = size
        var out = [UInt8](repeating: 0, count: 64)
        let head = out.withUnsafeMutableBytes { LZ4F_compressBegin(ctx, $0.baseAddress, 64, &prefs) }
        try #require(LZ4F_isError(head) == 0)
        return Array(out[..<head]) + [0, 0, 0, 0]
    }

    @Test func anLZ4FrameDeclaringThreeGiBIsRefusedBeforeAllocating() throws {
        let frame = try frameDeclaring(3 << 30)
        #expect(frame.count == 19)
        let clock = ContinuousClock()
        var message: String?
        let elapsed = clock.measure {
            message = corruption { _ = try JournalReader.decodeFrame(frame, id: 7, first: 1, last: 2) }
        }
        #expect(message?.hasPrefix("block 7 (events 1–2): LZ4 frame declares 3221225472 bytes") == true, "\(message ?? "no error")")
        #expect(elapsed < .milliseconds(500), "took \(elapsed): allocated what the frame declared")
        // The same frame as a backup chunk.
        #expect(throws: LZ4.Failure.self) { try LZ4.decompressFrame(frame, limit: Backup.chunkBytes) }
    }

    // MARK: The unsealed tail

    /// A journal of 2 unsealed events (blocks of 4).
    func tailJournal(_ dir: TempDir) throws -> String {
        let j = try openJournal(dir, blockEvents: 4)
        for i in 0..<2 { try j.append(event("acc_1", at: "2026-01-01T00:00:0\(i)Z", id: "e\(i)")) }
        return j.path
    }

    func tailRows(_ path: String) -> String? {
        corruption {
            let db = try SQLiteDatabase(path: path, readOnly: true)
            defer { db.close() }
            _ = try SQLiteJournalStore(db).tail()
        }
    }

    @Test func aTailRowWithAFiveByteDigestIsNamed() throws {
        let dir = try TempDir()
        let path = try tailJournal(dir)
        let db = try SQLiteDatabase(path: path)
        try db.execute("UPDATE tail SET payload = NULL, digest = x'0102030405' WHERE seq = 1")
        db.close()
        #expect(tailRows(path) == "unsealed event 1 has a damaged digest (5 bytes)")
        // The writer, which seals the tail into a block, refuses it too (it used to trap in Block.encode).
        let message = corruption {
            let j = try openJournal(dir, blockEvents: 4)
            for i in 2..<6 { try j.append(event("acc_1", at: "2026-01-01T00:00:0\(i)Z", id: "e\(i)")) }
        }
        #expect(message?.contains("unsealed event 1 has a damaged digest") == true, "\(message ?? "no error")")
    }

    @Test func tailRowsOutOfRangeAreNamed() throws {
        let cases: [(String, String)] = [
            ("UPDATE tail SET link = x'00' WHERE seq = 2", "unsealed event 2 has a damaged link (1 bytes)"),
            ("UPDATE tail SET at_digits = 300 WHERE seq = 2", "unsealed event 2 has 300 fractional digits (at most 9)"),
            ("UPDATE tail SET version = -1 WHERE seq = 2", "unsealed event 2 has version -1"),
            ("UPDATE tail SET key_index = -1 WHERE seq = 2", "unsealed event 2 has a key number or index out of range"),
            ("UPDATE tail SET seq = 5 WHERE seq = 2", "unsealed event 5: expected event 2 (events removed or reordered)"),
            ("UPDATE tail SET account = x'ff' WHERE seq = 1", "unsealed event 1 has a damaged account"),
            ("UPDATE tail SET payload = zeroblob(\(Journal.maxPayloadBytes + 65)) WHERE seq = 1",
             "unsealed event 1 has a sealed payload of \(Journal.maxPayloadBytes + 65) bytes (at most \(Sealing.maxSealedBytes))"),
        ]
        for (sql, expected) in cases {
            let dir = try TempDir()
            let path = try tailJournal(dir)
            let db = try SQLiteDatabase(path: path)
            try db.execute(sql)
            db.close()
            #expect(tailRows(path) == expected, "\(sql)")
        }
    }

    /// The shortest form's digit count is stored as -1 by the writer and as 255 by restores
    /// made before this check: both read back as -1.
    @Test func bothStoredFormsOfTheShortestTimeAreRead() throws {
        let dir = try TempDir()
        let path = try tailJournal(dir)
        let db = try SQLiteDatabase(path: path)
        try db.execute("UPDATE tail SET at_digits = 255 WHERE seq = 1; UPDATE tail SET at_digits = -1 WHERE seq = 2")
        let (tail, _) = try SQLiteJournalStore(db).tail()
        db.close()
        #expect(tail.map(\.header.at.fractionDigits) == [-1, -1])
    }

    /// Row ids and sequence numbers the writer counts on from when it opens a journal.
    @Test func rowsAtTheEndOfTheRangeAreNamedWhenTheWriterOpens() throws {
        let cases: [(String, String)] = [
            ("UPDATE blocks SET id = 9223372036854775807 WHERE id = 2", "block ids"),
            ("UPDATE meta SET value = 9223372036854775807 WHERE key = 'account_ids'", "account ids"),
            ("DELETE FROM meta WHERE key = 'account_ids'", "the journal's meta has no account_ids"),
            // (Not the newest block, which the writer decodes: the largest last_seq is all it reads of this one.)
            ("UPDATE blocks SET last_seq = 9223372036854775807 WHERE id = 1", "does not match its stored events"),
        ]
        for (sql, expected) in cases {
            let dir = try TempDir()
            do {
                let j = try openJournal(dir, blockEvents: 4)
                for i in 0..<10 { try j.append(event("acc_1", at: "2026-01-01T00:00:1\(i)Z")) }
            }
            let db = try SQLiteDatabase(path: dir.path("j.lethe"))
            try db.execute(sql)
            db.close()
            let message = corruption { _ = try openJournal(dir, blockEvents: 4) }
            #expect(message?.contains(expected) == true, "\(sql): \(message ?? "no error")")
        }
    }

    // MARK: Account rows

    @Test func chainMarksOutOfRangeAreRefused() throws {
        let slots: (String) -> UInt64? = { $0 == "page-views" ? 2 : nil }
        // The form of formats 4 and 5 (by category) and this one (by slot).
        var w = BinaryWriter()
        w.varint(1)
        w.string("page-views")
        w.varint(UInt64.max)
        #expect(throws: JournalError.self) { try ChainMarks.decode(w.bytes, account: "acc_1", slot: slots) }
        #expect(throws: JournalError.self) { try ChainMarks.decode([0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], account: "acc_1", slot: slots) }
        let message = corruption { _ = try ChainMarks.decode([5, 1], account: "acc_1", slot: slots) }
        #expect(message == "account acc_1: damaged record chain marks (content is truncated)", "\(message ?? "no error")")
        let twice = corruption { _ = try ChainMarks.decode([0, 2, 1, 7, 1, 9], account: "acc_1", slot: slots) }
        #expect(twice == "account acc_1: damaged record chain marks (chain 1 twice)", "\(twice ?? "no error")")
        let trailing = corruption { _ = try ChainMarks.decode([0, 1, 1, 7, 0], account: "acc_1", slot: slots) }
        #expect(trailing == "account acc_1: damaged record chain marks (1 unexpected bytes at the end)", "\(trailing ?? "no error")")
    }

    /// Marks are kept by chain slot (two bytes a chain, the slot and the index); those of
    /// formats 4 and 5, by category name, are read through the keyring, and a category the
    /// keyring no longer has a chain for is dropped.
    @Test func chainMarksByCategoryAreReadBySlot() throws {
        var old = BinaryWriter()
        old.varint(2)
        old.string("access-log")
        old.varint(300)
        old.string("gone")
        old.varint(4)
        let marks = try ChainMarks.decode(old.bytes, account: "acc_1") { $0 == "access-log" ? 3 : nil }
        #expect(marks.sorted.map { [$0.0, $0.1] } == [[3, 300]])
        let stored = try #require(marks.encode())
        #expect(stored == [0, 1, 3, 0xAC, 0x02])
        #expect(try ChainMarks.decode(stored, account: "acc_1") { _ in Issue.record("a mark by slot needs no keyring"); return nil } == marks)
        var more = marks
        for slot in 1...6 as ClosedRange<UInt64> { more[slot] = slot * 10 }
        more[3] = 301
        #expect(more.sorted.map { [$0.0, $0.1] } == [[1, 10], [2, 20], [3, 301], [4, 40], [5, 50], [6, 60]])
        #expect(try ChainMarks.decode(more.encode()!, account: "acc_1") { _ in nil } == more)
        #expect(ChainMarks().encode() == nil)
    }

    // MARK: Times

    @Test func timeArithmeticSaturatesInsteadOfTrapping() {
        let late = Timestamp(nanoseconds: .max - 5)
        #expect(late.adding(seconds: 86_400).nanoseconds == .max)
        #expect(Timestamp(nanoseconds: .min + 5).adding(seconds: -86_400).nanoseconds == .min)
        #expect(Timestamp(nanoseconds: 0).adding(seconds: .max).nanoseconds == .max)
        #expect(Timestamp(nanoseconds: 7).adding(seconds: 2).nanoseconds == 2_000_000_007)
        // The extremes print (export of a time read off the disk).
        #expect(Timestamp(nanoseconds: .min).rfc3339 == "1677-09-21T00:12:43.145224192Z")
        #expect(Timestamp(nanoseconds: .max).rfc3339 == "2262-04-11T23:47:16.854775807Z")
    }

    // MARK: Backups

    /// A backup's content stream: a block record whose frame declares `length` bytes.
    func blockRecord(frameLength: UInt64) -> [UInt8] {
        var w = BinaryWriter()
        w.u8(2)
        w.zigzag(1)
        w.zigzag(1)
        w.zigzag(4)
        w.varint(frameLength)
        w.raw([1, 2, 3])
        return w.bytes
    }

    func load(_ pieces: [[UInt8]]) -> String? {
        corruption {
            let db = try SQLiteDatabase(path: ":memory:")
            defer { db.close() }
            try db.transaction { try Journal.createSchema(db) }
            var loader = Backup.Loader(db: db)
            var pending: [UInt8] = []
            for (k, piece) in pieces.enumerated() {
                pending += piece
                _ = try loader.load(&pending, last: k == pieces.count - 1) { JournalError(.corrupt, "chunk \(k + 1): \($0)") }
            }
        }
    }

    @Test func aBackupRecordLongerThanAnyBlockIsRefusedAtOnce() {
        // 4 GiB: more than any stored frame; refused in the first chunk, not waited for.
        let message = load([blockRecord(frameLength: 4 << 30), [0]])
        #expect(message == "chunk 1: a block frame of 4294967296 bytes (at most \(Block.maxFrameBytes))", "\(message ?? "no error")")
    }

    @Test func backupRecordsOutOfRangeAreNamed() {
        var w = BinaryWriter()
        w.u8(9)
        #expect(load([w.bytes]) == "chunk 1: unknown record 9")
        w = BinaryWriter()
        w.u8(1)
        w.string(String(repeating: "k", count: 300))
        #expect(load([w.bytes])?.hasPrefix("chunk 1: ") == true)
        // Two meta rows of one key: named, not an SQLite constraint error.
        w = BinaryWriter()
        for _ in 0..<2 {
            w.u8(1)
            w.string("format")
            w.u8(0)
            w.zigzag(3)
        }
        w.u8(0)
        let message = load([w.bytes])
        #expect(message?.hasPrefix("chunk 1: a record does not fit the journal") == true, "\(message ?? "no error")")
    }

    @Test func aSealedBackupChunkWithACraftedRecordLengthIsRefused() throws {
        let dir = try TempDir()
        let j = try openJournal(dir)
        try j.append(event("acc_1", at: "2026-01-01T00:00:00Z"))
        let file = dir.path("b.backup")
        try Backup.create(j, to: file, now: ts("2026-06-01T00:00:00Z"))
        // Keep the header, replace the chunks with one sealed under the journal's own backup key
        // (what a holder of the key store and master key could make) holding a crafted record.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        let headerEnd = try #require(bytes.indices.first { bytes[$0] == 0x0A && bytes[$0 - 1] == 0x0A && $0 > 0 }) + 1
        let header = Array(bytes[..<headerEnd])
        let idLine = String(decoding: header, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("backup: ") }
        let id = try #require(idLine.flatMap { Hex.decode($0.dropFirst(8)) })
        let box = try AES.GCM.seal(
            try LZ4.compressFrame(blockRecord(frameLength: 4 << 30)), using: j.backupKey,
            nonce: try Backup.nonce(id: id, index: 0), authenticating: Backup.aad(header: header, index: 0, last: false))
        var w = BinaryWriter()
        w.raw(header)
        w.u32(UInt32(box.ciphertext.count + 16))
        w.raw(Array(box.ciphertext))
        w.raw(Array(box.tag))
        try Data(w.bytes).write(to: URL(fileURLWithPath: file))
        let message = corruption { try Backup.restore(file, to: dir.path("r.lethe"), keysPath: j.keysPath, master: testMaster) }
        #expect(message?.contains("at chunk 1 ") == true && message?.hasSuffix("a block frame of 4294967296 bytes (at most \(Block.maxFrameBytes))") == true,
                "\(message ?? "no error")")
    }

    @Test func aBackupChunkLengthOutOfRangeIsNamed() throws {
        let dir = try TempDir()
        let j = try openJournal(dir)
        try j.append(event("acc_1", at: "2026-01-01T00:00:00Z"))
        let file = dir.path("b.backup")
        try Backup.create(j, to: file, now: ts("2026-06-01T00:00:00Z"))
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        let headerEnd = try #require(bytes.indices.first { $0 > 0 && bytes[$0] == 0x0A && bytes[$0 - 1] == 0x0A }) + 1
        for k in 0..<4 { bytes[headerEnd + k] = 0xFF }
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        let message = corruption { try Backup.restore(file, to: dir.path("r.lethe"), keysPath: j.keysPath, master: testMaster) }
        #expect(message?.contains("at chunk 1 (byte \(headerEnd)): a chunk length is out of range") == true, "\(message ?? "no error")")
    }

    // MARK: Payloads

    @Test func aPayloadHoldingANonFiniteNumberIsRefused() {
        for bits in [Double.nan.bitPattern, Double.infinity.bitPattern] {
            var w = BinaryWriter()
            w.u8(PayloadCodec.format)
            w.varint(1)
            w.u8(7)
            w.varint(1)
            w.varint(0)
            w.string("x")
            w.u8(4)
            w.u64(bits)
            // (Exported, it printed as `nan` or `inf`: not JSON, refused by the import.)
            #expect(throws: PayloadCodec.DecodingError.self) { try PayloadCodec.standard.decode(type: "NoticeSent", payload: w.bytes) }
        }
    }

    // MARK: Ids coded against the previous one (block format 4)

    /// A block of the given ids (nil: none), one event each, of the given accounts in turn.
    func block(ids: [String?], accounts: [String] = ["acc_1"], times: [Int64]? = nil) -> Block {
        let events = ids.enumerated().map { k, id in
            SealedEvent(
                header: EventHeader(seq: Int64(k + 1), version: 1, account: accounts[k % accounts.count], type: "PageViewed",
                                    at: times.map { Timestamp(nanoseconds: $0[k]) } ?? Timestamp(seconds: 1_780_000_000), id: id),
                nonce: NonceID(session: Session(high: 1, low: 2), counter: UInt32(k)), key: KeyRef(.account), body: .sealed([UInt8](repeating: 7, count: 20)))
        }
        return Block(events: events, previousLink: [UInt8](repeating: 0, count: 32), lastLink: [UInt8](repeating: 1, count: 32))
    }

    /// An account's read decodes only its own events from a block: exactly the whole decode's
    /// events of that account, purged ones with their digests, and none for an account the block
    /// does not hold, on random blocks of both current and older formats.
    @Test(arguments: 1...20)
    func anAccountsDecodeIsTheWholeDecodeFiltered(seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        let accounts = (0..<Int(rng.next() % 12 + 1)).map { "acc_\($0 * 7 % 11)_\(rng.next() % 3)" }
        let count = Int(rng.next() % 300 + 1)
        var original = block(ids: (0..<count).map { k in rng.next() % 4 == 0 ? nil : "e\(k)" }, accounts: accounts)
        for i in original.events.indices where rng.next() % 5 == 0 {
            original.events[i].body = SealedEvent.Body.purged(digest: (0..<32).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        }
        var raw = RawBlock(count: count)
        raw.accounts = accounts
        raw.accountIndex = (0..<count).map { _ in rng.next() % UInt64(accounts.count) }
        for content in [original.encode(), raw.bytes] {
            let whole = try Block.decode(content, where: "test")
            for account in Set(accounts).union(["absent", "acc_"]) {
                let only = try Block.decode(content, where: "test", only: account)
                #expect(only.events == whole.events.filter { $0.header.account == account })
                #expect((only.firstSeq, only.lastSeq) == (whole.firstSeq, whole.lastSeq))
                #expect((only.previousLink, only.lastLink) == (whole.previousLink, whole.lastLink))
            }
        }
    }

    @Test func idsCodedAgainstThePreviousOneComeBackWhole() throws {
        let ids: [String?] = [
            "evt_0000001", "evt_0000002", "evt_0000010", nil, "evt_0000011", "evt_0000011x", "evt",
            "9b2f1c3e-0d6a-4f43-8e2b-6b1f0c7d9a10", "9b2f1c3e-0d6a-4f43-8e2b-6b1f0c7d9a11",
            "é1", "é2", "è2",  // (the last shares one byte with the one before: half of `é`)
            String(repeating: "z", count: Journal.maxIDBytes), String(repeating: "z", count: Journal.maxIDBytes - 1) + "y", "a",
        ]
        let original = block(ids: ids)
        let content = original.encode()
        #expect(content[4] == Block.format)
        #expect(try Block.decode(content, where: "ids") == original)
        // Account names are kept in byte order, each coded against the one before: any order
        // and any UTF-8 come back, each event with its own account.
        let accounts = ["tenant.eu:8344", "acc_10", "acc_9", "acc_100", "cus-0002hj", "acc_1", "acc_1x", "zz", "a"]
        let mixed = block(ids: (0..<40).map { "e\($0)" }, accounts: accounts)
        #expect(try Block.decode(mixed.encode(), where: "accounts") == mixed)
        // Sequential ids take a few bytes each.
        let sequential = block(ids: (1...2048).map { String(format: "evt_%07d", $0) })
        let whole = (1...2048).reduce(0) { $0 + 1 + String(format: "evt_%07d", $1).utf8.count }
        let coded = block(ids: Array(repeating: nil, count: 2048)).encode().count
        #expect(sequential.encode().count - coded < whole / 3, "ids took \(sequential.encode().count - coded) bytes against \(whole) written whole")
    }

    /// Block format 5 keeps a time as its whole seconds (coded against the previous event's) and
    /// the nanoseconds within that second: every time comes back, the ends of the range and
    /// times before 1970 included.
    @Test func timesInSecondsAndNanosecondsComeBackWhole() throws {
        let times: [Int64] = [
            1_780_000_000_000_000_000, 1_780_000_060_000_000_000, 1_780_000_060_000_000_001, 1_779_999_999_999_999_999,
            0, -1, -999_999_999, -1_000_000_000, -1_000_000_001, .min, .max, .min + 1, .max - 1, 42,
        ]
        let original = block(ids: times.map { _ in nil }, times: times)
        let decoded = try Block.decode(original.encode(), where: "times")
        #expect(decoded.events.map(\.header.at.nanoseconds) == times)
        // Whole seconds a minute apart take two bytes each (the nanoseconds' zero and the delta).
        let minutes = (0..<2048).map { 1_780_000_000_000_000_000 + Int64($0) * 60_000_000_000 }
        let same = block(ids: Array(repeating: nil, count: 2048), times: Array(repeating: minutes[0], count: 2048)).encode().count
        #expect(block(ids: Array(repeating: nil, count: 2048), times: minutes).encode().count - same <= 2048)
        // A second whose nanoseconds overflow the range, or nanoseconds of a second or more, are named.
        let one = block(ids: [nil], times: [5_000_000_007]).encode()
        let column: [UInt8] = [10, 7]  // zigzag(5), then 7
        let at = try #require((0...(one.count - 2)).first { Array(one[$0..<$0 + 2]) == column })
        func with(_ replacement: [UInt8]) -> [UInt8] { Array(one[..<at]) + replacement + Array(one[(at + 2)...]) }
        #expect(try Block.decode(with(column), where: "b").events[0].header.at.nanoseconds == 5_000_000_007)
        var big = BinaryWriter()
        big.zigzag(Int64.max / 1_000_000_000 + 1)
        big.u8(0)
        #expect(corruption { _ = try Block.decode(with(big.bytes), where: "b") }?.contains("event 1 has a time out of range") == true)
        var nanos = BinaryWriter()
        nanos.zigzag(5)
        nanos.varint(UInt64(1_000_000_000))
        #expect(corruption { _ = try Block.decode(with(nanos.bytes), where: "b") }?.contains("event 1 has a time out of range") == true)
    }

    @Test func damagedIdCodingIsNamed() throws {
        // The id column of a block of two events, ids "ab" and "ac": (0, "ab"), (1, "c").
        let good = block(ids: ["ab", "ac"]).encode()
        let column: [UInt8] = [0, 2, 0x61, 0x62, 1, 1, 0x63]
        let at = try #require((0...(good.count - column.count)).first { Array(good[$0..<$0 + column.count]) == column })
        func with(_ replacement: [UInt8]) -> [UInt8] { Array(good[..<at]) + replacement + Array(good[(at + column.count)...]) }
        #expect(try Block.decode(with(column), where: "b") == block(ids: ["ab", "ac"]))
        // Sharing more than the previous id holds.
        #expect(corruption { _ = try Block.decode(with([0, 2, 0x61, 0x62, 3, 1, 0x63]), where: "b") }?.contains("above limit") == true)
        // A suffix that makes the id invalid UTF-8 (half a character).
        #expect(corruption { _ = try Block.decode(with([0, 2, 0x61, 0x62, 1, 1, 0xC3]), where: "b") }?.contains("the id of event 2 is not UTF-8") == true)
        // The first event shares nothing: it has no previous id.
        #expect(corruption { _ = try Block.decode(with([1, 2, 0x61, 0x62, 1, 1, 0x63]), where: "b") } != nil)
    }

    // MARK: Found by fuzzing

    /// Found by the `ndjson` fuzzer (783,992 executions into a 60 s run): masking keeps the last
    /// four digits of a card number, and those four with the digit groups after them can be
    /// another run that passes the Luhn check (`…036854/758901-007`: `9223372036854` is masked,
    /// then `6854 758901 007` is 13 digits that pass). The stored body still holds a card number
    /// as EVENTS.md defines one, and an export imported again masks it again, differently.
    @Test func maskingACardNumberLeavesNoCardNumberBehind() {
        let body = "Hello0team,\nCdatae same pue has th-9223372036854/758901-007T0rrrrrrrprob"
        let once = CardNumbers.masked(body)
        #expect(once == "Hello0team,\nCdatae same pue has th-*************/*****1-007T0rrrrrrrprob")
        #expect(once.flatMap(CardNumbers.masked) == nil)
        // Seeded random texts of digit groups: masking once leaves nothing to mask.
        var rng = SplitMix(seed: 10)
        var checked = 0
        for _ in 0..<20_000 {
            var text = ""
            for _ in 0..<(2 + Int(rng.next() % 6)) {
                for _ in 0..<(1 + Int(rng.next() % 9)) { text.append(Character(String(rng.next() % 10))) }
                text.append(["-", " ", "/", ".", "x"][Int(rng.next() % 5)])
            }
            guard let masked = CardNumbers.masked(text) else { continue }
            checked += 1
            #expect(CardNumbers.masked(masked) == nil, "\(text)")
        }
        #expect(checked > 500, "texts that held a card number: \(checked)")
    }

    // MARK: Read models

    @Test func aReadModelsRowWithANullWhereAValueMustBeIsNamed() throws {
        let dir = try TempDir()
        let j = try openJournal(dir)
        try j.append(NewEvent(.accountSignedUp, account: "acc_1", at: ts("2026-01-01T00:00:00Z"), data: ["name": "Ada", "email": "ada@example.com"]))
        try j.append(NewEvent(.itemCreated, account: "acc_1", at: ts("2026-01-01T00:00:01Z"), data: ["item": "i1", "kind": "site"]))
        let views = try ReadModels(journal: j)
        try views.catchUp()
        #expect(try views.account("acc_1")?.status == "active")
        // Someone edits the file with sqlite3: the NOT NULL constraints go with the table.
        let db = try SQLiteDatabase(path: views.path)
        try db.execute("""
            BEGIN;
            CREATE TABLE loose(account TEXT PRIMARY KEY, status TEXT, name BLOB, company BLOB, email BLOB,
                signed_up_at TEXT, cancelled_at TEXT, erasure_requested_at TEXT, purged_at TEXT) WITHOUT ROWID;
            INSERT INTO loose SELECT * FROM accounts;
            DROP TABLE accounts;
            ALTER TABLE loose RENAME TO accounts;
            UPDATE accounts SET status = NULL;
            CREATE TABLE loose_items(account TEXT, item TEXT, key_number INTEGER, kind BLOB, label BLOB, state TEXT,
                created_at TEXT, deleted_at TEXT, deleted_ns INTEGER, created_seq INTEGER, PRIMARY KEY(account, item)) WITHOUT ROWID;
            INSERT INTO loose_items SELECT * FROM items;
            DROP TABLE items;
            ALTER TABLE loose_items RENAME TO items;
            UPDATE items SET created_at = NULL;
            COMMIT;
            """)
        db.close()
        let message = corruption { _ = try views.account("acc_1") }
        #expect(message == "the read models \(views.path): table accounts, row acc_1: column status is NULL (edited or damaged; `lethe rebuild` makes it again)",
                "\(message ?? "no error")")
        let items = corruption { _ = try views.items(account: "acc_1") }
        #expect(items?.contains("table items, row acc_1: column created_at is NULL") == true, "\(items ?? "no error")")
    }
}
