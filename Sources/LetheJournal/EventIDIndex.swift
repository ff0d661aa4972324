import Foundation

/// The index of callers' event ids, for idempotent appends: which event, if any, carries an id.
///
/// It is kept in two tables, like the per-account block index. A new id goes to `event_ids`, a
/// row each (23 bytes for an id like `evt_0000001`). Once enough have gathered they move, in one
/// pass in byte order, to `event_id_runs`: the ids in byte order cut into chunks of at most
/// `chunkBytes`, keyed by their first id, each id coded against the one before it
/// (`PrefixCoding`) and its sequence number as the difference from the one before. Sequential ids
/// take about 3 bytes there. A merge rewrites only the chunks it adds ids to: for ids that grow
/// with time, the last one.
///
/// A chunk's layout: format (1 byte), count (varint), then per id: the number of bytes it shares
/// with the previous id and the length of the rest in one byte (`PrefixCoding`, packed), the
/// rest, the sequence number's difference from the previous one's (zig-zag varint; the first's
/// from 0). An id like `evt_0001235` after `evt_0001234` takes 3 bytes.
struct EventIDIndex {
    static let chunkFormat: UInt8 = 1
    /// A chunk's encoded size at most. With its key it stays under the 1,002 bytes a row of a
    /// 4 KiB page's index tree keeps in the page: no overflow pages, four chunks to a page.
    static let chunkBytes = 900
    /// When ids move into the runs (unless `Journal.Options.recentIDsLimit` says): eight per
    /// chunk, about an eighth of the ids held (a chunk holds 25 to 300), so that ids spread over
    /// the whole index (random ones) are rewritten a few times each, not once per merge.
    static let merging = MergePolicy(index: .eventIDs, perRun: 8)

    let store: any JournalStore

    static let schema = """
        CREATE TABLE IF NOT EXISTS event_ids(id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS event_id_runs(first_id TEXT PRIMARY KEY, entries BLOB NOT NULL) WITHOUT ROWID;
        """

    // MARK: Lookups

    /// The sequence numbers of those of `ids` that the journal holds.
    ///
    /// - Complexity: nothing per id above every id held; otherwise one lookup in `event_ids`,
    ///   then, for the ids not there, one seek and one decoded chunk per chunk they fall in.
    func seqs(of ids: [String]) throws -> [ExactID: Int64] {
        var found: [ExactID: Int64] = [:]
        guard !ids.isEmpty else { return found }
        let last = try store.lastIDChunk().map { try EventIDIndex.decode($0.entries, first: $0.first) }
        // The highest id held: ids above it (ids that grow with time, the usual case) are new,
        // without a lookup.
        var highest = try store.recentIDBounds()?.highest
        if let last, let top = last.count > 0 ? String(decoding: last.id(last.count - 1), as: UTF8.self) : nil {
            if highest.map({ utf8Precedes($0, top) }) ?? true { highest = top }
        }
        guard let highest else { return found }
        let candidates = Array(Set(ids.lazy.filter { !utf8Precedes(highest, $0) }.map(ExactID.init)).map(\.id))
        for (id, seq) in try store.recentIDs(matching: candidates) { found[ExactID(id)] = seq }
        guard let last, let lastFirst = last.first else { return found }
        // Ids at or above the last chunk's first id are looked up there without sorting them;
        // the others are sorted, so that each chunk is decoded once.
        var rest: [String] = []
        for id in candidates where found[ExactID(id)] == nil {
            if utf8Precedes(id, lastFirst) {
                rest.append(id)
            } else if let seq = last.seq(of: id) {
                found[ExactID(id)] = seq
            }
        }
        guard !rest.isEmpty else { return found }
        rest.sort(by: utf8Precedes)
        // The chunk the last id fell in, and where the next one begins (nil: none).
        var current: (run: Run, next: String?)?
        for id in rest {
            if let c = current, let first = c.run.first, !utf8Precedes(id, first), c.next.map({ utf8Precedes(id, $0) }) ?? true {
                if let seq = c.run.seq(of: id) { found[ExactID(id)] = seq }
                continue
            }
            guard let chunk = try store.idChunk(covering: id) else { continue }  // below every chunk
            let run = try EventIDIndex.decode(chunk.entries, first: chunk.first)
            current = (run, try store.idChunkKey(after: chunk.first))
            if let seq = run.seq(of: id) { found[ExactID(id)] = seq }
        }
        return found
    }

    // MARK: Writing

