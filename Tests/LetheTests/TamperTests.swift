import Foundation
import LetheEvents
@testable import LetheJournal
import Testing

/// Alters a journal's stored bytes behind the engine's back and checks that `verify` names the damage.
@Suite struct TamperTests {
    /// 10 events, 4 per block: blocks 1 (events 1–4) and 2 (5–8), events 9 and 10 unsealed.
    func journal(_ dir: TempDir) throws -> String {
        let j = try openJournal(dir, blockEvents: 4)
        for i in 0..<10 {
            try j.append(event("acc_\(i % 3)", at: "2026-01-01T00:00:0\(i)Z", id: "e\(i)", data: ["path": .string("/p\(i)"), "visitor": "v"]))
        }
        #expect(try JournalReader.verify(path: j.path).events == 10)
        return j.path
    }

    func damage(_ path: String, _ body: (SQLiteDatabase) throws -> Void) throws {
        let db = try SQLiteDatabase(path: path)
        try body(db)
        db.close()
    }

    func frame(_ db: SQLiteDatabase, _ id: Int64) throws -> [UInt8] {
        let s = try db.statement("SELECT frame FROM blocks WHERE id = ?")
        s.bind(1, id)
        _ = try s.step()
        return s.blob(0)
    }

    func setFrame(_ db: SQLiteDatabase, _ id: Int64, _ frame: [UInt8]) throws {
        try db.statement("UPDATE blocks SET frame = ? WHERE id = ?").bind(1, frame).bind(2, id).run()
    }

    /// What `verify` says of the journal at `path`: nil if it passes, else its message, once the
    /// error is checked to be `.corrupt` (every damage here is to a journal; `.notAJournal` is
    /// for a file that is no journal at all).
    func failure(_ path: String) -> String? { corruption { _ = try JournalReader.verify(path: path) } }

    /// Keys are read many accounts at a time (`KeyStore.prefetch`) by readers and by the sealer:
    /// a keyring swapped for another account's, among forty, is named, by the reader and by the
    /// next append, and nothing is opened or sealed under it.
    @Test func aKeyringSwappedAmongManyIsNamedWhenReadInBulk() throws {
        let dir = try TempDir()
        do {
            let j = try openJournal(dir, blockEvents: 16)
            for a in 0..<40 { try j.append(event("acc_\(a)", .accountSignedUp, at: "2026-01-01T00:00:00Z", data: ["name": "A", "email": "a@example.com"])) }
            #expect(try allEvents(j).count == 40)
        }
        let keys = try SQLiteDatabase(path: dir.path("j.lethe.keys"))
        try keys.execute("UPDATE keyrings SET sealed = (SELECT sealed FROM keyrings WHERE account = 'acc_8') WHERE account = 'acc_7'")
        keys.close()
        let j = try openJournal(dir, blockEvents: 16)
        for attempt in ["read", "append"] {
            do {
                if attempt == "read" {
                    _ = try allEvents(j)
                } else {
                    _ = try j.append((0..<40).map { a in event("acc_\(a)", .accountAccessed, at: "2026-01-02T00:00:00Z", data: ["actor": "staff_1", "ip": "198.51.100.7", "reason": "review"]) })
                }
                Issue.record("\(attempt): the swapped keyring was used")
            } catch let e as JournalError {
                #expect(e.code == .keys && e.description.contains("account acc_7") && e.description.contains("does not open under the master key"), "\(attempt): \(e)")
            }
        }
        let db = try SQLiteDatabase(path: dir.path("j.lethe"), readOnly: true)
        defer { db.close() }
        #expect(try db.scalarInt("SELECT value FROM meta WHERE key='head_seq'") == 40)
    }

