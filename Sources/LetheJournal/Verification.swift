import Crypto
import Foundation

// `lethe verify`'s checks: every block, the chain, the head, and each table the engine reads
// besides the blocks, compared with the events; on a difference, the first one named. The walk
// along the chain they share with `authenticate` (what a reader that acts on new events checks
// first) is here too.
extension JournalReader {
    public struct VerifyReport: Sendable {
        public var events: Int64 = 0
        public var blocks: Int64 = 0
        public var tailEvents: Int64 = 0
        public var purgedEvents: Int64 = 0
        public var accounts: Int64 = 0
        public var storedBytes: Int64 = 0
        /// The chain's last link, hex: publish it to pin the journal's history.
        public var headLink: String = ""
        /// Whether the head's MAC was checked against the journal's anchor key (and matched).
        public var anchored = false
        /// The head the key store remembers for this file, which the journal was checked not to
        /// be behind nor to have forked from; nil when no key store was read.
        public var anchoredSeq: Int64?
        /// Erasures recorded and not carried out yet (each checked against its MAC when `anchored`).
        public var pendingErasures: Int64 = 0
        /// The other files of this journal the key store anchors (restores, each a history of
        /// its own), by instance (hex) and head: a file put in another's place shows here.
        public var otherFiles: [(instance: String, seq: Int64)] = []
    }

    /// Walks the stored events from the block that holds event `from` (or the tail) to the end:
    /// the sequence has no gap, every block continues the chain of the one before and ends on the
    /// link it stores, and every unsealed event on its stored link. `event` sees each event of
    /// the walk with the link after it (events before `from` in the first block included);
    /// `block`, each block. Returns the last link and the last sequence number.
    ///
    /// - Complexity: the blocks from `from` on, one in memory at a time.
    func walkChain(
        from: Int64, progress: ((Int64) -> Void)? = nil,
        event: (SealedEvent, _ place: String, _ link: [UInt8]) throws -> Void = { _, _, _ in },
        block: (_ id: Int64, Block, _ frameBytes: Int) throws -> Void = { _, _, _ in }
    ) throws -> (link: [UInt8], last: Int64) {
        var link: [UInt8]?
        var expectedSeq: Int64? = from == 1 ? 1 : nil
        var scratch: [UInt8] = []
        var walked: Int64 = 0
        var blocks = BlockScan(store, from: from, through: .max)
        while let row = try wrap({ try blocks.nextBlock() }) {
            let (id, first, last) = (row.id, row.first, row.last)
            let place = JournalReader.blockPlace(id: id, first: first, last: last)
            if let expectedSeq, first != expectedSeq {
                throw JournalError(.corrupt, "\(place): expected the block to start at event \(expectedSeq) (events removed or reordered)")
            }
            if link == nil, first > from {
                throw JournalError(.corrupt, "\(place): expected a block holding event \(from) (events removed)")
            }
            let frame = row.frame
            let decoded = try row.decode()
            if let link, decoded.previousLink != link {
                throw JournalError(.corrupt, "\(place): does not continue the hash chain of the block before it")
            }
            if link == nil, first == 1, decoded.previousLink != (try wrap { try store.genesis() }) {
                throw JournalError(.corrupt, "\(place): does not start from the journal's genesis link")
            }
            var running = decoded.previousLink
            for e in decoded.events {
                running = Chain.link(previous: running, header: e.header, digest: e.digest, scratch: &scratch)
                try event(e, place, running)
            }
            guard running == decoded.lastLink else {
                throw JournalError(.corrupt, "\(place): hash chain broken inside the block (contents altered)")
            }
            try block(id, decoded, frame.count)
            link = running
            expectedSeq = last + 1
            walked += Int64(decoded.events.count)
            progress?(walked)
        }
        let (tail, tailLinks) = try wrap { try store.tail() }
        if link == nil {
            // Nothing sealed from `from` on: the walk starts at the tail, or at the last block's end.
            link = try wrap { try store.lastSealedLink() }
            expectedSeq = (try wrap { try store.blockExtent()?.maxLastSeq } ?? 0) + 1
        }
        var running = link!
        var next = expectedSeq!
        for (e, stored) in zip(tail, tailLinks) {
            let place = "unsealed event \(e.header.seq)"
            guard e.header.seq == next else {
                throw JournalError(.corrupt, "\(place): expected event \(next) (events removed or reordered)")
            }
            running = Chain.link(previous: running, header: e.header, digest: e.digest, scratch: &scratch)
            guard running == stored else { throw JournalError(.corrupt, "\(place): hash chain broken (contents altered)") }
            try event(e, place, running)
            next += 1
            walked += 1
        }
        progress?(walked)
        return (running, next - 1)
    }

