import Synchronization

/// Where random bytes come from: the system's CSPRNG in production, a seeded generator in tests.
public struct Entropy: Sendable {
    public let bytes: @Sendable (Int) -> [UInt8]

    public init(bytes: @escaping @Sendable (Int) -> [UInt8]) { self.bytes = bytes }

    /// `SystemRandomNumberGenerator`: getrandom(2) on Linux, cryptographically secure.
    public static let system = Entropy { count in
        var g = SystemRandomNumberGenerator()
        var out = [UInt8]()
        out.reserveCapacity(count + 8)
        while out.count < count {
            withUnsafeBytes(of: g.next()) { out.append(contentsOf: $0) }
        }
        return Array(out.prefix(count))
    }

    /// Deterministic bytes from a seed (SplitMix64). For tests only: never for real keys.
    public static func seeded(_ seed: UInt64) -> Entropy {
        let state = Mutex(seed)
        return Entropy { count in
            state.withLock { s in
                (0..<count).map { _ in
                    s &+= 0x9E37_79B9_7F4A_7C15
                    var z = s
                    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                    return UInt8(truncatingIfNeeded: z ^ (z >> 31))
                }
            }
        }
    }
}
