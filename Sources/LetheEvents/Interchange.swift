#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Dispatch
import Foundation
import LetheJournal
import Synchronization

/// Reads a file descriptor line by line in large chunks; memory stays bounded by the longest line.
public struct LineReader: Sendable {
    /// Lines longer than this are refused whole (and skipped), so one bad line cannot exhaust memory.
    public static let maxLineBytes = 16 << 20
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    private var eof = false
    private var skippingLongLine = false
    public private(set) var lineNumber = 0
    public private(set) var bytesRead: Int64 = 0

    /// The longest line this reader hands out (`maxLineBytes` unless a test sets a smaller one).
    public let lineLimit: Int

    public init(fd: Int32, lineLimit: Int = LineReader.maxLineBytes) {
        self.fd = fd
        self.lineLimit = lineLimit
    }

    public enum Line {
        case text([UInt8])
        case tooLong
    }

    /// Hands out `buffer[start..<end]` as the next line (or the end of a line that was too long).
    private mutating func take(upTo end: Int, resumeAt next: Int) -> Line {
        defer {
            start = next
            lineNumber += 1
            skippingLongLine = false
        }
        // A line whose end arrived in the read that took it past the limit is refused too.
        if skippingLongLine || end - start > lineLimit { return .tooLong }
        var line = Array(buffer[start..<end])
        if line.last == 0x0D { line.removeLast() }
        return .text(line)
    }

    /// The index of the first `\n` at or after `start` (memchr: this scans every byte of the input).
    private func newline(from start: Int) -> Int? {
        guard start < buffer.count else { return nil }
        return buffer.withUnsafeBytes { bytes -> Int? in
            guard let found = memchr(bytes.baseAddress! + start, 0x0A, bytes.count - start) else { return nil }
            return bytes.baseAddress!.distance(to: UnsafeRawPointer(found))
        }
    }

    /// The next line (without its `\n` or `\r\n`), or nil at the end.
    public mutating func next() throws -> Line? {
        while true {
            if let nl = newline(from: start) { return take(upTo: nl, resumeAt: nl + 1) }
            if eof {
                guard start < buffer.count || skippingLongLine else { return nil }
                return take(upTo: buffer.count, resumeAt: buffer.count)
            }
            if buffer.count - start > lineLimit {
                skippingLongLine = true
                start = buffer.count
            }
            buffer.removeSubrange(0..<start)
            start = 0
            let chunk = 1 << 20
            let old = buffer.count
            buffer.append(contentsOf: repeatElement(0, count: chunk))
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + old, chunk) }
            guard n >= 0 else {
                throw JournalError(.storage, "cannot read the input: \(String(cString: strerror(errno)))")
            }
            buffer.removeSubrange((old + n)...)
            bytesRead += Int64(n)
            if n == 0 { eof = true }
        }
    }
}

/// Imports NDJSON events into a journal: each line checked, valid lines appended in batches,
/// every rejected line reported with its number and reason, and every line kept with a card
/// number masked reported as a warning.
public struct Importer {
    public struct Summary: Sendable, Equatable {
        public var lines = 0
        public var imported = 0
        public var duplicates = 0
        public var rejected = 0
        /// Lines kept (imported or duplicate) in whose free text a card number was masked; they
        /// count as imported or duplicate too, never as rejected.
        public var masked = 0

        public init() {}
    }

