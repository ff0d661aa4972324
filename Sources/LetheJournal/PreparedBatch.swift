/// Events checked and sealed by `Journal.prepare`, waiting for `Journal.append`. The plaintext
/// is kept only where the writer may need it: for the journal's rules, and for a record that
/// another writer's record took the place of in its chain (sealed again under the next key).
public struct PreparedBatch: Sendable {
    struct Sealed: Sendable {
        var nonce: NonceID
        var key: KeyRef
        var body: [UInt8]
        var digest: [UInt8]
    }

    /// One event on its way to the writer. A class: the writer's passes over a batch then share
    /// each item instead of copying its strings and buffers.
    final class Item: Sendable {
        let id: String?
        let account: String
        /// The account's place in the batch's `accounts`.
        let slot: Int
        let type: String
        let at: Timestamp
        let expectedVersion: Int64?
        let scope: KeyScope
        /// The sealed payload, or why the event was refused before it reached the writer.
        let sealed: Result<Sealed, JournalError>
        /// The plaintext, kept only for the journal's rules and for records.
        let plaintext: [UInt8]?

        /// `item` at another place in another batch's `accounts`.
        init(_ item: Item, slot: Int) {
            (id, account, type, at, expectedVersion, scope) = (item.id, item.account, item.type, item.at, item.expectedVersion, item.scope)
            self.slot = slot
            (sealed, plaintext) = (item.sealed, item.plaintext)
        }

        init(_ e: NewEvent, slot: Int, sealed: Result<Sealed, JournalError>, keepPlaintext: Bool) {
            (id, account, type, at, expectedVersion, scope) = (e.id, e.account, e.type, e.at, e.expectedVersion, e.scope)
            self.slot = slot
            self.sealed = sealed
            let isRecord = if case .records = e.scope { true } else { false }
            plaintext = keepPlaintext || isRecord ? e.payload : nil
        }
    }

    var items: [Item]
    /// The batch's accounts, each once, in the order they first appear (`Item.slot` is the
    /// place of an item's). The writer keeps what it learns of an account during an append by
    /// slot: it looks an account's name up once per batch, not at every step for every event.
    var accounts: [String]
    /// The key store's epoch when the batch was sealed: while it has not moved, no key the batch
    /// was sealed under can have been destroyed since.
    var epoch: Int64?

    public var count: Int { items.count }

    public static let empty = PreparedBatch(items: [], accounts: [], epoch: nil)

    /// The batches as one, their events in order: appended in one transaction, whose work per
    /// account (its row, its postings) is then done once for all. Its epoch is the oldest.
    package static func joined(_ batches: [PreparedBatch]) -> PreparedBatch {
        guard batches.count > 1 else { return batches.first ?? .empty }
        var accounts = batches[0].accounts
        var places: [String: Int] = [:]
        places.reserveCapacity(accounts.count * 2)
        for (k, a) in accounts.enumerated() { places[a] = k }
        var items = batches[0].items
        items.reserveCapacity(batches.reduce(0) { $0 + $1.items.count })
        var epoch = batches[0].epoch
        for batch in batches.dropFirst() {
            let remap = batch.accounts.map { a in
                if let k = places[a] { return k }
                places[a] = accounts.count
                accounts.append(a)
                return accounts.count - 1
            }
            for item in batch.items { items.append(Item(item, slot: remap[item.slot])) }
            epoch = epoch.flatMap { e in batch.epoch.map { min(e, $0) } }
        }
        return PreparedBatch(items: items, accounts: accounts, epoch: epoch)
    }
}
