import Foundation
import Synchronization

/// Where random bytes come from: the system's CSPRNG in production, a seeded generator in tests.
public struct Entropy: Sendable {
    public let bytes: @Sendable (Int) -> [UInt8]

    public init(bytes: @escaping @Sendable (Int) -> [UInt8]) { self.bytes = bytes }

    /// The system's CSPRNG: the kernel's, read from `/dev/urandom` (kept open) in one call for
    /// all the bytes, so a key costs one system call rather than one per 8 bytes;
    /// `SystemRandomNumberGenerator` where that file cannot be read.
    public static let system = Entropy { count in
        var out = [UInt8](repeating: 0, count: count)
        var filled = 0
        if urandom >= 0 {
            while filled < count {
                let n = out.withUnsafeMutableBytes { read(urandom, $0.baseAddress! + filled, count - filled) }
                if n > 0 { filled += n } else if n < 0 && errno == EINTR { continue } else { break }
            }
        }
        if filled < count {
            var g = SystemRandomNumberGenerator()
            for i in 0..<count { out[i] = UInt8(truncatingIfNeeded: g.next()) }
        }
        return out
    }

    /// `/dev/urandom`, opened once for the process.
    private static let urandom: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

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
