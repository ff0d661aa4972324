import Foundation
import LetheEvents
@testable import LetheJournal
@testable import LethePostgres
import Testing

/// What someone holding the journal database's credentials (not the key store, nor the master
/// key) does with `psql`: flip bytes of a block, reorder or remove blocks, alter, remove or
/// rewrite unsealed events consistently, put an older copy of the rows back, damage the indexes,
/// plant an erasure. The same attacks as `TamperTests` and `RollbackTests` on a file, and the same
/// verdicts: `verify` names the damage, and the writer refuses to build on it.
@Suite struct PostgresTamperTests {
    /// 10 events, 4 per block: blocks 1 (events 1–4) and 2 (5–8), events 9 and 10 unsealed.
    func journal() throws -> TestPlace {
        let place = try TestPlace(.postgres)
        let j = try place.open(blockEvents: 4)
        try fill(j, 0..<10)
        #expect(try place.verify().events == 10)
        return place
    }

    func fill(_ j: Journal, _ range: Range<Int>) throws {
        for i in range {
            try j.append(event("acc_\(i % 3)", at: "2026-01-01T00:00:\(String(format: "%02d", i))Z", id: "e\(i)",
                               data: ["path": .string("/p\(i)"), "visitor": "v"]))
        }
    }

    func bytes(_ place: TestPlace, _ sql: String) throws -> [UInt8] {
        try #require(Hex.decode(try place.psql("SELECT encode((\(sql)), 'hex')")))
    }

    func literal(_ bytes: [UInt8]) -> String { "'\\x\(Hex.encode(bytes))'::bytea" }

    /// What `verify` without the key store says: nil if it passes, else its message, once the
    /// error is checked to be `.corrupt`.
    func failure(_ place: TestPlace) -> String? { corruption { _ = try JournalReader.verify(backend: place.journalBackend) } }

    /// What `verify` with the key store and the master key says.
    func anchoredFailure(_ place: TestPlace) -> String? {
        do {
            _ = try place.verify()
            return nil
        } catch let e as JournalError {
            return e.message
        } catch {
            return "\(error)"
        }
    }

    /// Why a writer refuses to open the journal (nil: it opened).
    func openFailure(_ place: TestPlace) -> String? { corruption { _ = try place.open(blockEvents: 4) } }

    @Test func flippedBytesOfABlockAreFound() throws {
        let place = try journal()
        let count = try #require(Int(try place.psql("SELECT length(frame) FROM blocks WHERE id = 2")))
        // The frame's header and end (LZ4's descriptor, checksums), and bytes spread in between.
        let offsets = Set(Array(0..<8) + Array(count - 8..<count) + Array(stride(from: 8, to: count - 8, by: max(1, count / 24))))
        for offset in offsets.sorted() {
            let flip = "UPDATE blocks SET frame = set_byte(frame, \(offset), get_byte(frame, \(offset)) # 90) WHERE id = 2"
            try place.psql(flip)
            let message = try #require(failure(place), "flip at \(offset) went unnoticed")
            #expect(message.hasPrefix("block 2 (events 5–8)"), "\(message)")
            try place.psql(flip)  // (back as it was)
        }
        #expect(failure(place) == nil)
    }

    @Test func aSwappedPayloadInARebuiltFrameBreaksTheChain() throws {
        let place = try journal()
        var block = try Block.decode(LZ4.decompressFrame(bytes(place, "SELECT frame FROM blocks WHERE id = 2"), limit: 1 << 20), where: "test")
        // A forger who re-compresses (valid LZ4 checksum) still cannot keep the chain.
        let body = block.events[0].body
        block.events[0].body = block.events[3].body
        block.events[3].body = body
        try place.psql("UPDATE blocks SET frame = \(literal(try LZ4.compressFrame(block.encode()))) WHERE id = 2")
        #expect(failure(place) == "block 2 (events 5–8): hash chain broken inside the block (contents altered)")
    }

