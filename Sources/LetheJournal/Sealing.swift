import Crypto

/// Which key seals an event's payload. Keys are the unit of erasure: destroying a key makes every
/// copy of what it sealed unreadable, in the journal, its WAL, its backups and old copies alike.
public enum KeyScope: Sendable, Hashable {
    /// The account's own key, destroyed by the account's purge.
    case account
    /// A key of its own, for one event whose data is erased alone (an item's `ItemCreated`):
    /// destroyed by the erasure that names the event (`Erasure.event`), and by the account's.
    case own
    /// A key of its own for each record of a category (page views, survey answers, ...), from a
    /// one-way chain per account and category: the records expire oldest first, and expiring
    /// them destroys exactly their keys (see `RecordChain`).
    case records(String)
    /// The journal's engine key, never destroyed: for the company's own records about an account
    /// that must outlive its keys (the engine's purge events, legal holds, the trash's moves).
    case journal
}

/// Where an event's key is found, as stored with the event: the scope's kind, and for an own key
/// its id (in the key store), for a record its chain's slot and its index.
package struct KeyRef: Hashable, Sendable {
    package enum Kind: UInt8, Sendable {
        case account = 0
        case journal = 2
        case own = 3
        case records = 4

        /// Keys that seal one payload per history (a record's, an own key).
        package var isSingleUse: Bool { self == .records || self == .own }
    }

    package var kind: Kind
    /// The own key's id, or the record chain's slot; 0 for the other kinds.
    package var number: UInt64
    /// The record's index in its chain; 0 for the other kinds.
    package var index: UInt64

    package init(_ kind: Kind, number: UInt64 = 0, index: UInt64 = 0) {
        self.kind = kind
        self.number = number
        self.index = index
    }

    package static let account = KeyRef(.account)
    package static let journal = KeyRef(.journal)
}

/// A sealing session: 128 random bits that every process (and every 2^32 payloads) draws anew.
///
/// A key that seals many payloads (an account's, the engine's) never seals one
/// itself: each session seals under its own key derived from it and the session, with the
/// session's counter as the nonce, so no nonce repeats under any key unless two sessions draw the
/// same 128 bits. A single-use key seals one payload per history (the writer gives each index of a
/// record chain to one event; an own key is made for one event): it seals directly, with the
/// session's first 64 bits and the counter as the nonce, so that the same key used again in
/// another history (a journal restored from a backup and written on) repeats no nonce unless two
/// sessions draw the same 64 bits. Across
/// processes, crashes, copied folders and restored backups alike.
package struct Session: Hashable, Sendable {
    package var high: UInt64
    package var low: UInt64

    package init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    package static func random(_ entropy: Entropy) -> Session {
        var r = BinaryReader(entropy.bytes(16))
        // Exactly 16 bytes: neither read can fail.
        return Session(high: (try? r.u64()) ?? 0, low: (try? r.u64()) ?? 0)
    }

    package func write(into w: inout BinaryWriter) {
        w.u64(high)
        w.u64(low)
    }

    package var bytes: [UInt8] {
        var w = BinaryWriter(capacity: 16)
        write(into: &w)
        return w.bytes
    }

    package init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        var r = BinaryReader(bytes)
        guard let high = try? r.u64(), let low = try? r.u64() else { return nil }
        self.init(high: high, low: low)
    }
}

/// An event's nonce: its sealing session and the session's counter.
package struct NonceID: Hashable, Sendable {
    package var session: Session
    package var counter: UInt32

    package init(session: Session, counter: UInt32) {
        self.session = session
        self.counter = counter
    }
}

/// A 256-bit key held inline, for walking record chains without allocating.
package struct ChainKey: Sendable, Equatable {
    private var a, b, c, d: UInt64

    package init(_ bytes: UnsafeRawBufferPointer) {
        a = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        b = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        c = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        d = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }

    package init(_ key: SymmetricKey) { self = key.withUnsafeBytes { ChainKey($0) } }

    /// The key `steps` steps further along its record chain (`KeyDerivation.step`).
    package func advanced(by steps: UInt64) -> ChainKey {
        var key = self
        for _ in 0..<steps { key = KeyDerivation.step(key) }
        return key
    }

    func store(into bytes: UnsafeMutableRawBufferPointer) {
        bytes.storeBytes(of: a, toByteOffset: 0, as: UInt64.self)
        bytes.storeBytes(of: b, toByteOffset: 8, as: UInt64.self)
        bytes.storeBytes(of: c, toByteOffset: 16, as: UInt64.self)
        bytes.storeBytes(of: d, toByteOffset: 24, as: UInt64.self)
    }

    package var symmetricKey: SymmetricKey {
        var bytes = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeMutableBytes { store(into: $0) }
        return SymmetricKey(data: bytes)
    }
}