    /// A batch of at least this many ids may go straight into the runs (`add`): its rewrite of
    /// the last chunk (at most `chunkBytes`) is then small beside the rows it saves. A smaller
    /// one, such as a service's single appends, inserts its rows, a few bytes each.
    static let directBatch = 1_024

    /// Records new ids. A large batch of ids in strictly increasing byte order, all above every
    /// id held (ids that grow with time, as an import brings them), is added to the runs at once:
    /// the last chunk is written again with them, then new chunks follow. Any other batch becomes
    /// rows of `event_ids` (plain inserts: an id recorded twice would be a bug, and its error
    /// rolls the caller's transaction back), to be merged later.
    func add(_ entries: [(id: String, seq: Int64)]) throws {
        if entries.count >= EventIDIndex.directBatch, try appendToRuns(entries) { return }
        try store.addRecentIDs(entries)
    }

    /// Adds `entries` to the end of the runs when they are in order and above every id held;
    /// returns false, having written nothing, when they are not.
    private func appendToRuns(_ entries: [(id: String, seq: Int64)]) throws -> Bool {
        for i in entries.indices.dropFirst() where !utf8Precedes(entries[i - 1].id, entries[i].id) { return false }
        if let highest = try store.recentIDBounds()?.highest, !utf8Precedes(highest, entries[0].id) { return false }
        var out = RunWriter { [store] first, chunk in try store.insertIDChunk(IDChunk(first: first, entries: chunk)) }
        if let chunk = try store.lastIDChunk() {
            let run = try EventIDIndex.decode(chunk.entries, first: chunk.first)
            let above = run.id(run.count - 1).withUnsafeBufferPointer { last in
                var first = entries[0].id
                return first.withUTF8 { utf8Compare(last, $0) < 0 }
            }
            guard above else { return false }
            try store.deleteIDChunk(first: chunk.first)
            for i in 0..<run.count { try out.add(run.id(i), seq: run.seqs[i]) }
        }
        for (id, seq) in entries {
            var id = id
            try id.withUTF8 { try out.add($0, seq: seq) }
        }
        try out.cut()
        return true
    }

    // MARK: Merging

    /// Moves the ids of `event_ids` into the runs when `merging` says (`limit`: the journal's
    /// option; `force`: whenever there is any). Inside the caller's transaction.
    func mergeIfDue(limit: Int?, force: Bool = false) throws {
        if try EventIDIndex.merging.isDue(store, limit: limit, force: force) { try merge() }
    }

    /// Moves the recent ids into the runs when that rewrites no chunk but the last: when every
    /// one sorts at or above the last chunk's first id (ids that grow with time). The work is then
    /// proportional to the recent ids, not to the index. Returns whether it merged.
    @discardableResult
    func mergeIfAppending() throws -> Bool {
        guard let low = try store.recentIDBounds()?.lowest else { return false }
        if let first = try store.lastIDChunk()?.first, utf8Precedes(low, first) { return false }
        try merge()
        return true
    }

    /// One pass over `event_ids` in byte order. Each chunk that receives ids is read, merged
    /// with them as they come and written again as one or more chunks; the others are not
    /// touched. Memory: one chunk, whatever the number of ids.
    private func merge() throws {
        var out = RunWriter { [store] first, chunk in try store.insertIDChunk(IDChunk(first: first, entries: chunk)) }
        // The chunk being merged: its ids not written yet (from `pending`), and where the next
        // chunk begins (nil: none, this one takes every id above).
        var target: (run: Run, pending: Int, next: String?)?
        func finishTarget() throws {
            if let t = target { for i in t.pending..<t.run.count { try out.add(t.run.id(i), seq: t.run.seqs[i]) } }
            target = nil
        }
        var wroteAny = false
        try store.forEachRecentID { id, seq in
            let bytes = Array(id.utf8)
            if target == nil || target!.next.map({ !utf8Precedes(id, $0) }) ?? false {
                // The chunk this id falls in: the last one that begins at or below it, else the
                // first one (which then begins lower). Its old row goes; it is written anew.
                try finishTarget()
                if let chunk = try store.idChunk(covering: id) ?? store.firstIDChunk() {
                    let run = try EventIDIndex.decode(chunk.entries, first: chunk.first)
                    let next = try store.idChunkKey(after: chunk.first)
                    try store.deleteIDChunk(first: chunk.first)
                    try out.cut()
                    target = (run, 0, next)
                } else {
                    // No chunk at all: every id goes to new ones.
                    target = (Run(), 0, nil)
                }
            }
            // The target's own ids below this one go first.
            let sameAsPending = try bytes.withUnsafeBufferPointer { new -> Bool in
                while let t = target, t.pending < t.run.count {
                    let c = t.run.id(t.pending).withUnsafeBufferPointer { utf8Compare($0, new) }
                    if c > 0 { break }
                    if c == 0 { return true }
                    try out.add(t.run.id(t.pending), seq: t.run.seqs[t.pending])
                    target!.pending += 1
                }
                return false
            }
            if sameAsPending {
                throw JournalError(.corrupt, "event id index: event \(seq)'s id is also indexed as event \(target!.run.seqs[target!.pending]); run `lethe verify`")
            }
            try out.add(bytes[...], seq: seq)
            wroteAny = true
        }
        try finishTarget()
        try out.cut()
        if wroteAny { try store.clearRecentIDs() }
    }

