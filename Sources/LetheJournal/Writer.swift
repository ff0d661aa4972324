import Crypto
import Foundation
import Synchronization

/// The writer's state: the connection, the head of the chain, the unsealed tail and the caches.
///
/// Lives inside the journal's mutex, so it is never touched by two threads at once.
final class Writer {
    struct AccountRow {
        var id: Int64
        var version: Int64
        var lastAt: Int64
        /// The last index appended to each of the account's record chains, by slot.
        var chains = ChainMarks()
        /// Whether this batch moved a chain mark (only then is `chains` written again).
        var chainsMoved = false

        init(id: Int64, version: Int64, lastAt: Int64, chains: ChainMarks = ChainMarks()) {
            (self.id, self.version, self.lastAt, self.chains) = (id, version, lastAt, chains)
        }

        /// A stored row, checked.
        init(_ name: String, _ stored: AccountRecord, keys: KeyStore) throws {
            let chains = try stored.chains.map { bytes in
                try ChainMarks.decode(bytes, account: name) { category in try keys.keyring(name)?.chain(category: category)?.slot }
            } ?? ChainMarks()
            // (The writer adds one to the version: a row edited to the end of the range is damage, not a trap.)
            guard (0..<Int64.max).contains(stored.version) else { throw JournalError(.corrupt, "account \(name): version \(stored.version) out of range") }
            self.init(id: stored.id, version: stored.version, lastAt: stored.lastAt, chains: chains)
        }
    }

    private(set) var store: any JournalStore
    let options: Options
    /// The writer's own connection to the key store (for the keys it checks and reads).
    let keys: KeyStore
    private let journalKeys: JournalKeys
    /// Authenticates the chain head (see `Anchor`).
    var anchorKey: SymmetricKey { journalKeys.anchor }
    /// The journal's identity and this file's instance (meta `journal_id`, `instance`).
    let journalID: [UInt8]
    private(set) var instance: [UInt8] = []
    private(set) var headSeq: Int64 = 0
    /// How many erasures the journal has done (meta `erased`): when another process erased, the tail in memory is stale.
    private(set) var erased: Int64 = 0
    private var headLink: [UInt8] = []
    /// The chain link after the last sealed block: the link before the first tail event.
    private var sealedLink: [UInt8] = []
    private var tail: [SealedEvent] = []
    private var tailLinks: [[UInt8]] = []
    private var nextAccountID: Int64 = 1
    private var nextBlockID: Int64 = 1
    /// The domain's rules, following the accounts this writer has seen.
    private let rules: (any RulesChecker)?
    /// Finds keys during an append (to read an account's history for the rules).
    private var lookupKey: ((String, KeyRef) throws -> KeyStore.Lookup)?
    /// Known accounts; a cache of the `accounts` table, cleared when it outgrows `accountCacheLimit`.
    private var accounts: [String: AccountRow] = [:]
    private let accountCacheLimit = 200_000

    typealias Options = Journal.Options

    init(store: any JournalStore, keys: KeyStore, journalID: [UInt8], journalKeys: JournalKeys, options: Options) throws {
        self.store = store
        self.journalID = journalID
        self.options = options
        self.keys = keys
        self.journalKeys = journalKeys
        rules = options.rules?.makeChecker()
        instance = try store.storedHead().instance
        // One snapshot of the file (another process may be appending).
        try store.snapshot { try reload() }
        options.logger.debug("journal opened", metadata: [
            "path": "\(store.place)", "head_seq": "\(headSeq)", "unsealed": "\(tail.count)",
        ])
    }

