import Crypto

/// Where an event's nonce comes from: the sealing session's random 64-bit id and a 32-bit
/// counter that the session hands out once per sealed payload.
///
/// Stored with each event (two block columns that compress to almost nothing). Independent of
/// the sequence number, so payloads can be sealed before the writer decides their place, on any
/// thread; unique under every key, since sessions are random and a session takes a new id
/// before its counter would wrap. A restored backup cannot bring a nonce back either: every
/// session after the restore has a fresh id.
package struct NonceID: Hashable, Sendable {
    package var session: UInt64
    package var counter: UInt32

    package init(session: UInt64, counter: UInt32) {
        self.session = session
        self.counter = counter
    }
}

/// Which key seals an event's payload.
public enum SealScope: UInt8, Sendable, Hashable {
    /// The account's own data key: destroying it (crypto-shredding) makes the payload unreadable
    /// everywhere. For the data subject's personal data.
    case subject = 0
    /// The journal's engine key, derived from the master key and never destroyed: for records that
    /// must outlive the subject's key (the engine's own purge events, the staff access log). Such
    /// a payload can still be removed event by event (`Erasure.events`).
    case journal = 2
}

/// Seals one event's plaintext payload under its account's data key: compress (when that helps),
/// then AES-256-GCM with the event's `NonceID`. The additional data is the account id, so a
/// payload moved to another account does not open; the chain (which covers the ciphertext's
/// digest) pins it to its event.
package enum Sealing {
    static let tagBytes = 16
    private static let raw: UInt8 = 0
    private static let lz4: UInt8 = 1
    /// Payloads below this size are not worth an LZ4 attempt.
    private static let compressAbove = 96

    static func nonceBytes(_ id: NonceID, into w: inout BinaryWriter) {
        w.u64(id.session)
        w.u32(id.counter)
    }

    /// `ciphertext || tag` of the framed (and possibly compressed) payload.
    package static func seal(_ payload: [UInt8], key: SymmetricKey, nonce id: NonceID, account: String) -> [UInt8] {
        var framed = BinaryWriter(capacity: payload.count + 8)
        if payload.count > compressAbove, let packed = LZ4.compressBlock(payload[...]) {
            framed.u8(lz4)
            framed.varint(payload.count)
            framed.raw(packed)
        } else {
            framed.u8(raw)
            framed.raw(payload)
        }
        var n = BinaryWriter(capacity: 12)
        nonceBytes(id, into: &n)
        // AES-GCM with a well-formed key and a 12-byte nonce cannot fail.
        let box = try! AES.GCM.seal(framed.bytes, using: key, nonce: try! AES.GCM.Nonce(data: n.bytes), authenticating: Array(account.utf8))
        var out = [UInt8]()
        out.reserveCapacity(box.ciphertext.count + tagBytes)
        box.ciphertext.withUnsafeBytes { out.append(contentsOf: $0) }
        box.tag.withUnsafeBytes { out.append(contentsOf: $0) }
        return out
    }

    /// The plaintext payload; throws `.corrupt` naming event `seq` when authentication or decompression fails.
    package static func open(_ sealed: [UInt8], key: SymmetricKey, nonce id: NonceID, account: String, seq: Int64) throws -> [UInt8] {
        guard sealed.count >= tagBytes + 1 else { throw JournalError(.corrupt, "event \(seq): sealed payload too short") }
        let framed: [UInt8]
        do {
            // nonce ‖ ciphertext ‖ tag in one buffer: the cheapest way into swift-crypto.
            var combined = BinaryWriter(capacity: 12 + sealed.count)
            nonceBytes(id, into: &combined)
            combined.raw(sealed)
            let box = try AES.GCM.SealedBox(combined: combined.bytes)
            framed = try AES.GCM.open(box, using: key, authenticating: Array(account.utf8)).withUnsafeBytes { Array($0) }
        } catch {
            throw JournalError(.corrupt, "event \(seq): payload does not authenticate under its account key")
        }
        var r = BinaryReader(framed)
        do {
            switch try r.u8() {
            case raw:
                return Array(framed[1...])
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

    /// What the hash chain covers for a payload: its nonce, the key it is sealed under (its scope)
    /// and its ciphertext, never the plaintext.
    package static func digest(nonce id: NonceID, scope: SealScope, sealed: [UInt8]) -> [UInt8] {
        var h = SHA256()
        withUnsafeBytes(of: id.session.littleEndian) { h.update(bufferPointer: $0) }
        withUnsafeBytes(of: id.counter.littleEndian) { h.update(bufferPointer: $0) }
        withUnsafeBytes(of: scope.rawValue) { h.update(bufferPointer: $0) }
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

/// The anchor: an HMAC-SHA256 of the chain's head under a key derived from the master key.
///
/// The chain alone shows that history was not altered *unless* someone rewrote it all
/// consistently, which anyone with write access to the file could do. The anchor closes that:
/// without the master key the head's MAC cannot be recomputed, so a rewritten chain is detected.
package enum Anchor {
    package static func key(master: SymmetricKey, journalID: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: master, salt: journalID, info: Array("lethe chain anchor v1".utf8), outputByteCount: 32)
    }

    /// The key of `SealScope.journal` payloads: also derived from the master key, for this journal only.
    package static func engineKey(master: SymmetricKey, journalID: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: master, salt: journalID, info: Array("lethe engine events v1".utf8), outputByteCount: 32)
    }

    package static func mac(key: SymmetricKey, headSeq: Int64, headLink: [UInt8]) -> [UInt8] {
        var w = BinaryWriter(capacity: 40)
        w.u64(UInt64(headSeq))
        w.raw(headLink)
        return Array(HMAC<SHA256>.authenticationCode(for: w.bytes, using: key))
    }
}
