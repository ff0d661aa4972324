/// Where a journal's rows live and how to reach them: one SQLite file (`SQLiteBackend`, the
/// embedded default) or a database on a server. `Journal` opens one connection to write through
/// and one per read.
package protocol JournalBackend: Sendable {
    /// Where the journal is, for messages: a path (a server's address, without its password).
    var place: String { get }
    /// The files that hold the journal's data, which the master key must not lie beside.
    var dataPaths: [String] { get }
    /// The writer's connection: the journal is made when missing, and brought to this build's
    /// format when older; a journal of another format, or not a journal, is refused by name.
    func openWriter(options: Journal.Options) throws -> any JournalStore
    /// A reader's connection to an existing journal of a format this build reads (it never
    /// changes the journal).
    func openReader() throws -> any JournalStore
    /// Takes the lease for `purpose`, waiting at most `wait`; nil if another holder keeps it.
    func lease(_ purpose: String, wait: Duration) throws -> Lease?
    /// What the lease for `purpose` is, for messages (a lock file, a server's advisory lock).
    func leaseName(_ purpose: String) -> String
    /// Tells `onCommit` the new head's sequence number whenever any instance commits, from when
    /// this returns until the feed is stopped or its connection ends (then `onEnd`, once); nil
    /// where the backend sends no such notice (a SQLite file: other processes' commits are
    /// found by polling).
    func commitFeed(onCommit: @escaping @Sendable (Int64) -> Void, onEnd: @escaping @Sendable () -> Void) throws -> CommitFeed?
    /// Whether a journal is there (even one without events): what a restore must not overwrite
    /// unless told to.
    func holdsJournal() throws -> Bool
    /// Removes the journal and everything of it (a restore told to replace it).
    func drop() throws
    /// How many events a bulk import parses and seals at a time (`Journal.importBatchSize`).
    var importBatchSize: Int { get }
    /// How many events a bulk import appends at once at most (`Journal.importAppendLimit`).
    var importAppendLimit: Int { get }
    /// The server database that holds the journal (nil: a file), which must not hold its key store too.
    var database: String? { get }
}

extension JournalBackend {
    package func commitFeed(onCommit: @escaping @Sendable (Int64) -> Void, onEnd: @escaping @Sendable () -> Void) throws -> CommitFeed? { nil }
    /// 32,768 events, on a file and on a server: an import of a many-account history then
    /// appends its accounts in half as many batches as at 16,384, and so updates each account's
    /// row, and looks it and its keys up, half as often. 336,936 events on 20,000 accounts
    /// (interleaved A/B): into a file 6% less time, into PostgreSQL 8% less (the server's CPU
    /// 2.37 → 2.09 s); 1,000 accounts 2% more into a file, 2% less into PostgreSQL. The price is
    /// memory: a peak of 218 MiB against 156 into a file, 227 against 157 into PostgreSQL. (A
    /// server took 65,536 until session 14, when one thread parsed and sealed, and 16,384 until
    /// session 21; 65,536 would gain another 2% for a peak of 351 MiB.)
    package var importBatchSize: Int { 32_768 }
    /// One batch, on a file: joining batches there saves nothing (interleaved A/B, 20,000
    /// accounts: the same time; 1,000 accounts: 5% more) and costs memory.
    package var importAppendLimit: Int { importBatchSize }
    package var database: String? { nil }
}

