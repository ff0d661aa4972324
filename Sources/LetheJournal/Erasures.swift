import Crypto
import Foundation
import Synchronization

/// How an erasure is recorded in the journal's `erasures` table until it is carried out.
enum ErasureKind: Int64 {
    case account = 0
    case event = 1
    case records = 2
}

/// An erasure recorded with its purge event and not carried out yet.
struct RecordedErasure {
    var id: Int64
    var account: String
    var kind: ErasureKind
    /// The records' category.
    var name: String?
    /// The event's sequence number, or the record chain's slot as the keyring said when the
    /// erasure was recorded.
    var number: UInt64?
    /// For records: the time of the newest record expired.
    var through: Int64?
    /// For an account: the record categories that outlive it.
    var keeping: Set<String>

    /// The bytes the row's MAC covers (`Anchor.erasureMAC`): every column the erasure acts on.
    static func macInput(account: String, kind: ErasureKind, name: String?, number: Int64?, through: Int64?, keeping: String?) -> [UInt8] {
        var w = BinaryWriter(capacity: 64)
        w.string(account)
        w.u8(UInt8(truncatingIfNeeded: kind.rawValue))
        for text in [name, keeping] {
            w.u8(text == nil ? 0 : 1)
            w.string(text ?? "")
        }
        for value in [number, through] {
            w.u8(value == nil ? 0 : 1)
            w.u64(UInt64(bitPattern: value ?? 0))
        }
        return w.bytes
    }

    /// Checks every recorded erasure's MAC; returns how many there are.
    static func checkAll(_ store: some JournalStore, key: SymmetricKey) throws -> Int64 {
        let rows = try store.erasures(kind: nil, limit: nil)
        for row in rows { _ = try RecordedErasure(row, key: key) }
        return Int64(rows.count)
    }
}

extension RecordedErasure {
    /// A stored row, refused unless its MAC is the anchor key's: a recorded erasure makes the
    /// next run destroy keys, so a row written behind the engine's back (with `sqlite3`, say)
    /// must never be acted on.
    init(_ row: ErasureRow, key: SymmetricKey) throws {
        let id = row.id
        guard let account = row.account, let kind = ErasureKind(rawValue: row.kind) else {
            throw JournalError(.corrupt, "erasure record \(id) is damaged (account or kind); nothing was erased")
        }
        let expected = Anchor.erasureMAC(key: key, RecordedErasure.macInput(
            account: account, kind: kind, name: row.name, number: row.number, through: row.through, keeping: row.keeping))
        guard row.mac == expected else {
            throw JournalError(.corrupt, "erasure record \(id) (of account \(account)) is not authenticated by the journal's anchor key: it was not written by the engine; nothing was erased (run `lethe verify`)")
        }
        self.init(
            id: id, account: account, kind: kind, name: row.name, number: row.number.map { UInt64(bitPattern: $0) }, through: row.through,
            keeping: Set((row.keeping ?? "").split(separator: "\n").map(String.init)))
    }
}

/// What a batch of erasures destroys in the key store, and which stored payloads go with it.
struct ErasurePlan {
    var destructions: [KeyStore.Destruction] = []
    /// Per account: whether a stored event's payload goes.
    var targets: [String: [(SealedEvent) -> Bool]] = [:]

    func erases(_ e: SealedEvent) -> Bool {
        guard !e.isPurged, let tests = targets[e.header.account] else { return false }
        return tests.contains { $0(e) }
    }
}

extension Writer {
    /// Records `erasures` in the current transaction, with the chain slots the keyrings give them
    /// now (their keys may be gone by the time they are carried out).
    ///
    /// An event is erased on its own only when it has a key of its own (`KeyScope.own`): removing
    /// the payload of an event sealed under a shared key would leave it readable in every copy
    /// and backup taken before, so that is refused, naming the event, and nothing is written.
    func record(_ erasures: [Erasure], sealer: SealerLock) throws {
        guard !erasures.isEmpty else { return }
        var rows: [ErasureRow] = []
        let stored = try sealedEvents(Set(erasures.compactMap { if case .event(_, let seq) = $0 { seq } else { nil } }))
        for erasure in erasures {
            var (kind, name, number, through, keeping): (ErasureKind, String?, Int64?, Int64?, String?) = (.account, nil, nil, nil, nil)
            switch erasure {
            case .account(_, let kept):
                keeping = kept.sorted().joined(separator: "\n")
            case .event(let account, let seq):
                guard let e = stored[seq], e.header.account == account else {
                    throw JournalError(.invalidEvent, "erasure of event \(seq) of account \(account): the journal has no such event")
                }
                guard e.key.kind == .own else {
                    throw JournalError(.invalidEvent, """
                        erasure of event \(seq) (\(e.header.type) of account \(account)): it is sealed under a key it shares \
                        with other events, so copies taken before would still open it; only an event with a key of its \
                        own (KeyScope.own) can be erased alone; erase the account instead
                        """)
                }
                (kind, number) = (.event, seq)
            case .records(let account, let category, let newest):
                (kind, name, through) = (.records, category, newest.nanoseconds)
                number = (try keys.keyring(account)?.chain(category: category)?.slot).map { Int64(bitPattern: $0) }
            }
            let mac = Anchor.erasureMAC(key: anchorKey, RecordedErasure.macInput(
                account: erasure.account, kind: kind, name: name, number: number, through: through, keeping: keeping))
            rows.append(ErasureRow(id: 0, account: erasure.account, kind: kind.rawValue, name: name, number: number, through: through, keeping: keeping, mac: mac))
        }
        try store.recordErasures(rows)
    }

