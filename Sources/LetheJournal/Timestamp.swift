#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A point in time: nanoseconds since 1970-01-01T00:00:00Z, UTC.
///
/// Events carry their time as RFC 3339 in UTC (`Z`) with optional fractional seconds (up to nine
/// digits are kept exactly); the journal stores the integer, and how many fractional digits the
/// text had, so that an event goes out (`lethe export`) written as it came in.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64
    /// How many fractional digits the time was written with (0–9), or −1 for the shortest form.
    /// Display only: equality, hashing and order look at `nanoseconds` alone.
    public var fractionDigits: Int8

    public init(nanoseconds: Int64, fractionDigits: Int8 = -1) {
        self.nanoseconds = nanoseconds
        self.fractionDigits = fractionDigits
    }

    /// `seconds` since the epoch, saturated at the range `nanoseconds` can hold (about 1677–2262).
    public init(seconds: Int64) { self.init(nanoseconds: Timestamp.nanoseconds(seconds: seconds)) }

    /// The fraction digit counts a stored time may have: 0–9, or −1 for the shortest form.
    package static let fractionDigitsRange: ClosedRange<Int8> = -1...9

    public static func == (a: Timestamp, b: Timestamp) -> Bool { a.nanoseconds == b.nanoseconds }
    public func hash(into h: inout Hasher) { h.combine(nanoseconds) }
    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.nanoseconds < b.nanoseconds }

    /// This time moved by `seconds`, saturated at the range `nanoseconds` can hold: a time read off
    /// the disk plus a retention window never traps, and a due date past 2262 stays in the future.
    public func adding(seconds: Int64) -> Timestamp {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(Timestamp.nanoseconds(seconds: seconds))
        let saturated = overflow ? (seconds < 0 ? Int64.min : Int64.max) : sum
        return Timestamp(nanoseconds: saturated, fractionDigits: fractionDigits)
    }

    private static func nanoseconds(seconds: Int64) -> Int64 {
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (seconds < 0 ? .min : .max) : product
    }

    /// Years accepted: those whose nanoseconds fit in 64 bits with room to add retention windows.
    static let years = 1900...2200

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`; nil for anything else (offsets other than `Z` included).
    public init?(rfc3339 text: String) {
        var text = text
        guard let t = text.withUTF8({ Timestamp(rfc3339UTF8: $0) }) else { return nil }
        self = t
    }

    /// Parses the UTF-8 bytes of `YYYY-MM-DDTHH:MM:SS[.fraction]Z` without copying them.
    public init?(rfc3339UTF8 bytes: UnsafeBufferPointer<UInt8>) {
        guard bytes.count >= 20, bytes.last == UInt8(ascii: "Z") || bytes.last == UInt8(ascii: "z") else { return nil }
        let utf8 = UnsafeBufferPointer(rebasing: bytes[..<(bytes.count - 1)])
        func digits(_ range: Range<Int>) -> Int? {
            var v = 0
            for i in range {
                let c = utf8[i]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        func char(_ i: Int, _ c: Character) -> Bool { utf8[i] == c.asciiValue! }
        let tOK = char(10, "T") || char(10, "t")
        guard char(4, "-"), char(7, "-"), tOK, char(13, ":"), char(16, ":"),
              let year = digits(0..<4), let month = digits(5..<7), let day = digits(8..<10),
              let hour = digits(11..<13), let minute = digits(14..<16), let second = digits(17..<19)
        else { return nil }
        guard Timestamp.years.contains(year), (1...12).contains(month), hour < 24, minute < 60, second < 60,
              day >= 1, day <= Timestamp.daysIn(month: month, year: year)
        else { return nil }
        var nanos: Int64 = 0
        var written: Int8 = 0
        if utf8.count > 19 {
            guard char(19, "."), utf8.count > 20, utf8.count - 20 <= 9, let fraction = digits(20..<utf8.count) else { return nil }
            var scaled = Int64(fraction)
            for _ in 0..<(9 - (utf8.count - 20)) { scaled *= 10 }
            nanos = scaled
            written = Int8(utf8.count - 20)
        }
        let days = Int64(Timestamp.daysFromCivil(year: year, month: month, day: day))
        let secs = days * 86_400 + Int64(hour * 3600 + minute * 60 + second)
        self.init(nanoseconds: secs * 1_000_000_000 + nanos, fractionDigits: written)
    }

    /// RFC 3339 in UTC: with `fractionDigits` fractional digits when that holds the time exactly,
    /// otherwise fractional seconds only when non-zero, without trailing zeros.
    public var rfc3339: String {
        var out: [UInt8] = []
        write(rfc3339To: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the RFC 3339 form to `out` (this runs once per exported event).
    ///
    /// Total: every `nanoseconds` (years 1677–2262) and every `fractionDigits` print; digit
    /// counts outside 0–9 print the shortest form.
    public func write(rfc3339To out: inout [UInt8]) {
        // Floor division, without the overflow of `nanoseconds - 999_999_999` near `Int64.min`.
        var (secs, remainder) = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
        if remainder < 0 {
            secs -= 1
            remainder += 1_000_000_000
        }
        var nanos = Int(remainder)
        var (days, secondOfDay) = secs.quotientAndRemainder(dividingBy: 86_400)
        if secondOfDay < 0 {
            days -= 1
            secondOfDay += 86_400
        }
        let rem = Int(secondOfDay)
        let (y, m, d) = Timestamp.civilFromDays(Int(days))
        // At most 30 bytes ("YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"), written into a buffer on the stack
        // and appended once: one capacity check instead of one per byte.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
            var n = 0
            func byte(_ b: UInt8) {
                buffer[n] = b
                n += 1
            }
            func digits(_ v: Int, _ width: Int) {
                var v = v
                for k in stride(from: n + width - 1, through: n, by: -1) {
                    buffer[k] = UInt8(48 + v % 10)
                    v /= 10
                }
                n += width
            }
            digits(y, 4); byte(45); digits(m, 2); byte(45); digits(d, 2); byte(84)
            digits(rem / 3600, 2); byte(58); digits(rem / 60 % 60, 2); byte(58); digits(rem % 60, 2)
            let written = (1...9).contains(fractionDigits) ? Int(fractionDigits) : 0
            var unit = 1
            for _ in 0..<(9 - written) { unit *= 10 }
            if written > 0, nanos % unit == 0 {
                byte(46)
                digits(nanos / unit, written)
            } else if nanos != 0 {
                var width = 9
                while nanos % 10 == 0 {
                    nanos /= 10
                    width -= 1
                }
                byte(46)
                digits(nanos, width)
            }
            byte(90)
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<n]))
        }
    }

    public var description: String { rfc3339 }

    static func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
    package static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    package static func civilFromDays(_ z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}

/// Where "now" comes from; tests and `--now` inject a fixed one.
public struct Clock: Sendable {
    public let now: @Sendable () -> Timestamp

    public init(now: @escaping @Sendable () -> Timestamp) { self.now = now }

    public static let system = Clock {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }

    public static func fixed(_ t: Timestamp) -> Clock { Clock { t } }
}