    /// Reads the head, the tail and the id counters from disk, and checks them: the tail chains up
    /// to the stored head, and the head passes `HeadCheck` against the anchor key and the key
    /// store's anchor. A writer never writes on top of, nor decides from, a head it cannot trust.
    ///
    /// Called inside the write transaction (the key store's anchor cannot then be ahead of what
    /// this connection sees), or at open inside a read transaction begun after reading the anchor.
    func reload() throws {
        rules?.forget()
        do {
            // The anchor first: the snapshot of the journal then begins after it.
            let anchored = try keys.anchoredHead(journal: journalID, instance: instance)
            let stored = try store.storedHead()
            guard stored.instance == instance else { throw JournalError(.corrupt, "the journal file was replaced under this writer (another instance)") }
            (headSeq, headLink) = (stored.seq, stored.link)
            erased = try store.counter(.erased) ?? 0
            nextAccountID = try storedNextAccountID()
            let extent = try store.blockExtent()
            nextBlockID = try Writer.id(after: extent?.maxID, of: "block")
            let lastBlockSeq = extent?.maxLastSeq ?? 0
            sealedLink = try store.lastSealedLink()
            (tail, tailLinks) = try store.tail()
            accounts.removeAll()
            // (A block's last sequence edited to the end of the range is damage, not an overflow trap.)
            guard lastBlockSeq < Int64.max else {
                throw JournalError(.corrupt, "journal head (event \(headSeq)) does not match its stored events (last \(lastBlockSeq)); run `lethe verify`")
            }
            // The tail chains from the last block up to the head, event by event.
            var link = sealedLink
            var expected = lastBlockSeq + 1
            var scratch: [UInt8] = []
            for (e, stored) in zip(tail, tailLinks) {
                link = Chain.link(previous: link, header: e.header, digest: e.digest, scratch: &scratch)
                guard e.header.seq == expected, link == stored else {
                    throw JournalError(.corrupt, "unsealed event \(e.header.seq): hash chain broken (contents altered, removed or reordered); run `lethe verify`")
                }
                expected += 1
            }
            guard expected - 1 == headSeq, link == headLink else {
                throw JournalError(.corrupt, "journal head (event \(headSeq)) does not match its stored events (last \(expected - 1)); run `lethe verify`")
            }
            try HeadCheck.check(stored, anchorKey: anchorKey, anchored: anchored) { at in
                at == headSeq ? headLink : try store.link(at: at)
            }
        } catch {
            throw JournalError.storage("cannot read the journal's head", error)
        }
    }

    /// How many times a writer whose connection was lost tries to connect again before it gives
    /// up (waiting 50 ms, then twice as long each time: about 6 s in all).
    static let reconnectAttempts = 8

    /// Connects again when the connection was lost (a server restarted, say), before the
    /// writer's next use: tries `reconnectAttempts` times with growing pauses, then reads the
    /// journal afresh from the new connection, as at open (whatever was committed meanwhile, by
    /// any instance, is there; what the lost transaction did not commit is not). The append
    /// that was under way when the connection was lost has failed already, and said so.
    func reconnectIfBroken(_ backend: any JournalBackend) throws {
        guard store.isBroken else { return }
        var pause = Duration.milliseconds(50)
        var attempt = 1
        while true {
            do {
                let fresh = try backend.openWriter(options: options)
                store.close()
                store = fresh
                try store.snapshot { try reload() }
                options.logger.notice("connected again to the journal at \(store.place)", metadata: ["attempts": "\(attempt)"])
                return
            } catch {
                guard attempt < Writer.reconnectAttempts else {
                    throw JournalError.storage("the connection to the journal at \(store.place) was lost and \(attempt) attempts to connect again failed", error)
                }
                Thread.sleep(forTimeInterval: Double(pause.components.attoseconds) / 1e18 + Double(pause.components.seconds))
                pause *= 2
                attempt += 1
            }
        }
    }

