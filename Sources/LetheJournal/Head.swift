import Crypto

/// A head of the chain: the last sequence number and the link after it.
package struct AnchoredHead: Sendable, Equatable {
    package var seq: Int64
    package var link: [UInt8]

    package init(seq: Int64, link: [UInt8]) {
        self.seq = seq
        self.link = link
    }
}

/// The head a journal file says it has (its `meta` rows), and what authenticates it.
package struct StoredHead {
    package var seq: Int64
    package var link: [UInt8]
    /// `Anchor.mac` of (instance, seq, link) under the anchor key, written with every head.
    package var mac: [UInt8]
    /// The file's random instance (new for every journal created or restored).
    package var instance: [UInt8]

    package init(seq: Int64, link: [UInt8], mac: [UInt8], instance: [UInt8]) {
        (self.seq, self.link, self.mac, self.instance) = (seq, link, mac, instance)
    }

    var head: AnchoredHead { AnchoredHead(seq: seq, link: link) }

    /// Checks what any store read back: a sequence number, a link and an instance of their sizes.
    package func checkShape() throws {
        guard seq >= 0, link.count == Chain.linkBytes else { throw JournalError(.corrupt, "the journal's head (meta head_seq, head_link) is missing or damaged") }
        guard instance.count == 16 else { throw JournalError(.corrupt, "the journal's instance (meta instance) is missing or damaged") }
    }
}

/// The one check every reader that acts on the journal makes of its head (`verify`, the writer on
/// open and reload, the read models before they take new events, a retention run through them):
///
/// 1. the head is the one the anchor key signed for this file (`StoredHead.mac`): a chain
///    rewritten consistently by someone without the key store and the master key fails here;
/// 2. the head is not behind the head the key store remembers for this file
///    (`KeyStore.anchoredHead`): a journal rolled back to an older copy, events cut off its end
///    with their old head put back, or a journal emptied, fails here;
/// 3. at the remembered head's sequence number the chain has the remembered link: a journal
///    replaced by another history of the same length or longer (a fork) fails here.
///
/// Callers check separately that the stored events chain up to `StoredHead.link`.
enum HeadCheck {
    /// - Parameters:
    ///   - anchorKey: nil without the master key: the MAC is not checked (the caller says so).
    ///   - anchored: the key store's record; nil when it has none for this file.
    ///   - linkAt: the chain's link after event `seq` (`seq` <= the stored head), 0 the genesis.
    static func check(
        _ stored: StoredHead, anchorKey: SymmetricKey?, anchored: AnchoredHead?, linkAt: (Int64) throws -> [UInt8]
    ) throws {
        if let anchorKey {
            guard stored.mac == Anchor.mac(key: anchorKey, instance: stored.instance, headSeq: stored.seq, headLink: stored.link) else {
                throw JournalError(.corrupt, "the chain head (event \(stored.seq)) is not authenticated by the journal's anchor key: the journal was rewritten (or another key store was given)")
            }
        }
        guard let anchored else {
            throw JournalError(.corrupt, "the key store holds no anchor for this journal file (instance \(Hex.encode(stored.instance))): its history cannot be checked against rollback (another key store, or the anchor was removed)")
        }
        guard stored.seq >= anchored.seq else {
            let lost = anchored.seq == stored.seq + 1 ? "event \(anchored.seq)" : "events \(stored.seq + 1)–\(anchored.seq)"
            throw JournalError(.corrupt, "the journal was rolled back: it ends at event \(stored.seq), but the key store's anchor saw it reach event \(anchored.seq) (\(lost) removed, or an older copy of the file put back)")
        }
        guard try linkAt(anchored.seq) == anchored.link else {
            throw JournalError(.corrupt, "the journal's history was replaced: event \(anchored.seq) is not the one the key store's anchor saw there")
        }
    }
}
