/// What the chain knows of an event: everything but its payload.
public struct EventHeader: Hashable, Sendable {
    /// Global position in the journal, from 1, without gaps.
    public var seq: Int64
    /// Position in the account's own history, from 1, without gaps.
    public var version: Int64
    public var account: String
    public var type: String
    public var at: Timestamp
    /// The caller's event id, if it gave one (idempotency key).
    public var id: String?

    public init(seq: Int64, version: Int64, account: String, type: String, at: Timestamp, id: String?) {
        self.seq = seq
        self.version = version
        self.account = account
        self.type = type
        self.at = at
        self.id = id
    }
}

/// An event as stored: its header, its nonce, the key it is sealed under, and its sealed payload
/// or, once purged, only the digest the chain needs.
package struct SealedEvent: Equatable, Sendable {
    package enum Body: Equatable, Sendable {
        case sealed([UInt8])
        case purged(digest: [UInt8])
    }

    package var header: EventHeader
    package var nonce: NonceID
    package var key: KeyRef
    package var body: Body

    package init(header: EventHeader, nonce: NonceID, key: KeyRef, body: Body) {
        self.header = header
        self.nonce = nonce
        self.key = key
        self.body = body
    }

    package var digest: [UInt8] {
        switch body {
        case .sealed(let bytes): return Sealing.digest(nonce: nonce, key: key, sealed: bytes)
        case .purged(let digest): return digest
        }
    }

    package var isPurged: Bool { if case .purged = body { true } else { false } }
}