    @Test func reorderedAndRemovedBlocksAreFound() throws {
        let place = try journal()
        try place.psql("""
            UPDATE blocks SET frame = CASE id WHEN 1 THEN (SELECT frame FROM blocks WHERE id = 2)
                                              ELSE (SELECT frame FROM blocks WHERE id = 1) END WHERE id IN (1, 2)
            """)
        #expect(failure(place) == "block 1 (events 1–4): holds events 5–8 (moved or reordered)")
        let removed = try journal()
        try removed.psql("DELETE FROM blocks WHERE id = 1")
        #expect(failure(removed) == "block 2 (events 5–8): expected the block to start at event 1 (events removed or reordered)")
    }

    @Test func anAlteredUnsealedEventIsNamedAndNotBuiltOn() throws {
        let place = try journal()
        try place.psql("UPDATE tail SET payload = substring(payload from 2) || '\\x00'::bytea WHERE seq = 9")
        #expect(failure(place) == "unsealed event 9: hash chain broken (contents altered)")
        #expect(openFailure(place) == "unsealed event 9: hash chain broken (contents altered, removed or reordered); run `lethe verify`")
        // Nothing was written: verify still names the same event.
        #expect(failure(place) == "unsealed event 9: hash chain broken (contents altered)")
    }

    @Test func eventsRemovedFromTheEndOrTheMiddleAreFound() throws {
        let place = try journal()
        try place.psql("DELETE FROM tail WHERE seq = 10")
        #expect(failure(place) == "the journal ends at event 9 but its head says 10 (events removed or truncated)")
        #expect(openFailure(place) == "journal head (event 10) does not match its stored events (last 9); run `lethe verify`")
        let middle = try journal()
        try middle.psql("DELETE FROM tail WHERE seq = 9")
        #expect(failure(middle) == "unsealed event 10: expected event 9 (events removed or reordered)")
    }

    @Test func anAlteredHeadIsFound() throws {
        let place = try journal()
        try place.psql("UPDATE meta SET bytes_value = \(literal([UInt8](repeating: 0, count: 32))) WHERE key = 'head_link'")
        #expect(failure(place) == "the chain's head link does not match the events (altered)")
    }

    /// The forger swaps two unsealed payloads and computes every link again, as verify would: the
    /// chain is consistent, and only the head's MAC, under the key store's anchor key, tells.
    @Test func aConsistentlyRewrittenChainIsCaughtByTheMasterKey() throws {
        let place = try TestPlace(.postgres)
        let j = try place.open(blockEvents: 4)
        try fill(j, 0..<6)
        let store = try place.journalBackend.openReader()
        let (tail, _) = try store.tail()
        let sealedLink = try store.lastSealedLink()
        #expect(tail.count == 2)
        var forged = tail
        forged[0].body = tail[1].body
        forged[1].body = tail[0].body
        let l0 = Chain.link(previous: sealedLink, header: forged[0].header, digest: forged[0].digest)
        let l1 = Chain.link(previous: l0, header: forged[1].header, digest: forged[1].digest)
        var sql: [String] = []
        for (e, link) in zip(forged, [l0, l1]) {
            guard case .sealed(let payload) = e.body else { Issue.record("unsealed event without payload"); return }
            sql.append("UPDATE tail SET payload = \(literal(payload)), link = \(literal(link)) WHERE seq = \(e.header.seq)")
        }
        sql.append("UPDATE meta SET bytes_value = \(literal(l1)) WHERE key = 'head_link'")
        try place.psql(sql.joined(separator: "; "))

        // Without the master key the forgery passes: the chain alone cannot tell.
        #expect(try JournalReader.verify(backend: place.journalBackend).anchored == false)
        let forgery = "the chain head (event 6) is not authenticated by the journal's anchor key: the journal was rewritten (or another key store was given)"
        #expect(anchoredFailure(place) == forgery)
        #expect(openFailure(place) == forgery)
    }

