import Crypto
import Foundation

/// Encrypted backups of a journal (never of its key store).
///
/// A backup file is a readable header, then the journal's database, as one consistent snapshot
/// taken with SQLite's online backup (a writer may go on meanwhile; a torn page cannot be
/// copied), cut into chunks of 4 MiB, each compressed as an LZ4 frame and sealed with
/// AES-256-GCM:
/// ```
/// "LETHE-BACKUP 1\n"   header lines "key: value\n" … "\n"
/// per chunk: length:u32 (little-endian), ciphertext ‖ tag
/// ```
/// The key is derived from the master key: HKDF-SHA256(master, salt: the journal's id, info:
/// "lethe backup v1"). Chunk `i`'s nonce is the backup's random 8-byte id ‖ `i` (u32), and its
/// additional data is SHA-256(header) ‖ `i` ‖ last (one byte), so the header, the order, and the
/// end are all authenticated: a flipped bit anywhere, a chunk moved, dropped or appended, or a
/// header changed, and the restore refuses the file before it writes anything.
///
/// The header says what the backup holds (journal, time, sequence range, sizes) without any key.
public enum Backup {
    static let magic = "LETHE-BACKUP 1\n"
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
        public var databaseBytes: Int64
        public var chunks: Int

        var lines: [(String, String)] {
            [("journal", journal), ("created", created.rfc3339), ("backup", id), ("first_seq", String(firstSeq)),
             ("last_seq", String(lastSeq)), ("head_link", headLink), ("database_bytes", String(databaseBytes)),
             ("chunks", String(chunks)), ("cipher", "AES-256-GCM, key HKDF-SHA256(master key, journal id, \"lethe backup v1\")"),
             ("compression", "LZ4 frame per chunk")]
        }