    /// The events `seqs` as stored (those the journal holds): from the tail this writer holds, or
    /// from their blocks, each block decoded once, one at a time.
    private func sealedEvents(_ seqs: Set<Int64>) throws -> [Int64: SealedEvent] {
        guard !seqs.isEmpty else { return [:] }
        var found: [Int64: SealedEvent] = [:]
        for e in unsealed where seqs.contains(e.header.seq) { found[e.header.seq] = e }
        var blocks = Set<Int64>()
        for seq in seqs where found[seq] == nil {
            if let row = try store.block(startingAtOrBefore: seq), row.last >= seq { blocks.insert(row.id) }
        }
        for id in blocks.sorted() {
            guard let block = try store.block(id: id)?.decode() else { continue }
            for e in block.events where seqs.contains(e.header.seq) { found[e.header.seq] = e }
        }
        return found
    }

    /// The oldest recorded erasures not done yet, up to `limit`, each checked against its MAC.
    func pendingErasures(limit: Int) throws -> [RecordedErasure] {
        try store.erasures(kind: nil, limit: limit).map { try RecordedErasure($0, key: anchorKey) }
    }

    /// Works out what `erasures` destroy: the keys, and the payloads sealed under them. The
    /// accounts' events are read (their blocks, through the per-account index, and the tail) for
    /// the own keys they name, and for the record chains: a record expiry destroys its chain's
    /// keys up to the newest expired record, after checking that the records it expires are
    /// exactly the beginning of the chain (indices grow with time).
    func plan(_ erasures: [RecordedErasure], keyring: (String) throws -> Keyring?) throws -> ErasurePlan {
        var plan = ErasurePlan()
        struct Chain: Hashable { var account: String; var slot: UInt64 }
        var wholeAccounts = Set<String>()
        var events: [String: Set<Int64>] = [:]
        var expiries: [Chain: (category: String, through: Int64)] = [:]
        for erasure in erasures {
            let account = erasure.account
            switch erasure.kind {
            case .account:
                wholeAccounts.insert(account)
                plan.destructions.append(.account(account, keeping: erasure.keeping))
                let kept = Set(try keyring(account)?.chains.values.filter { erasure.keeping.contains($0.category) }.map(\.slot) ?? [])
                plan.targets[account, default: []].append { e in
                    e.key.kind != .journal && !(e.key.kind == .records && kept.contains(e.key.number))
                }
            case .event:
                guard let seq = erasure.number.map({ Int64(bitPattern: $0) }) else { continue }
                events[account, default: []].insert(seq)
                plan.targets[account, default: []].append { $0.header.seq == seq }
            case .records:
                guard let slot = erasure.number, let category = erasure.name, let through = erasure.through else { continue }
                let chain = Chain(account: account, slot: slot)
                expiries[chain] = (category, max(expiries[chain]?.through ?? .min, through))
                plan.targets[account, default: []].append { e in
                    e.key.kind == .records && e.key.number == slot && e.header.at.nanoseconds <= through
                }
            }
        }
        // Each chain's expired records: the newest index among them, and the check that no
        // record of the chain below it is kept; and the own keys to destroy.
        var newestExpired: [Chain: UInt64] = [:]
        var oldestKept: [Chain: UInt64] = [:]
        var own: [String: [UInt64]] = [:]
        var visited: [String: Int64] = [:]
        func visit(_ e: SealedEvent) {
            let account = e.header.account
            visited[account, default: 0] += 1
            if e.key.kind == .own, wholeAccounts.contains(account) || events[account]?.contains(e.header.seq) == true {
                own[account, default: []].append(e.key.number)
            }
            guard e.key.kind == .records, let limit = expiries[Chain(account: account, slot: e.key.number)]?.through else { return }
            let chain = Chain(account: account, slot: e.key.number)
            if e.header.at.nanoseconds <= limit {
                newestExpired[chain] = max(newestExpired[chain] ?? 0, e.key.index)
            } else {
                oldestKept[chain] = min(oldestKept[chain] ?? .max, e.key.index)
            }
        }
        let accounts = wholeAccounts.union(events.keys).union(expiries.keys.map(\.account))
        try forEachBlock(holding: accounts) { _, block in block.events.forEach(visit) }
        unsealed.forEach(visit)
        // The blocks were found through the per-account index: one it misses would keep its
        // payloads. Every event of each account must have been seen before anything is destroyed.
        for account in accounts {
            let version = try accountRow(account)?.version ?? 0
            guard visited[account, default: 0] == version else {
                throw JournalError(.corrupt, "the block index misses events of account \(account) (\(visited[account, default: 0]) of its \(version) found): nothing was erased (run `lethe verify`)")
            }
        }
        for (account, ids) in own { plan.destructions.append(.own(account, ids: ids)) }
        for (chain, expiry) in expiries {
            guard let newest = newestExpired[chain] else { continue }
            if let kept = oldestKept[chain], kept <= newest {
                throw JournalError(.corrupt, "the \(expiry.category) records of \(chain.account) are not in the order of their keys (index \(kept) is kept, \(newest) expires); nothing was erased")
            }
            plan.destructions.append(.records(chain.account, category: expiry.category, before: newest + 1))
        }
        return plan
    }