    /// A read decodes the next block on another core while it hands out this one: a damaged
    /// block is named in its turn, after every block before it was handed out, not sooner.
    @Test func aReadHandsOutWhatPrecedesADamagedBlockAndThenNamesIt() throws {
        let dir = try TempDir()
        let path: String
        do {  // blocks 1 (events 1–4), 2 (5–8) and 3 (9–12), events 13 and 14 unsealed
            let j = try openJournal(dir, blockEvents: 4)
            for i in 0..<14 { try j.append(event("acc_\(i % 3)", at: "2026-01-01T00:00:\(10 + i)Z", data: ["path": .string("/p\(i)"), "visitor": "v"])) }
            path = j.path
        }
        try damage(path) { try setFrame($0, 2, [0x04, 0x22, 0x4D, 0x18, 0x00]) }
        let j = try openJournal(dir, blockEvents: 4)
        var handedOut: [Int64] = []
        do {
            try j.read { reader in try reader.scanGroups { group in handedOut += group.map(\.header.seq) } }
            Issue.record("the damaged block was read")
        } catch let e as JournalError {
            #expect(e.code == .corrupt && e.description.contains("block 2"), "\(e)")
        }
        #expect(handedOut == [1, 2, 3, 4])
    }

    /// A read finds each group's keys on a queue of its own, up to three groups ahead of the
    /// caller: a group whose keys cannot be read is named in its turn, after every event before
    /// it was handed out, and the reader reads again as before (the queue is done with the key
    /// store when the read ends).
    @Test func aReadHandsOutWhatPrecedesAnUnreadableKeyringAndThenNamesIt() throws {
        let dir = try TempDir()
        do {  // blocks 1 (events 1–4), 2 (5–8) and 3 (9–12), events 13 and 14 unsealed; "late" first in block 3
            let j = try openJournal(dir, blockEvents: 4)
            for i in 0..<14 {
                try j.append(event(i == 9 ? "late" : "acc_\(i % 3)", at: "2026-01-01T00:00:\(10 + i)Z", data: ["path": .string("/p\(i)"), "visitor": "v"]))
            }
        }
        let keys = try SQLiteDatabase(path: dir.path("j.lethe.keys"))
        try keys.execute("UPDATE keyrings SET sealed = (SELECT sealed FROM keyrings WHERE account = 'acc_1') WHERE account = 'late'")
        keys.close()
        let j = try openJournal(dir, blockEvents: 4)
        for _ in 0..<2 {
            var handedOut: [Int64] = []
            do {
                try j.read { reader in try reader.events { handedOut.append($0.header.seq) } }
                Issue.record("the damaged keyring was used")
            } catch let e as JournalError {
                #expect(e.code == .keys && e.description.contains("account late"), "\(e)")
            }
            #expect(handedOut == Array(1...8))
        }
    }