    /// Checks the events after `seq` against the authenticated head, as `Journal.read(authenticated:)`
    /// set it up: they chain up to the stored head, whose MAC is the anchor key's and which is
    /// not behind the head the key store remembers (`HeadCheck`). What a reader that acts on
    /// new events (the read models, and a retention run through them) calls first: content
    /// that was altered since it was written is refused before anything acts on it.
    ///
    /// - Complexity: the blocks after `seq` (and the one holding it).
    package func authenticate(after seq: Int64) throws {
        guard let authority else { throw JournalError(.keys, "this reader was not opened to authenticate the journal") }
        let stored = try wrap { try store.storedHead() }
        guard seq <= stored.seq else {
            throw JournalError(.corrupt, "the journal ends at event \(stored.seq), before event \(seq) that was read from it already (rolled back)")
        }
        var atAnchor: [UInt8]?
        let anchorSeq = authority.anchored?.seq ?? -1
        let walked = try walkChain(from: seq + 1, event: { e, _, link in if e.header.seq == anchorSeq { atAnchor = link } })
        try JournalReader.checkEnd(walked, stored)
        try HeadCheck.check(stored, anchorKey: authority.anchorKey, anchored: authority.anchored) { at in
            if let atAnchor, at == anchorSeq { return atAnchor }
            return try store.link(at: at)
        }
    }

    static func checkEnd(_ walked: (link: [UInt8], last: Int64), _ stored: StoredHead) throws {
        guard walked.last == stored.seq else {
            throw JournalError(.corrupt, "the journal ends at event \(walked.last) but its head says \(stored.seq) (events removed or truncated)")
        }
        guard walked.link == stored.link else { throw JournalError(.corrupt, "the chain's head link does not match the events (altered)") }
    }