/// What the journal needs from the database that holds it: its head and counters, its sealed
/// blocks, its unsealed tail and its accounts, read inside one snapshot or written inside one
/// transaction. One connection; its owner serialises the calls.
///
/// The engine decides everything (sequence numbers, the chain, the blocks' bytes, the checks of
/// what it reads back); a store only keeps rows. Where an append touches many rows (its accounts,
/// its tail events, its blocks) the operation takes them all at once, so that a store on a
/// server can send them in one round trip.
///
/// `SQLiteJournalStore` is the embedded default. (The recorded erasures, backups and the schema
/// still speak SQL to its connection: they are the next to move behind this protocol, for the
/// PostgreSQL store of issue 11.)
package protocol JournalStore: AnyObject {
    /// Where the journal is, for messages: a path (a server's address, without its password).
    var place: String { get }
    /// Ends the connection (also done when the store is released).
    func close()
    /// Whether the connection is lost for good (a server restarted, say): its owner opens another.
    var isBroken: Bool { get }

    // MARK: Transactions

    /// Runs `body` in one write transaction, which holds the journal's write lock against every
    /// other writer: committed if it returns, rolled back if it throws.
    func write<T>(_ body: () throws -> T) throws -> T
    /// Runs `body` inside one read snapshot (or the transaction already open on this connection).
    func snapshot<T>(_ body: () throws -> T) throws -> T

    // MARK: Meta

    /// The stored head's sequence number alone, nil when missing (what begins a read snapshot).
    func headSeq() throws -> Int64?
    /// The journal's random identity, fixed at its creation.
    func journalID() throws -> [UInt8]
    /// The head as stored: sequence number, link, MAC and the file's instance (checked for shape).
    func storedHead() throws -> StoredHead
    /// Writes the head: sequence number, link, and the MAC that authenticates them.
    func setHead(seq: Int64, link: [UInt8], mac: [UInt8]) throws
    /// Writes the head's MAC alone (a new journal's empty head).
    func setHeadMAC(_ mac: [UInt8]) throws
    /// Every meta entry, by key (what a backup carries).
    func metaEntries() throws -> [(key: String, value: MetaValue)]
    /// Replaces every meta entry by `entries` (a restore: the journal's identity, head and
    /// counters, as the backup had them).
    func replaceMeta(_ entries: [(key: String, value: MetaValue)]) throws
    /// One of the journal's counters; nil when the journal has none (damage, or an old format).
    func counter(_ counter: JournalCounter) throws -> Int64?
    func setCounter(_ counter: JournalCounter, to value: Int64) throws

    // MARK: Sealed blocks

    /// The largest block id and the largest last sequence number of any block; nil without blocks.
    func blockExtent() throws -> (maxID: Int64, maxLastSeq: Int64)?
    /// How many events the sealed blocks hold, by their rows' ranges.
    func sealedEventCount() throws -> Int64
    /// The block with the largest first sequence number.
    func lastBlock() throws -> StoredBlock?
    /// The block whose range starts at or before `seq`, the nearest one (it holds `seq` when its
    /// last sequence number reaches it).
    func block(startingAtOrBefore seq: Int64) throws -> StoredBlock?
    func block(id: Int64) throws -> StoredBlock?
    /// Up to `limit` blocks whose first sequence number is in `lower...upper`, in sequence order
    /// (what `BlockScan` reads page by page).
    func blocks(firstSeqIn lower: Int64, _ upper: Int64, limit: Int) throws -> [StoredBlock]
    func insert(blocks: [StoredBlock]) throws
    /// Replaces a block's frame (an erasure rewrote it); false when there is no such block.
    func replaceFrame(ofBlock id: Int64, with frame: [UInt8]) throws -> Bool

    // MARK: The unsealed tail

    /// The tail's rows in sequence order, as stored: `TailRow.events` checks them.
    func tailRows(after seq: Int64) throws -> [TailRow]
    /// The tail's rows of one account, in sequence order (`TailRow.events(_:of:)` checks them).
    func tailRows(account: String) throws -> [TailRow]
    /// The stored link after tail event `seq`, nil when the tail does not hold it.
    func tailLink(seq: Int64) throws -> [UInt8]?
    /// The bytes of the tail's sealed payloads.
    func tailPayloadBytes() throws -> Int64
    func appendTail(_ events: [SealedEvent], links: [[UInt8]]) throws
    func clearTail() throws
    /// Replaces tail events' payloads by their digests (an erasure).
    func purgeTail(_ digests: [(seq: Int64, digest: [UInt8])]) throws

    // MARK: Accounts

    func account(named name: String) throws -> AccountRecord?
    /// The named accounts the journal holds, with their rows.
    func accounts(named names: [String]) throws -> [String: AccountRecord]
    /// Calls `body` with every account's name and row, in name order.
    func forEachAccount(_ body: (String, AccountRecord) throws -> Void) throws
    func insert(accounts: [(name: String, row: AccountRecord)]) throws
    /// Stores known accounts' new versions and times, and their chain marks where given (a nil
    /// `chains` keeps them). An account without a row (damage) is `AccountUpdate.missingRow`,
    /// thrown here or, by a store that sends the statement on while its caller goes on, before
    /// the transaction commits.
    func update(accounts: [AccountUpdate]) throws

    // MARK: The event id index (`EventIDIndex`): recent ids a row each, then chunks by first id

    /// Those of `ids` among the recent ids, with their events.
    func recentIDs(matching ids: [String]) throws -> [(id: String, seq: Int64)]
    /// The lowest and the highest recent id in byte order; nil when there is none.
    func recentIDBounds() throws -> (lowest: String, highest: String)?
    func addRecentIDs(_ entries: [(id: String, seq: Int64)]) throws
    /// Every recent id with its event, in byte order. `body` may write the chunks.
    func forEachRecentID(_ body: (String, Int64) throws -> Void) throws
    func clearRecentIDs() throws
    /// The chunk with the greatest first id at or below `id`.
    func idChunk(covering id: String) throws -> IDChunk?
    /// The first id of the chunk after the one that begins with `first`.
    func idChunkKey(after first: String) throws -> String?
    func firstIDChunk() throws -> IDChunk?
    func lastIDChunk() throws -> IDChunk?
    /// Every chunk, in order of first id.
    func forEachIDChunk(_ body: (IDChunk) throws -> Void) throws
    func deleteIDChunk(first: String) throws
    func insertIDChunk(_ chunk: IDChunk) throws

    // MARK: The per-account block index (`BlockIndex`): recent postings, then runs per account

    /// The account's recent postings (block ids).
    func recentBlocks(ofAccount id: Int64) throws -> [Int64]
    /// The account's runs, in order of first block.
    func blockRuns(ofAccount id: Int64) throws -> [BlockRun]
    /// The last run of each of `accounts` that has one.
    func lastBlockRuns(ofAccounts accounts: [Int64]) throws -> [Int64: BlockRun]
    /// Writes accounts' runs from their last one on: for each account, the run whose first block
    /// `replacing` gives (its last, extended) in place, and the others as new rows.
    func writeBlockRuns(_ runs: [BlockRun], replacing: [Int64: Int64]) throws
    /// Adds postings, in (account, block) order (plain inserts: the writer gives each block's
    /// accounts once, so a posting held already would be a bug, and its error rolls the caller's
    /// transaction back). A store may keep an account's postings of one call in one row.
    func addRecentPostings(_ postings: [(account: Int64, block: Int64)]) throws
    /// Every recent posting, in (account, block) order. `body` may write the runs.
    func forEachRecentPosting(_ body: (Int64, Int64) throws -> Void) throws
    func clearRecentPostings() throws
    func forEachBlockRun(_ body: (BlockRun) throws -> Void) throws

    // MARK: Recorded erasures (`RecordedErasure`), and what erasing leaves behind

    /// The recorded erasures (of one kind, when given), oldest first, up to `limit`.
    func erasures(kind: Int64?, limit: Int?) throws -> [ErasureRow]
    /// Records erasures (their `id` is given by the store, in order).
    func recordErasures(_ rows: [ErasureRow]) throws
    func deleteErasures(ids: [Int64]) throws
    /// Marks, inside the write transaction of an erasure, that the store's files may still hold
    /// old copies of what it rewrote (a WAL, old row versions): `clearResidue` removes them, at
    /// the end of the erasure or, when a reader kept them, at the next open or erasure.
    func markResidue() throws
    func hasResidue() throws -> Bool
    /// Removes what `markResidue` marked, waiting up to `wait` for readers that hold an old
    /// snapshot. Returns nil when nothing is left; when a reader still holds one, the mark stays
    /// and the message says what is left and who holds it.
    func clearResidue(wait: Duration) throws -> String?

    /// Gives space freed by merges and erasures back, where the store can do so without work in
    /// proportion to the journal (SQLite: an incremental vacuum). Outside any transaction.
    func reclaimSpace() throws

    /// How many rows an index holds in its recent table, and in its runs (what `MergePolicy`
    /// weighs).
    func recentRowCount(_ index: IndexName) throws -> Int64
    func runRowCount(_ index: IndexName) throws -> Int64
}