    public struct LineRejection: Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    /// A line that was kept, with a card number masked in one of its free-text fields: names the
    /// line and the field, never the digits.
    public struct LineWarning: Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        /// The field's path, like `data.body`.
        public var field: String
        public var description: String { "line \(line): warning: field \(field): a card number was masked" }
    }

    public let journal: Journal
    public var codec: PayloadCodec = .standard
    /// Events parsed and sealed at a time: by default the journal backend's (`Journal.importBatchSize`).
    public var batchSize: Int
    /// Events appended at a time at most: sealed batches waiting for the append are appended
    /// together up to this many (by default the backend's `Journal.importAppendLimit`).
    public var appendLimit: Int
    /// Told the number of events of each append (for tests: which batches were joined).
    package var onAppend: ((Int) -> Void)?

    public init(journal: Journal) {
        self.journal = journal
        batchSize = journal.importBatchSize
        appendLimit = journal.importAppendLimit
    }

    /// Reads `reader` to its end. Rejections and warnings are reported in line order (a line's
    /// warnings in field order); `progress` gets the bytes read.
    ///
    /// The work is a pipeline of three stages, each on a thread of its own, so that the serial
    /// part of one overlaps the others: one thread reads lines and has a batch of them parsed,
    /// checked and encoded on every core; a second seals the previous batch (`Journal.prepare`:
    /// keys and nonces in order, the sealing on every core); the calling thread appends the one
    /// before to the journal. At most one parsed and two sealed batches wait between them. When
    /// the appending falls behind, sealed batches that are waiting are appended together, up to
    /// `appendLimit` events: one transaction, which writes each account's row once for all.
    public func run(
        _ reader: consuming LineReader, onRejection: (LineRejection) -> Void, progress: ((Int64) -> Void)? = nil,
        onWarning: (LineWarning) -> Void = { _ in }
    ) throws -> Summary {
        let parsed = BatchQueue(capacity: 1)
        let sealed = BatchQueue(capacity: 2)
        let parser = Thread { [codec, batchSize, reader] in
            Thread.current.name = "lethe-parse"  // (set before `start`, a name never reaches the thread on Linux)
            var reader = reader
            Importer.parse(&reader, codec: codec, batchSize: batchSize, into: parsed)
        }
        let sealer = Thread { [journal] in
            Thread.current.name = "lethe-seal"
            Importer.seal(from: parsed, journal: journal, into: sealed)
        }
        for thread in [parser, sealer] {
            thread.stackSize = 4 << 20
            thread.start()
        }

        var summary = Summary()
        var failure: (any Error)?
        // A failed batch taken from the queue to join the one before: its turn comes next.
        var held: ImportBatch?
        while let first = held ?? sealed.pop() {
            held = nil
            // Batches already waiting join this one while any batch (at most `batchSize` events)
            // would fit: with a limit of one batch, none is ever taken early.
            var parts = [first]
            var events = first.prepared.count
            while first.error == nil, events + batchSize <= appendLimit, let next = sealed.tryPop() {
                guard next.error == nil else {
                    held = next
                    break
                }
                parts.append(next)
                events += next.prepared.count
            }
            let batch = parts.count == 1 ? first : ImportBatch(joining: parts)
            if let error = batch.error { failure = failure ?? error }
            guard failure == nil else {
                sealed.cancel()
                continue  // drain until the stages stop
            }
            var rejections = batch.rejections
            var warnings: [LineWarning] = []
            do {
                let outcomes = batch.prepared.count == 0 ? [] : try journal.append(batch.prepared)
                onAppend?(batch.prepared.count)
                for ((line, masked), outcome) in zip(zip(batch.lines, batch.masked), outcomes) {
                    switch outcome {
                    case .appended: summary.imported += 1
                    case .duplicate: summary.duplicates += 1
                    case .rejected(let error):
                        rejections.append(LineRejection(line: line, reason: error.message))
                        continue
                    }
                    // Kept with a card number masked: a warning per field, the line counted once.
                    if !masked.isEmpty { summary.masked += 1 }
                    for field in masked { warnings.append(LineWarning(line: line, field: field)) }
                }
            } catch {
                failure = error
                sealed.cancel()
                continue
            }
            // One stream in line order: the batch's lines are numbered in order, warnings already are.
            rejections.sort { $0.line < $1.line }
            var w = 0
            for r in rejections {
                while w < warnings.count && warnings[w].line < r.line {
                    onWarning(warnings[w])
                    w += 1
                }
                onRejection(r)
            }
            for warning in warnings[w...] { onWarning(warning) }
            summary.rejected += rejections.count
            summary.lines += batch.lineCount
            progress?(batch.bytesRead)
            for part in parts { sealed.recycle(part) }
            if parts.count > 1 { sealed.recycle(batch) }
        }
        if let failure { throw failure }
        // Tidying the indexes is not part of the import: every event is in, and the next due
        // merge does the same work, so a failure here is logged rather than thrown.
        if summary.imported > 0 {
            do {
                try journal.settle()
            } catch {
                journal.options.logger.warning("\(error)")
            }
        }
        return summary
    }

    /// The first stage: reads lines and has them parsed, checked and encoded a batch at a time
    /// on every core, then hands each batch over.
    static func parse(_ reader: inout LineReader, codec: PayloadCodec, batchSize: Int, into queue: BatchQueue) {
        var batch = ImportBatch()
        var lines: [(number: Int, bytes: [UInt8])] = []
        func handOver() {
            let decoded = lines.parallelMap { line in
                EnvelopeValidator.parse(line: line.bytes).map { e in
                    (NewEvent(e.type, account: e.account, at: e.at, data: e.data, id: e.id, codec: codec), e.masked)
                }
            }
            batch.events.reserveCapacity(lines.count)
            for (line, result) in zip(lines, decoded) {
                switch result {
                case .failure(let rejection): batch.rejections.append(LineRejection(line: line.number, reason: rejection.description))
                case .success(let (event, masked)):
                    batch.events.append(event)
                    batch.lines.append(line.number)
                    batch.masked.append(masked)
                }
            }
            batch.bytesRead = reader.bytesRead
            queue.push(batch)
            batch = ImportBatch()
            lines.removeAll(keepingCapacity: true)
        }
        // The first batch is small: the stages after this one wait for it, and start sooner.
        var limit = max(1, batchSize / 8)
        do {
            while let line = try reader.next(), !queue.isCancelled {
                let number = reader.lineNumber
                guard case .text(let bytes) = line else {
                    batch.lineCount += 1
                    batch.rejections.append(LineRejection(line: number, reason: "line longer than \(reader.lineLimit) bytes"))
                    continue
                }
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }  // blank lines carry nothing
                batch.lineCount += 1
                lines.append((number, bytes))
                if lines.count >= limit {
                    handOver()
                    limit = batchSize
                }
            }
            handOver()
        } catch {
            batch.error = error as? JournalError ?? JournalError(.storage, "cannot read the input", underlying: error)
            queue.push(batch)
        }
        queue.finish()
    }

    /// The second stage: seals each parsed batch (`Journal.prepare`) and hands it over. A batch
    /// that fails here carries its error on, and the stage before is told to stop.
    static func seal(from parsed: BatchQueue, journal: Journal, into queue: BatchQueue) {
        while var batch = parsed.pop() {
            if queue.isCancelled || batch.error != nil { parsed.cancel() }
            guard !queue.isCancelled else { continue }  // drain until the parser stops
            if batch.error == nil {
                do {
                    batch.prepared = try journal.prepare(batch.events)
                } catch {
                    batch.error = error as? JournalError ?? JournalError(.keys, "cannot seal the events", underlying: error)
                    parsed.cancel()
                }
            }
            batch.events = []
            queue.push(batch)
        }
        queue.finish()
    }
}