    /// Checks every block's frame and content, the sequence, every account's version and time
    /// order, the hash chain from genesis to the head, the head against `authority`
    /// (`HeadCheck`), and that every table the engine reads besides the blocks agrees with them:
    /// `accounts`, both tables of each index (compared as tallies, `PairTally`), and the recorded
    /// erasures' MACs. Throws `.corrupt` naming the first damaged block, event or row.
    ///
    /// - Complexity: one pass over the journal, and one over each index; memory proportional to
    ///   the number of accounts.
    func verify(authority: HeadAuthority?, progress: ((Int64, Int64) -> Void)? = nil) throws -> VerifyReport {
        var report = VerifyReport()
        let stored = try wrap { try store.storedHead() }
        let head = stored.seq
        struct Account {
            var id: Int64
            var version: Int64
            var lastAt: Int64
            var seenVersion: Int64 = 0
            var seenAt: Int64 = .min
        }
        var accounts: [String: Account] = [:]
        try wrap {
            // Account ids are the writer's to give (up to meta `account_ids`, absent before format
            // 6), one per account: two accounts on one id would share their block postings.
            let given = try store.counter(.accountIDs)
            var owners: [Int64: String] = [:]
            try store.forEachAccount { name, row in
                let id = row.id
                if let other = owners.updateValue(name, forKey: id) {
                    throw JournalError(.corrupt, "account table: accounts \(other) and \(name) have the same id \(id)")
                }
                guard id >= 1, id <= given ?? .max else {
                    throw JournalError(.corrupt, "account table: account \(name) has id \(id), outside the ids given (1 to \(given ?? 0))")
                }
                accounts[name] = Account(id: id, version: row.version, lastAt: row.lastAt)
            }
        }
        // Both indexes are compared with the events as tallies: they are in account or id order,
        // the events in sequence order.
        var random = SystemRandomNumberGenerator()
        var ids = PairTally(key: (random.next(), random.next()))
        var postings = PairTally(key: ids.key)
        var atAnchor: [UInt8]?
        let anchorSeq = authority?.anchored?.seq ?? -1
        var lastBlockID: Int64 = 0
        let walked = try walkChain(from: 1, progress: { progress?($0, head) }, event: { e, place, link in
            let h = e.header
            guard var account = accounts[h.account] else {
                throw JournalError(.corrupt, "account table: \(h.account) has events (event \(h.seq), \(place)) but no row")
            }
            guard h.version == account.seenVersion + 1 else {
                throw JournalError(.corrupt, "\(place): event \(h.seq) has version \(h.version) of account \(h.account), expected \(account.seenVersion + 1) (events removed or reordered)")
            }
            guard h.at.nanoseconds >= account.seenAt else {
                throw JournalError(.corrupt, "\(place): event \(h.seq) goes back in time for its account (reordered)")
            }
            if case .purged(let digest) = e.body {
                guard digest.count == 32 else { throw JournalError(.corrupt, "\(place): event \(h.seq) has a damaged digest") }
                report.purgedEvents += 1
            }
            account.seenVersion = h.version
            account.seenAt = h.at.nanoseconds
            accounts[h.account] = account
            if let id = h.id { ids.add(id, seq: h.seq) }
            if h.seq == anchorSeq { atAnchor = link }
            report.events += 1
        }, block: { id, block, frameBytes in
            guard id > lastBlockID else { throw JournalError(.corrupt, "block \(id): its id is out of order (block ids grow with the sequence)") }
            lastBlockID = id
            var held = Set<Int64>()
            for e in block.events { held.insert(accounts[e.header.account]?.id ?? -1) }
            for account in held { postings.add(account: account, block: id) }
            report.blocks += 1
            report.storedBytes += Int64(frameBytes)
        })
        try JournalReader.checkEnd(walked, stored)
        report.tailEvents = report.events - (try wrap { try store.sealedEventCount() })
        if try wrap({ try BlockIndex(store: store).tally(key: postings.key) }) != postings {
            throw try blockIndexDifference(ids: accounts.mapValues(\.id))
        }
        if try wrap({ try EventIDIndex(store: store).tally(key: ids.key) }) != ids { throw try idIndexDifference() }
        // The accounts table the writer relies on must agree with the events.
        for (name, account) in accounts {
            guard account.version == account.seenVersion, account.seenVersion > 0 else {
                throw JournalError(.corrupt, "account table: \(name) is at version \(account.version) but its events end at \(account.seenVersion)")
            }
            guard account.lastAt == account.seenAt else {
                throw JournalError(.corrupt, "account table: \(name)'s latest event time does not match its events")
            }
        }
        report.accounts = Int64(accounts.count)
        let tailBytes = try wrap { try store.tailPayloadBytes() }
        report.storedBytes += tailBytes
        if let authority {
            try HeadCheck.check(stored, anchorKey: authority.anchorKey, anchored: authority.anchored) { at in
                if at == 0 { return try store.genesis() }
                guard let atAnchor, at == anchorSeq else { return try store.link(at: at) }
                return atAnchor
            }
            report.anchored = authority.anchorKey != nil
            report.anchoredSeq = authority.anchored?.seq
            report.otherFiles = authority.otherFiles.filter { $0.instance != Hex.encode(stored.instance) }
            if let key = authority.anchorKey {
                report.pendingErasures = try RecordedErasure.checkAll(store, key: key)
            }
        }
        report.headLink = Hex.encode(walked.link)
        progress?(report.events, head)
        return report
    }
}