    // MARK: The chunk format

    /// A decoded chunk: its ids' bytes one after another, where each ends, and their sequence numbers.
    struct Run {
        var bytes: [UInt8] = []
        var ends: [Int] = []
        var seqs: [Int64] = []
        var first: String?

        var count: Int { seqs.count }

        func id(_ i: Int) -> ArraySlice<UInt8> { bytes[(i == 0 ? 0 : ends[i - 1])..<ends[i]] }

        /// Binary search by bytes.
        func seq(of name: String) -> Int64? {
            var name = name
            return name.withUTF8 { target in
                var (low, high) = (0, count)
                while low < high {
                    let mid = (low + high) / 2
                    let c = id(mid).withUnsafeBufferPointer { utf8Compare($0, target) }
                    if c == 0 { return seqs[mid] }
                    if c < 0 { low = mid + 1 } else { high = mid }
                }
                return nil
            }
        }
    }

    /// Decodes a chunk and checks it: its first id is its key, its ids grow strictly in byte
    /// order, each sequence number is in range, nothing trails. Damage throws `.corrupt` naming
    /// the chunk by its first id.
    static func decode(_ blob: [UInt8], first: String) throws -> Run {
        func corrupt(_ why: String) -> JournalError { JournalError(.corrupt, "event id index: the chunk of ids from \(first.debugDescription) \(why)") }
        var r = BinaryReader(blob)
        var run = Run()
        run.first = first
        try decodingRun(corrupt) {
            guard try r.u8() == chunkFormat else { throw corrupt("has an unknown format") }
            let count = try r.count(limit: blob.count / 3)
            guard count > 0 else { throw corrupt("is empty") }
            run.bytes.reserveCapacity(blob.count)
            run.ends.reserveCapacity(count)
            run.seqs.reserveCapacity(count)
            var coding = PrefixCoding(packed: true)
            var seq: Int64 = 0
            for i in 0..<count {
                let start = run.bytes.count
                try coding.read(&r, limit: Journal.maxIDBytes)
                if i == 0 {
                    guard coding.previous.elementsEqual(first.utf8) else { throw corrupt("does not begin with its key") }
                } else {
                    let order = coding.previous.withUnsafeBufferPointer { new in
                        run.bytes.withUnsafeBufferPointer { utf8Compare(new, UnsafeBufferPointer(rebasing: $0[(i == 1 ? 0 : run.ends[i - 2])..<start])) }
                    }
                    guard order > 0 else { throw corrupt("is out of order at its id \(i + 1)") }
                }
                guard coding.previous.withUnsafeBufferPointer(isUTF8) else {
                    throw corrupt("has an id that is not UTF-8 at its id \(i + 1)")
                }
                run.bytes.append(contentsOf: coding.previous)
                run.ends.append(run.bytes.count)
                let (next, overflow) = seq.addingReportingOverflow(try r.zigzag())
                guard !overflow, next > 0 else { throw corrupt("has an event number out of range at its id \(i + 1)") }
                seq = next
                run.seqs.append(seq)
            }
            guard r.isAtEnd else { throw corrupt("has trailing bytes") }
        }
        return run
    }

    /// Cuts a stream of ids in byte order into chunks of at most `chunkBytes`, each handed to
    /// `emit` with its first id.
    struct RunWriter {
        let emit: (String, [UInt8]) throws -> Void
        private var body = BinaryWriter(capacity: EventIDIndex.chunkBytes)
        private var coding = PrefixCoding(packed: true)
        private var count = 0
        private var previousSeq: Int64 = 0
        private var first: [UInt8] = []

        init(emit: @escaping (String, [UInt8]) throws -> Void) { self.emit = emit }

        mutating func add(_ id: ArraySlice<UInt8>, seq: Int64) throws {
            try id.withUnsafeBufferPointer { try add($0, seq: seq) }
        }