/// Lines on their way through the import's stages: the events parsed from them, then sealed
/// and ready to append, and the lines already refused.
struct ImportBatch: Sendable {
    /// The events of the lines that parsed (until they are sealed).
    var events: [NewEvent] = []
    var prepared = PreparedBatch.empty
    /// The line number of each parsed event.
    var lines: [Int] = []
    /// The fields of each parsed event in which a card number was masked (mostly none).
    var masked: [[String]] = []
    var rejections: [Importer.LineRejection] = []
    var lineCount = 0
    var bytesRead: Int64 = 0
    /// Reading or sealing failed: the import stops.
    var error: JournalError?

    init() {}

    /// Consecutive sealed batches (none failed) as one, their lines in order.
    init(joining parts: [ImportBatch]) {
        prepared = PreparedBatch.joined(parts.map(\.prepared))
        for part in parts {
            lines += part.lines
            masked += part.masked
            rejections += part.rejections
            lineCount += part.lineCount
            bytesRead = part.bytesRead
        }
    }
}

/// A bounded hand-over from one stage of the import to the next.
final class BatchQueue: Sendable {
    private struct State {
        var items: [ImportBatch] = []
        /// Batches the consumer is done with, freed by the producer.
        var spent: [ImportBatch] = []
        var finished = false
        var cancelled = false
    }