/// The keys derived from a stored key: one per sealing session for payloads, one for the read
/// models' fields, and the step of a record chain. All HMAC-SHA256 or SHA-256 with a label of
/// their own, so no two uses share a key.
package enum KeyDerivation {
    /// The AES-256-GCM key a payload is sealed with: the session key of a key that seals many
    /// payloads, a single-use key (a record's, an own key) itself (see `Session`).
    package static func sealingKey(_ key: SymmetricKey, kind: KeyRef.Kind, session: Session) -> SymmetricKey {
        kind.isSingleUse ? key : sessionKey(key, session)
    }

    /// The AES-256-GCM key of payloads sealed in `session` under `key`.
    package static func sessionKey(_ key: SymmetricKey, _ session: Session) -> SymmetricKey {
        var w = BinaryWriter(capacity: 32)
        w.raw(sessionLabel)
        session.write(into: &w)
        return SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: w.bytes, using: key))
    }

    /// The key of the read models' fields copied from payloads sealed under `key`: it dies with it.
    package static func fieldKey(_ key: SymmetricKey) -> SymmetricKey {
        SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: fieldLabel, using: key))
    }

    /// The key of the read models' cells copied from the payload sealed in `session` under the
    /// key whose field key is `fieldKey`. A session seals each counter once, so a cell's nonce
    /// (the payload's counter and the column) is used once under this key, in every history: a
    /// journal restored from a backup and written on reuses sequence numbers, never sessions.
    package static func cellKey(_ fieldKey: SymmetricKey, session: Session) -> SymmetricKey {
        var w = BinaryWriter(capacity: 40)
        w.raw(cellLabel)
        session.write(into: &w)
        return SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: w.bytes, using: fieldKey))
    }

    /// The next key of a record chain: one-way, so destroying a key destroys every earlier one.
    /// Held inline (no allocation: this runs once per record).
    package static func step(_ key: ChainKey) -> ChainKey {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: stepLabel.count + 32) { buffer in
            for (i, b) in stepLabel.enumerated() { buffer[i] = b }
            key.store(into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[stepLabel.count...]))
            var h = SHA256()
            h.update(bufferPointer: UnsafeRawBufferPointer(buffer))
            return h.finalize().withUnsafeBytes { ChainKey($0) }
        }
    }

    private static let sessionLabel = Array("lethe seal v2".utf8)
    private static let fieldLabel = Array("lethe fields v1".utf8)
    private static let cellLabel = Array("lethe cell v1".utf8)
    /// (Short enough that label and key fit one SHA-256 block: this runs once per record.)
    private static let stepLabel = Array("lethe chain step v1".utf8)
}

