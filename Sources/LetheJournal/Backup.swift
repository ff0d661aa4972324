import Crypto
import Foundation

/// Encrypted backups of a journal (never of its key store).
///
/// A backup file is a readable header, then the journal's content, read in one snapshot (a
/// writer may go on meanwhile) and streamed as records (the journal's identity and head, each
/// sealed block's frame, each unsealed event, each account's row, each erasure not done yet), cut
/// into chunks of 4 MiB, each compressed as an LZ4 frame and sealed with AES-256-GCM. Nothing is
/// written in clear anywhere: there is no snapshot file, only the chunks.
/// ```
/// "LETHE-BACKUP 3\n"   header lines "key: value\n" … "\n"
/// per chunk: length:u32 (little-endian), ciphertext ‖ tag
/// ```
/// The key is the journal's backup key, random, kept in the key store under the master key: a
/// backup is read with the live key store, like the payloads inside it. Chunk `i`'s nonce is the
/// backup's random 8-byte id ‖ `i` (u32), and its additional data is SHA-256(header) ‖ `i` ‖ last
/// (one byte), so the header, the order, and the end are all authenticated: a flipped bit
/// anywhere, a chunk moved, dropped or appended, or a header changed, and the restore refuses the
/// file before it writes anything under the journal's name.
///
/// The records are the journal's own content, not SQLite's pages, so a backup restores into a
/// journal on another storage backend as well; the indexes (per-account blocks, event ids) are
/// rebuilt from the blocks on restore rather than trusted.
public enum Backup {
    static let magic = "LETHE-BACKUP 3\n"
    static let chunkBytes = 4 << 20

    /// What a backup holds, from its header alone.
    public struct Manifest: Sendable, Equatable {
        public var journal: String
        public var created: Timestamp
        /// The backup's random id (hex), part of every chunk's nonce.
        public var id: String
        public var firstSeq: Int64
        public var lastSeq: Int64
        public var headLink: String

        var lines: [(String, String)] {
            [("journal", journal), ("created", created.rfc3339), ("backup", id), ("first_seq", String(firstSeq)),
             ("last_seq", String(lastSeq)), ("head_link", headLink),
             ("cipher", "AES-256-GCM under the journal's backup key (in its key store)"),
             ("compression", "LZ4 frame per chunk")]
        }

        var text: String { Backup.magic + lines.map { "\($0.0): \($0.1)\n" }.joined() + "\n" }
    }

    /// A backup's header and the shape of its chunks (read without any key).
    public struct Summary: Sendable, Equatable {
        public var manifest: Manifest
        public var chunks: Int
        public var fileBytes: Int64
    }

    static func aad(header: [UInt8], index: Int, last: Bool) -> [UInt8] {
        var w = BinaryWriter(capacity: 40)
        w.raw(Array(SHA256.hash(data: header)))
        w.u32(UInt32(index))
        w.u8(last ? 1 : 0)
        return w.bytes
    }

    static func nonce(id: [UInt8], index: Int) throws -> AES.GCM.Nonce {
        var w = BinaryWriter(capacity: 12)
        w.raw(id)
        w.u32(UInt32(index))
        return try AES.GCM.Nonce(data: w.bytes)
    }

    /// The records of the content stream.
    enum Tag: UInt8 {
        case end = 0, meta = 1, block = 2, tail = 3, account = 4, erasure = 5
    }