        var text: String { Backup.magic + lines.map { "\($0.0): \($0.1)\n" }.joined() + "\n" }
    }

    static func key(master: SymmetricKey, journalID: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: master, salt: journalID, info: Array("lethe backup v1".utf8), outputByteCount: 32)
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

    /// Writes a backup of `journal` to `path` (atomically: a partial file never has the name).
    @discardableResult
    public static func create(_ journal: Journal, to path: String, now: Timestamp, entropy: Entropy = .system) throws -> Manifest {
        let snapshot = path + ".snapshot"
        let partial = path + ".partial"
        for p in [snapshot, snapshot + "-journal", partial] { unlink(p) }
        defer { for p in [snapshot, snapshot + "-journal", snapshot + "-wal", snapshot + "-shm", partial] { unlink(p) } }
        do {
            // 1. One consistent snapshot, taken on a reader's connection while the writer goes on.
            let journalID: [UInt8], head: Int64, headLink: [UInt8]
            do {
                let source = try SQLiteDatabase(path: journal.path, readOnly: true)
                // Encrypted payloads, but account ids and times in clear: for the owner only.
                guard FileManager.default.createFile(atPath: snapshot, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                    throw JournalError(.storage, "cannot write \(snapshot)")
                }
                let copy = try SQLiteDatabase(path: snapshot)
                try copy.replaceContents(from: source)
                try copy.execute("PRAGMA journal_mode=DELETE")
                journalID = try JournalReader.journalID(copy)
                head = try copy.scalarInt("SELECT value FROM meta WHERE key='head_seq'") ?? 0
                let s = try copy.statement("SELECT value FROM meta WHERE key='head_link'")
                headLink = try s.step() ? s.blob(0) : []
                s.reset()
                copy.close()
                source.close()
            }
            guard let input = FileHandle(forReadingAtPath: snapshot) else { throw JournalError(.storage, "cannot read \(snapshot)") }
            defer { try? input.close() }
            let size = Int((try FileManager.default.attributesOfItem(atPath: snapshot)[.size] as? NSNumber)?.int64Value ?? 0)
            let chunks = max(1, (size + chunkBytes - 1) / chunkBytes)
            let id = entropy.bytes(8)
            let manifest = Manifest(
                journal: Hex.encode(journalID), created: now, id: Hex.encode(id), firstSeq: head > 0 ? 1 : 0, lastSeq: head,
                headLink: Hex.encode(headLink), databaseBytes: Int64(size), chunks: chunks)
            let header = Array(manifest.text.utf8)
            let key = Backup.key(master: try journal.masterKey(), journalID: journalID)
            // 2. Compressed, sealed chunk by chunk, into a file that gets its name when complete.
            guard FileManager.default.createFile(atPath: partial, contents: nil, attributes: [.posixPermissions: 0o600]),
                  let out = FileHandle(forWritingAtPath: partial)
            else { throw JournalError(.storage, "cannot write \(partial)") }
            defer { try? out.close() }
            try out.write(contentsOf: header)
            // One chunk in memory at a time, whatever the journal's size.
            for index in 0..<chunks {
                let slice = [UInt8](try input.read(upToCount: chunkBytes) ?? Data())
                let box = try AES.GCM.seal(
                    try LZ4.compressFrame(slice), using: key, nonce: try nonce(id: id, index: index),
                    authenticating: aad(header: header, index: index, last: index == chunks - 1))
                var w = BinaryWriter(capacity: box.ciphertext.count + 20)
                w.u32(UInt32(box.ciphertext.count + 16))
                w.raw(Array(box.ciphertext))
                w.raw(Array(box.tag))
                try out.write(contentsOf: w.bytes)
            }
            try out.synchronize()
            guard rename(partial, path) == 0 else { throw JournalError(.storage, "cannot move the backup into place at \(path): \(String(cString: strerror(errno)))") }
            return manifest
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.storage, "cannot back up \(journal.path) to \(path)", underlying: error)
        }
    }

    /// Reads a backup's header; throws naming the file when it is not a backup.
    public static func inspect(_ path: String) throws -> Manifest {
        try readHeader(path).manifest
    }

    /// The header (at most 64 KiB, read alone), and where the chunks start.
    private static func readHeader(_ path: String) throws -> (manifest: Manifest, header: [UInt8]) {
        guard let file = FileHandle(forReadingAtPath: path) else { throw JournalError(.storage, "cannot read the backup \(path)") }
        defer { try? file.close() }
        let start = (try? file.read(upToCount: 65_536)) ?? nil ?? Data()
        func bad(_ why: String) -> JournalError { JournalError(.corrupt, "\(path) is not a usable Lethe backup: \(why)") }
        guard start.starts(with: Array(magic.utf8)) else { throw bad("no backup header") }
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
              let link = fields["head_link"], let size = fields["database_bytes"].flatMap(Int64.init),
              let chunks = fields["chunks"].flatMap(Int.init), chunks > 0
        else { throw bad("a header field is missing or malformed") }
        let manifest = Manifest(journal: journal, created: created, id: id, firstSeq: first, lastSeq: last, headLink: link, databaseBytes: size, chunks: chunks)
        return (manifest, header)
    }

    /// Restores a backup as the journal `target`: every chunk is authenticated, the database is
    /// rebuilt in a scratch file (one chunk in memory at a time) and verified as a journal
    /// (blocks, chain, and its head's MAC under `master`), and the single-event erasures the key
    /// store at `keysPath` remembers are done again, before it takes the name `target`. An
    /// existing `target` is replaced only when `replace` is set. The key store is not in the
    /// backup: the caller names the live one.
    @discardableResult
    public static func restore(_ path: String, to target: String, keysPath: String, master: MasterKeySource, replace: Bool = false) throws -> Manifest {
        if !replace && [target, target + "-wal"].contains(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw JournalError(.storage, "\(target) exists; restore refuses to overwrite a journal (say so explicitly to replace it)")
        }
        let (manifest, header) = try readHeader(path)
        let key = Backup.key(master: try master.load(create: false, entropy: .system), journalID: Hex.decode(manifest.journal)!)
        let id = Hex.decode(manifest.id)!
        let scratch = target + ".restoring"
        for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) }
        defer { for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) } }
        guard let input = FileHandle(forReadingAtPath: path) else { throw JournalError(.storage, "cannot read the backup \(path)") }
        defer { try? input.close() }
        guard FileManager.default.createFile(atPath: scratch, contents: nil, attributes: [.posixPermissions: 0o600]),
              let output = FileHandle(forWritingAtPath: scratch)
        else { throw JournalError(.storage, "cannot write \(scratch)") }
        defer { try? output.close() }
        try input.seek(toOffset: UInt64(header.count))
        var offset = header.count
        var written: Int64 = 0
        for index in 0..<manifest.chunks {
            func damaged(_ why: String) -> JournalError {
                JournalError(.corrupt, "the backup \(path) is damaged or foreign at chunk \(index + 1) of \(manifest.chunks) (byte \(offset)): \(why)")
            }
            guard let prefix = try input.read(upToCount: 4), prefix.count == 4 else { throw damaged("it is cut short") }
            let length = Int(UInt32(prefix[prefix.startIndex]) | UInt32(prefix[prefix.startIndex + 1]) << 8
                | UInt32(prefix[prefix.startIndex + 2]) << 16 | UInt32(prefix[prefix.startIndex + 3]) << 24)
            guard length >= 16, length <= chunkBytes + (chunkBytes >> 4) + 4096 else { throw damaged("a chunk length is out of range") }
            guard let sealed = try input.read(upToCount: length), sealed.count == length else { throw damaged("it is cut short") }
            let plain: [UInt8]
            do {
                let box = try AES.GCM.SealedBox(nonce: try nonce(id: id, index: index), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
                plain = Array(try AES.GCM.open(box, using: key, authenticating: aad(header: header, index: index, last: index == manifest.chunks - 1)))
            } catch {
                throw damaged("it does not authenticate (altered, or made from another journal or master key)")
            }
            let chunk = try LZ4.decompressFrame(plain, limit: chunkBytes)
            try output.write(contentsOf: chunk)
            written += Int64(chunk.count)
            offset += 4 + length
        }
        if let rest = try input.read(upToCount: 1), !rest.isEmpty {
            throw JournalError(.corrupt, "the backup \(path) has bytes after its last chunk")
        }
        guard written == manifest.databaseBytes else {
            throw JournalError(.corrupt, "the backup \(path) holds \(written) bytes of database, its header says \(manifest.databaseBytes)")
        }
        try output.synchronize()
        // The restored file must be the journal the header names, whole and authentic.
        let report = try JournalReader.verify(path: scratch, master: master)
        guard report.anchored || manifest.lastSeq == 0, report.events == manifest.lastSeq, report.headLink == manifest.headLink else {
            throw JournalError(.corrupt, "the backup \(path) does not restore the journal its header describes")
        }
        // Before it takes its name: the single events erased since the backup (whose keys live on)
        // are erased again, as the live key store remembers them.
        do {
            let journal = try Journal(path: scratch, keysPath: keysPath, master: master)
            try journal.reapplyErasures()
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
        return manifest
    }
}