/// Seals one event's plaintext payload: compress (when that helps), then AES-256-GCM under the
/// key derived from the event's key and its session, with the session's counter as the nonce.
/// The additional data is the account id, so a payload moved to another account does not open;
/// the chain (which covers the ciphertext's digest) pins it to its event.
package enum Sealing {
    static let tagBytes = 16
    /// The largest sealed payload: the framing (a byte and a varint), the payload (compressed only when smaller), the tag.
    package static let maxSealedBytes = Journal.maxPayloadBytes + 64
    private static let raw: UInt8 = 0
    private static let lz4: UInt8 = 1
    /// Payloads below this size are not worth an LZ4 attempt.
    private static let compressAbove = 96

    /// The 12-byte nonce of a payload (see `Session`): for a key that seals many payloads, the
    /// session's counter (the key is the session's own); for a single-use key, the session's
    /// first 64 bits and the counter.
    package static func nonce(_ id: NonceID, kind: KeyRef.Kind) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 12) { bytes, count in
            write(nonce: id, kind: kind, into: UnsafeMutableRawBufferPointer(bytes))
            count = 12
        }
    }

    /// `ciphertext || tag` of the framed (and possibly compressed) payload, under `key`, the
    /// sealing key (`KeyDerivation.sealingKey`).
    package static func seal(_ payload: [UInt8], key: SymmetricKey, nonce id: NonceID, kind: KeyRef.Kind, account: String) -> [UInt8] {
        var framed = BinaryWriter(capacity: payload.count + 8)
        if payload.count > compressAbove, let packed = LZ4.compressBlock(payload[...]) {
            framed.u8(lz4)
            framed.varint(payload.count)
            framed.raw(packed)
        } else {
            framed.u8(raw)
            framed.raw(payload)
        }
        // AES-GCM with a 256-bit key and a 12-byte nonce cannot fail. The nonce and the account
        // go in from the stack: this runs once per event, and swift-crypto allocates enough.
        var account = account
        let box = withUnsafeTemporaryAllocation(byteCount: 12, alignment: 8) { nonceBytes in
            write(nonce: id, kind: kind, into: nonceBytes)
            return account.withUTF8 { aad in
                (try? AES.GCM.Nonce(data: UnsafeRawBufferPointer(nonceBytes))).flatMap { nonce in
                    try? AES.GCM.seal(framed.bytes, using: key, nonce: nonce, authenticating: UnsafeRawBufferPointer(aad))
                }
            }
        }
        // `combined` is nonce ‖ ciphertext ‖ tag in one buffer (the accessors of the parts copy each).
        guard let combined = box?.combined else { preconditionFailure("AES-GCM refused a well-formed key and nonce") }
        return combined.withUnsafeBytes { Array($0[12...]) }
    }

    /// The nonce of `nonce(_:kind:)`, written into 12 bytes (little-endian, as `BinaryWriter` writes).
    private static func write(nonce id: NonceID, kind: KeyRef.Kind, into bytes: UnsafeMutableRawBufferPointer) {
        if kind.isSingleUse {
            bytes.storeBytes(of: id.session.high.littleEndian, toByteOffset: 0, as: UInt64.self)
            bytes.storeBytes(of: id.counter.littleEndian, toByteOffset: 8, as: UInt32.self)
        } else {
            bytes.storeBytes(of: id.counter.littleEndian, toByteOffset: 0, as: UInt32.self)
            bytes.storeBytes(of: UInt64(0), toByteOffset: 4, as: UInt64.self)
        }
    }

    /// The plaintext payload; throws `.corrupt` naming event `seq` when authentication or decompression fails.
    package static func open(_ sealed: [UInt8], key: SymmetricKey, nonce id: NonceID, kind: KeyRef.Kind, account: String, seq: Int64) throws -> [UInt8] {
        guard sealed.count >= tagBytes + 1 else { throw JournalError(.corrupt, "event \(seq): sealed payload too short") }
        var framed: [UInt8]
        do {
            // nonce ‖ ciphertext ‖ tag in one buffer: the cheapest way into swift-crypto.
            let combined = [UInt8](unsafeUninitializedCapacity: 12 + sealed.count) { bytes, count in
                let raw = UnsafeMutableRawBufferPointer(bytes)
                write(nonce: id, kind: kind, into: raw)
                sealed.withUnsafeBytes { raw.baseAddress!.advanced(by: 12).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                count = 12 + sealed.count
            }
            let box = try AES.GCM.SealedBox(combined: combined)
            var account = account
            framed = try account.withUTF8 { aad in
                try AES.GCM.open(box, using: key, authenticating: UnsafeRawBufferPointer(aad)).withUnsafeBytes { Array($0) }
            }
        } catch {
            throw JournalError(.corrupt, "event \(seq): payload does not authenticate under its key")
        }
        var r = BinaryReader(framed)
        do {
            switch try r.u8() {
            case raw:
                framed.removeFirst()  // (in place: no second buffer)
                return framed
            case lz4:
                let size = try r.count(limit: Journal.maxPayloadBytes)
                return try LZ4.decompressBlock(framed[r.offset...], size: size)
            case let other:
                throw JournalError(.corrupt, "event \(seq): unknown payload framing \(other)")
            }
        } catch let e as JournalError {
            throw e
        } catch {
            throw JournalError(.corrupt, "event \(seq): damaged payload framing")
        }
    }

    /// What the hash chain covers for a payload: its nonce, the key it is sealed under (kind,
    /// number, index) and its ciphertext, never the plaintext.
    package static func digest(nonce id: NonceID, key: KeyRef, sealed: [UInt8]) -> [UInt8] {
        var w = BinaryWriter(capacity: 64 + sealed.count)
        id.session.write(into: &w)
        w.u32(id.counter)
        w.u8(key.kind.rawValue)
        w.u64(key.number)
        w.u64(key.index)
        var h = SHA256()
        w.bytes.withUnsafeBytes { h.update(bufferPointer: $0) }
        h.update(data: sealed)
        return h.finalize().withUnsafeBytes { Array($0) }
    }
}

