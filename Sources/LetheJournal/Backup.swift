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
    private enum Tag: UInt8 {
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

    private static func fileSize(_ path: String) -> Int64 {
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
    private static func readHeader(_ path: String) throws -> (manifest: Manifest, header: [UInt8]) {
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

    /// Restores a backup as the journal `target`: every chunk is authenticated, the journal is
    /// rebuilt in a scratch file beside `target` (owner-only; one chunk in memory at a time), its
    /// indexes made again from its blocks, and verified as a journal (blocks, chain, and its
    /// head's MAC under the anchor key in `keysPath`) before it takes the name `target`. An
    /// existing `target` is replaced only when `replace` is set. The key store is not in the
    /// backup: the caller names the live one, whose keys are what make purges after the backup
    /// stay purged.
    @discardableResult
    public static func restore(_ path: String, to target: String, keysPath: String, master: MasterKeySource, replace: Bool = false) throws -> Summary {
        if !replace && [target, target + "-wal"].contains(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw JournalError(.storage, "\(target) exists; restore refuses to overwrite a journal (say so explicitly to replace it)")
        }
        let scratch = target + ".restoring"
        for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) }
        defer { for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) } }
        let rebuilt = try rebuild(path, scratch: scratch, keysPath: keysPath, master: master, place: target)
        let (manifest, chunks, journalKeys, keyStore) = (rebuilt.manifest, rebuilt.chunks, rebuilt.journalKeys, rebuilt.keyStore)
        do {
            let db = try SQLiteDatabase(path: scratch)
            defer { db.close() }
            let instance = Entropy.system.bytes(16)
            let stored = try SQLiteJournalStore(db).storedHead()
            try db.transaction {
                let meta = try db.statement("UPDATE meta SET value = ? WHERE key = ?")
                try meta.bind(1, instance).bind(2, "instance").run()
                try meta.bind(1, Anchor.mac(key: journalKeys.anchor, instance: instance, headSeq: stored.seq, headLink: stored.link)).bind(2, "head_mac").run()
            }
            guard try db.truncateWAL(wait: .seconds(10)) else { throw JournalError(.storage, "the restored journal's WAL stays busy") }
            try keyStore.anchor(journal: rebuilt.journalID, instance: instance, head: stored.head)
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.storage, "cannot restore \(path) into \(target)", underlying: error)
        }
        for p in [scratch + "-wal", scratch + "-shm"] { unlink(p) }
        if replace {
            for p in [target + "-wal", target + "-shm"] { unlink(p) }
            guard rename(scratch, target) == 0 else {
                throw JournalError(.storage, "cannot move the restored journal into place at \(target): \(String(cString: strerror(errno)))")
            }
        } else {
            // link fails if a journal appeared at `target` meanwhile: never replaced unless asked.
            guard link(scratch, target) == 0 else {
                throw JournalError(.storage, "cannot put the restored journal at \(target): \(String(cString: strerror(errno)))")
            }
        }
        return Summary(manifest: manifest, chunks: chunks, fileBytes: fileSize(path))
    }

    /// Restores a backup as the journal `backend` reaches (a database on a server): rebuilt and
    /// verified in a scratch file beside the key store first, exactly as for a file, then copied
    /// into the server's tables in one transaction (its meta, blocks, tail, accounts, recorded
    /// erasures and both indexes, as they are), with an instance and a head MAC of its own,
    /// anchored in the key store. A journal already there is replaced only when `replace` is set.
    @discardableResult
    package static func restore(_ path: String, into backend: any JournalBackend, keysPath: String, master: MasterKeySource, replace: Bool = false) throws -> Summary {
        let refusal = JournalError(.storage, "\(backend.place) holds a journal; restore refuses to overwrite a journal (say so explicitly to replace it)")
        if !replace, try backend.holdsJournal() { throw refusal }
        let scratch = keysPath + ".restoring"
        for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) }
        defer { for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) } }
        let rebuilt = try rebuild(path, scratch: scratch, keysPath: keysPath, master: master, place: backend.place)
        let instance = Entropy.system.bytes(16)
        let head: StoredHead
        do {
            if replace { try backend.drop() }
            let source = try SQLiteBackend(path: scratch).openReader()
            defer { source.close() }
            let target = try backend.openWriter(options: Journal.Options())
            defer { target.close() }
            head = try source.snapshot { try source.storedHead() }
            try source.snapshot {
                try target.write {
                    // (Another process may have begun a journal there meanwhile: never overwritten.)
                    guard try target.headSeq() ?? 0 == 0, try target.blockExtent() == nil else { throw refusal }
                    let mac = Anchor.mac(key: rebuilt.journalKeys.anchor, instance: instance, headSeq: head.seq, headLink: head.link)
                    try target.replaceMeta(try source.metaEntries().filter { $0.key != "instance" && $0.key != "head_mac" }
                        + [("instance", .bytes(instance)), ("head_mac", .bytes(mac))])
                    try copyRows(from: source, to: target)
                }
            }
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.storage, "cannot restore \(path) into \(backend.place)", underlying: error)
        }
        try rebuilt.keyStore.anchor(journal: rebuilt.journalID, instance: instance, head: head.head)
        return Summary(manifest: rebuilt.manifest, chunks: rebuilt.chunks, fileBytes: fileSize(path))
    }

    /// Copies a journal's rows, a page at a time, into an empty store inside its write
    /// transaction: blocks, tail, accounts, recorded erasures, and both indexes as they are.
    private static func copyRows(from source: any JournalStore, to target: any JournalStore) throws {
        let page = 2048
        var scan = BlockScan(source, from: 1, through: Int64.max)
        var blocks: [StoredBlock] = []
        while let block = try scan.nextBlock() {
            blocks.append(block)
            if blocks.count == 64 { try target.insert(blocks: blocks); blocks = [] }
        }
        try target.insert(blocks: blocks)
        let (events, links) = try source.tail()
        try target.appendTail(events, links: links)
        var accounts: [(name: String, row: AccountRecord)] = []
        try source.forEachAccount { name, row in
            accounts.append((name, row))
            if accounts.count == page { try target.insert(accounts: accounts); accounts = [] }
        }
        try target.insert(accounts: accounts)
        try target.recordErasures(source.erasures(kind: nil, limit: nil))
        try source.forEachIDChunk { try target.insertIDChunk($0) }
        var ids: [(id: String, seq: Int64)] = []
        try source.forEachRecentID { id, seq in
            ids.append((id, seq))
            if ids.count == page { try target.addRecentIDs(ids); ids = [] }
        }
        try target.addRecentIDs(ids)
        var runs: [BlockRun] = []
        try source.forEachBlockRun { run in
            runs.append(run)
            if runs.count == page { try target.writeBlockRuns(runs, replacing: [:]); runs = [] }
        }
        try target.writeBlockRuns(runs, replacing: [:])
        var postings: [(account: Int64, block: Int64)] = []
        try source.forEachRecentPosting { account, block in
            postings.append((account, block))
            if postings.count == page { try target.addRecentPostings(postings); postings = [] }
        }
        try target.addRecentPostings(postings)
    }

    /// A backup rebuilt as a journal file at `scratch`, every chunk authenticated and the whole
    /// verified as the journal its header describes; with the live key store it was read with.
    private struct Rebuilt {
        var manifest: Manifest
        var chunks: Int
        var journalID: [UInt8]
        var journalKeys: JournalKeys
        var keyStore: KeyStore
    }

    /// Rebuilds the backup at `path` in the new file `scratch` (owner-only; one chunk in memory at
    /// a time), its indexes made again from its blocks, and verifies it as a journal (blocks,
    /// chain, and its head's MAC under the anchor key in `keysPath`). `place` names the
    /// restore's target in messages.
    private static func rebuild(_ path: String, scratch: String, keysPath: String, master: MasterKeySource, place: String) throws -> Rebuilt {
        let (manifest, header) = try readHeader(path)
        guard FileManager.default.fileExists(atPath: keysPath) else {
            throw JournalError(.keys, "no key store at \(keysPath): a backup is read with the live key store of its journal (backups never hold one)")
        }
        // (`parseHeader` checked both: 16 and 8 bytes of hex.)
        guard let journalID = Hex.decode(manifest.journal), let id = Hex.decode(manifest.id) else {
            throw JournalError(.corrupt, "\(path) is not a usable Lethe backup: a header field is malformed")
        }
        let keyStore = try KeyStore(path: keysPath, master: master, dataPaths: [scratch], entropy: .system, synchronous: .normal)
        let journalKeys = try keyStore.journalKeys(journalID, create: false)
        let key = journalKeys.backup
        guard let input = FileHandle(forReadingAtPath: path) else { throw JournalError(.storage, "cannot read the backup \(path)") }
        defer { try? input.close() }
        try input.seek(toOffset: UInt64(header.count))
        var offset = header.count
        var chunks = 0
        do {
            try PrivateFile.prepareDatabase(scratch)
            let db = try SQLiteDatabase(path: scratch)
            defer { db.close() }
            try db.execute("\(Journal.autoVacuum); PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA secure_delete=ON")
            var loader = Loader(db: db)
            try db.transaction { try Journal.createSchema(db) }
            var ended = false
            var pending: [UInt8] = []
            while !ended {
                func damaged(_ why: String) -> JournalError {
                    JournalError(.corrupt, "the backup \(path) is damaged or foreign at chunk \(chunks + 1) (byte \(offset)): \(why)")
                }
                // Chunk numbers are u32 in the nonce and additional data.
                guard chunks < Int(UInt32.max) else { throw damaged("more chunks than a backup can have") }
                guard let prefix = try input.read(upToCount: 4), prefix.count == 4 else { throw damaged("it is cut short") }
                let length = Int(UInt32(prefix[prefix.startIndex]) | UInt32(prefix[prefix.startIndex + 1]) << 8
                    | UInt32(prefix[prefix.startIndex + 2]) << 16 | UInt32(prefix[prefix.startIndex + 3]) << 24)
                // An LZ4 frame of `chunkBytes` that does not compress, its header, and the tag.
                guard length >= 16, length <= chunkBytes + (chunkBytes >> 7) + 1024 else { throw damaged("a chunk length is out of range") }
                guard let sealed = try input.read(upToCount: length), sealed.count == length else { throw damaged("it is cut short") }
                // Whether this is the last chunk is what its additional data says: try both.
                var plain: [UInt8]?
                var last = false
                for candidate in [false, true] {
                    let box = try AES.GCM.SealedBox(nonce: try nonce(id: id, index: chunks), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
                    if let opened = try? AES.GCM.open(box, using: key, authenticating: aad(header: header, index: chunks, last: candidate)) {
                        plain = Array(opened)
                        last = candidate
                        break
                    }
                }
                guard let plain else { throw damaged("it does not authenticate (altered, or made from another journal or key store)") }
                do {
                    pending += try LZ4.decompressFrame(plain, limit: chunkBytes)
                } catch {
                    throw damaged("\(error)")
                }
                // (Errors in the records name this chunk: it is counted once they are loaded.)
                ended = try loader.load(&pending, last: last, place: { damaged($0) })
                if last && !ended { throw damaged("the content ends before its end record") }
                if ended && !last { throw damaged("the content ends before its last chunk") }
                offset += 4 + length
                chunks += 1
            }
            if let rest = try input.read(upToCount: 1), !rest.isEmpty {
                throw JournalError(.corrupt, "the backup \(path) has bytes after its last chunk")
            }
            try loader.rebuildIndexes()
            _ = try db.truncateWAL(wait: .seconds(10))
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.storage, "cannot restore \(path) into \(place)", underlying: error)
        }
        // The restored file must be the journal the header names, whole and authentic (its head
        // signed by the anchor key). It is behind the live journal's anchor, naturally: it is a
        // new file, with an instance, a signed head and an anchor of its own.
        let report = try {
            let reader = try JournalReader(backend: SQLiteBackend(path: scratch), openKeys: nil)
            defer { reader.store.close() }
            return try reader.snapshot {
                try reader.verify(authority: HeadAuthority(anchorKey: journalKeys.anchor, anchored: AnchoredHead(seq: 0, link: Chain.genesis(journalID: journalID))))
            }
        }()
        guard report.anchored, report.events == manifest.lastSeq, report.headLink == manifest.headLink else {
            throw JournalError(.corrupt, "the backup \(path) does not restore the journal its header describes")
        }
        return Rebuilt(manifest: manifest, chunks: chunks, journalID: journalID, journalKeys: journalKeys, keyStore: keyStore)
    }

    /// Writes the content stream's records into a new journal file, in transactions of a chunk.
    ///
    /// A record may continue in the next chunk, so a length beyond the bytes at hand means "wait"
    /// only up to its field's realistic limit (a block's frame `Block.maxFrameBytes`, a payload
    /// `Sealing.maxSealedBytes`, an account `Journal.maxAccountBytes`, ...): past it the stream
    /// is damaged, and said so at once rather than after the rest of the file was read.
    struct Loader {
        let db: SQLiteDatabase

        /// Limits of the fields that only the engine writes (meta keys and values, chain marks, an
        /// erasure's kept categories).
        static let maxMetaKeyBytes = 256
        static let maxMetaValueBytes = 1 << 16
        static let maxChainMarksBytes = 1 << 20

        /// Loads every whole record in `bytes` (keeping an unfinished one for the next chunk);
        /// returns true at the end record.
        mutating func load(_ bytes: inout [UInt8], last: Bool, place: (String) -> JournalError) throws -> Bool {
            var r = BinaryReader(bytes)
            var consumed = 0
            var ended = false
            try db.transaction {
                while !r.isAtEnd && !ended {
                    do {
                        ended = try record(&r)
                        consumed = r.offset
                    } catch is BinaryReader.Truncated {
                        guard !last else { throw place("the content is cut short") }
                        break  // the rest of this record is in the next chunk
                    } catch let e as BinaryReader.Malformed {
                        throw place(e.what)
                    } catch let e as SQLiteError {
                        throw place("a record does not fit the journal (\(e))")
                    }
                }
            }
            bytes.removeFirst(consumed)
            if ended && !bytes.isEmpty { throw place("bytes after the end record") }
            return ended
        }

        private func record(_ r: inout BinaryReader) throws -> Bool {
            let tagByte = try r.u8()
            guard let tag = Tag(rawValue: tagByte) else { throw BinaryReader.Malformed(what: "unknown record \(tagByte)") }
            func length(_ what: String, limit: Int) throws -> ArraySlice<UInt8> {
                let n = try r.varint()
                guard n <= UInt64(limit) else { throw BinaryReader.Malformed(what: "\(what) of \(n) bytes (at most \(limit))") }
                return try r.bytes(Int(n))
            }
            func string(_ what: String, limit: Int) throws -> String {
                guard let s = String(validating: try length(what, limit: limit), as: UTF8.self) else {
                    throw BinaryReader.Malformed(what: "\(what) is not UTF-8")
                }
                return s
            }
            switch tag {
            case .end:
                return true
            case .meta:
                let key = try string("a meta key", limit: Loader.maxMetaKeyBytes)
                let s = try db.statement("INSERT INTO meta(key, value) VALUES(?, ?)")
                s.bind(1, key)
                if try r.u8() == 0 { s.bind(2, try r.zigzag()) } else { s.bind(2, Array(try length("a meta value", limit: Loader.maxMetaValueBytes))) }
                try s.run()
            case .block:
                let (id, first, last) = (try r.zigzag(), try r.zigzag(), try r.zigzag())
                let frame = try length("a block frame", limit: Block.maxFrameBytes)
                try db.statement("INSERT INTO blocks(id, first_seq, last_seq, frame) VALUES(?, ?, ?, ?)")
                    .bind(1, id).bind(2, first).bind(3, last).bind(4, Array(frame)).run()
            case .tail:
                let s = try db.statement("""
                    INSERT INTO tail(seq, account, version, type, at, at_digits, event_id, session, counter,
                                     key_kind, key_number, key_index, payload, digest, link)
                    VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
                s.bind(1, try r.zigzag()).bind(2, try string("an account", limit: Journal.maxAccountBytes)).bind(3, try r.zigzag())
                    .bind(4, try string("a type", limit: Journal.maxTypeBytes)).bind(5, try r.zigzag())
                    .bind(6, Int64(Int8(bitPattern: try r.u8())))  // as the writer stores it: -1 for the shortest form
                let hasID = try r.u8() == 1
                let id = try string("an event id", limit: Journal.maxIDBytes)
                s.bind(7, hasID ? id : nil).bind(8, Array(try r.bytes(16))).bind(9, Int64(bitPattern: try r.varint()))
                    .bind(10, Int64(try r.u8())).bind(11, Int64(bitPattern: try r.varint())).bind(12, Int64(bitPattern: try r.varint()))
                let purged = try r.u8() == 1
                let body = Array(try length("a sealed payload", limit: Sealing.maxSealedBytes))
                if purged { s.bind(13, nil as [UInt8]?).bind(14, body) } else { s.bind(13, body).bind(14, nil as [UInt8]?) }
                try s.bind(15, Array(try r.bytes(32))).run()
            case .account:
                let s = try db.statement("INSERT INTO accounts(id, name, version, last_at, chains) VALUES(?, ?, ?, ?, ?)")
                s.bind(1, try r.zigzag()).bind(2, try string("an account", limit: Journal.maxAccountBytes)).bind(3, try r.zigzag())
                    .bind(4, try r.zigzag())
                let chains = Array(try length("an account's chain marks", limit: Loader.maxChainMarksBytes))
                try s.bind(5, chains.isEmpty ? nil : chains).run()
            case .erasure:
                let s = try db.statement("INSERT INTO erasures(id, account, kind, name, number, through, keeping, mac) VALUES(?, ?, ?, ?, ?, ?, ?, ?)")
                s.bind(1, try r.zigzag()).bind(2, try string("an account", limit: Journal.maxAccountBytes)).bind(3, try r.zigzag())
                let hasName = try r.u8() == 1, name = try string("an erasure's name", limit: Journal.maxIDBytes)
                let hasNumber = try r.u8() == 1, number = try r.zigzag()
                let hasThrough = try r.u8() == 1, through = try r.zigzag()
                let hasKeeping = try r.u8() == 1, keeping = try string("an erasure's kept categories", limit: Loader.maxMetaValueBytes)
                try s.bind(4, hasName ? name : nil).bind(5, hasNumber ? number : nil).bind(6, hasThrough ? through : nil)
                    .bind(7, hasKeeping ? keeping : nil).bind(8, Array(try length("an erasure's MAC", limit: 32))).run()
            }
            return false
        }

        /// The per-account block index and the event ids, made from the blocks and the tail.
        func rebuildIndexes() throws {
            try db.transaction {
                var ids: [String: Int64] = [:]
                let accounts = try db.statement("SELECT id, name FROM accounts")
                while try accounts.step() { ids[accounts.text(1) ?? ""] = accounts.int(0) }
                accounts.reset()
                let store = SQLiteJournalStore(db)
                let blockIndex = BlockIndex(store: store)
                let eventIDs = EventIDIndex(store: store)
                func index(_ events: [SealedEvent]) throws {
                    try eventIDs.add(events.compactMap { e in e.header.id.map { ($0, e.header.seq) } })
                }
                // One block in memory at a time.
                let blocks = try db.statement("SELECT id, first_seq, last_seq, frame FROM blocks ORDER BY first_seq")
                defer { blocks.reset() }
                while try blocks.step() {
                    let (blockID, first, last) = (blocks.int(0), blocks.int(1), blocks.int(2))
                    let block = try JournalReader.decodeFrame(blocks.blob(3), id: blockID, first: first, last: last)
                    try blockIndex.add(Set(block.events.map(\.header.account)).map { account in
                        guard let accountID = ids[account] else {
                            throw JournalError(.corrupt, "\(JournalReader.blockPlace(id: blockID, first: first, last: last)): account \(account) has no row")
                        }
                        return (accountID, blockID)
                    })
                    try index(block.events)
                }
                try index(try store.tail().0)
                try eventIDs.mergeIfDue(limit: nil, force: true)
                try blockIndex.merge()
            }
        }
    }
}