    /// Physically removes the payloads `plan` names, in one transaction with the removal of the
    /// erasures' records: every block that holds one is decoded, its payloads replaced by their
    /// digests, and written back, once however many erasures touch it; the tail's rows likewise.
    /// Payloads already gone are skipped.
    func scrub(_ erasures: [RecordedErasure], _ plan: ErasurePlan) throws {
        let accounts = Set(plan.targets.keys)
        do {
            try store.write {
                try forEachBlock(holding: accounts) { blockID, block in
                    guard block.events.contains(where: plan.erases) else { return }
                    var scrubbed = block
                    for k in scrubbed.events.indices where plan.erases(scrubbed.events[k]) {
                        scrubbed.events[k].body = .purged(digest: scrubbed.events[k].digest)
                    }
                    let content = scrubbed.encode()
                    #if DEBUG
                    assert(try! Block.decode(content, where: "scrubbed block") == scrubbed, "block does not round-trip")
                    #endif
                    // (The block was read in this transaction: a row gone now is damage, and the
                    // erasure, which must not be thought done, stops with it.)
                    guard try store.replaceFrame(ofBlock: blockID, with: try LZ4.compressFrame(content)) else {
                        throw JournalError(.corrupt, "block \(blockID) vanished while its erased payloads were being removed; run `lethe verify`")
                    }
                }
                try store.purgeTail(try store.tail().0.filter(plan.erases).map { ($0.header.seq, $0.digest) })
                try store.deleteErasures(ids: erasures.map(\.id))
                try store.setCounter(.erased, to: (store.counter(.erased) ?? 0) + 1)
                try store.markResidue()
            }
            try reload()
        } catch {
            try? reload()
            throw JournalError.storage("erasing the payloads of \(accounts.count) accounts failed; it will be retried", error)
        }
    }
}

extension Journal {
    /// Carries out every recorded erasure that is not done yet, oldest first: the keys are
    /// destroyed in the key store (so every copy of what they sealed, backups and old copies of
    /// the file included, is unreadable for good), then the payloads are physically removed
    /// from their blocks and the tail (each keeps its digest, so the chain still verifies), freed
    /// pages are overwritten (`secure_delete`), and the WALs of the journal and the key store are
    /// truncated. Idempotent; safe to run from several processes. Returns how many erasures it did.
    ///
    /// Throws `.erasureIncomplete`, naming the files, when a reader holding an old snapshot kept a
    /// WAL from being truncated for `Options.truncateWait`: the erasures are done, and the mark
    /// they left makes the next open or run truncate it.
    @discardableResult
    public func finishErasures() throws -> Int {
        let done = try withWriter { writer -> Int in
            var done = 0
            while true {
                let batch = try writer.pendingErasures(limit: 10_000)
                guard !batch.isEmpty else { break }
                try writer.keys.refresh()
                let plan = try writer.plan(batch) { try writer.keys.keyring($0) }
                // Keys first: a crash after this leaves the payloads unreadable already, and the
                // erasures recorded, for the next call to remove.
                try sealer.withLock { try $0.keys.destroy(plan.destructions, at: options.clock.now()) }
                try writer.scrub(batch, plan)
                done += batch.count
            }
            if done > 0 { options.logger.debug("erasures done", metadata: ["count": "\(done)"]) }
            return done
        }
        let unfinished = try truncateWALs()
        guard unfinished.isEmpty else {
            throw JournalError(.erasureIncomplete, "\(done) erasures done, but " + unfinished.joined(separator: "; ") + "; the next open or retention run truncates it")
        }
        return done
    }

    /// Clears what an erasure left in the journal's store and the key store (a file's WAL, a
    /// server's old row versions), waiting up to `wait` (by default `Options.truncateWait`) for
    /// readers. Returns what each still holds and who holds it, or nothing.
    package func truncateWALs(wait: Duration? = nil) throws -> [String] {
        var unfinished: [String] = []
        let wait = wait ?? options.truncateWait
        if let left = try withWriter({ try $0.store.clearResidue(wait: wait) }) { unfinished.append(left) }
        if let left = try sealer.withLock({ try $0.keys.clearResidue(wait: wait) }) { unfinished.append(left) }
        return unfinished
    }
}