    /// Brings the writer to the journal's head after other writers appended (called inside the
    /// write transaction, as `reload`). When they only added to the tail (no block sealed, no
    /// erasure since), only their events are read, chained on from this writer's head, and only
    /// their accounts are forgotten: with several instances appending in turn, each append reads
    /// what the others added, not the whole tail again. Otherwise, or when anything does not fit,
    /// `reload` reads everything and checks it.
    private func catchUp() throws {
        let sealedThrough = tail.first.map { $0.header.seq - 1 } ?? headSeq
        guard try store.counter(.erased) ?? 0 == erased, try store.blockExtent()?.maxLastSeq ?? 0 == sealedThrough else {
            return try reload()
        }
        do {
            let anchored = try keys.anchoredHead(journal: journalID, instance: instance)
            let stored = try store.storedHead()
            let (events, links) = try TailRow.events(store.tailRows(after: headSeq))
            var link = headLink
            var expected = headSeq + 1
            var scratch: [UInt8] = []
            for (e, storedLink) in zip(events, links) {
                link = Chain.link(previous: link, header: e.header, digest: e.digest, scratch: &scratch)
                guard e.header.seq == expected, link == storedLink else { return try reload() }
                expected += 1
            }
            guard stored.instance == instance, expected - 1 == stored.seq, link == stored.link else { return try reload() }
            try HeadCheck.check(stored, anchorKey: anchorKey, anchored: anchored) { at in
                at == stored.seq ? stored.link : try store.link(at: at)
            }
            nextAccountID = try storedNextAccountID()
            (headSeq, headLink) = (stored.seq, stored.link)
            tail += events
            tailLinks += links
            let touched = Set(events.map(\.header.account))
            for account in touched { accounts.removeValue(forKey: account) }
            rules?.forget(touched)
        } catch {
            throw JournalError.storage("cannot read the journal's head", error)
        }
    }

    /// The id the next new account gets, after the highest the journal's meta says was given.
    private func storedNextAccountID() throws -> Int64 {
        guard let accountIDs = try store.counter(.accountIDs) else {
            throw JournalError(.corrupt, "the journal's meta has no account_ids (the highest account id given); run `lethe verify`")
        }
        return try Writer.id(after: accountIDs, of: "account")
    }

    /// The id after the table's largest: a row edited to the end of the range is damage, not a trap.
    private static func id(after largest: Int64?, of what: String) throws -> Int64 {
        let largest = largest ?? 0
        guard largest < Int64.max else { throw JournalError(.corrupt, "the journal's \(what) ids reach the end of their range (edited?); run `lethe verify`") }
        return largest + 1
    }

    /// Tells the key store the head this writer committed (`KeyStore.anchor`): from then on, a
    /// journal found behind it was rolled back. Called after each commit, before the append is
    /// acknowledged, so no acknowledged event can vanish unnoticed. Should the key store refuse
    /// the write, the append stands (it is committed) and the next one moves the anchor further.
    private func reportHead() {
        do {
            try keys.anchor(journal: journalID, instance: instance, head: AnchoredHead(seq: headSeq, link: headLink))
        } catch {
            options.logger.error("the key store's anchor could not be moved to event \(headSeq): \(error)")
        }
    }

    func accountRow(_ name: String) throws -> AccountRow? {
        if let row = accounts[name] { return row }
        guard let stored = try store.account(named: name) else { return nil }
        let row = try AccountRow(name, stored, keys: keys)
        remember(name, row)
        return row
    }

    /// Reads the rows of the batch's accounts this writer does not hold yet, all in one go (one
    /// statement on a server, not one per account); returns, by slot, whether the journal has
    /// no row for the account.
    private func prefetchAccounts(_ names: [String]) throws -> [Bool] {
        var absent = [Bool](repeating: false, count: names.count)
        let missing = names.indices.filter { accounts[names[$0]] == nil }
        guard !missing.isEmpty else { return absent }
        let found = try store.accounts(named: missing.map { names[$0] })
        for (name, stored) in found { remember(name, try AccountRow(name, stored, keys: keys)) }
        for slot in missing where found[names[slot]] == nil { absent[slot] = true }
        return absent
    }

    private func remember(_ name: String, _ row: AccountRow) {
        if accounts.count >= accountCacheLimit { accounts.removeAll(keepingCapacity: true) }
        accounts[name] = row
    }

    /// The accounts whose whole erasure is recorded and not done yet: they take nothing but the
    /// engine's records, as if their keys were gone already.
    private func accountsBeingErased() throws -> Set<String> {
        Set(try store.erasures(kind: ErasureKind.account.rawValue, limit: nil).map { try RecordedErasure($0, key: anchorKey).account })
    }