/// The tamper-evident chain: `link(n) = SHA-256(link(n-1) || header(n))`.
///
/// The header holds the sequence number, the account's version and the time (u64 each,
/// little-endian), the time's fractional digit count (one byte), the account id, the type and the caller's event id (each a u32 length and
/// UTF-8), and the digest of the sealed payload, so a purge can drop the
/// payload, keep its digest, and leave the chain intact.
package enum Chain {
    package static let linkBytes = 32

    /// The link before the first event: depends on the journal's id, so two journals never share a chain.
    package static func genesis(journalID: [UInt8]) -> [UInt8] {
        var h = SHA256()
        h.update(data: Array("lethe chain v1".utf8))
        h.update(data: journalID)
        return Array(h.finalize())
    }

    package static func link(previous: [UInt8], header: EventHeader, digest: [UInt8]) -> [UInt8] {
        var scratch: [UInt8] = []
        return link(previous: previous, header: header, digest: digest, scratch: &scratch)
    }

    /// `link(previous:header:digest:)`, laying the bytes out in `scratch` (whose capacity a
    /// caller chaining many events keeps from one to the next).
    package static func link(previous: [UInt8], header: EventHeader, digest: [UInt8], scratch bytes: inout [UInt8]) -> [UInt8] {
        // The fields are laid out in one buffer and hashed in one call: this runs once per event.
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(previous.count + 25 + 12 + header.account.utf8.count + header.type.utf8.count
                              + (header.id?.utf8.count ?? 0) + digest.count)
        bytes.append(contentsOf: previous)
        func integer<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        integer(UInt64(header.seq))
        integer(UInt64(header.version))
        integer(UInt64(bitPattern: header.at.nanoseconds))
        integer(header.at.fractionDigits)
        func string(_ s: String) {
            var s = s
            s.withUTF8 { utf8 in
                integer(UInt32(utf8.count))
                bytes.append(contentsOf: utf8)
            }
        }
        string(header.account)
        string(header.type)
        string(header.id ?? "")
        bytes.append(contentsOf: digest)
        var h = SHA256()
        bytes.withUnsafeBytes { h.update(bufferPointer: $0) }
        return h.finalize().withUnsafeBytes { Array($0) }
    }
}

/// The anchor: an HMAC-SHA256 of the chain's head under the journal's anchor key (random, kept
/// in the key store under the master key), bound to the file's instance (`meta.instance`: made
/// new for every journal created or restored).
///
/// The chain alone shows that history was not altered *unless* someone rewrote it all
/// consistently, which anyone with write access to the file could do. The MAC closes that:
/// without the key store and the master key the head's MAC cannot be recomputed, so a rewritten
/// chain is detected. An older head keeps its valid MAC, though: what catches a journal rolled
/// back to one (or emptied) is the head the key store remembers (`KeyStore.anchoredHead`).
package enum Anchor {
    package static func mac(key: SymmetricKey, instance: [UInt8], headSeq: Int64, headLink: [UInt8]) -> [UInt8] {
        var w = BinaryWriter(capacity: 80)
        w.raw(Array("lethe head v2".utf8))
        w.u8(UInt8(truncatingIfNeeded: instance.count))
        w.raw(instance)
        w.u64(UInt64(bitPattern: headSeq))
        w.raw(headLink)
        return Array(HMAC<SHA256>.authenticationCode(for: w.bytes, using: key))
    }

    /// The MAC of a recorded erasure: the journal's `erasures` rows make the next run destroy
    /// keys, so a row nobody with the master key wrote must never be acted on.
    package static func erasureMAC(key: SymmetricKey, _ fields: [UInt8]) -> [UInt8] {
        var w = BinaryWriter(capacity: fields.count + 16)
        w.raw(Array("lethe erasure v1".utf8))
        w.raw(fields)
        return Array(HMAC<SHA256>.authenticationCode(for: w.bytes, using: key))
    }
}