        mutating func add(_ id: UnsafeBufferPointer<UInt8>, seq: Int64) throws {
            // (At most: the id whole, its two lengths and its number.)
            if count > 0, 1 + 3 + body.bytes.count + id.count + 4 + 10 > EventIDIndex.chunkBytes { try cut() }
            if count == 0 {
                first = Array(id)
                coding = PrefixCoding(packed: true)
                previousSeq = 0
            }
            coding.write(id, into: &body)
            body.zigzag(seq &- previousSeq)
            previousSeq = seq
            count += 1
        }

        /// Writes the chunk gathered so far, if any.
        mutating func cut() throws {
            guard count > 0 else { return }
            var chunk = BinaryWriter(capacity: body.bytes.count + 4)
            chunk.u8(EventIDIndex.chunkFormat)
            chunk.varint(count)
            chunk.raw(body.bytes)
            try emit(String(decoding: first, as: UTF8.self), chunk.bytes)
            body.bytes.removeAll(keepingCapacity: true)
            count = 0
        }
    }

    // MARK: Checking

    /// The index's pairs tallied, every chunk decoded and checked, and the chunks checked to be
    /// in order without overlap. (An id in both tables counts twice, so it cannot match.)
    func tally(key: (UInt64, UInt64)) throws -> PairTally {
        var tally = PairTally(key: key)
        try forEachEntry { id, seq in id.withUnsafeBytes { tally.add($0, seq: seq) } }
        return tally
    }

    /// Every entry of both tables, as its id's bytes and its event: the recent rows, then the
    /// chunks in order, each decoded and checked, and checked not to overlap the one before.
    func forEachEntry(_ body: (ArraySlice<UInt8>, Int64) throws -> Void) throws {
        try store.forEachRecentID { id, seq in try body(Array(id.utf8)[...], seq) }
        var lastOfPrevious: ArraySlice<UInt8>?
        try store.forEachIDChunk { chunk in
            let first = chunk.first
            let run = try EventIDIndex.decode(chunk.entries, first: first)
            let overlaps = lastOfPrevious.map { last in run.id(0).withUnsafeBufferPointer { a in last.withUnsafeBufferPointer { utf8Compare(a, $0) <= 0 } } }
            guard overlaps != true else {
                throw JournalError(.corrupt, "event id index: the chunk of ids from \(first.debugDescription) overlaps the one before it")
            }
            for i in 0..<run.count { try body(run.id(i), run.seqs[i]) }
            lastOfPrevious = run.id(run.count - 1)
        }
    }
}

/// An event id as a key compared and hashed by its UTF-8 bytes. Ids are the caller's bytes:
/// `"\u{E9}"` and `"e\u{301}"` are two ids, though Swift's `==` takes them for one string.
struct ExactID: Hashable {
    let id: String

    init(_ id: String) { self.id = id }

    static func == (a: ExactID, b: ExactID) -> Bool {
        var (x, y) = (a.id, b.id)
        return x.withUTF8 { p in y.withUTF8 { q in utf8Compare(p, q) == 0 } }
    }

    func hash(into hasher: inout Hasher) {
        var id = id
        id.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// An order-free digest of pairs (an event id and its event, an account and a block): how many,
/// and the sum of a keyed hash of each. The pairs an index holds and those the events say it must
/// hold are each summed in one pass, in whatever order they come. The key is drawn for each check,
/// so no set of pairs can be made beforehand to sum like another.
struct PairTally: Equatable {
    var count: Int64 = 0
    var sum: (UInt64, UInt64) = (0, 0)
    let key: (UInt64, UInt64)

    init(key: (UInt64, UInt64)) { self.key = key }

    mutating func add(_ id: String, seq: Int64) {
        var id = id
        id.withUTF8 { add(UnsafeRawBufferPointer($0), seq: seq) }
    }

    mutating func add(account: Int64, block: Int64) {
        withUnsafeBytes(of: account) { add($0, seq: block) }
    }

    mutating func add(_ id: UnsafeRawBufferPointer, seq: Int64) {
        var a = Hasher(), b = Hasher()
        a.combine(key.0)
        b.combine(key.1)
        a.combine(bytes: id)
        b.combine(bytes: id)
        a.combine(seq)
        b.combine(seq)
        sum.0 &+= UInt64(bitPattern: Int64(a.finalize()))
        sum.1 &+= UInt64(bitPattern: Int64(b.finalize()))
        count += 1
    }

    static func == (x: PairTally, y: PairTally) -> Bool { x.count == y.count && x.sum == y.sum }
}