/// The journal's two indexes, each kept as recent rows and compact runs.
package enum IndexName: Sendable {
    case eventIDs
    case accountBlocks
}

/// A recorded erasure as stored, before its MAC is checked (`RecordedErasure.init(row:key:)`).
package struct ErasureRow: Sendable {
    package var id: Int64
    /// nil when the stored value is not text (damage).
    package var account: String?
    package var kind: Int64
    package var name: String?
    package var number: Int64?
    package var through: Int64?
    package var keeping: String?
    package var mac: [UInt8]

    package init(id: Int64, account: String?, kind: Int64, name: String?, number: Int64?, through: Int64?, keeping: String?, mac: [UInt8]) {
        (self.id, self.account, self.kind, self.name, self.number, self.through, self.keeping, self.mac) = (id, account, kind, name, number, through, keeping, mac)
    }
}

/// A chunk of the event id index: its first id, and the ids and events it holds (`EventIDIndex.decode`).
package struct IDChunk: Sendable {
    package var first: String
    package var entries: [UInt8]

    package init(first: String, entries: [UInt8]) { (self.first, self.entries) = (first, entries) }
}

/// A run of the block index: an account's block ids from `first` (`BlockIndex.decode`).
package struct BlockRun: Sendable {
    package var account: Int64
    package var first: Int64
    package var blocks: [UInt8]

    package init(account: Int64, first: Int64, blocks: [UInt8]) { (self.account, self.first, self.blocks) = (account, first, blocks) }
}