    func append(_ batch: PreparedBatch, erasing erasures: [Erasure], allOrNothing: Bool = false, sealer: SealerLock) throws -> [AppendOutcome] {
        guard !batch.items.isEmpty || !erasures.isEmpty else { return [] }
        let (keys, journalKeys) = (self.keys, self.journalKeys)
        lookupKey = { account, ref in try keys.lookup(account, ref, journal: journalKeys) }
        defer { lookupKey = nil }
        do {
            let outcomes = try store.write {
                // Another process may have appended, or erased payloads this writer holds in its tail.
                if try store.headSeq() != headSeq || store.counter(.erased) ?? 0 != erased {
                    options.logger.debug("journal moved under this writer; catching up", metadata: ["head_seq": "\(headSeq)"])
                    try catchUp()
                }
                // Accounts whose keys were destroyed, or are about to be, take nothing sealed
                // under them: checked here, under the write lock, against the key store as it is
                // now, unless no key was destroyed anywhere since the batch was sealed.
                var closed = try accountsBeingErased()
                if try batch.epoch.map({ try keys.epochMoved(since: $0) }) ?? true {
                    try keys.refresh()
                    for account in batch.accounts where try keys.keyring(account)?.purged ?? false {
                        closed.insert(account)
                    }
                }
                let outcomes = try appendInTransaction(batch, closed: closed, sealer: sealer)
                if allOrNothing {
                    for (item, outcome) in zip(batch.items, outcomes) {
                        if case .rejected(let why) = outcome {
                            // Rolls the whole batch back (the caches are reloaded below).
                            throw JournalError(why.code, "nothing of the batch was written: its event of \(item.account) was refused: \(why.message)")
                        }
                    }
                }
                var refused = Set<String>()
                for (item, outcome) in zip(batch.items, outcomes) { if case .rejected = outcome { refused.insert(item.account) } }
                try record(erasures.filter { !refused.contains($0.account) }, sealer: sealer)
                return outcomes
            }
            if outcomes.contains(where: { if case .appended = $0 { true } else { false } }) { reportHead() }
            return outcomes
        } catch {
            // The transaction rolled back: forget whatever this batch cached.
            rules?.forget()
            try? reload()
            sealer.withLock { $0.forgetChains() }
            throw JournalError.storage("append failed; nothing of the batch was written", error)
        }
    }