    private let state = Mutex(State())
    private let free: DispatchSemaphore
    private let ready = DispatchSemaphore(value: 0)

    init(capacity: Int) { free = DispatchSemaphore(value: capacity) }

    /// Waits for room, then hands `batch` over (dropped once cancelled).
    func push(_ batch: ImportBatch) {
        free.wait()
        let spent = state.withLock { s -> [ImportBatch] in
            if !s.cancelled { s.items.append(batch) }
            defer { s.spent = [] }
            return s.spent
        }
        ready.signal()
        withExtendedLifetime(spent) {}  // freed here, on the producer's thread
    }

    /// Takes back a batch the consumer is done with. Freeing one (tens of thousands of strings
    /// and buffers) is left to the producer: the consumer is the import's serial stage.
    func recycle(_ batch: ImportBatch) {
        state.withLock { $0.spent.append(batch) }
    }

    func finish() {
        state.withLock { $0.finished = true }
        ready.signal()
    }

    /// The next batch if one is waiting now, without waiting for one.
    func tryPop() -> ImportBatch? {
        guard ready.wait(timeout: .now()) == .success else { return nil }
        let item = state.withLock { s in s.items.isEmpty ? nil : s.items.removeFirst() }
        if item != nil {
            free.signal()
        } else {
            ready.signal()  // (a finish or a dropped push: left for `pop`)
        }
        return item
    }

    /// The next batch, or nil once the producer finished and everything was taken.
    func pop() -> ImportBatch? {
        while true {
            ready.wait()
            let (item, done): (ImportBatch?, Bool) = state.withLock { s in
                if !s.items.isEmpty { return (s.items.removeFirst(), false) }
                return (nil, s.finished)
            }
            if let item {
                free.signal()
                return item
            }
            if done { return nil }
            free.signal()  // a push dropped after cancellation
        }
    }

    func cancel() { state.withLock { $0.cancelled = true } }

    var isCancelled: Bool { state.withLock { $0.cancelled } }
}

/// Writes events in the contract's NDJSON shape plus `"seq"`; purged payloads as `"redacted":true`.
public struct Exporter: Sendable {
    public var codec: PayloadCodec = .standard

    public init() {}

    /// One line, with its newline.
    public func lineBytes(_ event: StoredEvent) throws -> [UInt8] {
        var w = JSONWriter()
        // Room for the whole line at once: the header's keys and values, and the payload's JSON,
        // which its names make longer than its bytes.
        if case .plaintext(let payload) = event.payload { w.bytes.reserveCapacity(160 + 2 * payload.count) }
        try line(event, into: &w)
        w.bytes.append(0x0A)
        return w.bytes
    }

    private static let seqKey = Array(#"{"seq":"#.utf8)
    private static let idKey = Array(#","id":"#.utf8)
    private static let typeKey = Array(#","type":"#.utf8)
    private static let accountKey = Array(#","account":"#.utf8)
    private static let atKey = Array(#","at":""#.utf8)

    /// One line, without its newline.
    public func line(_ event: StoredEvent, into w: inout JSONWriter) throws {
        let h = event.header
        w.bytes.append(contentsOf: Exporter.seqKey)
        w.write(int: h.seq)
        if let id = h.id {
            w.bytes.append(contentsOf: Exporter.idKey)
            w.write(string: id)
        }
        w.bytes.append(contentsOf: Exporter.typeKey)
        w.write(string: h.type)
        w.bytes.append(contentsOf: Exporter.accountKey)
        w.write(string: h.account)
        w.bytes.append(contentsOf: Exporter.atKey)
        h.at.write(rfc3339To: &w.bytes)
        w.bytes.append(UInt8(ascii: "\""))
        switch event.payload {
        case .plaintext(let bytes):
            w.key("data")
            do {
                try codec.writeJSON(type: h.type, payload: bytes, into: &w)
            } catch {
                throw JournalError(.corrupt, "event \(h.seq): \(error)")
            }
        case .purged, .shredded:
            w.key("redacted")
            w.write(.bool(true))
        }
        w.bytes.append(UInt8(ascii: "}"))
    }
}