/// A meta entry's value: a number or bytes.
package enum MetaValue: Sendable, Equatable {
    case integer(Int64)
    case bytes([UInt8])
}

/// The journal's counters, kept with its head.
package enum JournalCounter: String, Sendable {
    /// The format the journal is written in.
    case format
    /// How many erasures were carried out: a writer whose count differs holds a stale tail.
    case erased
    /// The highest account id given (ids number the accounts in the block index).
    case accountIDs = "account_ids"
}

/// A sealed block's row: its id, the range of sequence numbers it holds, and its LZ4 frame.
package struct StoredBlock: Sendable {
    package var id: Int64
    package var first: Int64
    package var last: Int64
    package var frame: [UInt8]

    package init(id: Int64, first: Int64, last: Int64, frame: [UInt8]) {
        (self.id, self.first, self.last, self.frame) = (id, first, last, frame)
    }

    /// The frame decompressed and decoded, checked against the row's range.
    func decode() throws -> Block { try JournalReader.decodeFrame(frame, id: id, first: first, last: last) }
}

/// An account's row: its number in the block index, its version, the time of its latest event,
/// and its record chains' marks (`ChainMarks`, encoded; nil when it has none).
package struct AccountRecord: Sendable {
    package var id: Int64
    package var version: Int64
    package var lastAt: Int64
    package var chains: [UInt8]?

    package init(id: Int64, version: Int64, lastAt: Int64, chains: [UInt8]?) {
        (self.id, self.version, self.lastAt, self.chains) = (id, version, lastAt, chains)
    }
}

/// What an append changes in a known account's row.
package struct AccountUpdate: Sendable {
    package var name: String
    package var version: Int64
    package var lastAt: Int64
    /// The new chain marks; nil: unchanged.
    package var chains: [UInt8]?

    /// What a store throws when `name` has no row to update.
    package static func missingRow(_ name: String) -> JournalError {
        JournalError(.corrupt, "account \(name): its row is missing; run `lethe verify`")
    }
}