    private func appendInTransaction(_ prepared: PreparedBatch, closed: Set<String>, sealer: SealerLock) throws -> [AppendOutcome] {
        let (batch, names) = (prepared.items, prepared.accounts)
        // The rows of this batch's accounts, by slot, staged until the commit; the new ones' slots.
        var staged = [AccountRow?](repeating: nil, count: names.count)
        var newAccounts: [Int] = []
        let isClosed = closed.isEmpty ? nil : names.map { closed.contains($0) }
        // Ids already in the journal are looked up for the whole batch at once (the write lock is
        // held, so none can appear meanwhile); the batch's own ids join them as they are taken,
        // and are recorded after the loop.
        var known = try EventIDIndex(store: store).seqs(of: batch.compactMap { $0.id })
        known.reserveCapacity(known.count + batch.count)
        var claims: [(id: String, seq: Int64)] = []
        claims.reserveCapacity(batch.count)
        var outcomes: [AppendOutcome] = []
        outcomes.reserveCapacity(batch.count)
        var sealed: [SealedEvent] = []
        var sealedSlots: [Int] = []
        var digests: [[UInt8]] = []
        sealed.reserveCapacity(batch.count)
        sealedSlots.reserveCapacity(batch.count)
        digests.reserveCapacity(batch.count)
        var seq = headSeq
        let absent = try prefetchAccounts(names)
        try loadHistories(for: prepared, absent: absent)
        for e in batch {
            var body: PreparedBatch.Sealed
            switch e.sealed {
            case .failure(let error):
                outcomes.append(.rejected(error))
                continue
            case .success(let s):
                body = s
            }
            // An id the journal or this batch already holds makes the event a no-op.
            if let id = e.id, let earlier = known[ExactID(id)] {
                outcomes.append(.duplicate(seq: earlier))
                continue
            }
            func refuse(_ error: JournalError) { outcomes.append(.rejected(error)) }
            if e.scope != .journal && isClosed?[e.slot] == true {
                refuse(JournalError(.accountShredded, "account \(e.account) was erased; it takes no new events"))
                continue
            }
            var row: AccountRow
            var isNew = false
            if let s = staged[e.slot] {
                row = s
            } else if !absent[e.slot], let known = try accountRow(e.account) {
                row = known
            } else {
                row = AccountRow(id: nextAccountID + Int64(newAccounts.count), version: 0, lastAt: .min)
                isNew = true
            }
            if let expected = e.expectedVersion, expected != row.version {
                refuse(JournalError(
                    .versionConflict, "account \(e.account) is at version \(row.version), not the expected \(expected)"))
                continue
            }
            if e.at.nanoseconds < row.lastAt {
                refuse(JournalError(
                    .timeOrder, "field at: \(e.at) is older than account \(e.account)'s latest event (\(Timestamp(nanoseconds: row.lastAt)))"))
                continue
            }
            // Last, the domain's rules: an event they admit is accepted, so their state stays true.
            if let rules, let plaintext = e.plaintext {
                if !rules.follows(e.account) && rules.needsHistory(type: e.type) {
                    try rules.load(e.account, history: history(of: e.account))
                }
                if let why = rules.admit(account: e.account, type: e.type, payload: plaintext, scope: e.scope, at: e.at) {
                    refuse(JournalError(.refusedByRules, why))
                    continue
                }
            }
            // A record's index only grows along its chain, in journal order: that is what lets
            // its expiry destroy exactly the keys of the expired records. When another writer
            // took this index meanwhile, the record is sealed again under the next one.
            if case .records(let category) = e.scope {
                if let last = row.chains[body.key.number], body.key.index <= last, let plaintext = e.plaintext {
                    body = try sealer.withLock { try $0.reseal(plaintext, account: e.account, category: category, atLeast: last + 1) }
                }
                row.chains[body.key.number] = body.key.index
                row.chainsMoved = true
            }
            if isNew { newAccounts.append(e.slot) }
            seq += 1
            if let id = e.id {
                known[ExactID(id)] = seq
                claims.append((id, seq))
            }
            row.version += 1
            row.lastAt = e.at.nanoseconds
            staged[e.slot] = row
            let header = EventHeader(seq: seq, version: row.version, account: e.account, type: e.type, at: e.at, id: e.id)
            sealed.append(SealedEvent(header: header, nonce: body.nonce, key: body.key, body: .sealed(body.body)))
            sealedSlots.append(e.slot)
            digests.append(body.digest)
            outcomes.append(.appended(header))
        }
        // The chain is computed on another core while the ids and account rows are written.
        let chain = Background(inline: sealed.count < 256) { [headLink, sealed, digests] in
            var link = headLink
            var scratch: [UInt8] = []
            return zip(sealed, digests).map { e, digest in
                link = Chain.link(previous: link, header: e.header, digest: digest, scratch: &scratch)
                return link
            }
        }
        try EventIDIndex(store: store).add(claims)
        try writeAccounts(names, staged, new: newAccounts)
        let links = chain.value()
        try write(sealed: sealed, slots: sealedSlots, links: links, names: names, staged: staged, newAccountCount: newAccounts.count)
        return outcomes
    }

    /// The account's stored events, decrypted, read on this connection inside the transaction.
    ///
    /// - Complexity: nothing for an account the journal has never seen; otherwise the blocks that
    ///   hold its events, plus the unsealed tail this writer keeps in memory.
    private func history(of account: String) throws -> [StoredEvent] {
        guard let lookupKey, try accountRow(account) != nil else { return [] }
        let reader = JournalReader(store: store, lookupKey: lookupKey)
        var sealed: [SealedEvent] = []
        try reader.scanBlocks(account: account) { sealed.append($0) }
        sealed += tail.filter { $0.header.account == account }
        return try sealed.map { try reader.open($0) }
    }

