import Crypto
import LetheEvents
import LetheJournal

/// The personal values the read models copy from payloads, sealed under the field key of the key
/// that sealed the payload (an account's, an item's, a record's, the engine's), so that the copy
/// dies with that key: after a purge, whatever bytes of it a page, a WAL, a freed block on the
/// disk or an old copy of the file still hold are ciphertext under a key that no longer exists.
///
/// A sealed cell is `seq:u64 ‖ ciphertext ‖ tag` (AES-256-GCM). The nonce is the sequence number
/// of the event the value came from and the column's number, and each event gives each column one
/// value, so no nonce repeats under a key; the same event sealed again (a rebuild) gives the same
/// bytes, so a rebuild still equals catch-up byte for byte. The additional data is the account.
///
/// Where the read models need equality (a ticket named by an access, a consent named by a share)
/// they compare keyed tags (HMAC-SHA256 under the account's field key, 16 bytes), which die with
/// the key too: a guess can be checked only while the account exists.
enum Field: UInt32 {
    case name = 1, company, email
    case itemKind, itemLabel
    case address, payment
    case ticket, ticketSubject
    case purpose
    case disclosure
    case holdReason
    case access
    case path

    private func nonce(_ seq: Int64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: UInt64(bitPattern: seq).littleEndian) { for (i, b) in $0.enumerated() { bytes[i] = b } }
        withUnsafeBytes(of: rawValue.littleEndian) { for (i, b) in $0.enumerated() { bytes[8 + i] = b } }
        return bytes
    }

    /// `value` sealed for this column of a row made from event `seq`; nil for nil.
    func seal(_ value: String?, key: SymmetricKey, seq: Int64, account: String) -> [UInt8]? {
        guard let value else { return nil }
        return seal(Array(value.utf8), key: key, seq: seq, account: account)
    }

    func seal(_ plain: [UInt8], key: SymmetricKey, seq: Int64, account: String) -> [UInt8] {
        // A 256-bit key and a 12-byte nonce: sealing cannot fail.
        guard let nonce = try? AES.GCM.Nonce(data: nonce(seq)),
              let box = try? AES.GCM.seal(plain, using: key, nonce: nonce, authenticating: Array(account.utf8))
        else { preconditionFailure("AES-GCM refused a well-formed key and nonce") }
        var out = [UInt8]()
        out.reserveCapacity(8 + box.ciphertext.count + 16)
        withUnsafeBytes(of: UInt64(bitPattern: seq).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: box.ciphertext)
        out.append(contentsOf: box.tag)
        return out
    }

    /// The value of a sealed cell; nil when there is none or its key is gone.
    func open(_ sealed: [UInt8]?, key: SymmetricKey?, account: String) -> [UInt8]? {
        guard let sealed, let key, sealed.count >= 24 else { return nil }
        var seq: UInt64 = 0
        for (i, b) in sealed.prefix(8).enumerated() { seq |= UInt64(b) << (8 * UInt64(i)) }
        guard let nonce = try? AES.GCM.Nonce(data: nonce(Int64(bitPattern: seq))),
              let box = try? AES.GCM.SealedBox(nonce: nonce, ciphertext: sealed[8..<(sealed.count - 16)], tag: sealed.suffix(16)),
              let plain = try? AES.GCM.open(box, using: key, authenticating: Array(account.utf8))
        else { return nil }
        return Array(plain)
    }

    func openText(_ sealed: [UInt8]?, key: SymmetricKey?, account: String) -> String? {
        open(sealed, key: key, account: account).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A JSON object sealed as one cell (a row's several personal fields).
    func seal(_ object: JSONObject, key: SymmetricKey, seq: Int64, account: String) -> [UInt8] {
        var w = JSONWriter()
        w.write(JSONValue.object(object))
        return seal(w.bytes, key: key, seq: seq, account: account)
    }

    func openObject(_ sealed: [UInt8]?, key: SymmetricKey?, account: String) -> JSONObject? {
        guard let plain = open(sealed, key: key, account: account), case .object(let o)? = try? JSONParser.parse(plain) else { return nil }
        return o
    }

    /// The keyed tag of `value` in this column: equality without the value, while the key lives.
    func tag(_ value: String, key: SymmetricKey) -> [UInt8] {
        var message = [UInt8]()
        withUnsafeBytes(of: rawValue.littleEndian) { message.append(contentsOf: $0) }
        message.append(contentsOf: value.utf8)
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: key).prefix(16))
    }
}