/// A tail row as the store read it, before the engine trusts any of it.
package struct TailRow: Sendable {
    /// A text column: its bytes, absent, or of another type (damage).
    package enum Text: Sendable {
        case text([UInt8])
        case null
        case other
    }

    package var seq: Int64
    package var account: Text
    package var version: Int64
    package var type: Text
    package var at: Int64
    package var atDigits: Int64
    package var eventID: Text
    package var session: [UInt8]
    package var counter: Int64
    package var keyKind: Int64
    package var keyNumber: Int64
    package var keyIndex: Int64
    /// The sealed payload; nil when purged.
    package var payload: [UInt8]?
    /// The digest of a purged payload.
    package var digest: [UInt8]?
    package var link: [UInt8]

    package init(
        seq: Int64, account: Text, version: Int64, type: Text, at: Int64, atDigits: Int64, eventID: Text,
        session: [UInt8], counter: Int64, keyKind: Int64, keyNumber: Int64, keyIndex: Int64,
        payload: [UInt8]?, digest: [UInt8]?, link: [UInt8]
    ) {
        (self.seq, self.account, self.version, self.type, self.at, self.atDigits, self.eventID) = (seq, account, version, type, at, atDigits, eventID)
        (self.session, self.counter, self.keyKind, self.keyNumber, self.keyIndex) = (session, counter, keyKind, keyNumber, keyIndex)
        (self.payload, self.digest, self.link) = (payload, digest, link)
    }

    /// The unsealed events, in order, with their stored links.
    ///
    /// Every column is checked against what the writer stores (consecutive sequence numbers, a
    /// positive version, texts of valid UTF-8 within the journal's limits, a 16-byte session, a
    /// 32-byte digest and link, a sealed payload within `Sealing.maxSealedBytes`) before it is
    /// used: a row edited behind the engine's back throws `.corrupt` naming its event, and never
    /// reaches the block encoder's preconditions when the writer seals the tail.
    static func events(_ rows: [TailRow]) throws -> ([SealedEvent], [[UInt8]]) {
        try events(rows, of: nil)
    }

    /// `events(_:)` of one account's rows (`JournalStore.tailRows(account:)`): they are checked
    /// the same way, but for their sequence numbers, which need only grow; each row must be the
    /// account's.
    static func events(_ rows: [TailRow], of account: String?) throws -> ([SealedEvent], [[UInt8]]) {
        var events: [SealedEvent] = []
        var links: [[UInt8]] = []
        events.reserveCapacity(rows.count)
        links.reserveCapacity(rows.count)
        for row in rows {
            let seq = row.seq
            func corrupt(_ why: String) -> JournalError { JournalError(.corrupt, "unsealed event \(seq) \(why)") }
            if let previous = events.last?.header.seq, account == nil ? seq != previous + 1 : seq <= previous {
                throw JournalError(.corrupt, "unsealed event \(seq): expected event \(previous + 1) (events removed or reordered)")
            }
            guard seq > 0, seq < Int64.max else { throw corrupt("is out of range") }
            func text(_ column: Text, _ name: String, limit: Int) throws -> String {
                guard case .text(let bytes) = column, bytes.count <= limit,
                      let text = String(validating: bytes, as: UTF8.self) else { throw corrupt("has a damaged \(name)") }
                return text
            }
            let rowAccount = try text(row.account, "account", limit: Journal.maxAccountBytes)
            if let account, rowAccount != account { throw corrupt("is not of account \(account)") }
            let type = try text(row.type, "type", limit: Journal.maxTypeBytes)
            let id: String? = if case .null = row.eventID { nil } else { try text(row.eventID, "event id", limit: Journal.maxIDBytes) }
            guard row.version > 0 else { throw corrupt("has version \(row.version)") }
            // The writer stores -1 for the shortest form, restores of older builds 255: both are -1.
            guard let digits = row.atDigits == 255 ? -1 : Int8(exactly: row.atDigits), Timestamp.fractionDigitsRange.contains(digits) else {
                throw corrupt("has \(row.atDigits) fractional digits (at most 9)")
            }
            let header = EventHeader(
                seq: seq, version: row.version, account: rowAccount, type: type,
                at: Timestamp(nanoseconds: row.at, fractionDigits: digits), id: id)
            guard let session = Session(bytes: row.session), let counter = UInt32(exactly: row.counter) else {
                throw corrupt("has a damaged nonce")
            }
            guard let kind = KeyRef.Kind(rawValue: UInt8(truncatingIfNeeded: row.keyKind)), (0...255).contains(row.keyKind) else {
                throw corrupt("has an unknown key kind \(row.keyKind)")
            }
            guard row.keyNumber >= 0, (0..<Int64.max).contains(row.keyIndex) else { throw corrupt("has a key number or index out of range") }
            let key = KeyRef(kind, number: UInt64(row.keyNumber), index: UInt64(row.keyIndex))
            let body: SealedEvent.Body
            if let payload = row.payload {
                guard payload.count <= Sealing.maxSealedBytes else {
                    throw corrupt("has a sealed payload of \(payload.count) bytes (at most \(Sealing.maxSealedBytes))")
                }
                body = .sealed(payload)
            } else {
                let digest = row.digest ?? []
                guard digest.count == 32 else { throw corrupt("has a damaged digest (\(digest.count) bytes)") }
                body = .purged(digest: digest)
            }
            guard row.link.count == Chain.linkBytes else { throw corrupt("has a damaged link (\(row.link.count) bytes)") }
            events.append(SealedEvent(header: header, nonce: NonceID(session: session, counter: counter), key: key, body: body))
            links.append(row.link)
        }
        return (events, links)
    }
}