    /// Gives the rules the histories of the batch's accounts they do not follow yet, a group of
    /// accounts at a time, reading each block that holds any of them once per group: accounts are
    /// interleaved in blocks, so loading them one by one would decode the same blocks again and
    /// again. (An account whose state is dropped meanwhile is loaded alone when its turn comes.)
    private func loadHistories(for batch: PreparedBatch, absent: [Bool]) throws {
        guard let rules, let lookupKey else { return }
        var seen = [Bool](repeating: false, count: batch.accounts.count)
        var missing: [Int] = []  // slots
        for e in batch.items where e.plaintext != nil && !seen[e.slot] {
            seen[e.slot] = true
            guard case .success = e.sealed, !rules.follows(e.account), rules.needsHistory(type: e.type) else { continue }
            missing.append(e.slot)
        }
        guard missing.count > 1 else { return }
        rules.makeRoom(for: missing.count)
        let reader = JournalReader(store: store, lookupKey: lookupKey)
        // Groups of accounts holding up to ~500,000 events between them (their versions): each
        // group reads the blocks that hold any of them once, and memory stays bounded.
        var start = 0
        while start < missing.count {
            var names = Set<String>()
            var events: Int64 = 0
            while start < missing.count && events < 500_000 {
                let (slot, account) = (missing[start], batch.accounts[missing[start]])
                start += 1
                guard !absent[slot], let row = try accountRow(account) else {
                    try rules.load(account, history: [])  // a new account: no history
                    continue
                }
                names.insert(account)
                events += row.version
            }
            guard !names.isEmpty else { continue }
            var sealed: [String: [SealedEvent]] = [:]
            try forEachBlock(holding: names) { _, block in
                for e in block.events where names.contains(e.header.account) { sealed[e.header.account, default: []].append(e) }
            }
            for e in tail where names.contains(e.header.account) { sealed[e.header.account, default: []].append(e) }
            for account in names where !rules.follows(account) {
                try rules.load(account, history: try (sealed[account] ?? []).map { try reader.open($0) })
            }
        }
    }

    /// Stores the batch's account rows: the new ones in multi-row inserts (and the highest id
    /// given in meta `account_ids`), and each known one's new version, time and chain marks.
    private func writeAccounts(_ names: [String], _ staged: [AccountRow?], new: [Int]) throws {
        try store.insert(accounts: new.map { slot in
            let row = staged[slot]!
            return (names[slot], AccountRecord(id: row.id, version: row.version, lastAt: row.lastAt, chains: row.chainsMoved ? row.chains.encode() : nil))
        })
        if let highest = new.lazy.map({ staged[$0]!.id }).max() { try store.setCounter(.accountIDs, to: highest) }
        var isNew = [Bool](repeating: false, count: names.count)
        for slot in new { isNew[slot] = true }
        var updates: [AccountUpdate] = []
        for (slot, row) in staged.enumerated() where !isNew[slot] {
            guard let row else { continue }
            updates.append(AccountUpdate(name: names[slot], version: row.version, lastAt: row.lastAt, chains: row.chainsMoved ? row.chains.encode() : nil))
        }
        try store.update(accounts: updates)
    }

