import LetheJournal

/// Entry points for the fuzz targets in `Tools/Fuzz` (see `JournalFuzzing` for why they are
/// public under `@_spi(Fuzzing)`): the NDJSON line parser with its validation, and the payload
/// codec. Each returns what did not hold, or nil; a refusal is the expected answer to most inputs.
@_spi(Fuzzing) public enum EventsFuzzing {
    /// One NDJSON line as `lethe import` takes it: parsed and validated; an accepted event's data
    /// must encode to a payload that decodes to the same data, and the event, written as
    /// `lethe export` writes it, must be accepted again as the same event.
    public static func ndjsonLine(_ line: [UInt8]) -> String? {
        guard case .success(let e) = EnvelopeValidator.parse(line: line) else { return nil }
        let codec = PayloadCodec.standard
        let payload = codec.encode(type: e.type.rawValue, data: e.data)
        guard let decoded = try? codec.decode(type: e.type.rawValue, payload: payload) else { return "accepted data does not decode" }
        guard decoded == e.data else { return "accepted data decodes to other data" }
        let stored = StoredEvent(
            header: EventHeader(seq: 1, version: 1, account: e.account, type: e.type.rawValue, at: e.at, id: e.id),
            payload: .plaintext(payload))
        guard let exported = try? Exporter().lineBytes(stored) else { return "accepted event does not export" }
        switch EnvelopeValidator.parse(line: Array(exported.dropLast())) {
        case .success(var again):
            // What was masked is stored masked: read back, it has nothing left to mask.
            guard again.masked.isEmpty else { return "the exported event still holds a card number in \(again.masked)" }
            again.masked = e.masked
            guard again == e, again.at.fractionDigits == e.at.fractionDigits else { return "the exported event reads back as another" }
        case .failure(let rejection):
            return "the exported event is refused: \(rejection)"
        }
        return nil
    }

    /// A sealed payload's plaintext, as the read models and the export decode it; the first byte
    /// picks the event type (its schema version and upcasters). What decodes must encode again
    /// to a payload that decodes to the same data, and export; the export's direct writer
    /// (`writeJSON`) must write what decoding and then writing the value writes, and refuse
    /// what decoding refuses.
    public static func payload(_ bytes: [UInt8]) -> String? {
        guard let first = bytes.first else { return nil }
        let type = EventType.allCases[Int(first) % EventType.allCases.count]
        let codec = PayloadCodec.standard
        let payload = Array(bytes.dropFirst())
        var direct = JSONWriter()
        let wrote = (try? codec.writeJSON(type: type.rawValue, payload: payload, into: &direct)) != nil
        guard let data = try? codec.decode(type: type.rawValue, payload: payload) else {
            return wrote ? "writeJSON wrote a payload that does not decode" : nil
        }
        var written = JSONWriter()
        written.write(data)
        guard wrote, direct.bytes == written.bytes else { return "writeJSON writes other JSON than decoding and writing" }
        guard let again = try? codec.decode(type: type.rawValue, payload: codec.encode(type: type.rawValue, data: data)), again == data else {
            return "decoded data does not survive encoding again"
        }
        let stored = StoredEvent(
            header: EventHeader(seq: 1, version: 1, account: "acc_1", type: type.rawValue, at: Timestamp(seconds: 1_780_000_000), id: nil),
            payload: .plaintext(payload))
        guard (try? Exporter().lineBytes(stored)) != nil else { return "decoded data does not export" }
        return nil
    }
}
