import Crypto
import Foundation

/// One account's keys, kept together and wrapped as one under the master key: the account's own
/// key and one record chain per category of records. Destroying a key is removing it from the
/// keyring (and the old keyring's bytes from the file). (Keys of single events, `KeyScope.own`,
/// are rows of their own: see `KeyStore`.)
package struct Keyring: Sendable {
    /// A one-way chain of keys, one per record of a category: key `i + 1` is `step(key i)`. The
    /// keyring keeps only the key at `base`, so every record before `base` (the expired ones) is
    /// unreadable for good, and every later one can still be opened.
    package struct RecordChain: Sendable {
        package var slot: UInt64
        package var category: String
        package var base: UInt64
        package var key: SymmetricKey
    }

    package var account: String
    /// Nil once the account was purged.
    package var accountKey: SymmetricKey?
    package var chains: [UInt64: RecordChain] = [:]
    package var nextSlot: UInt64 = 1
    package var purged: Bool { accountKey == nil }

    package init(account: String, accountKey: SymmetricKey?) {
        self.account = account
        self.accountKey = accountKey
    }

    package func chain(category: String) -> RecordChain? { chains.values.first { $0.category == category } }

    static let format: UInt8 = 1

    func encode() -> [UInt8] {
        var w = BinaryWriter(capacity: 48 + 48 * chains.count)
        w.u8(Keyring.format)
        if let accountKey {
            w.u8(1)
            accountKey.withUnsafeBytes { w.raw($0) }
        } else {
            w.u8(0)
        }
        w.varint(nextSlot)
        w.varint(chains.count)
        for chain in chains.values.sorted(by: { $0.slot < $1.slot }) {
            w.varint(chain.slot)
            w.string(chain.category)
            w.varint(chain.base)
            chain.key.withUnsafeBytes { w.raw($0) }
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], account: String) throws -> Keyring {
        var r = BinaryReader(bytes)
        guard try r.u8() == format else { throw BinaryReader.Malformed(what: "unknown keyring format") }
        var ring = Keyring(account: account, accountKey: nil)
        if try r.u8() == 1 { ring.accountKey = SymmetricKey(data: try r.bytes(32)) }
        ring.nextSlot = try r.varint()
        // (Slots count up from 1 and a new chain adds one: the range of a signed integer is plenty.)
        guard ring.nextSlot < UInt64(Int64.max) else { throw BinaryReader.Malformed(what: "next chain slot out of range") }
        for _ in 0..<(try r.count(limit: 1 << 16)) {
            let chain = RecordChain(
                slot: try r.varint(), category: try r.string(limit: Journal.maxTypeBytes), base: try r.varint(),
                key: SymmetricKey(data: try r.bytes(32)))
            ring.chains[chain.slot] = chain
        }
        guard r.isAtEnd else { throw BinaryReader.Malformed(what: "trailing bytes in a keyring") }
        return ring
    }
}

/// A journal's own keys, random, kept in the key store under the master key (never derived from
/// it, so a new master key changes none of them): the engine key of `KeyScope.journal` payloads,
/// the anchor key that authenticates the chain's head, and the key of its backups.
package struct JournalKeys: Sendable {
    package var engine: SymmetricKey
    package var anchor: SymmetricKey
    package var backup: SymmetricKey
}
