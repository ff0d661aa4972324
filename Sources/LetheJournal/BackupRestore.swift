import Crypto
import Foundation

/// Restoring a backup (`Backup.create` writes one): into a journal file, or into a database on a
/// server through a verified scratch file; and the `Loader` that turns the content stream's
/// records back into a journal's rows.
extension Backup {
    /// Restores a backup as the journal `target`: every chunk is authenticated, the journal is
    /// rebuilt in a scratch file beside `target` (owner-only; one chunk in memory at a time), its
    /// indexes made again from its blocks, and verified as a journal (blocks, chain, and its
    /// head's MAC under the anchor key in `keysPath`) before it takes the name `target`. An
    /// existing `target` is replaced only when `replace` is set. The key store is not in the
    /// backup: the caller names the live one, whose keys are what make purges after the backup
    /// stay purged.
    @discardableResult
    public static func restore(_ path: String, to target: String, keysPath: String, master: MasterKeySource, replace: Bool = false) throws -> Summary {
        try restore(path, to: target, keys: SQLiteKeyBackend(path: keysPath), master: master, replace: replace)
    }

    /// `restore(_:to:keysPath:…)` with the key store where `keys` says.
    @discardableResult
    package static func restore(_ path: String, to target: String, keys: any KeyStoreBackend, master: MasterKeySource, replace: Bool = false) throws -> Summary {
        if !replace && [target, target + "-wal"].contains(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw JournalError(.storage, "\(target) exists; restore refuses to overwrite a journal (say so explicitly to replace it)")
        }
        let scratch = target + ".restoring"
        for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) }
        defer { for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) } }
        let rebuilt = try rebuild(path, scratch: scratch, keys: keys, master: master, place: target)
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
    /// verified in a scratch file beside the key store's file (or, for a key store on a server, in
    /// the temporary directory) first, exactly as for a file, then copied
    /// into the server's tables in one transaction (its meta, blocks, tail, accounts, recorded
    /// erasures and both indexes, as they are), with an instance and a head MAC of its own,
    /// anchored in the key store. A journal already there is replaced only when `replace` is set.
    @discardableResult
    package static func restore(_ path: String, into backend: any JournalBackend, keysPath: String, master: MasterKeySource, replace: Bool = false) throws -> Summary {
        try restore(path, into: backend, keys: SQLiteKeyBackend(path: keysPath), master: master, replace: replace)
    }

    /// `restore(_:into:keysPath:…)` with the key store where `keys` says.
    @discardableResult
    package static func restore(_ path: String, into backend: any JournalBackend, keys: any KeyStoreBackend, master: MasterKeySource, replace: Bool = false) throws -> Summary {
        let refusal = JournalError(.storage, "\(backend.place) holds a journal; restore refuses to overwrite a journal (say so explicitly to replace it)")
        if !replace, try backend.holdsJournal() { throw refusal }
        let scratch = (keys.dataPaths.first ?? NSTemporaryDirectory() + "/lethe-" + Hex.encode(Entropy.system.bytes(8))) + ".restoring"
        for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) }
        defer { for p in [scratch, scratch + "-wal", scratch + "-shm"] { unlink(p) } }
        let rebuilt = try rebuild(path, scratch: scratch, keys: keys, master: master, place: backend.place)
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
                    // The rows are written by this build, in its format, whatever the backup's was.
                    try target.replaceMeta(try source.metaEntries().filter { !["instance", "head_mac", "format"].contains($0.key) }
                        + [("instance", .bytes(instance)), ("head_mac", .bytes(mac)), ("format", .integer(Journal.formatVersion))])
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
    /// chain, and its head's MAC under the anchor key in the key store `keys`). `place` names the
    /// restore's target in messages.
    private static func rebuild(_ path: String, scratch: String, keys: any KeyStoreBackend, master: MasterKeySource, place: String) throws -> Rebuilt {
        let (manifest, header) = try readHeader(path)
        guard try keys.exists() else {
            throw JournalError(.keys, "no key store at \(keys.place): a backup is read with the live key store of its journal (backups never hold one)")
        }
        // (`parseHeader` checked both: 16 and 8 bytes of hex.)
        guard let journalID = Hex.decode(manifest.journal), let id = Hex.decode(manifest.id) else {
            throw JournalError(.corrupt, "\(path) is not a usable Lethe backup: a header field is malformed")
        }
        let keyStore = try KeyStore(keys, master: master, dataPaths: [scratch], entropy: .system, synchronous: .normal)
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