extension JournalReader {
    /// Names the first difference between the events' ids and the id index, once their tallies
    /// differ: an event whose id the index does not map to it, else an entry whose event does
    /// not carry its id. Only on this error path does it look ids up one by one.
    private func idIndexDifference() throws -> JournalError {
        let index = EventIDIndex(store: store)
        var difference: JournalError?
        try scanGroups { group in
            guard difference == nil else { return }
            let named = group.filter { $0.header.id != nil }
            let found = try wrap { try index.seqs(of: named.map { $0.header.id! }) }
            for e in named where found[ExactID(e.header.id!)] != e.header.seq {
                difference = JournalError(.corrupt, found[ExactID(e.header.id!)].map { "event id index: the id of event \(e.header.seq) is indexed as event \($0)" }
                    ?? "event id index: event \(e.header.seq) has an id but no entry for it")
                return
            }
        }
        if let difference { return difference }
        // Every event is found: an entry is one too many, one whose event does not carry its id.
        try wrap {
            try index.forEachEntry { id, seq in
                guard difference == nil else { return }
                var carried: String?
                try scan(from: seq, through: seq) { carried = $0.header.id }
                if carried.map({ ExactID($0) }) != ExactID(String(decoding: id, as: UTF8.self)) {
                    difference = JournalError(.corrupt, "event id index: an extra entry maps an id to event \(seq), which does not carry it")
                }
            }
        }
        return difference ?? JournalError(.corrupt, "event id index: an id is indexed twice")
    }

    /// Names the first difference between the blocks' accounts and the block index, once their
    /// tallies differ: a block whose account the index does not list there, else an entry that
    /// lists a block without events of its account. (On this error path only: it holds every
    /// block's accounts in memory.)
    private func blockIndexDifference(ids: [String: Int64]) throws -> JournalError {
        func name(_ id: Int64) -> String { ids.first { $0.value == id }?.key ?? "id \(id)" }
        let index = BlockIndex(store: store)
        var holders: [Int64: Set<Int64>] = [:]
        var listed: [Int64: Set<Int64>] = [:]
        var blocks = BlockScan(store, from: .min, through: .max)
        while let row = try wrap({ try blocks.nextBlock() }) {
            let id = row.id
            let block = try row.decode()
            var held = Set<Int64>()
            for name in Set(block.events.map(\.header.account)) {
                guard let account = ids[name] else { continue }
                held.insert(account)
                if listed[account] == nil { listed[account] = Set(try wrap { try index.blocks(ofAccount: name) }) }
                if !listed[account]!.contains(id) {
                    return JournalError(.corrupt, "block index: block \(id) holds events of account \(name) but the index has no entry for it")
                }
            }
            holders[id] = held
        }
        var difference: JournalError?
        try wrap {
            try index.forEachPosting { account, block in
                guard difference == nil else { return }
                guard let held = holders[block] else {
                    difference = JournalError(.corrupt, "block index: an extra entry lists block \(block), which the journal does not hold")
                    return
                }
                if !held.contains(account) {
                    difference = JournalError(.corrupt, "block index: an extra entry lists block \(block) for account \(name(account)), which has no events there")
                }
            }
        }
        return difference ?? JournalError(.corrupt, "block index: an entry is listed twice")
    }
}

/// What a reader checks the journal's head against, read from the key store before the reader's
/// snapshot began (so that the key store's anchor can only be behind the snapshot, never ahead).
package struct HeadAuthority: Sendable {
    /// nil without the master key: the head's MAC is not checked.
    var anchorKey: SymmetricKey?
    /// What the key store remembers for this file; nil when it has nothing.
    var anchored: AnchoredHead?
    /// Every file of the journal the key store anchors, by instance (hex).
    var otherFiles: [(instance: String, seq: Int64)] = []
}