    /// Writes a backup of `journal` to `path` (atomically, owner-only: a partial file never has the name).
    @discardableResult
    public static func create(_ journal: Journal, to path: String, now: Timestamp, entropy: Entropy = .system) throws -> Summary {
        do {
            var chunks = 0
            let manifest: Manifest = try journal.read { reader in
                let head = try reader.headSeq()
                let headLink = try reader.wrap { try reader.store.storedHead().link }
                let id = entropy.bytes(8)
                let manifest = Manifest(
                    journal: try reader.identity(), created: now, id: Hex.encode(id), firstSeq: head > 0 ? 1 : 0,
                    lastSeq: head, headLink: Hex.encode(headLink))
                try PrivateFile.replace(path, entropy: entropy) { fd in
                    var out = ChunkWriter(fd: fd, path: path, key: journal.backupKey, id: id, header: Array(manifest.text.utf8))
                    try out.start()
                    try stream(reader.store, into: &out)
                    chunks = try out.finish()
                }
                return manifest
            }
            return Summary(manifest: manifest, chunks: chunks, fileBytes: fileSize(path))
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.storage, "cannot back up \(journal.path) to \(path)", underlying: error)
        }
    }

    /// Seals the content stream chunk by chunk; one chunk is held back until the next one (or the
    /// end) shows whether it is the last.
    private struct ChunkWriter {
        let fd: Int32
        let path: String
        let key: SymmetricKey
        let id: [UInt8]
        let header: [UInt8]
        var buffer = BinaryWriter(capacity: Backup.chunkBytes + 65_536)
        var pending: [UInt8]?
        var index = 0

        init(fd: Int32, path: String, key: SymmetricKey, id: [UInt8], header: [UInt8]) {
            (self.fd, self.path, self.key, self.id, self.header) = (fd, path, key, id, header)
        }

        func write(_ bytes: [UInt8]) throws {
            guard PrivateFile.writeAll(fd, bytes) else {
                throw JournalError(.storage, "cannot write the backup \(path): \(String(cString: strerror(errno)))")
            }
        }

        func start() throws { try write(header) }

        mutating func record(_ tag: Tag, _ fill: (inout BinaryWriter) -> Void) throws {
            buffer.u8(tag.rawValue)
            fill(&buffer)
            // Cut at exactly `chunkBytes`: a record may span chunks (the restore carries an
            // unfinished one over), so no chunk is ever larger, whatever the size of a record.
            while buffer.bytes.count >= Backup.chunkBytes { try cut(Backup.chunkBytes) }
        }

        private mutating func cut(_ size: Int) throws {
            if let pending { try seal(pending, last: false) }
            pending = Array(buffer.bytes[..<size])
            var rest = BinaryWriter(capacity: Backup.chunkBytes + 65_536)
            rest.raw(buffer.bytes[size...])
            buffer = rest
        }

        private mutating func seal(_ plain: [UInt8], last: Bool) throws {
            let box = try AES.GCM.seal(
                try LZ4.compressFrame(plain), using: key, nonce: try nonce(id: id, index: index),
                authenticating: aad(header: header, index: index, last: last))
            var w = BinaryWriter(capacity: box.ciphertext.count + 20)
            w.u32(UInt32(box.ciphertext.count + 16))
            w.raw(Array(box.ciphertext))
            w.raw(Array(box.tag))
            try write(w.bytes)
            index += 1
        }

        /// Ends the stream; returns the number of chunks.
        mutating func finish() throws -> Int {
            buffer.u8(Tag.end.rawValue)
            // (`record` left less than `chunkBytes`: with the end record, at most that.)
            try cut(buffer.bytes.count)
            try seal(pending!, last: true)
            return index
        }
    }

    /// The journal's content, as records, from one read snapshot.
    private static func stream(_ store: any JournalStore, into out: inout ChunkWriter) throws {
        for (key, value) in try store.metaEntries() {
            try out.record(.meta) { w in
                w.string(key)
                switch value {
                case .integer(let integer):
                    w.u8(0)
                    w.zigzag(integer)
                case .bytes(let blob):
                    w.u8(1)
                    w.varint(blob.count)
                    w.raw(blob)
                }
            }
        }
        var blocks = BlockScan(store, from: .min, through: .max)
        while let b = try blocks.nextBlock() {
            try out.record(.block) { w in
                w.zigzag(b.id)
                w.zigzag(b.first)
                w.zigzag(b.last)
                w.varint(b.frame.count)
                w.raw(b.frame)
            }
        }
        let (tail, links) = try store.tail()
        for (e, link) in zip(tail, links) {
            try out.record(.tail) { w in
                w.zigzag(e.header.seq)
                w.string(e.header.account)
                w.zigzag(e.header.version)
                w.string(e.header.type)
                w.zigzag(e.header.at.nanoseconds)
                w.u8(UInt8(bitPattern: e.header.at.fractionDigits))
                w.u8(e.header.id == nil ? 0 : 1)
                w.string(e.header.id ?? "")
                e.nonce.session.write(into: &w)
                w.varint(UInt64(e.nonce.counter))
                w.u8(e.key.kind.rawValue)
                w.varint(e.key.number)
                w.varint(e.key.index)
                switch e.body {
                case .sealed(let bytes):
                    w.u8(0)
                    w.varint(bytes.count)
                    w.raw(bytes)
                case .purged(let digest):
                    w.u8(1)
                    w.varint(digest.count)
                    w.raw(digest)
                }
                w.raw(link)
            }
        }
        try store.forEachAccount { name, row in
            try out.record(.account) { w in
                w.zigzag(row.id)
                w.string(name)
                w.zigzag(row.version)
                w.zigzag(row.lastAt)
                w.varint(row.chains?.count ?? 0)
                w.raw(row.chains ?? [])
            }
        }
        for row in try store.erasures(kind: nil, limit: nil) {
            try out.record(.erasure) { w in
                w.zigzag(row.id)
                w.string(row.account ?? "")
                w.zigzag(row.kind)
                w.u8(row.name == nil ? 0 : 1)
                w.string(row.name ?? "")
                w.u8(row.number == nil ? 0 : 1)
                w.zigzag(row.number ?? 0)
                w.u8(row.through == nil ? 0 : 1)
                w.zigzag(row.through ?? 0)
                w.u8(row.keeping == nil ? 0 : 1)
                w.string(row.keeping ?? "")
                w.varint(row.mac.count)
                w.raw(row.mac)
            }
        }
    }

    static func fileSize(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : 0
    }

    /// Reads a backup's header, and counts its chunks from their lengths (no key needed).
    public static func inspect(_ path: String) throws -> Summary {
        let (manifest, header) = try readHeader(path)
        guard let file = FileHandle(forReadingAtPath: path) else { throw JournalError(.storage, "cannot read the backup \(path)") }
        defer { try? file.close() }
        var offset = UInt64(header.count)
        var chunks = 0
        let size = UInt64(fileSize(path))
        while offset < size {
            try file.seek(toOffset: offset)
            guard let prefix = try file.read(upToCount: 4), prefix.count == 4 else { break }
            let length = UInt64(prefix[prefix.startIndex]) | UInt64(prefix[prefix.startIndex + 1]) << 8
                | UInt64(prefix[prefix.startIndex + 2]) << 16 | UInt64(prefix[prefix.startIndex + 3]) << 24
            offset += 4 + length
            chunks += 1
        }
        return Summary(manifest: manifest, chunks: chunks, fileBytes: Int64(size))
    }

    /// The header (at most 64 KiB, read alone).
    static func readHeader(_ path: String) throws -> (manifest: Manifest, header: [UInt8]) {
        guard let file = FileHandle(forReadingAtPath: path) else { throw JournalError(.storage, "cannot read the backup \(path)") }
        defer { try? file.close() }
        let start = (try? file.read(upToCount: 65_536)) ?? nil ?? Data()
        return try parseHeader(start, path: path)
    }

    /// The header at the start of `start` (the file's first bytes), `path` naming it in errors.
    static func parseHeader(_ start: Data, path: String) throws -> (manifest: Manifest, header: [UInt8]) {
        func bad(_ why: String) -> JournalError { JournalError(.corrupt, "\(path) is not a usable Lethe backup: \(why)") }
        guard start.starts(with: Array(magic.utf8)) else {
            if start.starts(with: Array("LETHE-BACKUP ".utf8)) { throw bad("a backup of another format (this build reads format 3)") }
            throw bad("no backup header")
        }
        guard let end = start.range(of: Data("\n\n".utf8)) else { throw bad("the header does not end") }
        let header = Array(start[..<end.upperBound])
        var fields: [String: String] = [:]
        for line in String(decoding: header, as: UTF8.self).split(separator: "\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw bad("header line without a colon") }
            fields[String(line[..<colon])] = String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
        }
        guard let journal = fields["journal"], Hex.decode(journal)?.count == 16,
              let created = fields["created"].flatMap(Timestamp.init(rfc3339:)),
              let id = fields["backup"], Hex.decode(id)?.count == 8,
              let first = fields["first_seq"].flatMap(Int64.init), let last = fields["last_seq"].flatMap(Int64.init),
              let link = fields["head_link"]
        else { throw bad("a header field is missing or malformed") }
        return (Manifest(journal: journal, created: created, id: id, firstSeq: first, lastSeq: last, headLink: link), header)
    }
}