    /// Writes the accepted events: full blocks are sealed, the rest joins the tail. Then the caches move.
    /// (`slots` holds each sealed event's account slot, `staged` the rows by slot, as the batch left them.)
    private func write(sealed: [SealedEvent], slots: [Int], links: [[UInt8]], names: [String], staged: [AccountRow?], newAccountCount: Int) throws {
        guard !sealed.isEmpty else { return }
        var blockID = nextBlockID
        let blockSize = options.blockEvents
        var newTail: [SealedEvent]?
        var newTailLinks: [[UInt8]] = []
        var newSealedLink = sealedLink
        if tail.count + sealed.count >= blockSize {
            // (An empty tail, the usual case for large batches, costs no copy of the batch.)
            let unsealed = tail.count  // (events of earlier batches, before the batch's own)
            let pending = tail.isEmpty ? sealed : tail + sealed
            let pendingLinks = tail.isEmpty ? links : tailLinks + links
            try store.clearTail()
            // Encoding and compressing are pure work: the batch's blocks are made on every core.
            let starts = Array(stride(from: 0, through: pending.count - blockSize, by: blockSize))
            let (events, eventLinks, first) = (pending, pendingLinks, sealedLink)
            let frames = starts.parallelMap(minimumSlice: 1) { start in
                Result<[UInt8], any Error> {
                    let previous = start == 0 ? first : eventLinks[start - 1], last = eventLinks[start + blockSize - 1]
                    let content = Block.encode(events[start..<start + blockSize], previousLink: previous, lastLink: last)
                    #if DEBUG
                    // Assert what is about to be written: it decodes to the same block.
                    assert(try! Block.decode(content, where: "new block")
                           == Block(events: Array(events[start..<start + blockSize]), previousLink: previous, lastLink: last),
                           "block does not round-trip")
                    #endif
                    return try LZ4.compressFrame(content)
                }
            }
            var blocks: [StoredBlock] = []
            var postings: [(account: Int64, block: Int64)] = []
            for (start, frame) in zip(starts, frames) {
                blocks.append(StoredBlock(
                    id: blockID, first: pending[start].header.seq, last: pending[start + blockSize - 1].header.seq, frame: try frame.get()))
                var indexed = Set<Int64>()
                for k in start..<start + blockSize {
                    let id = try k >= unsealed ? staged[slots[k - unsealed]]!.id : accountRow(pending[k].header.account)!.id
                    if indexed.insert(id).inserted { postings.append((id, blockID)) }
                }
                blockID += 1
            }
            try store.insert(blocks: blocks)
            let sealedCount = starts.count * blockSize
            newSealedLink = pendingLinks[sealedCount - 1]
            let index = BlockIndex(store: store)
            try index.add(postings)
            // Both indexes merge as blocks are sealed, not at every append: counting their recent
            // rows is then paid once per block.
            try index.mergeIfDue(limit: options.recentPostingsLimit)
            try EventIDIndex(store: store).mergeIfDue(limit: options.recentIDsLimit)
            options.logger.trace("sealed blocks", metadata: ["blocks": "\(starts.count)", "last_seq": "\(pending[sealedCount - 1].header.seq)"])
            // What is left becomes the tail: copied on its own (`pending` shares its storage with
            // `sealed`, so removing the sealed events from it in place would copy it whole).
            let rest = Array(pending[sealedCount...]), restLinks = Array(pendingLinks[sealedCount...])
            try store.appendTail(rest, links: restLinks)
            (newTail, newTailLinks) = (rest, restLinks)
        } else {
            try store.appendTail(sealed, links: links)
        }
        let head = sealed.last!.header.seq
        try store.setHead(seq: head, link: links.last!, mac: Anchor.mac(key: anchorKey, instance: instance, headSeq: head, headLink: links.last!))

        // The caches move now; should the caller's COMMIT fail, `append` reloads them from disk.
        headSeq = head
        headLink = links.last!
        if let newTail {
            tail = newTail
            tailLinks = newTailLinks
        } else {
            tail.append(contentsOf: sealed)
            tailLinks.append(contentsOf: links)
        }
        nextBlockID = blockID
        sealedLink = newSealedLink
        nextAccountID += Int64(newAccountCount)
        for (slot, row) in staged.enumerated() {
            guard var row else { continue }
            row.chainsMoved = false
            remember(names[slot], row)
        }
    }

    /// Moves into the indexes' runs what their recent tables hold, as far as the work is
    /// proportional to it: every recent posting of the block index (a merge rewrites only the
    /// last run of each account it touches), and the recent ids when they all sort after the
    /// indexed ones. Ids spread over the index (random ones) wait for the next due merge. Then
    /// the store gives freed space back (`JournalStore.reclaimSpace`).
    func settle() throws {
        try store.write {
            try BlockIndex(store: store).mergeIfDue(limit: nil, force: true)
            try EventIDIndex(store: store).mergeIfAppending()
        }
        try store.reclaimSpace()
    }

    /// Every sealed block that holds an event of any of `accounts`, each once, in journal order
    /// (found through the per-account block index). The block IDs are gathered before the first
    /// block is read, so `body` may rewrite the blocks it is given.
    func forEachBlock(holding accounts: Set<String>, _ body: (Int64, Block) throws -> Void) throws {
        var blockIDs = Set<Int64>()
        let index = BlockIndex(store: store)
        for account in accounts { blockIDs.formUnion(try index.blocks(ofAccount: account)) }
        for blockID in blockIDs.sorted() {
            guard let block = try store.block(id: blockID)?.decode() else { continue }
            try body(blockID, block)
        }
    }

    /// The unsealed tail as this writer holds it.
    var unsealed: [SealedEvent] { tail }
}