    @Test func everyFlippedByteOfABlockIsFound() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        let original = try SQLiteDatabase(path: path).statement("SELECT frame FROM blocks WHERE id = 2")
        _ = try original.step()
        let bytes = original.blob(0)
        for offset in 0..<bytes.count {
            var altered = bytes
            altered[offset] ^= 0x5A
            try damage(path) { try setFrame($0, 2, altered) }
            let message = try #require(failure(path), "flip at \(offset) went unnoticed")
            #expect(message.hasPrefix("block 2 (events 5–8)"), "\(message)")
        }
    }

    @Test func aRebuiltFrameWithAlteredContentBreaksTheChain() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { db in
            var block = try Block.decode(LZ4.decompressFrame(frame(db, 1), limit: 1 << 20), where: "test")
            // A forger who re-compresses (valid LZ4 checksum) still cannot keep the chain.
            block.events[2].header.at = block.events[2].header.at.adding(seconds: 1)
            try setFrame(db, 1, LZ4.compressFrame(block.encode()))
        }
        #expect(failure(path) == "block 1 (events 1–4): hash chain broken inside the block (contents altered)")
    }

    @Test func aSwappedPayloadBreaksTheChain() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { db in
            var block = try Block.decode(LZ4.decompressFrame(frame(db, 2), limit: 1 << 20), where: "test")
            let body = block.events[0].body
            block.events[0].body = block.events[3].body
            block.events[3].body = body
            try setFrame(db, 2, LZ4.compressFrame(block.encode()))
        }
        #expect(failure(path) == "block 2 (events 5–8): hash chain broken inside the block (contents altered)")
    }

    @Test func truncatedBlocksAreFound() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { db in try setFrame(db, 1, Array(try frame(db, 1).dropLast(7))) }
        #expect(failure(path) == "block 1 (events 1–4): truncated LZ4 frame")
    }

    @Test func reorderedBlocksAreFound() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { db in
            let (a, b) = (try frame(db, 1), try frame(db, 2))
            try setFrame(db, 1, b)
            try setFrame(db, 2, a)
        }
        #expect(failure(path) == "block 1 (events 1–4): holds events 5–8 (moved or reordered)")
    }

    @Test func aRemovedBlockIsFound() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { try $0.execute("DELETE FROM blocks WHERE id = 1") }
        #expect(failure(path) == "block 2 (events 5–8): expected the block to start at event 1 (events removed or reordered)")
    }

    @Test func anAlteredUnsealedEventIsNamed() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { try $0.execute("UPDATE tail SET payload = substr(payload, 2) || x'00' WHERE seq = 9") }
        #expect(failure(path) == "unsealed event 9: hash chain broken (contents altered)")
    }

    @Test func theWriterRefusesToBuildOnAnAlteredUnsealedEvent() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { try $0.execute("UPDATE tail SET payload = substr(payload, 2) || x'00' WHERE seq = 9") }
        // The head is consistent and authenticated, but the tail no longer chains up to it: a
        // writer must refuse to open, naming the event, rather than append on top and seal the
        // altered payload into a block (issue 10: "on open and reload, the writer checks that
        // the tail chains up to the authenticated head").
        #expect { try openJournal(dir, blockEvents: 4) } throws: { error in
            guard let e = error as? JournalError else { return false }
            return e.code == .corrupt && e.message == "unsealed event 9: hash chain broken (contents altered, removed or reordered); run `lethe verify`"
        }
        // Nothing was written: verify still names the same event.
        #expect(failure(path) == "unsealed event 9: hash chain broken (contents altered)")
    }

    @Test func truncationAtTheEndIsFound() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { try $0.execute("DELETE FROM tail WHERE seq = 10") }
        #expect(failure(path) == "the journal ends at event 9 but its head says 10 (events removed or truncated)")
        // And the engine will not write onto it: the head it reloads names an event that is gone.
        // (Damage is `.corrupt`; `.storage` would mean SQLite or the file system failed.)
        #expect { try openJournal(dir, blockEvents: 4) } throws: { error in
            guard let e = error as? JournalError else { return false }
            return e.code == .corrupt && e.message == "journal head (event 10) does not match its stored events (last 9); run `lethe verify`"
        }
    }

    @Test func aRemovedTailEventIsFound() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { try $0.execute("DELETE FROM tail WHERE seq = 9") }
        #expect(failure(path) == "unsealed event 10: expected event 9 (events removed or reordered)")
    }

    @Test func anAlteredHeadIsFound() throws {
        let dir = try TempDir()
        let path = try journal(dir)
        try damage(path) { try $0.execute("UPDATE meta SET value = zeroblob(32) WHERE key = 'head_link'") }
        #expect(failure(path) == "the chain's head link does not match the events (altered)")
    }

    @Test func aForeignFileIsNotAJournal() throws {
        let dir = try TempDir()
        let path = dir.path("not.lethe")
        try Data("hello, this is not sqlite at all, not even close................................".utf8).write(to: URL(fileURLWithPath: path))
        #expect { try JournalReader.verify(path: path) } throws: { ($0 as? JournalError)?.code == .notAJournal }
    }
}

