import Crypto
import LetheEvents
import LetheJournal

/// The key one payload's fields are sealed with, and the payload's session and counter that the
/// cells carry (derived once per event, on whichever core decodes it).
package struct CellKey: Sendable {
    let key: SymmetricKey
    let origin: NonceID

    /// The cell key of the payload sealed at `origin` under the key whose field key is `fieldKey`.
    init(fieldKey: SymmetricKey, origin: NonceID) {
        key = KeyDerivation.cellKey(fieldKey, session: origin.session)
        self.origin = origin
    }
}

/// The personal values the read models copy from payloads, sealed under the field key of the key
/// that sealed the payload (an account's, an item's, a record's, the engine's), so that the copy
/// dies with that key: after a purge, whatever bytes of it a page, a WAL, a freed block on the
/// disk or an old copy of the file still hold are ciphertext under a key that no longer exists.
///
/// A sealed cell is `session:16 ‖ counter:u32 ‖ ciphertext ‖ tag` (AES-256-GCM): the sealing
/// session and counter of the payload the value came from (`StoredEvent.origin`). It is sealed
/// under that session's cell key (`KeyDerivation.cellKey` of the field key), with the counter and
/// the column's number as the nonce. A session seals each counter once, and each event gives each
/// column one value, so no nonce repeats under a key, even across histories (a journal restored
/// from a backup and written on reuses sequence numbers, not sessions); the same event sealed
/// again (a rebuild) gives the same bytes, so a rebuild still equals catch-up byte for byte. The
/// additional data is the account.
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

    private static let originBytes = 20

    private func nonce(_ counter: UInt32) -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: counter.littleEndian) { for (i, b) in $0.enumerated() { bytes[i] = b } }
        withUnsafeBytes(of: rawValue.littleEndian) { for (i, b) in $0.enumerated() { bytes[4 + i] = b } }
        // Twelve bytes: always a valid nonce.
        guard let nonce = try? AES.GCM.Nonce(data: bytes) else { preconditionFailure("a 12-byte nonce was refused") }
        return nonce
    }

    /// `value` sealed for this column of a row made from the payload whose cell key is `cell`;
    /// nil for nil.
    func seal(_ value: String?, cell: CellKey, account: String) -> [UInt8]? {
        guard let value else { return nil }
        return seal(Array(value.utf8), cell: cell, account: account)
    }

    func seal(_ plain: [UInt8], cell: CellKey, account: String) -> [UInt8] {
        // A 256-bit key and a 12-byte nonce: sealing cannot fail.
        guard let box = try? AES.GCM.seal(plain, using: cell.key, nonce: nonce(cell.origin.counter), authenticating: Array(account.utf8))
        else { preconditionFailure("AES-GCM refused a well-formed key and nonce") }
        var w = BinaryWriter(capacity: Field.originBytes + plain.count + 16)
        cell.origin.session.write(into: &w)
        w.u32(cell.origin.counter)
        w.raw(box.ciphertext)
        w.raw(box.tag)
        return w.bytes
    }

    /// The value of a sealed cell, under the field key `key`; nil when there is none or its key is gone.
    func open(_ sealed: [UInt8]?, key: SymmetricKey?, account: String) -> [UInt8]? {
        guard let sealed, let key, sealed.count >= Field.originBytes + 16 else { return nil }
        var r = BinaryReader(sealed, offset: 16)
        guard let session = Session(bytes: Array(sealed.prefix(16))), let counter = try? r.u32() else { return nil }
        let cellKey = KeyDerivation.cellKey(key, session: session)
        guard let box = try? AES.GCM.SealedBox(
                  nonce: nonce(counter), ciphertext: sealed[Field.originBytes..<(sealed.count - 16)], tag: sealed.suffix(16)),
              let plain = try? AES.GCM.open(box, using: cellKey, authenticating: Array(account.utf8))
        else { return nil }
        return Array(plain)
    }

    func openText(_ sealed: [UInt8]?, key: SymmetricKey?, account: String) -> String? {
        open(sealed, key: key, account: account).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A JSON object sealed as one cell (a row's several personal fields).
    func seal(_ object: JSONObject, cell: CellKey, account: String) -> [UInt8] {
        var w = JSONWriter()
        w.write(JSONValue.object(object))
        return seal(w.bytes, cell: cell, account: account)
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
