import Synchronization

/// Reads: a reader on a connection of its own, inside one snapshot, kept for the next read.
extension Journal {
    func header(seq: Int64) throws -> EventHeader {
        var found: EventHeader?
        try read { try $0.scan(from: seq, through: seq) { found = $0.header } }
        guard let found else { throw JournalError(.invalidEvent, "no event \(seq)") }
        return found
    }

    /// Runs `body` with a reader on its own connection, inside one read snapshot. With
    /// `authenticated`, the reader can check what it reads against the head the key store
    /// remembers (`JournalReader.authenticate(after:)`), read here before the snapshot begins.
    ///
    /// The reader's connections (a server's take milliseconds to open: a handshake, a password
    /// exchange) are kept for the next read, up to `maxIdleReaders` of them, without any account's
    /// key (`JournalReader.recycle`); a reader that failed, whose connection broke, or that `body`
    /// kept a reference to, is closed instead. A kept connection found broken when the next read
    /// begins (a server restarted meanwhile) is replaced by a new one before `body` runs.
    public func read<T>(authenticated: Bool = false, _ body: (JournalReader) throws -> T) throws -> T {
        if let idle = takeIdleReader(), !idle.store.isBroken {
            do {
                return try read(with: consume idle, wasIdle: true, authenticated: authenticated, body)
            } catch is LostWhileIdle {
                // `body` has not run: a new connection takes its place.
            }
        }
        let reader = try JournalReader(backend: backend, keysPath: keysPath) { [keyStore, master, options, backend] in
            try KeyStore(keyStore, master: master, dataPaths: backend.dataPaths, entropy: options.entropy, synchronous: options.synchronous)
        }
        return try read(with: consume reader, wasIdle: false, authenticated: authenticated, body)
    }

    /// A kept reader failed before its snapshot began: its connection was lost while it was idle.
    private struct LostWhileIdle: Error {}

    private func takeIdleReader() -> JournalReader? {
        idleReaders.withLock { $0.popLast() }?.reader
    }

    private func read<T>(
        with reader: consuming JournalReader, wasIdle: Bool, authenticated: Bool, _ body: (JournalReader) throws -> T
    ) throws -> T {
        if authenticated {
            let anchored = try sealer.withLock { try $0.keys.anchoredHead(journal: journalID, instance: instance) }
            reader.authority = HeadAuthority(anchorKey: journalKeys.anchor, anchored: anchored)
        }
        let result: T
        do {
            result = try reader.snapshot { try body(reader) }
        } catch where wasIdle && !reader.began {
            throw LostWhileIdle()
        }
        if isKnownUniquelyReferenced(&reader), !reader.store.isBroken {
            reader.recycle()
            let idle = IdleReader(reader: reader)
            idleReaders.withLock { if $0.count < Journal.maxIdleReaders { $0.append(idle) } }
        }
        return result
    }

    /// The most readers `read` keeps between reads: as many as reads at once usually are.
    static let maxIdleReaders = 4
}

/// A reader between two `Journal.read`s. `@unchecked Sendable` is safe: it is only ever held by
/// the idle list (under its lock) or by the one read that took it out.
struct IdleReader: @unchecked Sendable {
    let reader: JournalReader
}