/// The blocks that hold events in `from...through`, in sequence order, read a few at a time:
/// memory holds one page, and no statement stays open between pages (the caller may write
/// between two of them).
struct BlockScan {
    private let store: any JournalStore
    private let from: Int64
    private let through: Int64
    /// Where the next page begins (a first sequence number); nil: the scan is over.
    private var lower: Int64?
    private var page: [StoredBlock] = []
    private var next = 0
    static let pageBlocks = 4

    init(_ store: any JournalStore, from: Int64, through: Int64) {
        (self.store, self.from, self.through) = (store, from, through)
        lower = from <= through ? from : nil
    }

    mutating func nextBlock() throws -> StoredBlock? {
        while true {
            if next < page.count {
                next += 1
                return page[next - 1]
            }
            guard var start = lower else { return nil }
            if next == 0 && page.isEmpty, let holder = try store.block(startingAtOrBefore: from), holder.last >= from {
                start = holder.first  // the first page begins with the block holding `from`
            }
            page = try store.blocks(firstSeqIn: start, through, limit: Self.pageBlocks)
            next = 0
            guard let last = page.last else { lower = nil; return nil }
            lower = page.count == Self.pageBlocks && last.first < through ? last.first + 1 : nil
        }
    }
}

extension JournalStore {
    /// A file's connection is never lost.
    package var isBroken: Bool { false }

    /// The unsealed events, checked (`TailRow.events`), with their stored links.
    func tail() throws -> ([SealedEvent], [[UInt8]]) { try TailRow.events(tailRows()) }

    /// Every row of the tail.
    func tailRows() throws -> [TailRow] { try tailRows(after: 0) }

    /// The chain's genesis link, derived from the journal's identity.
    func genesis() throws -> [UInt8] { Chain.genesis(journalID: try journalID()) }

    /// The link after the last sealed block, or the genesis link when no block is sealed yet.
    func lastSealedLink() throws -> [UInt8] {
        guard let block = try lastBlock() else { return try genesis() }
        return try block.decode().lastLink
    }

    /// The chain's link after event `seq` in this snapshot (the genesis link for 0), computed
    /// from the block that holds it (or read from the tail). Not authenticated by itself: only a
    /// chain that goes on from it to an authenticated head is.
    func link(at seq: Int64) throws -> [UInt8] {
        if seq == 0 { return try genesis() }
        if let link = try tailLink(seq: seq) { return link }
        guard let row = try block(startingAtOrBefore: seq), row.last >= seq else { throw JournalError(.corrupt, "the journal holds no event \(seq)") }
        let block = try row.decode()
        var link = block.previousLink
        var scratch: [UInt8] = []
        for e in block.events {
            link = Chain.link(previous: link, header: e.header, digest: e.digest, scratch: &scratch)
            if e.header.seq == seq { break }
        }
        return link
    }
}