    /// A copy of the rows taken earlier (a dump, a snapshot of the database) put back: the key
    /// store's anchor saw the journal further on.
    @Test func anOlderCopyOfTheRowsPutBackIsCaught() throws {
        let place = try TestPlace(.postgres)
        let j = try place.open(blockEvents: 4)
        try fill(j, 0..<5)
        let tables = ["meta", "accounts", "blocks", "tail", "event_ids", "event_id_runs", "recent_account_blocks", "account_block_runs", "erasures"]
        try place.psql("CREATE SCHEMA \(place.schema)_old; " + tables.map { "CREATE TABLE \(place.schema)_old.\($0) AS TABLE \($0)" }.joined(separator: "; "))
        defer { _ = try? place.psql("DROP SCHEMA \(place.schema)_old CASCADE") }
        try fill(j, 5..<9)
        try place.psql(tables.map { "DELETE FROM \($0); INSERT INTO \($0) SELECT * FROM \(place.schema)_old.\($0)" }.joined(separator: "; "))
        // Consistent on its own: structure cannot tell.
        #expect(try JournalReader.verify(backend: place.journalBackend).events == 5)
        let message = try #require(anchoredFailure(place))
        #expect(message.contains("ends at event 5, but the key store's anchor saw it reach event 9"), "\(message)")
        #expect(openFailure(place)?.contains("rolled back") == true)
    }

    @Test func verifyNamesAMissingOrExtraIndexRow() throws {
        let cases: [(sql: String, expected: String)] = [
            ("DELETE FROM recent_account_blocks WHERE block_id = 2 AND account_id = 1",
             "block index: block 2 holds events of account acc_0 but the index has no entry for it"),
            ("INSERT INTO recent_account_blocks VALUES(2, 9)", "block index: an extra entry lists block 9, which the journal does not hold"),
            ("INSERT INTO account_block_runs VALUES(4, 2, '\\x0102')", "block index: an extra entry lists block 2 for account id 4, which has no events there"),
            ("DELETE FROM event_ids WHERE seq = 5", "event id index: event 5 has an id but no entry for it"),
            ("INSERT INTO event_ids VALUES('planted', 3)", "event id index: an extra entry maps an id to event 3, which does not carry it"),
            ("UPDATE event_ids SET seq = 4 WHERE seq = 5", "event id index: the id of event 5 is indexed as event 4"),
            ("UPDATE accounts SET version = 2 WHERE name = 'acc_1'", "account table: acc_1 is at version 2 but its events end at 3"),
            ("DELETE FROM accounts WHERE name = 'acc_2'", "account table: acc_2 has events (event 3"),
        ]
        for c in cases {
            let place = try journal()
            try place.psql(c.sql)
            let message = try #require(anchoredFailure(place), "\(c.sql) went unnoticed")
            #expect(message.contains(c.expected), "\(c.sql): \(message)")
        }
    }

    @Test func aPlantedErasureIsNeverActedOn() throws {
        let place = try journal()
        try place.psql("INSERT INTO erasures(account, kind, keeping, mac) VALUES('acc_1', 0, 'access-log', '\\x00')")
        let message = try #require(anchoredFailure(place))
        #expect(message.contains("erasure record 1 (of account acc_1) is not authenticated"), "\(message)")
        // The engine neither acts on it (finishing erasures destroys keys) nor decides from it.
        let writer = try place.open(blockEvents: 4)
        for attempt in [{ _ = try writer.finishErasures() }, { _ = try writer.append(event("acc_2", at: "2026-01-02T00:00:00Z")) }] {
            #expect { try attempt() } throws: { error in
                guard let e = error as? JournalError else { return false }
                return e.code == .corrupt && e.message.contains("erasure record 1 (of account acc_1) is not authenticated")
            }
        }
        // Once the operator removes it, nothing was lost.
        try place.psql("DELETE FROM erasures")
        #expect(try place.verify().events == 10)
        let j = try place.open(blockEvents: 4)
        #expect(try allEvents(j).filter { $0.header.account == "acc_1" }.count == 3)
    }
}