/// A forger with write access to the journal but without the master key.
@Suite struct AnchorTests {
    @Test func aChainLinkHashesTheDocumentedHeaderBytes() {
        // Known answers computed outside Swift (Python's hashlib over the layout documented on
        // `Chain`): a change to how a link is computed would orphan every stored journal.
        let header = EventHeader(seq: 7, version: 3, account: "acc_1", type: "PageViewed",
                                 at: Timestamp(nanoseconds: 1_767_225_600_123_000_000, fractionDigits: 3), id: "evt-9")
        let previous = [UInt8](repeating: 0x11, count: 32), digest = [UInt8](repeating: 0xAB, count: 32)
        #expect(Hex.encode(Chain.link(previous: previous, header: header, digest: digest))
                == "c8427a084d30b6ca7111265dedd9c4a7407284b916ef030e8b41744f67932623")
        var anonymous = header
        anonymous.id = nil
        #expect(Hex.encode(Chain.link(previous: previous, header: anonymous, digest: digest))
                == "b26b35e3a95155b903d48079711567722d4898ec7cde5dc6af0dc3bd895748e2")
    }

    @Test func aConsistentlyRewrittenChainIsCaughtByTheMasterKey() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        for i in 0..<6 { try j.append(event("acc_1", at: "2026-01-01T00:00:0\(i)Z", data: ["path": .string("/p\(i)"), "visitor": "v"])) }
        let path = j.path
        // Swap the payloads of the two unsealed events and recompute their links and the head,
        // exactly as verify would: the chain is consistent again.
        let db = try SQLiteDatabase(path: path)
        let (tail, _) = try SQLiteJournalStore(db).tail()
        #expect(tail.count == 2)
        var forged = tail
        forged[0].body = tail[1].body
        forged[1].body = tail[0].body
        let sealedLink = try SQLiteJournalStore(db).lastSealedLink()
        let l0 = Chain.link(previous: sealedLink, header: forged[0].header, digest: forged[0].digest)
        let l1 = Chain.link(previous: l0, header: forged[1].header, digest: forged[1].digest)
        for (e, link) in zip(forged, [l0, l1]) {
            guard case .sealed(let bytes) = e.body else { Issue.record("unsealed event without payload"); return }
            try db.statement("UPDATE tail SET payload = ?, link = ? WHERE seq = ?").bind(1, bytes).bind(2, link).bind(3, e.header.seq).run()
        }
        try db.statement("UPDATE meta SET value = ? WHERE key = 'head_link'").bind(1, l1).run()
        db.close()

        // Without the master key the forgery passes: the chain alone cannot tell.
        #expect(try JournalReader.verify(path: path).anchored == false)
        // With it, the head's MAC gives it away, and the engine refuses to write on top of it.
        #expect {
            try JournalReader.verify(path: path, keysPath: path + ".keys", master: testMaster)
        } throws: { ($0 as? JournalError)?.message == "the chain head (event 6) is not authenticated by the journal's anchor key: the journal was rewritten (or another key store was given)" }
        #expect { try openJournal(dir, blockEvents: 4) } throws: { error in
            guard let e = error as? JournalError else { return false }
            return e.code == .corrupt && e.message == "the chain head (event 6) is not authenticated by the journal's anchor key: the journal was rewritten (or another key store was given)"
        }
    }

    @Test func anHonestJournalIsAuthenticated() throws {
        let dir = try TempDir()
        let j = try openJournal(dir, blockEvents: 4)
        #expect(try JournalReader.verify(path: j.path, keysPath: j.keysPath, master: testMaster).anchored)
        for i in 0..<9 { try j.append(event("acc_\(i % 2)", at: "2026-01-01T00:00:0\(i)Z")) }
        #expect(try JournalReader.verify(path: j.path, keysPath: j.keysPath, master: testMaster).anchored)
        let other = MasterKeySource.key(String(repeating: "0f", count: 32))
        // Another master key does not even open the key store: a key error, not a verdict on the chain.
        #expect { try JournalReader.verify(path: j.path, keysPath: j.keysPath, master: other) } throws: { error in
            guard let e = error as? JournalError else { return false }
            return e.code == .keys && e.message.hasPrefix("the master key does not open the key store \(j.keysPath) ")
        }
    }
}