/// A sealed block: consecutive events, stored column by column and compressed as one LZ4 frame.
///
/// Layout of the frame's content (all integers little-endian or LEB128 varints):
/// ```
/// "LTHB" format:u8=5 first_seq:u64 count:varint
/// accounts: n:varint, n × coded string, in byte order     types: n:varint, n × string
/// sessions: n:varint, n × 16 bytes
/// count × account index   count × type index   count × version
/// count × zigzag(s − previous s)   count × nanoseconds within the second (varint, < 10⁹)
///   where s is at's whole seconds (rounded down) and the first's previous s is 0
/// count × fraction digits of at:u8 (0–9, 255 = shortest)   count × session index
/// count × zigzag(counter − previous counter)
/// count × id: a coded string (empty = none)
/// A coded string is shared:varint, then a varint length and bytes: the previous string's first
/// `shared` bytes and these (the first string's previous is empty).
/// count × state:u8 (0 sealed, 1 purged)   count × key kind:u8 (0 account, 2 engine, 3 item, 4 records)
/// count × key number   count × key index
/// count × payload length   payload bytes, concatenated   32-byte digest per purged event
/// previous link (32)   last link (32)
/// ```
/// Strings are a varint length and UTF-8. Columns keep like with like, which LZ4 compresses well;
/// sealed payloads are ciphertext and stay as they are. Ids and the sorted account names are
/// coded against the one before them: sequential ids (`evt_0001234`, `evt_0001235`) take three
/// bytes or so, and times in whole seconds (most are) a byte or two. Format 4, still read, wrote
/// each time as one column: zigzag(at − previous at) in nanoseconds, five or six bytes apart by
/// a minute. Format 3, also read, wrote ids and account names whole, as strings, the accounts
/// in the order they first appear.
package struct Block: Equatable {
    package static let magic: [UInt8] = Array("LTHB".utf8)
    package static let format: UInt8 = 5
    /// The format before times were split into seconds and nanoseconds; still read.
    package static let nanosecondTimesFormat: UInt8 = 4
    /// The format before ids were coded against the previous one (and times split); still read.
    package static let wholeIDsFormat: UInt8 = 3
    /// The largest frame a journal can hold: SQLite's default limit on a blob (`SQLITE_MAX_LENGTH`),
    /// past which the writer could not have stored it.
    package static let maxFrameBytes = 1_000_000_000

    /// The most content bytes an event takes beside its payload or digest: its columns (three
    /// indices of at most 3 bytes, five varints of at most 10, three bytes, an id of at most
    /// `Journal.maxIDBytes` and its length) and the table entries it may add (an account, a type,
    /// a session): about 730 bytes, rounded up.
    static let maxEventOverheadBytes = 1024

    /// The largest content a stored frame of `frameBytes` can decompress to. Payloads are
    /// AES-GCM ciphertext and digests SHA-256 output, which LZ4 cannot shrink: they take at most
    /// the frame's own size in the content; the rest is at most `maxEventOverheadBytes` per
    /// event, and a header and the two links. A frame that declares more is damaged, and is
    /// refused before its declared size is allocated.
    package static func maxContentBytes(frameBytes: Int) -> Int {
        min(frameBytes, maxFrameBytes) + Journal.maxBlockEvents * maxEventOverheadBytes + 4096
    }

    /// The fewest content bytes an event takes: one per column.
    private static let minEventBytes = 13

    package var events: [SealedEvent]
    /// The chain link before the first event, and after the last.
    package var previousLink: [UInt8]
    package var lastLink: [UInt8]

    package var firstSeq: Int64 { events.first!.header.seq }
    package var lastSeq: Int64 { events.last!.header.seq }

    package func encode() -> [UInt8] {
        Block.encode(events[...], previousLink: previousLink, lastLink: lastLink)
    }

    /// The block of `events` (consecutive), without copying them into a `Block` first.
    ///
    /// Columns are read through indices: a `for e in events` loop would copy every event (its
    /// strings and buffers) once per column.
    package static func encode(_ events: ArraySlice<SealedEvent>, previousLink: [UInt8], lastLink: [UInt8]) -> [UInt8] {
        precondition(!events.isEmpty, "an empty block")
        precondition(previousLink.count == Chain.linkBytes && lastLink.count == Chain.linkBytes)
        let firstSeq = events[events.startIndex].header.seq
        for (i, k) in events.indices.enumerated() {
            precondition(events[k].header.seq == firstSeq + Int64(i), "block events are not consecutive")
        }
        var accounts: [String: Int] = [:], accountNames: [String] = []
        var types: [String: Int] = [:], typeNames: [String] = []
        var sessions: [Session: Int] = [:], sessionList: [Session] = []
        var accountIndex: [Int] = [], typeIndex: [Int] = [], sessionIndex: [Int] = []
        accountIndex.reserveCapacity(events.count)
        typeIndex.reserveCapacity(events.count)
        sessionIndex.reserveCapacity(events.count)
        for k in events.indices {
            let header = events[k].header
            accountIndex.append(accounts[header.account] ?? {
                accounts[header.account] = accountNames.count
                accountNames.append(header.account)
                return accountNames.count - 1
            }())
            typeIndex.append(types[header.type] ?? {
                types[header.type] = typeNames.count
                typeNames.append(header.type)
                return typeNames.count - 1
            }())
            let session = events[k].nonce.session
            sessionIndex.append(sessions[session] ?? {
                sessions[session] = sessionList.count
                sessionList.append(session)
                return sessionList.count - 1
            }())
        }
        // The account table in byte order, so that each name is coded against a neighbour. Sorted
        // by each name's first 8 bytes as an integer, whole names compared only when those tie:
        // comparing the strings at every step was about 40% of encoding a many-account block.
        var order = accountNames.indices.map { (prefix: utf8Prefix(accountNames[$0]), index: $0) }
        order.sort { $0.prefix != $1.prefix ? $0.prefix < $1.prefix : utf8Precedes(accountNames[$0.index], accountNames[$1.index]) }
        var rank = [Int](repeating: 0, count: accountNames.count)
        for (r, o) in order.enumerated() { rank[o.index] = r }
        accountNames = order.map { accountNames[$0.index] }
        accountIndex = accountIndex.map { rank[$0] }
        var w = BinaryWriter(capacity: events.count * 96)
        w.raw(Block.magic)
        w.u8(Block.format)
        w.u64(UInt64(firstSeq))
        w.varint(events.count)
        w.varint(accountNames.count)
        Block.writeCoded(accountNames, into: &w)
        w.varint(typeNames.count)
        for t in typeNames { w.string(t) }
        w.varint(sessionList.count)
        for s in sessionList { s.write(into: &w) }
        for a in accountIndex { w.varint(a) }
        for t in typeIndex { w.varint(t) }
        for k in events.indices { w.varint(UInt64(events[k].header.version)) }
        var previousSecond: Int64 = 0
        for k in events.indices {
            let second = Block.second(of: events[k].header.at.nanoseconds)
            w.zigzag(second &- previousSecond)
            previousSecond = second
        }
        for k in events.indices {
            let at = events[k].header.at.nanoseconds
            w.varint(UInt64(bitPattern: at &- Block.second(of: at) &* Block.nanosPerSecond))
        }
        for k in events.indices { w.u8(UInt8(bitPattern: events[k].header.at.fractionDigits)) }
        for s in sessionIndex { w.varint(s) }
        var previousCounter: Int64 = 0
        for k in events.indices {
            let counter = Int64(events[k].nonce.counter)
            w.zigzag(counter - previousCounter)
            previousCounter = counter
        }
        Block.writeCoded(events.map { $0.header.id ?? "" }, into: &w)
        for k in events.indices { w.u8(events[k].isPurged ? 1 : 0) }
        for k in events.indices { w.u8(events[k].key.kind.rawValue) }
        for k in events.indices { w.varint(events[k].key.number) }
        for k in events.indices { w.varint(events[k].key.index) }
        for k in events.indices {
            if case .sealed(let bytes) = events[k].body { w.varint(bytes.count) } else { w.varint(0) }
        }
        for k in events.indices {
            if case .sealed(let bytes) = events[k].body { w.raw(bytes) }
        }
        for k in events.indices {
            if case .purged(let digest) = events[k].body {
                precondition(digest.count == 32)
                w.raw(digest)
            }
        }
        w.raw(previousLink)
        w.raw(lastLink)
        return w.bytes
    }

    static let nanosPerSecond: Int64 = 1_000_000_000

    /// The whole seconds of a time in nanoseconds, rounded down (so that the rest is 0 to 10⁹ − 1).
    static func second(of nanoseconds: Int64) -> Int64 {
        let (q, r) = nanoseconds.quotientAndRemainder(dividingBy: nanosPerSecond)
        return r < 0 ? q - 1 : q
    }

    /// Strings each coded against the one before it (format 4 on, `PrefixCoding`).
    private static func writeCoded(_ values: [String], into w: inout BinaryWriter) {
        var coding = PrefixCoding()
        for value in values { coding.write(value, into: &w) }
    }

    /// `count` strings written by `writeCoded`, each at most `limit` bytes of UTF-8; `name(i)`
    /// names the i-th in an error.
    private static func readCoded(_ r: inout BinaryReader, count: Int, limit: Int, name: (Int) -> String) throws -> [String] {
        var coding = PrefixCoding()
        return try (0..<count).map { i in
            guard let text = String(utf8: try coding.read(&r, limit: limit)) else {
                throw BinaryReader.Malformed(what: "\(name(i)) is not UTF-8")
            }
            return text
        }
    }

    /// Decodes and checks the content's own invariants; `where` names the block in errors.
    ///
    /// Every count, index and length is checked against what a block written by this journal
    /// can hold (`Journal.maxBlockEvents`, the longest account, type, id and sealed payload)
    /// before it is used, and sums are checked for overflow: damaged or crafted bytes throw
    /// `.corrupt` naming `place`, never trap.
    package static func decode(_ bytes: [UInt8], where place: String) throws -> Block {
        Block(try decode(bytes, where: place, only: nil))
    }

    /// What `decode(_:where:only:)` read: the block's range, and its events (or one account's).
    package struct Content {
        package var firstSeq: Int64
        package var lastSeq: Int64
        package var events: [SealedEvent]
        package var previousLink: [UInt8]
        package var lastLink: [UInt8]
    }

    /// `decode(_:where:)`, making events of `only` alone when it is given (nil: every event): an
    /// account's read then builds none of the other accounts' events (their strings and payload
    /// copies were most of its time on a many-account history). Every column is still walked and
    /// every count, index, length and range checked; the other accounts' ids and names are not
    /// checked for UTF-8 (they are not made into strings), which `verify` does.
    package static func decode(_ bytes: [UInt8], where place: String, only account: String?) throws -> Content {
        func corrupt(_ why: String) -> JournalError { JournalError(.corrupt, "\(place): \(why)") }
        var r = BinaryReader(bytes)
        do {
            guard Array(try r.bytes(4)) == magic else { throw corrupt("not a Lethe block (bad magic)") }
            let format = try r.u8()
            guard (Block.wholeIDsFormat...Block.format).contains(format) else { throw corrupt("unknown block format \(format)") }
            let firstSeq = Int64(bitPattern: try r.u64())
            let count = try r.count(limit: Journal.maxBlockEvents)
            guard count > 0, firstSeq > 0, firstSeq <= Int64.max - Int64(count) else { throw corrupt("empty block or bad first sequence") }
            guard count * minEventBytes <= r.remaining else { throw corrupt("content is truncated") }
            let accountCount = try r.count(limit: count)
            // With `only`, the table's other names stay bytes: only the account's own index matters.
            var wanted: [Bool] = []
            let accountNames: [String]
            if let account {
                let target = Array(account.utf8)
                wanted = Array(repeating: false, count: accountCount)
                var coding = PrefixCoding()
                for i in 0..<accountCount {
                    let name = format == Block.wholeIDsFormat
                        ? Array(try r.lengthPrefixed(limit: Journal.maxAccountBytes))
                        : try coding.read(&r, limit: Journal.maxAccountBytes)
                    if name == target { wanted[i] = true }
                }
                accountNames = Array(repeating: account, count: accountCount)
            } else {
                accountNames = format == Block.wholeIDsFormat
                    ? try (0..<accountCount).map { _ in try r.string(limit: Journal.maxAccountBytes) }
                    : try readCoded(&r, count: accountCount, limit: Journal.maxAccountBytes) { "account \($0) of the block's table" }
            }
            let typeNames = try (0..<(try r.count(limit: count))).map { _ in try r.string(limit: Journal.maxTypeBytes) }
            let sessionList = try (0..<(try r.count(limit: count))).map { _ in
                Session(high: try r.u64(), low: try r.u64())
            }
            guard !accountNames.isEmpty, !typeNames.isEmpty, !sessionList.isEmpty else { throw corrupt("no account, type or session table") }
            let accountIdx = try (0..<count).map { _ in try r.count(limit: accountNames.count - 1) }
            let typeIdx = try (0..<count).map { _ in try r.count(limit: typeNames.count - 1) }
            let versions = try (0..<count).map { _ in Int64(bitPattern: try r.varint()) }
            // Wrapping, as the writer's deltas are: any two times have a delta that wraps back to them.
            var at: Int64 = 0
            var times = try (0..<count).map { _ -> Int64 in
                at = at &+ (try r.zigzag())
                return at
            }
            if format >= 5 {
                // `times` are whole seconds: each with its nanoseconds, in range.
                // (Wrapping too: the time is in range when its seconds come back from it.)
                for i in 0..<count {
                    let nanos = try r.varint()
                    let at = times[i] &* Block.nanosPerSecond &+ Int64(truncatingIfNeeded: nanos)
                    guard nanos < UInt64(Block.nanosPerSecond), Block.second(of: at) == times[i] else {
                        throw corrupt("event \(firstSeq + Int64(i)) has a time out of range")
                    }
                    times[i] = at
                }
            }
            let fractionDigits = try (0..<count).map { _ in Int8(bitPattern: try r.u8()) }
            let sessionIdx = try (0..<count).map { _ in try r.count(limit: sessionList.count - 1) }
            var counter: Int64 = 0
            let counters = try (0..<count).map { i -> UInt32 in
                let (sum, overflow) = counter.addingReportingOverflow(try r.zigzag())
                guard !overflow, let c = UInt32(exactly: sum) else { throw corrupt("event \(firstSeq + Int64(i)) has a nonce counter out of range") }
                counter = sum
                return c
            }
            func isWanted(_ i: Int) -> Bool { account == nil || wanted[accountIdx[i]] }
            let ids: [String]
            if account != nil {
                var coding = PrefixCoding()
                ids = try (0..<count).map { i in
                    let bytes = format == Block.wholeIDsFormat
                        ? Array(try r.lengthPrefixed(limit: Journal.maxIDBytes))
                        : try coding.read(&r, limit: Journal.maxIDBytes)
                    guard isWanted(i) else { return "" }
                    guard let id = String(utf8: bytes) else {
                        throw BinaryReader.Malformed(what: "the id of event \(firstSeq + Int64(i)) is not UTF-8")
                    }
                    return id
                }
            } else {
                ids = format == Block.wholeIDsFormat
                    ? try (0..<count).map { _ in try r.string(limit: Journal.maxIDBytes) }
                    : try readCoded(&r, count: count, limit: Journal.maxIDBytes) { "the id of event \(firstSeq + Int64($0))" }
            }
            let states = try (0..<count).map { _ in try r.u8() }
            let kinds = try (0..<count).map { _ in try r.u8() }
            let numbers = try (0..<count).map { _ in try r.varint() }
            let indices = try (0..<count).map { _ in try r.varint() }
            let lengths = try (0..<count).map { _ in try r.count(limit: Sealing.maxSealedBytes) }
            var events: [SealedEvent] = []
            events.reserveCapacity(count)
            for i in 0..<count {
                let seq = firstSeq + Int64(i)
                guard versions[i] > 0 else { throw corrupt("event \(seq) has version \(versions[i])") }
                guard Timestamp.fractionDigitsRange.contains(fractionDigits[i]) else {
                    throw corrupt("event \(seq) has \(UInt8(bitPattern: fractionDigits[i])) fractional digits (at most 9)")
                }
                guard let kind = KeyRef.Kind(rawValue: kinds[i]) else { throw corrupt("event \(seq) has unknown key kind \(kinds[i])") }
                // Own key ids are rowids and record indices count up from 0: both stay below 2^63
                // (rows keep them as signed integers), and erasures add one to an index.
                guard numbers[i] <= UInt64(Int64.max), indices[i] < UInt64(Int64.max) else {
                    throw corrupt("event \(seq) has a key number or index out of range")
                }
                guard isWanted(i) else {
                    switch states[i] {
                    case 0: _ = try r.bytes(lengths[i])
                    case 1: guard lengths[i] == 0 else { throw corrupt("purged event \(seq) has a payload") }
                    default: throw corrupt("event \(seq) has unknown state \(states[i])")
                    }
                    continue
                }
                let header = EventHeader(
                    seq: seq, version: versions[i], account: accountNames[accountIdx[i]],
                    type: typeNames[typeIdx[i]], at: Timestamp(nanoseconds: times[i], fractionDigits: fractionDigits[i]),
                    id: ids[i].isEmpty ? nil : ids[i])
                let nonce = NonceID(session: sessionList[sessionIdx[i]], counter: counters[i])
                let key = KeyRef(kind, number: numbers[i], index: indices[i])
                switch states[i] {
                case 0:
                    events.append(SealedEvent(header: header, nonce: nonce, key: key, body: .sealed(Array(try r.bytes(lengths[i])))))
                case 1:
                    guard lengths[i] == 0 else { throw corrupt("purged event \(seq) has a payload") }
                    events.append(SealedEvent(header: header, nonce: nonce, key: key, body: .purged(digest: [])))
                default:
                    throw corrupt("event \(seq) has unknown state \(states[i])")
                }
            }
            // The digests of purged events follow, in event order (the other accounts' skipped).
            var made = 0
            for i in 0..<count {
                let isMade = isWanted(i)
                defer { if isMade { made += 1 } }
                guard states[i] == 1 else { continue }
                let digest = try r.bytes(32)
                if isMade { events[made].body = .purged(digest: Array(digest)) }
            }
            let previousLink = Array(try r.bytes(32))
            let lastLink = Array(try r.bytes(32))
            guard r.isAtEnd else { throw corrupt("\(r.remaining) unexpected bytes at the end") }
            return Content(firstSeq: firstSeq, lastSeq: firstSeq + Int64(count) - 1, events: events, previousLink: previousLink, lastLink: lastLink)
        } catch let e as JournalError {
            throw e
        } catch is BinaryReader.Truncated {
            throw corrupt("content is truncated")
        } catch let e as BinaryReader.Malformed {
            throw corrupt(e.what)
        }
    }
}

extension Block {
    /// The block `content` holds, when it holds every event (`decode(_:where:only:)` with nil).
    init(_ content: Content) {
        self.init(events: content.events, previousLink: content.previousLink, lastLink: content.lastLink)
    }
}
