// lethe-gen — deterministic workload generator for Lethe.
//
// Writes a realistic, interleaved event history for many accounts as NDJSON
// (one event per line) in the Lethe contract shape:
//
//   {"id":"evt_0000001","type":"AccountSignedUp","account":"acc_42",
//    "at":"2026-01-05T10:00:00Z","data":{"name":"Ada Lovelace",...}}
//
// Design:
//   * Every account has its own SplitMix64 stream (seeded from --seed and the
//     account number), its own life-cycle state and a small agenda of follow-up
//     tasks (page-view bursts, staff access after a ticket, reactivation, ...).
//   * Accounts are merged in global time order through a binary heap keyed by
//     (next event time, account number). Accounts are materialised lazily at
//     their signup time, so memory is O(accounts), independent of --events.
//   * Output goes through a hand-rolled byte buffer (JSON escaping and RFC 3339
//     formatting by hand) flushed to a FileHandle in 1 MiB chunks.
//   * Bad lines (--bad) use a separate PRNG and never touch account state, so
//     the good lines are byte-identical with or without them.
//
// Every e-mail domain and IP address is drawn from ranges reserved for
// documentation (example.*, *.example, 192.0.2.0/24, 198.51.100.0/24,
// 203.0.113.0/24, 10.0.0.0/8, 2001:db8::/32): the data can never reach anyone.

import Foundation
import LetheJournal
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Diagnostics

enum Log {
    static func line(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    static func fail(_ message: String, code: Int32 = 1) -> Never {
        line("lethe-gen: " + message)
        exit(code)
    }
}

// MARK: - Options

struct Options {
    var accounts = 1000
    var events = 100_000
    var seed: UInt64 = 1
    var startMs: Int64 = 1_767_225_600_000 // 2026-01-01T00:00:00Z
    var days = 365.0
    var bad = 0
    var output: String?

    static let usage = """
    lethe-gen — write a realistic Lethe event history as NDJSON (one event per line)

    USAGE: lethe-gen [options]

    OPTIONS:
      --accounts N    number of accounts (default 1000)
      --events N      approximate number of good events (default 100000; 250k and 2m work too)
      --seed S        PRNG seed, an integer or any string (default 1);
                      the same options always produce byte-identical output
      --start T       RFC 3339 start of the time span (default 2026-01-01T00:00:00Z)
      --days D        length of the time span in days (default 365)
      --bad N         number of deliberately invalid lines to sprinkle in (default 0)
      --output FILE   write to FILE instead of standard output
      --help          show this help

    Bad lines cycle through: truncated JSON, unknown type, missing "account",
    illegal account id, "at" not RFC 3339 UTC, "data" not an object, a full
    (Luhn-valid) card number outside free text (in a ticket or survey id, with
    another in the free text beside it), an event older than the account's
    latest event, an engine-only type (ItemPurged, AccountPurged,
    RecordsExpired, ProcessorErasureRequested), and data that breaks its
    type's schema (a missing or unknown field, a bad country, currency, IP,
    e-mail, card_last4 or amount).

    A one-line summary (lines, good, bad, accounts) goes to standard error.
    """

    static func parse(_ args: [String]) -> Options {
        var options = Options()
        func fail(_ message: String) -> Never {
            Log.fail(message + "\nTry 'lethe-gen --help'.", code: 2)
        }
        var i = 0
        while i < args.count {
            var name = args[i]
            var inline: String?
            if name.hasPrefix("--"), let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            func value() -> String {
                if let inline { return inline }
                i += 1
                guard i < args.count else { fail("missing value for \(name)") }
                return args[i]
            }
            switch name {
            case "--help", "-h":
                print(usage)
                exit(0)
            case "--accounts":
                guard let n = parseCount(value()), n <= Int(Int32.max) else { fail("--accounts expects a non-negative integer") }
                options.accounts = n
            case "--events":
                guard let n = parseCount(value()) else { fail("--events expects a non-negative integer") }
                options.events = n
            case "--seed":
                let text = value()
                options.seed = UInt64(text) ?? fnv1a(text)
            case "--start":
                let text = value()
                guard let ms = Civil.parseRFC3339(text) else { fail("--start expects an RFC 3339 time such as 2026-01-01T00:00:00Z") }
                options.startMs = ms
            case "--days":
                guard let d = Double(value()), d > 0, d < 36_500 else { fail("--days expects a positive number of days") }
                options.days = d
            case "--bad":
                guard let n = parseCount(value()) else { fail("--bad expects a non-negative integer") }
                options.bad = n
            case "--output", "-o":
                options.output = value()
            default:
                fail("unknown option \(name)")
            }
            i += 1
        }
        return options
    }

    /// Parses "1000", "1_000", "250k" or "2m".
    static func parseCount(_ text: String) -> Int? {
        var s = text.lowercased().replacingOccurrences(of: "_", with: "")
        var scale = 1
        if s.hasSuffix("k") { scale = 1_000; s.removeLast() } else if s.hasSuffix("m") { scale = 1_000_000; s.removeLast() }
        guard let n = Int(s), n >= 0, n <= Int.max / scale else { return nil }
        return n * scale
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return h
    }
}

// MARK: - Deterministic randomness

/// SplitMix64: tiny, fast and good enough for synthetic data.
struct SplitMix64 {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    @inline(__always) mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<n (n > 0).
    @inline(__always) mutating func below(_ n: Int) -> Int {
        Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(n)).high)
    }

    /// Uniform in lo...hi.
    @inline(__always) mutating func range(_ lo: Int, _ hi: Int) -> Int { lo + below(hi - lo + 1) }

    /// Uniform in [0, 1).
    @inline(__always) mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    @inline(__always) mutating func chance(_ p: Double) -> Bool { unit() < p }

    /// Exponentially distributed with the given mean.
    @inline(__always) mutating func exp(mean: Double) -> Double { -mean * log1p(-unit()) }

    mutating func gaussian() -> Double {
        let u1 = 1 - unit(), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    @inline(__always) mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}

/// Derives an independent seed from a base seed and a stream number.
func mix(_ base: UInt64, _ stream: UInt64) -> UInt64 {
    var r = SplitMix64(seed: base ^ (stream &* 0xD1B5_4A32_D192_ED03))
    _ = r.next()
    return r.next()
}

/// A discrete distribution over indices 0..<weights.count.
struct Weighted: Sendable {
    let cumulative: [Double]

    init(_ weights: [Double]) {
        var sum = 0.0
        cumulative = weights.map { sum += $0; return sum }
    }

    func pick(_ r: inout SplitMix64) -> Int {
        let x = r.unit() * cumulative[cumulative.count - 1]
        for (i, c) in cumulative.enumerated() where x < c { return i }
        return cumulative.count - 1
    }
}

// MARK: - Calendar arithmetic (proleptic Gregorian, UTC)

enum Civil {
    static let msPerSecond: Int64 = 1000
    static let msPerDay: Int64 = 86_400_000

    /// Days since 1970-01-01: the engine's own calendar arithmetic.
    static func days(year: Int, month: Int, day: Int) -> Int {
        Timestamp.daysFromCivil(year: year, month: month, day: day)
    }

    static func date(fromDays z: Int) -> (year: Int, month: Int, day: Int) {
        let (y, m, d) = Timestamp.civilFromDays(z)
        return (y, m, d)
    }

    /// Breaks epoch milliseconds into UTC fields.
    static func fields(_ ms: Int64) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, milli: Int) {
        let secs = floorDiv(ms, msPerSecond)
        let day = floorDiv(secs, 86_400)
        let sod = Int(secs - day * 86_400)
        let (y, m, d) = date(fromDays: Int(day))
        return (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, Int(ms - secs * msPerSecond))
    }

    @inline(__always) static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : (a - b + 1) / b
    }

    /// Parses "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)" into epoch milliseconds.
    static func parseRFC3339(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        func num(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for k in at..<(at + n) {
                guard b[k] >= 48, b[k] <= 57 else { return nil }
                v = v * 10 + Int(b[k] - 48)
            }
            return v
        }
        guard b.count >= 10, b[4] == 45, b[7] == 45,
              let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2),
              (1...12).contains(mo), (1...31).contains(d) else { return nil }
        var secs = Int64(days(year: y, month: mo, day: d)) * 86_400
        if b.count == 10 { return secs * 1000 }
        guard b.count >= 20, b[10] == 84 || b[10] == 116 || b[10] == 32, b[13] == 58, b[16] == 58,
              let hh = num(11, 2), let mi = num(14, 2), let ss = num(17, 2),
              hh < 24, mi < 60, ss < 61 else { return nil }
        secs += Int64(hh * 3600 + mi * 60 + ss)
        var i = 19
        var ms: Int64 = 0
        if b[i] == 46 { // fractional seconds
            i += 1
            var scale: Int64 = 100
            let first = i
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                ms += Int64(b[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > first else { return nil }
        }
        guard i < b.count else { return nil }
        if b[i] == 90 || b[i] == 122 { // Z
            i += 1
        } else if b[i] == 43 || b[i] == 45, let oh = num(i + 1, 2), let om = num(i + 4, 2), b[i + 3] == 58 {
            let offset = Int64(oh * 3600 + om * 60)
            secs += b[i] == 43 ? -offset : offset
            i += 6
        } else {
            return nil
        }
        return i == b.count ? secs * 1000 + ms : nil
    }
}

// MARK: - Buffered NDJSON writer

enum Ch {
    static let quote: UInt8 = 0x22, comma: UInt8 = 0x2C, colon: UInt8 = 0x3A, space: UInt8 = 0x20
    static let lbrace: UInt8 = 0x7B, rbrace: UInt8 = 0x7D, lbracket: UInt8 = 0x5B, rbracket: UInt8 = 0x5D
    static let newline: UInt8 = 0x0A, dash: UInt8 = 0x2D, dot: UInt8 = 0x2E, at: UInt8 = 0x40
    static let underscore: UInt8 = 0x5F, zero: UInt8 = 0x30, backslash: UInt8 = 0x5C
}

/// Appends JSON fragments to a growable byte buffer and flushes whole lines.
final class Output {
    private var buf: UnsafeMutablePointer<UInt8>
    private var cap = 1 << 21
    private(set) var pos = 0
    private let handle: FileHandle
    private let flushThreshold = 1 << 20
    /// Whether the next key or array element needs a leading comma.
    var needComma = false
    private var cachedDay = Int64.min
    private var dayPrefix = [UInt8](repeating: 0, count: 11) // "YYYY-MM-DDT"

    init(handle: FileHandle) {
        self.handle = handle
        buf = .allocate(capacity: cap)
    }

    deinit { buf.deallocate() }

    @inline(__always) private func reserve(_ n: Int) {
        if pos + n > cap { grow(pos + n) }
    }

    private func grow(_ needed: Int) {
        while cap < needed { cap *= 2 }
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: cap)
        bigger.update(from: buf, count: pos)
        buf.deallocate()
        buf = bigger
    }

    func flush() {
        guard pos > 0 else { return }
        do {
            try handle.write(contentsOf: Data(bytesNoCopy: buf, count: pos, deallocator: .none))
        } catch {
            Log.fail("write failed: \(error)")
        }
        pos = 0
    }

    /// Ends the current line; flushes once enough whole lines are buffered.
    func endLine() {
        byte(Ch.newline)
        if pos >= flushThreshold { flush() }
    }

    /// Cuts the buffer back to `offset` (never inside a UTF-8 sequence).
    func truncate(to offset: Int) {
        var cut = min(offset, pos)
        while cut > 0, buf[cut] & 0xC0 == 0x80 { cut -= 1 }
        pos = cut
    }

    // Primitive appends.

    @inline(__always) func byte(_ b: UInt8) {
        reserve(1)
        buf[pos] = b
        pos += 1
    }

    /// Appends an ASCII literal verbatim (no escaping).
    @inline(__always) func raw(_ s: StaticString) {
        let n = s.utf8CodeUnitCount
        reserve(n)
        (buf + pos).update(from: s.utf8Start, count: n)
        pos += n
    }

    /// Appends the JSON-escaped contents of `s` (without quotes).
    func text(_ s: String) {
        let done: Void? = s.utf8.withContiguousStorageIfAvailable { escape($0) }
        if done == nil {
            var copy = s
            copy.makeContiguousUTF8()
            copy.utf8.withContiguousStorageIfAvailable { escape($0) }
        }
    }

    private func escape(_ bytes: UnsafeBufferPointer<UInt8>) {
        reserve(bytes.count * 6)
        for b in bytes {
            switch b {
            case Ch.quote, Ch.backslash:
                buf[pos] = Ch.backslash; buf[pos + 1] = b; pos += 2
            case 0x0A:
                buf[pos] = Ch.backslash; buf[pos + 1] = 0x6E; pos += 2 // \n
            case 0x0D:
                buf[pos] = Ch.backslash; buf[pos + 1] = 0x72; pos += 2 // \r
            case 0x09:
                buf[pos] = Ch.backslash; buf[pos + 1] = 0x74; pos += 2 // \t
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                buf[pos] = Ch.backslash; buf[pos + 1] = 0x75; buf[pos + 2] = Ch.zero; buf[pos + 3] = Ch.zero
                buf[pos + 4] = hex[Int(b >> 4)]; buf[pos + 5] = hex[Int(b & 15)]
                pos += 6
            default:
                buf[pos] = b; pos += 1
            }
        }
    }

    /// A quoted, escaped JSON string.
    @inline(__always) func string(_ s: String) {
        byte(Ch.quote)
        text(s)
        byte(Ch.quote)
    }

    func int(_ value: Int) {
        var v = value
        if v < 0 { byte(Ch.dash); v = -v }
        var n = 1, t = v
        while t >= 10 { t /= 10; n += 1 }
        reserve(n)
        var i = pos + n - 1
        repeat {
            buf[i] = UInt8(truncatingIfNeeded: 48 + v % 10)
            v /= 10
            i -= 1
        } while v > 0
        pos += n
    }

    /// Non-negative integer, zero-padded to at least `width` digits.
    func padded(_ value: Int, _ width: Int) {
        var n = 1, t = value
        while t >= 10 { t /= 10; n += 1 }
        for _ in n..<max(n, width) { byte(Ch.zero) }
        int(value)
    }

    /// Exactly `width` base-36 digits of `value` (modulo 36^width).
    func base36(_ value: UInt64, width: Int) {
        reserve(width)
        var v = value
        var i = pos + width - 1
        while i >= pos {
            let d = UInt8(v % 36)
            buf[i] = d < 10 ? 48 + d : 87 + d
            v /= 36
            i -= 1
        }
        pos += width
    }

    /// Lower-case hexadecimal without leading zeros.
    func hex(_ value: Int) {
        var digits = 1, t = value
        while t >= 16 { t >>= 4; digits += 1 }
        reserve(digits)
        var v = value
        for i in stride(from: pos + digits - 1, through: pos, by: -1) {
            let d = UInt8(v & 15)
            buf[i] = d < 10 ? 48 + d : 87 + d
            v >>= 4
        }
        pos += digits
    }

    /// A quoted RFC 3339 UTC timestamp; milliseconds only when non-zero.
    func timestamp(_ ms: Int64) {
        let secs = Civil.floorDiv(ms, 1000)
        let frac = Int(ms - secs * 1000)
        let day = Civil.floorDiv(secs, 86_400)
        let sod = Int(secs - day * 86_400)
        if day != cachedDay {
            cachedDay = day
            let (y, m, d) = Civil.date(fromDays: Int(day))
            let yy = min(max(y, 0), 9999)
            dayPrefix[0] = UInt8(48 + yy / 1000); dayPrefix[1] = UInt8(48 + yy / 100 % 10)
            dayPrefix[2] = UInt8(48 + yy / 10 % 10); dayPrefix[3] = UInt8(48 + yy % 10)
            dayPrefix[4] = Ch.dash
            dayPrefix[5] = UInt8(48 + m / 10); dayPrefix[6] = UInt8(48 + m % 10)
            dayPrefix[7] = Ch.dash
            dayPrefix[8] = UInt8(48 + d / 10); dayPrefix[9] = UInt8(48 + d % 10)
            dayPrefix[10] = 0x54 // T
        }
        reserve(32)
        buf[pos] = Ch.quote
        for k in 0..<11 { buf[pos + 1 + k] = dayPrefix[k] }
        pos += 12
        func two(_ v: Int) {
            buf[pos] = UInt8(48 + v / 10); buf[pos + 1] = UInt8(48 + v % 10); pos += 2
        }
        two(sod / 3600); buf[pos] = Ch.colon; pos += 1
        two(sod / 60 % 60); buf[pos] = Ch.colon; pos += 1
        two(sod % 60)
        if frac != 0 {
            buf[pos] = Ch.dot
            buf[pos + 1] = UInt8(48 + frac / 100); buf[pos + 2] = UInt8(48 + frac / 10 % 10); buf[pos + 3] = UInt8(48 + frac % 10)
            pos += 4
        }
        buf[pos] = 0x5A // Z
        buf[pos + 1] = Ch.quote
        pos += 2
    }

    // JSON structure helpers; `needComma` tracks the separator.

    /// Writes `,"name":` (comma only when needed).
    @inline(__always) func key(_ name: StaticString) {
        if needComma { byte(Ch.comma) }
        byte(Ch.quote)
        raw(name)
        raw("\":")
        needComma = true
    }

    @inline(__always) func beginObject() { byte(Ch.lbrace); needComma = false }
    @inline(__always) func endObject() { byte(Ch.rbrace); needComma = true }
    @inline(__always) func beginArray() { byte(Ch.lbracket); needComma = false }
    @inline(__always) func endArray() { byte(Ch.rbracket); needComma = true }

    /// Separator before an array element.
    @inline(__always) func element() {
        if needComma { byte(Ch.comma) }
        needComma = true
    }
}

// MARK: - Vocabulary

struct Country: Sendable {
    let code: String     // ISO 3166-1 alpha-2
    let currency: Int    // index into Vocab.currencies
    let style: Int       // 0 "12 Main St", 1 "Hauptstraße 12", 2 "1-2-3 Shibuya", 3 "Rua Augusta, 1500"
    let streets: [String]
    let cities: [(name: String, region: String, postcode: String)] // postcode: # digit, A letter
}

struct Currency: Sendable {
    let code: String     // ISO 4217
    let prices: [Int]    // starter, pro, business (minor units)
}

enum Vocab {
    static let firstNames: [(display: String, ascii: String)] = [
        ("Ada", "ada"), ("Grace", "grace"), ("Alan", "alan"), ("Margaret", "margaret"), ("Linus", "linus"),
        ("José", "jose"), ("Zoë", "zoe"), ("Søren", "soren"), ("Aiko", "aiko"), ("Chidi", "chidi"),
        ("Priya", "priya"), ("Mateo", "mateo"), ("Olga", "olga"), ("Björn", "bjorn"), ("Fatima", "fatima"),
        ("Wei", "wei"), ("Hiroshi", "hiroshi"), ("Amara", "amara"), ("Lars", "lars"), ("Élodie", "elodie"),
        ("Noah", "noah"), ("Emma", "emma"), ("Liam", "liam"), ("Sofia", "sofia"), ("Yuki", "yuki"),
        ("Arjun", "arjun"), ("Lucía", "lucia"), ("François", "francois"), ("Ingrid", "ingrid"), ("Kwame", "kwame"),
        ("Mei", "mei"), ("Ravi", "ravi"), ("Nadia", "nadia"), ("Tomás", "tomas"), ("Hannah", "hannah"),
        ("Omar", "omar"), ("Anna", "anna"), ("David", "david"), ("Maria", "maria"), ("James", "james"),
        ("Chloé", "chloe"), ("Ji-woo", "jiwoo"), ("Aleksander", "aleksander"), ("Thandiwe", "thandiwe"),
        ("Rafael", "rafael"), ("Keiko", "keiko"), ("Ahmed", "ahmed"), ("Isabella", "isabella"),
    ]

    static let lastNames: [(display: String, ascii: String)] = [
        ("Lovelace", "lovelace"), ("Hopper", "hopper"), ("Turing", "turing"), ("Hamilton", "hamilton"),
        ("Torvalds", "torvalds"), ("García", "garcia"), ("Müller", "mueller"), ("Kierkegaard", "kierkegaard"),
        ("Tanaka", "tanaka"), ("Okafor", "okafor"), ("Sharma", "sharma"), ("Rossi", "rossi"),
        ("Ivanova", "ivanova"), ("Andersson", "andersson"), ("Haddad", "haddad"), ("Zhang", "zhang"),
        ("Nakamura", "nakamura"), ("Mensah", "mensah"), ("Nguyen", "nguyen"), ("O'Brien", "obrien"),
        ("Dubois", "dubois"), ("Silva", "silva"), ("Kowalski", "kowalski"), ("Johansson", "johansson"),
        ("Smith", "smith"), ("Patel", "patel"), ("Kim", "kim"), ("Schmidt", "schmidt"),
        ("van der Berg", "vanderberg"), ("Fernández", "fernandez"), ("Lefèvre", "lefevre"), ("Costa", "costa"),
        ("Yılmaz", "yilmaz"), ("Novak", "novak"), ("Papadopoulos", "papadopoulos"), ("Byrne", "byrne"),
        ("de Souza", "desouza"), ("Larsen", "larsen"), ("Chen", "chen"), ("Adeyemi", "adeyemi"),
    ]

    static let companies: [(display: String, domain: String)] = [
        ("Analytical Engines Ltd", "analytical-engines.example"), ("Northwind Traders", "northwind.example"),
        ("Blue Fjord AS", "bluefjord.example"), ("Café Müller GmbH", "cafe-mueller.example"),
        ("Sakura Design KK", "sakura-design.example"), ("Lumen & Co", "lumen-co.example"),
        ("Orbit Analytics", "orbit-analytics.example"), ("Pão de Queijo Ltda", "paodequeijo.example"),
        ("Maple Leaf Robotics", "mapleleaf-robotics.example"), ("Kangaroo Logistics Pty", "kangaroo-logistics.example"),
        ("Bharat Cloudworks", "bharat-cloudworks.example"), ("Atelier Lefèvre", "atelier-lefevre.example"),
        ("Tulip Data BV", "tulipdata.example"), ("Hopper Systems", "hopper-systems.example"),
        ("Green Valley Farms", "greenvalley.example"), ("Quantum Bakery", "quantum-bakery.example"),
        ("Studio \"Nord\"", "studio-nord.example"), ("Riverbend Legal LLP", "riverbend-legal.example"),
        ("Pixel Forge", "pixelforge.example"), ("Helios Energy", "helios-energy.example"),
    ]

    static let mailDomains = [
        "example.com", "example.org", "example.net", "mail.example", "inbox.example", "webmail.example", "post.example",
    ]

    static let currencies: [Currency] = [
        Currency(code: "USD", prices: [900, 2900, 9900]),
        Currency(code: "EUR", prices: [900, 2700, 8900]),
        Currency(code: "GBP", prices: [800, 2400, 7900]),
        Currency(code: "JPY", prices: [1200, 4000, 13000]),
        Currency(code: "BRL", prices: [4900, 14900, 49900]),
        Currency(code: "CAD", prices: [1200, 3900, 12900]),
        Currency(code: "AUD", prices: [1400, 4400, 14900]),
        Currency(code: "INR", prices: [74900, 239900, 799900]),
        Currency(code: "SEK", prices: [9900, 29900, 99900]),
        Currency(code: "CHF", prices: [900, 2900, 9500]),
    ]

    static let countries: [Country] = [
        Country(code: "US", currency: 0, style: 0,
                streets: ["Market Street", "Broadway", "Main Street", "Elm Avenue", "Sunset Boulevard", "Pine Street"],
                cities: [("San Francisco", "CA", "941##"), ("New York", "NY", "100##"), ("Austin", "TX", "787##"),
                         ("Seattle", "WA", "981##"), ("Chicago", "IL", "606##"), ("Boston", "MA", "021##")]),
        Country(code: "DE", currency: 1, style: 1,
                streets: ["Hauptstraße", "Friedrichstraße", "Schillerstraße", "Bahnhofstraße", "Gartenweg"],
                cities: [("Berlin", "", "10###"), ("München", "BY", "80###"), ("Hamburg", "", "20###"),
                         ("Köln", "NW", "50###"), ("Leipzig", "", "04###")]),
        Country(code: "FR", currency: 1, style: 0,
                streets: ["rue de Rivoli", "avenue Victor Hugo", "boulevard Saint-Germain", "rue de la Paix", "place Bellecour"],
                cities: [("Paris", "", "750##"), ("Lyon", "", "6900#"), ("Marseille", "", "130##"),
                         ("Toulouse", "", "310##"), ("Lille", "", "590##")]),
        Country(code: "GB", currency: 2, style: 0,
                streets: ["Baker Street", "High Street", "Victoria Road", "Station Road", "Church Lane"],
                cities: [("London", "", "SW# #AA"), ("Manchester", "", "M# #AA"), ("Edinburgh", "Scotland", "EH# #AA"),
                         ("Bristol", "", "BS# #AA"), ("Cardiff", "Wales", "CF## #AA")]),
        Country(code: "NL", currency: 1, style: 1,
                streets: ["Keizersgracht", "Damrak", "Prinsengracht", "Coolsingel", "Oudegracht"],
                cities: [("Amsterdam", "NH", "10## AA"), ("Rotterdam", "ZH", "30## AA"), ("Utrecht", "UT", "35## AA"),
                         ("Eindhoven", "NB", "56## AA")]),
        Country(code: "JP", currency: 3, style: 2,
                streets: ["Shibuya", "Minato", "Shinjuku", "Chuo", "Nakagyo"],
                cities: [("Tokyo", "Tokyo", "1##-####"), ("Osaka", "Osaka", "5##-####"), ("Kyoto", "Kyoto", "6##-####"),
                         ("Sapporo", "Hokkaido", "0##-####"), ("Fukuoka", "Fukuoka", "8##-####")]),
        Country(code: "BR", currency: 4, style: 3,
                streets: ["Rua Augusta", "Avenida Paulista", "Rua das Flores", "Avenida Atlântica"],
                cities: [("São Paulo", "SP", "0####-###"), ("Rio de Janeiro", "RJ", "2####-###"),
                         ("Belo Horizonte", "MG", "3####-###"), ("Curitiba", "PR", "8####-###")]),
        Country(code: "CA", currency: 5, style: 0,
                streets: ["Bay Street", "Yonge Street", "Granville Street", "Rue Sainte-Catherine"],
                cities: [("Toronto", "ON", "M#A #A#"), ("Vancouver", "BC", "V#A #A#"), ("Montréal", "QC", "H#A #A#"),
                         ("Calgary", "AB", "T#A #A#")]),
        Country(code: "AU", currency: 6, style: 0,
                streets: ["George Street", "Collins Street", "Queen Street", "Hay Street"],
                cities: [("Sydney", "NSW", "2###"), ("Melbourne", "VIC", "3###"), ("Brisbane", "QLD", "4###"),
                         ("Perth", "WA", "6###")]),
        Country(code: "IN", currency: 7, style: 0,
                streets: ["MG Road", "Linking Road", "Park Street", "FC Road"],
                cities: [("Bengaluru", "KA", "560###"), ("Mumbai", "MH", "400###"), ("Delhi", "DL", "110###"),
                         ("Pune", "MH", "411###"), ("Chennai", "TN", "600###")]),
        Country(code: "SE", currency: 8, style: 1,
                streets: ["Drottninggatan", "Storgatan", "Kungsgatan"],
                cities: [("Stockholm", "", "1## ##"), ("Göteborg", "", "4## ##"), ("Malmö", "", "2## ##")]),
        Country(code: "CH", currency: 9, style: 1,
                streets: ["Bahnhofstrasse", "Rue du Rhône", "Freie Strasse"],
                cities: [("Zürich", "ZH", "80##"), ("Genève", "GE", "12##"), ("Basel", "BS", "40##")]),
    ]
    static let countryWeights = Weighted([30, 12, 8, 10, 5, 6, 6, 6, 5, 7, 2, 2])

    static let line2s = ["Suite 200", "Apt 4B", "Floor 3", "Unit 12", "c/o Accounts Payable", "Building C", "2nd floor, rear"]
    static let processors = ["spark"] // the default processor registry's payment processor

    static let paths = [
        "/", "/pricing", "/features", "/features/backups", "/features/email", "/features/dns",
        "/features/databases", "/docs", "/docs/getting-started", "/docs/api", "/blog",
        "/blog/2026/gdpr-erasure-explained", "/blog/2026/backup-strategies-for-small-teams",
        "/blog/2025/year-in-review", "/blog/2026/why-we-built-lethe", "/about", "/security",
        "/legal/privacy", "/legal/terms", "/changelog", "/contact", "/status",
        "/pricing?plan=pro&billing=annual", "/?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
        "/customers/caf%C3%A9-m%C3%BCller",
    ]
    static let pathWeights = Weighted([14, 12, 6, 5, 4, 3, 3, 4, 4, 2, 4, 3, 3, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 1.5, 0.5])
    static let referrers = [
        "https://www.google.com/", "https://duckduckgo.com/", "https://www.bing.com/search?q=lethe+hosting",
        "https://news.ycombinator.com/item?id=39921734", "https://www.reddit.com/r/selfhosted/",
        "https://github.com/", "https://t.co/", "android-app://com.slack",
    ]

    static let ticketReasons = [
        "support ticket", "investigating customer report", "restoring deleted data at customer request",
        "debugging mail delivery", "billing question",
    ]
    static let otherReasons = [
        "routine compliance audit", "fraud review", "abuse report", "security incident review",
        "billing reconciliation", "migration assistance", "capacity planning",
    ]

    // Support tickets: subject and opening sentence share an index.
    static let subjects = [
        "Site down", "Double charge", "Data export request", "Invoice details", "Mailbox quota",
        "Login problem", "Restore request", "DNS propagation", "Plan change", "Backup region",
        "Receipts", "Cleanup", "Backup failure", "Unsubscribe", "Access question",
    ]
    static let issues = [
        "My site has been returning a 502 error since this morning.",
        "I was charged twice this month, can you check my invoice?",
        "How do I export all the data you hold about me and my team?",
        "Please update the VAT number on my invoices, the old one is wrong.",
        "The mailbox keeps rejecting messages with \"quota exceeded\".",
        "I can't log in after resetting my password, it says the link expired.",
        "Can you restore a database I deleted by mistake yesterday?",
        "DNS changes for my domain haven't propagated after 24 hours.",
        "I'd like to downgrade to the starter plan from next month.",
        "Is there a way to move my backups to the EU region?",
        "Our accountant needs copies of last year's receipts, all of them.",
        "Please delete the old staging site, we don't need it anymore.",
        "Why did my backup job fail last night? The log says 'disk full'.",
        "I want to stop receiving marketing emails, please remove me.",
        "Who else has access to my account data? I need this for an audit.",
    ]
    static let followUps = [
        "Any update on this? It has been two days now and it's still broken.",
        "Thanks, that fixed it. You can close the ticket.",
        "It's happening again, exactly the same error as before.",
        "Attaching the screenshot you asked for:\n(see below)",
        "Sorry, I forgot to mention that it only happens on my phone.",
    ]
    static let greetings = ["Hi,", "Hello team,", "Hey there,", "Good morning,", "Hi support,"]
    static let details = [
        "We have a launch on Friday so this is urgent.",
        "I'm on the Pro plan if that matters.",
        "This started right after I changed the DNS records.",
        "Nothing changed on our side as far as I know.",
        "My colleague has the same problem.",
    ]
    static let closings = ["Thanks!", "Thanks,", "Cheers,", "Best regards,\n", "Kind regards,"]

    static let itemKinds = ["site", "database", "mailbox", "dns-zone"]
    static let itemKindWeights = Weighted([35, 25, 25, 15])
    static let siteLabels = ["Company blog", "Online shop", "Portfolio", "Staging", "Docs site", "Landing page"]
    static let dbLabels = ["prod-db", "analytics", "wordpress", "crm-backup", "orders"]
    static let mailboxNames = ["info", "hello", "billing", "support", "jobs"]
    static let zoneSuffixes = ["-design", "-labs", "-family", "-photo", "-consulting", ""]
    static let siteContents = ["WordPress 6.5 on PHP 8.3", "Static site (Hugo)", "Ghost 5.x blog", "Next.js app, Node 20"]
    static let dbContents = ["PostgreSQL 16, 2 GB", "MySQL 8.0, 512 MB", "PostgreSQL 15 read replica"]

    static let roles = ["developer", "designer", "founder", "agency", "student", "ops"]
    static let heardFrom = ["search", "friend", "podcast", "conference", "ad", "newsletter"]
    static let npsScores = Weighted([2, 2, 3, 3, 4, 6, 8, 12, 18, 22, 20]) // index = score 0...10
    static let npsComments = [
        "Great uptime, support could be faster.", "Love the backups feature!",
        "Too expensive for what it is.", "The dashboard is confusing.",
        "Migration was painless — thank you!", "Please add 2FA with hardware keys.",
    ]
    static let wishes = ["hardware 2FA", "EU-only storage", "team roles", "S3 export", "dark mode"]
    static let exitReasons = ["too expensive", "missing features", "switching provider", "project ended", "poor support"]
    static let exitComments = [
        "Nothing personal, we just merged with another company.",
        "Would come back if you had \"EU only\" hosting.",
        "The price went up twice this year.",
    ]

    static let cancelReasons = [
        "too expensive", "switching to another provider", "project finished", "missing features",
        "company closed", "not using it anymore", "poor support experience",
    ]
    static let erasureChannels = ["support", "email", "web-form", "dpo-letter", "phone"]
    static let erasureChannelWeights = Weighted([40, 30, 20, 5, 5])

    // Consent purposes; the two "share:" ones unlock consent-based sharing.
    static let purposes = ["marketing-name-use", "newsletter", "product-analytics", "share:vms", "share:partner-x"]
    static let purposeWeights = Weighted([3, 3, 2, 1.5, 1])
    static let legalRecipients = ["tax-authority", "statutory-auditor", "court-order-2026-117", "payment-network"]
    static let mergerRecipient = "northwind-holdings"

    static let holdReasons = [
        "pending litigation (billing dispute)", "regulatory inquiry", "law-enforcement preservation request",
        "internal fraud investigation", "subpoena received",
    ]
}

// MARK: - Event and account model

enum EventType: Int {
    case accountSignedUp, profileUpdated, billingAddressSet, paymentRecorded, supportMessageReceived,
         pageViewed, surveyAnswered, accountAccessed, itemCreated, itemDeleted, itemRestored,
         accountCancelled, accountReactivated, erasureRequested, consentGranted, consentRevoked,
         dataShared, noticeSent, legalHoldPlaced, legalHoldReleased

    var name: StaticString {
        switch self {
        case .accountSignedUp: return "AccountSignedUp"
        case .profileUpdated: return "ProfileUpdated"
        case .billingAddressSet: return "BillingAddressSet"
        case .paymentRecorded: return "PaymentRecorded"
        case .supportMessageReceived: return "SupportMessageReceived"
        case .pageViewed: return "PageViewed"
        case .surveyAnswered: return "SurveyAnswered"
        case .accountAccessed: return "AccountAccessed"
        case .itemCreated: return "ItemCreated"
        case .itemDeleted: return "ItemDeleted"
        case .itemRestored: return "ItemRestored"
        case .accountCancelled: return "AccountCancelled"
        case .accountReactivated: return "AccountReactivated"
        case .erasureRequested: return "ErasureRequested"
        case .consentGranted: return "ConsentGranted"
        case .consentRevoked: return "ConsentRevoked"
        case .dataShared: return "DataShared"
        case .noticeSent: return "NoticeSent"
        case .legalHoldPlaced: return "LegalHoldPlaced"
        case .legalHoldReleased: return "LegalHoldReleased"
        }
    }
}

/// What an account does on a random "tick" of activity.
enum Activity: Int {
    case browse, access, createItem, deleteItem, restoreItem, support, profile, billing, survey,
         grantConsent, revokeConsent, share
}

/// Tick mixes by status (weights indexed by Activity.rawValue).
enum Mixes {
    static let active = Weighted([30, 14, 8, 4.5, 1.2, 6, 0.5, 0.12, 1.0, 1.0, 0.5, 0.25])
    static let cancelled = Weighted([30, 8, 0, 1.5, 0, 6, 0.5, 0, 0.5, 0, 1.0, 0.1])
}

/// Follow-up work an account has scheduled for itself.
enum TaskKind: UInt8 {
    case billingSetup, pageView, staffAccess, ticketReply, cancel, reactivate, erase, exitSurvey,
         notice, mergerShare, placeHold, releaseHold, consentShare
}

struct Task {
    var at: Int64
    var kind: TaskKind
    var arg: Int
}

struct Item {
    var id: Int
    var kind: Int
}

struct TrashedItem {
    var item: Item
    var deletedAt: Int64
}

struct Hold {
    var number: Int
    var placedAt: Int64
}

struct Ticket {
    var number: Int
    var subject: Int
}

enum Status: UInt8 { case active, cancelled, erased }

/// Per-account state. Everything is bounded (live items, trash, tickets, agenda).
final class Account {
    let index: Int
    let idStyle: Int
    let signupAt: Int64
    let tickMean: Double // mean milliseconds between activity ticks while active
    let paying: Bool
    var rng: SplitMix64
    var status = Status.active
    var lastAt: Int64
    var finished = false
    /// While cancelled: when the cancellation-30d rule purges the account. Nothing may follow.
    var purgeAt = Int64.max

    // Identity and billing.
    var first = 0, last = 0, company = -1
    var emailStyle = 0, emailDomain = 0, emailNumber = 0
    var country = 0, currency = 0, plan = 0, card = 0, processor = -1
    var billingSet = false
    var visitorSeed: UInt64 = 0, visitors = 1

    // Schedules.
    var nextTick = Int64.max
    var nextPayment = Int64.max
    var agenda: [Task] = []

    // Life-cycle state.
    var live: [Item] = []
    var trash: [TrashedItem] = []
    var tickets: [Ticket] = []
    var consents: UInt8 = 0
    var holds: [Hold] = []
    var onboarded = false

    init(index: Int, idStyle: Int, signupAt: Int64, tickMean: Double, paying: Bool, rng: SplitMix64) {
        self.index = index
        self.idStyle = idStyle
        self.signupAt = signupAt
        self.tickMean = tickMean
        self.paying = paying
        self.rng = rng
        lastAt = signupAt
    }

    var nextDue: Int64 {
        min(agenda.first?.at ?? .max, nextPayment, nextTick)
    }

    /// Inserts a task keeping the agenda sorted (stable for equal times).
    func add(_ task: Task, essential: Bool) {
        if !essential && agenda.count >= 32 { return }
        var i = agenda.count
        while i > 0 && agenda[i - 1].at > task.at { i -= 1 }
        agenda.insert(task, at: i)
    }
}

/// Min-heap of (time, account) — the global merge of all account streams.
struct Schedule {
    struct Entry {
        var at: Int64
        var account: Int32
    }

    private(set) var entries: [Entry]

    init(_ entries: [Entry]) {
        self.entries = entries
        var i = entries.count / 2
        while i > 0 { i -= 1; siftDown(i) }
    }

    var top: Entry? { entries.first }

    @inline(__always) private static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.at < b.at || (a.at == b.at && a.account < b.account)
    }

    mutating func replaceTop(_ e: Entry) {
        entries[0] = e
        siftDown(0)
    }

    mutating func popTop() {
        let last = entries.removeLast()
        if !entries.isEmpty { replaceTop(last) }
    }

    private mutating func siftDown(_ start: Int) {
        let n = entries.count
        var i = start
        let e = entries[i]
        while true {
            var c = 2 * i + 1
            if c >= n { break }
            if c + 1 < n && Schedule.less(entries[c + 1], entries[c]) { c += 1 }
            if !Schedule.less(entries[c], e) { break }
            entries[i] = entries[c]
            i = c
        }
        entries[i] = e
    }
}

// MARK: - Generator

final class Generator {
    // Time constants in milliseconds.
    static let minute = 60_000.0, hour = 3_600_000.0, day = 86_400_000.0, month = 30.44 * 86_400_000.0
    /// Average events per activity tick (bursts and follow-ups); calibrated empirically.
    static let eventsPerTick = 1.60
    static let maxLiveItems = 40
    static let trashWindow: Int64 = 14 * 86_400_000

    let options: Options
    let out: Output
    let start: Int64, end: Int64, span: Double
    /// Global notices: (time, topic) with topic 0 = policy-change, 1 = merger.
    let notices: [(at: Int64, topic: Int)]
    var tickRatePerWeight = 0.0

    var accounts: [Account?]
    var schedule: Schedule

    // Global counters (deterministic: single thread, fixed merge order).
    var good = 0, badWritten = 0, created = 0
    var itemCounter = 0, ticketCounter = 0, caseCounter = 0
    var now: Int64

    // Bad-line placement uses its own PRNG so good lines do not depend on --bad.
    var badRng: SplitMix64
    var nextBadAt = 0.0

    init(options: Options, out: Output) {
        self.options = options
        self.out = out
        start = options.startMs
        span = options.days * Generator.day
        end = start + Int64(span)
        now = start
        notices = [
            (start + Int64(span * 0.17), 0),
            (start + Int64(span * 0.58), 1),
            (start + Int64(span * 0.86), 0),
        ]
        accounts = [Account?](repeating: nil, count: options.accounts)
        badRng = SplitMix64(seed: mix(options.seed, 0xBAD))
        schedule = Schedule([])
        calibrate()
        nextBadAt = badSpacing * (0.6 + 0.8 * badRng.unit())
    }

    // MARK: Accounts

    /// The per-account draws that are needed before the account exists.
    struct Profile {
        var rng: SplitMix64
        var signupAt: Int64
        var weight: Double
        var paying: Bool
    }

    func profile(_ i: Int) -> Profile {
        var r = SplitMix64(seed: mix(options.seed, UInt64(i)))
        let u = r.unit()
        // Early-skewed signups: half of the accounts exist after the first quarter.
        let signup = max(start, (start + Int64(span * u * u)) / 1000 * 1000)
        // Log-normal activity weight with mean 1: a few accounts are very busy.
        let weight = Foundation.exp(0.9 * r.gaussian() - 0.405)
        let paying = r.chance(0.68)
        return Profile(rng: r, signupAt: signup, weight: weight, paying: paying)
    }

    /// Mean time to cancellation of an active account.
    static let meanTimeToCancel = 800 * day

    /// Sets the tick rate so that the expected number of good events is close to --events,
    /// and fills the schedule with every account's signup time.
    func calibrate() {
        var weightedLife = 0.0, fixed = 0.0
        var entries: [Schedule.Entry] = []
        entries.reserveCapacity(options.accounts)
        for i in 0..<options.accounts {
            let p = profile(i)
            // Expected active time before the span ends or the account cancels for good
            // (35% of cancellations are reactivated, see cancel()).
            let m = Generator.meanTimeToCancel / 0.65
            let life = m * -expm1(-Double(end - p.signupAt) / m)
            weightedLife += p.weight * life
            fixed += 1 + Generator.eventsPerTick // signup, and the early first tick after it
            if p.paying { fixed += 1 + life / Generator.month } // address + monthly payments
            fixed += Double(notices.filter { $0.at >= p.signupAt }.count)
            entries.append(.init(at: p.signupAt, account: Int32(i)))
        }
        schedule = Schedule(entries)
        let target = Double(options.events)
        let tickEvents = max(target - fixed, target * 0.25)
        if weightedLife > 0 { tickRatePerWeight = tickEvents / Generator.eventsPerTick / weightedLife }
    }

    /// Creates an account at its signup time, writes AccountSignedUp and plans its life.
    func signUp(_ i: Int) -> Account {
        let p = profile(i)
        let t = p.signupAt
        let styleRoll = mix(options.seed ^ 0x1D, UInt64(i)) % 100
        let rate = p.weight * tickRatePerWeight
        let a = Account(index: i, idStyle: styleRoll < 82 ? 0 : (styleRoll < 94 ? 1 : 2), signupAt: t,
                        tickMean: rate > 0 ? 1 / rate : .infinity, paying: p.paying, rng: p.rng)
        var r = p.rng
        defer { a.rng = r }
        a.first = r.below(Vocab.firstNames.count)
        a.last = r.below(Vocab.lastNames.count)
        a.company = r.chance(0.7) ? r.below(Vocab.companies.count) : -1
        newEmail(a, &r)
        a.country = Vocab.countryWeights.pick(&r)
        a.currency = r.chance(0.1) ? 0 : Vocab.countries[a.country].currency
        a.plan = [0, 0, 0, 0, 0, 1, 1, 1, 1, 2][r.below(10)]
        a.card = r.below(10_000)
        a.processor = r.chance(0.92) ? r.below(Vocab.processors.count) : -1
        a.visitorSeed = r.next()
        a.visitors = r.range(1, 3)

        begin(.accountSignedUp, a, t)
        out.key("name"); writeName(a)
        out.key("email"); writeEmail(a)
        if a.company >= 0 { out.key("company"); out.string(Vocab.companies[a.company].display) }
        finish(a, t)

        // Plan the account's life.
        a.nextTick = later(t, r.exp(mean: min(a.tickMean, 2 * Generator.day)), &r)
        if a.paying || r.chance(0.1) {
            plan(a, later(t, Generator.minute + r.exp(mean: 8 * Generator.minute), &r), .billingSetup, essential: true)
        }
        plan(a, later(t, r.exp(mean: Generator.meanTimeToCancel), &r), .cancel, essential: true)
        if r.chance(0.015) { plan(a, later(t, r.unit() * Double(end - t), &r), .erase, essential: true) }
        if r.chance(0.03) { plan(a, later(t, r.unit() * Double(end - t), &r), .placeHold, essential: true) }
        planNotice(a, from: 0, after: t, &r)
        return a
    }

    // MARK: Scheduling helpers

    /// `t + delta`, rounded up to a whole second 70% of the time (the rest keep milliseconds).
    @inline(__always) func later(_ t: Int64, _ delta: Double, _ r: inout SplitMix64) -> Int64 {
        guard delta < 1e14 else { return .max }
        var x = t + Int64(delta)
        if r.chance(0.7) { x = (x + 999) / 1000 * 1000 }
        return x
    }

    func plan(_ a: Account, _ at: Int64, _ kind: TaskKind, arg: Int = 0, essential: Bool = false) {
        guard at < end else { return }
        a.add(Task(at: at, kind: kind, arg: arg), essential: essential)
    }

    func planNotice(_ a: Account, from k: Int, after t: Int64, _ r: inout SplitMix64) {
        var k = k
        while k < notices.count && notices[k].at < t { k += 1 }
        guard k < notices.count else { return }
        plan(a, later(max(t, notices[k].at), r.exp(mean: 6 * Generator.hour), &r), .notice, arg: k, essential: true)
    }

    // MARK: Main loop

    func run() {
        while let top = schedule.top {
            let i = Int(top.account)
            let t = top.at
            let a: Account
            if let existing = accounts[i] {
                a = existing
                step(a, t)
            } else {
                a = signUp(i)
                accounts[i] = a
                created += 1
            }
            let next = a.nextDue
            if a.status == .erased {
                a.agenda.removeAll(); a.live.removeAll(); a.trash.removeAll()
                schedule.popTop()
            } else if next < min(end, a.purgeAt) {
                schedule.replaceTop(.init(at: next, account: top.account))
            } else {
                a.finished = true
                schedule.popTop()
            }
            while badWritten < options.bad && Double(good) >= nextBadAt {
                writeBadLine()
                nextBadAt += badSpacing * (0.6 + 0.8 * badRng.unit())
            }
        }
        while badWritten < options.bad { writeBadLine() }
        out.flush()
        Log.line("lethe-gen: wrote \(good + badWritten) lines (\(good) good, \(badWritten) bad) for \(created) accounts")
    }

    /// Runs whichever of the account's clocks is due at `t`: agenda, payment, then activity tick.
    func step(_ a: Account, _ t: Int64) {
        var r = a.rng
        defer { a.rng = r }
        if let task = a.agenda.first, task.at == t {
            a.agenda.removeFirst()
            runTask(a, task, t, &r)
        } else if a.nextPayment == t {
            payment(a, t, &r)
        } else {
            let mean = a.status == .active ? a.tickMean : 3 * a.tickMean
            a.nextTick = later(t, r.exp(mean: mean), &r)
            tick(a, t, &r)
        }
    }

    func tick(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        let mix = a.status == .active ? Mixes.active : Mixes.cancelled
        var activity = Activity(rawValue: mix.pick(&r))!
        // Fall back when the chosen activity is impossible in the current state.
        if activity == .createItem && a.live.count >= Generator.maxLiveItems { activity = .deleteItem }
        if activity == .restoreItem {
            pruneTrash(a, t)
            if a.trash.isEmpty { activity = .browse }
        }
        if activity == .deleteItem && a.live.isEmpty { activity = a.status == .active ? .createItem : .browse }
        if activity == .revokeConsent && a.consents == 0 { activity = a.status == .active ? .grantConsent : .browse }
        if activity == .grantConsent && a.consents == 0x1F { activity = .browse }

        switch activity {
        case .browse:
            var size = 1
            while size < 12 && r.chance(0.55) { size += 1 }
            var visitor = r.below(a.visitors)
            if a.visitors < 6 && r.chance(0.06) { visitor = a.visitors; a.visitors += 1 } // a new device
            pageView(a, t, &r, remaining: size, visitor: visitor, previous: -1)
        case .access:
            let ticket = !a.tickets.isEmpty && r.chance(0.55) ? a.tickets[r.below(a.tickets.count)].number : -1
            access(a, t, &r, ticket: ticket)
        case .createItem: createItem(a, t, &r)
        case .deleteItem: deleteItem(a, t, &r)
        case .restoreItem: restoreItem(a, t, &r)
        case .support: support(a, t, &r, reply: nil)
        case .profile: profileUpdate(a, t, &r)
        case .billing: billingAddress(a, t, &r)
        case .survey:
            let kind: Int
            if !a.onboarded && Double(t - a.signupAt) < 30 * Generator.day { kind = 0 } else { kind = r.chance(0.6) ? 1 : 2 }
            survey(a, t, &r, kind: kind)
        case .grantConsent: grantConsent(a, t, &r)
        case .revokeConsent: revokeConsent(a, t, &r)
        case .share:
            let shares = a.consents >> 3
            if shares != 0 && r.chance(0.7) {
                let purpose = shares & 1 != 0 && (shares & 2 == 0 || r.chance(0.5)) ? 3 : 4
                dataShared(a, t, &r, basis: 0, purpose: purpose)
            } else {
                dataShared(a, t, &r, basis: 1, purpose: 0)
            }
        }
    }

    func runTask(_ a: Account, _ task: Task, _ t: Int64, _ r: inout SplitMix64) {
        switch task.kind {
        case .billingSetup:
            let first = !a.billingSet
            billingAddress(a, t, &r)
            if first && a.paying && a.status == .active {
                // 40% start with a 14-day trial, the rest pay a few minutes after entering the address.
                let delay = r.chance(0.4) ? 14 * Generator.day + r.exp(mean: Generator.hour) : 30_000 + r.exp(mean: 3 * Generator.minute)
                a.nextPayment = later(t, delay, &r)
            }
        case .pageView:
            pageView(a, t, &r, remaining: task.arg & 0xFF, visitor: (task.arg >> 8) & 0xFF, previous: task.arg >> 16)
        case .staffAccess:
            access(a, t, &r, ticket: task.arg)
        case .ticketReply:
            support(a, t, &r, reply: Ticket(number: task.arg >> 8, subject: task.arg & 0xFF))
        case .cancel:
            if a.status == .active { cancel(a, t, &r) }
        case .reactivate:
            if a.status == .cancelled { reactivate(a, t, &r) }
        case .erase:
            erase(a, t, &r)
        case .exitSurvey:
            survey(a, t, &r, kind: 3)
        case .notice:
            notice(a, t, &r, index: task.arg)
        case .mergerShare:
            dataShared(a, t, &r, basis: 2, purpose: 0)
        case .placeHold:
            if a.holds.count < 2 { placeHold(a, t, &r) }
        case .releaseHold:
            if let k = a.holds.firstIndex(where: { $0.number == task.arg }) { releaseHold(a, t, at: k) }
        case .consentShare:
            if a.consents & (1 << task.arg) != 0 { dataShared(a, t, &r, basis: 0, purpose: task.arg) }
        }
    }

    // MARK: Event envelope

    func begin(_ type: EventType, _ a: Account, _ t: Int64) {
        out.raw("{\"id\":\"evt_")
        out.padded(good + 1, 7)
        out.raw("\",\"type\":\"")
        out.raw(type.name)
        out.raw("\",\"account\":")
        writeAccountID(a.index, style: a.idStyle)
        out.raw(",\"at\":")
        out.timestamp(t)
        out.raw(",\"data\":")
        out.beginObject()
    }

    func finish(_ a: Account, _ t: Int64) {
        out.raw("}}")
        out.endLine()
        good += 1
        a.lastAt = t
        now = t
    }

    func writeAccountID(_ index: Int, style: Int) {
        switch style {
        case 0: out.raw("\"acc_"); out.int(index + 1)
        case 1: out.raw("\"cus-"); out.base36(UInt64(index + 1), width: 6)
        default: out.raw("\"tenant.eu:"); out.int(index + 1)
        }
        out.byte(Ch.quote)
    }

    // MARK: Field writers

    func writeName(_ a: Account) {
        out.byte(Ch.quote)
        out.text(Vocab.firstNames[a.first].display)
        out.byte(Ch.space)
        out.text(Vocab.lastNames[a.last].display)
        out.byte(Ch.quote)
    }

    func newEmail(_ a: Account, _ r: inout SplitMix64) {
        a.emailStyle = r.below(5)
        a.emailDomain = a.company >= 0 && r.chance(0.55) ? -1 : r.below(Vocab.mailDomains.count)
        a.emailNumber = r.chance(0.25) ? r.range(1, 99) : 0
    }

    func writeEmail(_ a: Account) {
        out.byte(Ch.quote)
        writeEmailText(a, domain: a.emailDomain)
        out.byte(Ch.quote)
    }

    /// The account's e-mail address (unquoted), optionally at another domain.
    func writeEmailText(_ a: Account, domain: Int) {
        let f = Vocab.firstNames[a.first].ascii, l = Vocab.lastNames[a.last].ascii
        switch a.emailStyle {
        case 0: out.text(f); out.byte(Ch.dot); out.text(l)
        case 1: out.text(f); out.text(l)
        case 2: out.byte(f.utf8.first!); out.byte(Ch.dot); out.text(l)
        case 3: out.text(f); out.byte(Ch.underscore); out.text(l)
        default: out.text(f)
        }
        if a.emailNumber > 0 { out.int(a.emailNumber) }
        out.byte(Ch.at)
        writeDomain(a, domain)
    }

    func writeDomain(_ a: Account, _ domain: Int) {
        if domain < 0 && a.company >= 0 {
            out.text(Vocab.companies[a.company].domain)
        } else {
            out.text(Vocab.mailDomains[max(domain, 0)])
        }
    }

    func writeTicket(_ number: Int) {
        out.raw("\"T-")
        out.int(10_000 + number)
        out.byte(Ch.quote)
    }

    func writeItemID(_ item: Item) {
        switch item.kind {
        case 0: out.raw("\"site_")
        case 1: out.raw("\"db_")
        case 2: out.raw("\"mbx_")
        default: out.raw("\"zone_")
        }
        out.base36(UInt64(item.id) &* 0x9E37_79B1 % 2_176_782_336, width: 6) // scrambled, unique below 36^6
        out.byte(Ch.quote)
    }

    func writeVisitor(_ a: Account, _ k: Int) {
        out.raw("\"v_")
        out.base36(mix(a.visitorSeed, UInt64(k)), width: 10)
        out.byte(Ch.quote)
    }

    /// Writes a pattern such as "SW# #AA" with random digits (#) and letters (A).
    func writePattern(_ pattern: String, _ r: inout SplitMix64) {
        out.byte(Ch.quote)
        for c in pattern.utf8 {
            switch c {
            case 0x23: out.byte(UInt8(48 + r.below(10)))
            case 0x41: out.byte(UInt8(65 + r.below(26)))
            default: out.byte(c)
            }
        }
        out.byte(Ch.quote)
    }

    func writeIP(staff: Int, _ r: inout SplitMix64) {
        out.byte(Ch.quote)
        switch r.below(20) {
        case 0..<9: // office
            out.raw("203.0.113."); out.int(10 + staff)
        case 9..<14: // VPN
            out.raw("10.8."); out.int(r.below(16)); out.byte(Ch.dot); out.int(r.range(2, 254))
        case 14..<16: // home connection
            out.raw("198.51.100."); out.int(r.range(1, 254))
        case 16..<19: // IPv6, compressed
            out.raw("2001:db8:"); out.hex(0x100 + staff); out.raw("::"); out.hex(r.range(1, 0xFFFF))
        default: // IPv6, full
            out.raw("2001:db8:85a3:"); out.hex(r.below(0x10000)); out.byte(Ch.colon); out.hex(r.below(0x10000))
            out.byte(Ch.colon); out.hex(r.below(0x10000)); out.byte(Ch.colon); out.hex(r.below(0x10000))
            out.byte(Ch.colon); out.hex(r.below(0x10000))
        }
        out.byte(Ch.quote)
    }

    func writeCase(_ number: Int, _ t: Int64) {
        out.raw("\"LH-")
        out.int(Civil.fields(t).year)
        out.byte(Ch.dash)
        out.padded(number, 4)
        out.byte(Ch.quote)
    }

    /// Writes a support message body (40-300 characters), optionally containing a card number.
    func writeBody(_ a: Account, _ r: inout SplitMix64, subject: Int, followUp: Bool, card: [UInt8]? = nil) {
        out.byte(Ch.quote)
        out.text(r.pick(Vocab.greetings))
        out.raw("\\n") // an escaped line break after the greeting
        if let card {
            out.raw("My card is ")
            for d in card { out.byte(d) }
            out.raw(" and the last payment failed, can you retry it?")
        } else {
            out.text(followUp ? r.pick(Vocab.followUps) : Vocab.issues[subject])
            if !followUp && r.chance(0.35) { out.byte(Ch.space); out.text(r.pick(Vocab.details)) }
        }
        out.byte(Ch.space)
        let closing = r.below(Vocab.closings.count)
        out.text(Vocab.closings[closing])
        if closing > 0 {
            if closing != 3 { out.byte(Ch.space) }
            out.text(Vocab.firstNames[a.first].display)
        }
        out.byte(Ch.quote)
    }

    func writeCategories(_ list: [StaticString]) {
        out.beginArray()
        for c in list { out.element(); out.byte(Ch.quote); out.raw(c); out.byte(Ch.quote) }
        out.endArray()
    }

    // MARK: Event writers (each updates the account state it implies)

    func pageView(_ a: Account, _ t: Int64, _ r: inout SplitMix64, remaining: Int, visitor: Int, previous: Int) {
        let path = Vocab.pathWeights.pick(&r)
        begin(.pageViewed, a, t)
        out.key("path"); out.string(Vocab.paths[path])
        out.key("visitor"); writeVisitor(a, visitor)
        if previous < 0 {
            if r.chance(0.45) { out.key("referrer"); out.string(r.pick(Vocab.referrers)) }
        } else if r.chance(0.75) {
            out.key("referrer"); out.raw("\"https://lethe.example"); out.text(Vocab.paths[previous]); out.byte(Ch.quote)
        }
        finish(a, t)
        if remaining > 1 {
            plan(a, later(t, 3000 + r.exp(mean: 45_000), &r), .pageView, arg: (remaining - 1) | visitor << 8 | path << 16)
        }
    }

    func access(_ a: Account, _ t: Int64, _ r: inout SplitMix64, ticket: Int) {
        let staff = 1 + Int(pow(r.unit(), 1.7) * 24)
        begin(.accountAccessed, a, t)
        out.key("actor"); out.raw("\"staff_"); out.padded(staff, 2); out.byte(Ch.quote)
        out.key("ip"); writeIP(staff: staff, &r)
        out.key("reason"); out.string(ticket >= 0 ? r.pick(Vocab.ticketReasons) : r.pick(Vocab.otherReasons))
        if ticket >= 0 { out.key("ticket"); writeTicket(ticket) }
        finish(a, t)
    }

    func createItem(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        itemCounter += 1
        let item = Item(id: itemCounter, kind: Vocab.itemKindWeights.pick(&r))
        a.live.append(item)
        begin(.itemCreated, a, t)
        out.key("item"); writeItemID(item)
        out.key("kind"); out.string(Vocab.itemKinds[item.kind])
        let zone = Vocab.lastNames[a.last].ascii
        if r.chance(0.8) {
            out.key("label")
            switch item.kind {
            case 0: out.string(r.pick(Vocab.siteLabels))
            case 1: out.string(r.pick(Vocab.dbLabels))
            case 2:
                out.byte(Ch.quote); out.text(r.pick(Vocab.mailboxNames)); out.byte(Ch.at)
                writeDomain(a, -1); out.byte(Ch.quote)
            default:
                out.byte(Ch.quote); out.text(zone); out.text(r.pick(Vocab.zoneSuffixes)); out.raw(".example\"")
            }
        }
        if r.chance(0.5) {
            out.key("content")
            switch item.kind {
            case 0: out.string(r.pick(Vocab.siteContents))
            case 1: out.string(r.pick(Vocab.dbContents))
            case 2:
                out.raw("\"Forwarding to ")
                writeEmailText(a, domain: r.below(Vocab.mailDomains.count))
                out.byte(Ch.quote)
            default:
                out.raw("\"A @ 203.0.113."); out.int(r.range(1, 254)); out.raw("\\nMX 10 mail."); out.text(zone); out.raw(".example\"")
            }
        }
        finish(a, t)
    }

    func deleteItem(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        let k = r.below(a.live.count)
        let item = a.live[k]
        a.live.swapAt(k, a.live.count - 1)
        a.live.removeLast()
        pruneTrash(a, t)
        if a.trash.count >= 16 { a.trash.removeFirst() }
        a.trash.append(TrashedItem(item: item, deletedAt: t))
        begin(.itemDeleted, a, t)
        out.key("item"); writeItemID(item)
        finish(a, t)
    }

    func restoreItem(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        let k = r.below(a.trash.count)
        let item = a.trash.remove(at: k).item
        a.live.append(item)
        begin(.itemRestored, a, t)
        out.key("item"); writeItemID(item)
        finish(a, t)
    }

    /// Items stay restorable for two weeks; older trash is forgotten (the engine purges it).
    func pruneTrash(_ a: Account, _ t: Int64) {
        while let first = a.trash.first, t - first.deletedAt > Generator.trashWindow { a.trash.removeFirst() }
    }

    func support(_ a: Account, _ t: Int64, _ r: inout SplitMix64, reply: Ticket?) {
        var ticket: Ticket
        var followUp = true
        if let reply {
            ticket = reply
        } else if !a.tickets.isEmpty && r.chance(0.2) {
            ticket = a.tickets[a.tickets.count - 1]
        } else {
            followUp = false
            ticketCounter += 1
            ticket = Ticket(number: ticketCounter, subject: r.below(Vocab.subjects.count))
            if a.tickets.count >= 4 { a.tickets.removeFirst() }
            a.tickets.append(ticket)
            // Staff usually look into the account; customers sometimes write again.
            if r.chance(0.5) {
                plan(a, later(t, 10 * Generator.minute + r.exp(mean: 2 * Generator.hour), &r), .staffAccess, arg: ticket.number)
            }
            if r.chance(0.35) {
                plan(a, later(t, Generator.hour + r.exp(mean: Generator.day), &r), .ticketReply,
                     arg: ticket.number << 8 | ticket.subject)
            }
        }
        begin(.supportMessageReceived, a, t)
        out.key("ticket"); writeTicket(ticket.number)
        out.key("from_email")
        if r.chance(0.85) {
            writeEmail(a)
        } else { // a colleague writes in
            out.byte(Ch.quote); out.text(r.pick(Vocab.firstNames).ascii); out.byte(Ch.at)
            writeDomain(a, a.company >= 0 ? -1 : r.below(Vocab.mailDomains.count)); out.byte(Ch.quote)
        }
        out.key("body"); writeBody(a, &r, subject: ticket.subject, followUp: followUp)
        if !followUp && r.chance(0.75) {
            out.key("subject"); out.string(Vocab.subjects[ticket.subject])
        } else if followUp && r.chance(0.4) {
            out.key("subject"); out.raw("\"Re: "); out.text(Vocab.subjects[ticket.subject]); out.byte(Ch.quote)
        }
        finish(a, t)
    }

    func profileUpdate(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        let mask = [1, 1, 1, 4, 4, 4, 2, 2, 5, 7][r.below(10)] // 1 name, 2 company, 4 email
        if mask & 1 != 0 {
            if r.chance(0.7) { a.last = r.below(Vocab.lastNames.count) } else { a.first = r.below(Vocab.firstNames.count) }
        }
        if mask & 2 != 0 { a.company = r.below(Vocab.companies.count) }
        if mask & 4 != 0 { newEmail(a, &r) }
        begin(.profileUpdated, a, t)
        if mask & 1 != 0 { out.key("name"); writeName(a) }
        if mask & 2 != 0 { out.key("company"); out.string(Vocab.companies[a.company].display) }
        if mask & 4 != 0 { out.key("email"); writeEmail(a) }
        finish(a, t)
    }

    func billingAddress(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        if a.billingSet && r.chance(0.1) { a.country = Vocab.countryWeights.pick(&r) } // moved abroad
        a.billingSet = true
        let country = Vocab.countries[a.country]
        let city = r.pick(country.cities)
        let street = r.pick(country.streets)
        let number = r.range(1, 220)
        begin(.billingAddressSet, a, t)
        out.key("line1"); out.byte(Ch.quote)
        switch country.style {
        case 0: out.int(number); out.byte(Ch.space); out.text(street)
        case 1: out.text(street); out.byte(Ch.space); out.int(number)
        case 2:
            out.int(r.range(1, 4)); out.byte(Ch.dash); out.int(r.range(1, 30)); out.byte(Ch.dash)
            out.int(r.range(1, 20)); out.byte(Ch.space); out.text(street)
        default: out.text(street); out.raw(", "); out.int(number * 7)
        }
        out.byte(Ch.quote)
        if r.chance(0.3) { out.key("line2"); out.string(r.pick(Vocab.line2s)) }
        out.key("city"); out.string(city.name)
        if !city.region.isEmpty && r.chance(0.9) { out.key("region"); out.string(city.region) }
        if r.chance(0.95) { out.key("postcode"); writePattern(city.postcode, &r) }
        out.key("country"); out.string(country.code)
        finish(a, t)
    }

    func payment(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        let currency = Vocab.currencies[a.currency]
        var amount = currency.prices[a.plan]
        if r.chance(0.12) { amount += currency.prices[0] / 2 * r.range(1, 3) } // add-ons
        begin(.paymentRecorded, a, t)
        out.key("transaction"); out.raw("\"txn_"); out.base36(r.next(), width: 12); out.byte(Ch.quote)
        out.key("amount_minor"); out.int(amount)
        out.key("currency"); out.string(currency.code)
        out.key("card_last4"); out.byte(Ch.quote); out.padded(a.card, 4); out.byte(Ch.quote)
        if a.processor >= 0 { out.key("processor"); out.string(Vocab.processors[a.processor]) }
        finish(a, t)
        if r.chance(0.03) { a.card = r.below(10_000) }   // new card next time
        if r.chance(0.02) && a.plan < 2 { a.plan += 1 }  // upgrade
        a.nextPayment = later(t, Generator.month + r.exp(mean: 4 * Generator.hour), &r)
    }

    /// kind: 0 onboarding, 1 quarterly NPS, 2 feature priorities, 3 exit survey.
    func survey(_ a: Account, _ t: Int64, _ r: inout SplitMix64, kind: Int) {
        begin(.surveyAnswered, a, t)
        out.key("survey")
        switch kind {
        case 0: out.raw("\"onboarding-v2\"")
        case 1:
            let f = Civil.fields(t)
            out.raw("\"nps-"); out.int(f.year); out.raw("-q"); out.int((f.month - 1) / 3 + 1); out.byte(Ch.quote)
        case 2: out.raw("\"feature-priorities\"")
        default: out.raw("\"churn-exit\"")
        }
        out.key("answers"); out.beginObject()
        switch kind {
        case 0:
            a.onboarded = true
            out.key("role"); out.string(r.pick(Vocab.roles))
            out.key("team_size"); out.int(1 + Int(pow(r.unit(), 3) * 250))
            out.key("heard_from"); out.string(r.pick(Vocab.heardFrom))
            out.key("migrating"); out.raw(r.chance(0.4) ? "true" : "false")
        case 1:
            out.key("nps"); out.int(Vocab.npsScores.pick(&r))
            out.key("channel"); out.raw(r.chance(0.7) ? "\"in-app\"" : "\"email\"")
            if r.chance(0.6) { out.key("comment"); out.string(r.pick(Vocab.npsComments)) }
        case 2:
            out.key("backups"); out.int(r.range(1, 5))
            out.key("email"); out.int(r.range(1, 5))
            out.key("dns"); out.int(r.range(1, 5))
            out.key("most_wanted"); out.string(r.pick(Vocab.wishes))
        default:
            out.key("reason"); out.string(r.pick(Vocab.exitReasons))
            out.key("satisfaction"); out.int(r.range(1, 5))
            out.key("would_return"); out.raw(r.chance(0.3) ? "true" : "false")
            if r.chance(0.5) { out.key("comment"); out.string(r.pick(Vocab.exitComments)) }
        }
        out.endObject()
        finish(a, t)
    }

    func grantConsent(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        var purpose = Vocab.purposeWeights.pick(&r)
        while a.consents & (1 << purpose) != 0 { purpose = (purpose + 1) % Vocab.purposes.count }
        a.consents |= 1 << purpose
        begin(.consentGranted, a, t)
        out.key("purpose"); out.string(Vocab.purposes[purpose])
        finish(a, t)
        if purpose >= 3 && r.chance(0.45) { // sharing follows a sharing consent
            plan(a, later(t, Generator.day + r.exp(mean: 10 * Generator.day), &r), .consentShare, arg: purpose)
        }
    }

    func revokeConsent(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        var purpose = r.below(Vocab.purposes.count)
        while a.consents & (1 << purpose) == 0 { purpose = (purpose + 1) % Vocab.purposes.count }
        a.consents &= ~(1 << purpose)
        begin(.consentRevoked, a, t)
        out.key("purpose"); out.string(Vocab.purposes[purpose])
        finish(a, t)
    }

    /// basis: 0 consent (purpose 3 = vms, 4 = partner-x), 1 legal, 2 merger.
    func dataShared(_ a: Account, _ t: Int64, _ r: inout SplitMix64, basis: Int, purpose: Int) {
        begin(.dataShared, a, t)
        out.key("recipient")
        switch basis {
        case 0: out.string(purpose == 3 ? "vms" : "partner-x")
        case 1: out.string(r.pick(Vocab.legalRecipients))
        default: out.string(Vocab.mergerRecipient)
        }
        out.key("basis")
        out.raw(basis == 0 ? "\"consent\"" : basis == 1 ? "\"legal\"" : "\"merger\"")
        out.key("categories")
        switch basis {
        case 0: writeCategories(purpose == 3 ? ["profile", "usage"] : (r.chance(0.5) ? ["profile"] : ["profile", "billing"]))
        case 1: writeCategories(r.pick([["billing"], ["billing", "profile"], ["support"]]))
        default: writeCategories(r.chance(0.5) ? ["billing", "profile", "support", "items"] : ["billing", "profile"])
        }
        finish(a, t)
    }

    func notice(_ a: Account, _ t: Int64, _ r: inout SplitMix64, index: Int) {
        let n = notices[index]
        begin(.noticeSent, a, t)
        out.key("topic")
        if n.topic == 0 {
            out.raw("\"policy-change\"")
            let f = Civil.fields(n.at)
            out.key("version"); out.byte(Ch.quote); out.int(f.year); out.byte(Ch.dash); out.padded(f.month, 2); out.byte(Ch.quote)
        } else {
            out.raw("\"merger\"")
        }
        finish(a, t)
        if n.topic == 1 && r.chance(0.3) { // data moves to the acquirer some weeks later
            plan(a, later(max(t, n.at + Int64(30 * Generator.day)), r.exp(mean: 5 * Generator.day), &r), .mergerShare)
        }
        planNotice(a, from: index + 1, after: t, &r)
    }

    func placeHold(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        caseCounter += 1
        a.holds.append(Hold(number: caseCounter, placedAt: t))
        begin(.legalHoldPlaced, a, t)
        out.key("case"); writeCase(caseCounter, t)
        out.key("reason"); out.string(r.pick(Vocab.holdReasons))
        finish(a, t)
        if r.chance(0.75) {
            plan(a, later(t, 20 * Generator.day + r.exp(mean: 80 * Generator.day), &r), .releaseHold, arg: caseCounter, essential: true)
        }
    }

    func releaseHold(_ a: Account, _ t: Int64, at k: Int) {
        let hold = a.holds.remove(at: k)
        begin(.legalHoldReleased, a, t)
        out.key("case"); writeCase(hold.number, hold.placedAt) // same id as when placed
        finish(a, t)
    }

    /// Cancelling starts the contract's cancellation-30d rule: unless reactivated within 30 days
    /// the engine purges the account, so the account emits nothing from then on.
    func cancel(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        a.status = .cancelled
        a.nextPayment = .max
        a.purgeAt = t + 30 * Civil.msPerDay - Civil.msPerSecond
        begin(.accountCancelled, a, t)
        if r.chance(0.7) { out.key("reason"); out.string(r.pick(Vocab.cancelReasons)) }
        finish(a, t)
        if r.chance(0.4) { plan(a, later(t, Generator.hour + r.exp(mean: Generator.day), &r), .exitSurvey) }
        let fate = r.unit()
        if fate < 0.35 { // comes back before the purge (a later draw is simply dropped)
            let at = later(t, Generator.day + r.exp(mean: 7 * Generator.day), &r)
            if at < a.purgeAt { plan(a, at, .reactivate, essential: true) }
        } else if fate < 0.65 { // asks for erasure right away
            plan(a, later(t, 12 * Generator.hour + r.exp(mean: 6 * Generator.day), &r), .erase, essential: true)
        }
    }

    func reactivate(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        a.status = .active
        a.purgeAt = .max
        begin(.accountReactivated, a, t)
        finish(a, t)
        if a.paying && a.billingSet { a.nextPayment = later(t, Generator.minute + r.exp(mean: 20 * Generator.minute), &r) }
        plan(a, later(t, r.exp(mean: Generator.meanTimeToCancel), &r), .cancel, essential: true)
    }

    func erase(_ a: Account, _ t: Int64, _ r: inout SplitMix64) {
        begin(.erasureRequested, a, t)
        if r.chance(0.8) { out.key("channel"); out.string(Vocab.erasureChannels[Vocab.erasureChannelWeights.pick(&r)]) }
        finish(a, t)
        a.status = .erased
    }

    // MARK: Bad lines

    var badSpacing: Double { Double(max(options.events, 1)) / Double(options.bad + 1) }

    /// Picks a signed-up account (preferring live ones, optionally with some history).
    func badAccount(_ r: inout SplitMix64, wantHistory: Bool) -> Account? {
        guard !accounts.isEmpty else { return nil }
        var fallback: Account?
        for attempt in 0..<64 {
            guard let a = accounts[r.below(accounts.count)] else { continue }
            if a.status == .erased || now >= a.purgeAt { fallback = fallback ?? a; continue }
            if !wantHistory || a.lastAt - a.signupAt > 2000 || attempt > 48 { return a }
            fallback = a
        }
        if fallback != nil { return fallback }
        let offset = r.below(accounts.count)
        for k in 0..<accounts.count {
            if let a = accounts[(offset + k) % accounts.count] { return a }
        }
        return nil
    }

    func writeBadID() {
        out.raw("{\"id\":\"evt_")
        out.padded(good, 7)
        out.byte(0x62) // 'b': never clashes with the all-digit ids of good lines
        out.int(badWritten + 1)
        out.byte(Ch.quote)
    }

    /// `,"account":"..."` for a real account (or a placeholder when no account exists yet).
    func writeBadAccount(_ a: Account?) {
        out.raw(",\"account\":")
        writeAccountID(a?.index ?? 0, style: a?.idStyle ?? 0)
    }

    /// Writes neutral data fields (page view, staff access or support message) without touching state.
    func writeNeutralData(_ a: Account?, _ r: inout SplitMix64, kind: Int) {
        out.beginObject()
        switch (kind, a) {
        case (1, let a?):
            let staff = r.range(1, 24)
            out.key("actor"); out.raw("\"staff_"); out.padded(staff, 2); out.byte(Ch.quote)
            out.key("ip"); writeIP(staff: staff, &r)
            out.key("reason"); out.string(r.pick(Vocab.otherReasons))
            if let ticket = a.tickets.last { out.key("ticket"); writeTicket(ticket.number) }
        case (2, let a?):
            out.key("ticket"); writeTicket(a.tickets.last?.number ?? ticketCounter + 1)
            out.key("from_email"); writeEmail(a)
            out.key("body"); writeBody(a, &r, subject: r.below(Vocab.subjects.count), followUp: false)
        default:
            out.key("path"); out.string(Vocab.paths[Vocab.pathWeights.pick(&r)])
            out.key("visitor")
            if let a { writeVisitor(a, 0) } else { out.raw("\"v_"); out.base36(r.next(), width: 10); out.byte(Ch.quote) }
        }
        out.endObject()
    }

    static let neutralTypes: [StaticString] = ["PageViewed", "AccountAccessed", "SupportMessageReceived"]
    static let unknownTypes = [
        "AccountUpgraded", "PageVisited", "accountSignedUp", "ItemMoved", "PaymentRefunded", "ProfileDeleted",
        "page_viewed", "SupportTicketClosed",
    ]

    /// Writes one invalid line; the kind cycles, the variant within a kind advances each cycle.
    func writeBadLine() {
        var r = badRng
        defer { badRng = r }
        let kind = badWritten % 10
        let variant = badWritten / 10
        let a = badAccount(&r, wantHistory: kind == 7)
        let t = now
        let neutral = variant % 3
        let lineStart = out.pos

        func envelope(_ type: StaticString, at: Int64) {
            writeBadID()
            out.raw(",\"type\":\""); out.raw(type); out.byte(Ch.quote)
            writeBadAccount(a)
            out.raw(",\"at\":"); out.timestamp(at)
            out.raw(",\"data\":")
        }

        switch kind {
        case 0: // malformed JSON: a plausible line cut short
            envelope(Generator.neutralTypes[neutral], at: t)
            writeNeutralData(a, &r, kind: neutral)
            out.byte(Ch.rbrace)
            let length = out.pos - lineStart
            out.truncate(to: lineStart + max(8, Int(Double(length) * (0.25 + 0.65 * r.unit()))))
        case 1: // unknown type
            writeBadID()
            out.raw(",\"type\":"); out.string(Generator.unknownTypes[variant % Generator.unknownTypes.count])
            writeBadAccount(a)
            out.raw(",\"at\":"); out.timestamp(t)
            out.raw(",\"data\":"); writeNeutralData(a, &r, kind: 0)
            out.byte(Ch.rbrace)
        case 2: // missing "account"
            writeBadID()
            out.raw(",\"type\":\""); out.raw(Generator.neutralTypes[neutral]); out.byte(Ch.quote)
            out.raw(",\"at\":"); out.timestamp(t)
            out.raw(",\"data\":"); writeNeutralData(a, &r, kind: neutral)
            out.byte(Ch.rbrace)
        case 3: // account id with illegal characters (or illegal length)
            let n = (a?.index ?? 0) + 1
            writeBadID()
            out.raw(",\"type\":\"PageViewed\",\"account\":\"")
            switch variant % 9 {
            case 0: out.raw("acc "); out.int(n)
            case 1: out.raw("acc/"); out.int(n)
            case 2: out.raw("acc_"); out.int(n); out.byte(0x21) // !
            case 3: out.text("ácc_"); out.int(n)
            case 4: break // empty
            case 5: out.raw("acc_"); out.int(n); for _ in 0..<61 { out.byte(0x78) } // longer than 64
            case 6: out.raw("acc#"); out.int(n)
            case 7: out.raw("acc_"); out.int(n); out.raw("\\n")
            default: out.int(n); out.raw("@acme")
            }
            out.byte(Ch.quote)
            out.raw(",\"at\":"); out.timestamp(t)
            out.raw(",\"data\":"); writeNeutralData(a, &r, kind: 0)
            out.byte(Ch.rbrace)
        case 4: // "at" not RFC 3339 or not UTC
            writeBadID()
            out.raw(",\"type\":\""); out.raw(Generator.neutralTypes[neutral]); out.byte(Ch.quote)
            writeBadAccount(a)
            out.raw(",\"at\":")
            writeBadTime(t, variant: variant)
            out.raw(",\"data\":"); writeNeutralData(a, &r, kind: neutral)
            out.byte(Ch.rbrace)
        case 5: // "data" not an object
            envelope(Generator.neutralTypes[neutral], at: t)
            switch variant % 5 {
            case 0: out.raw("\"path=/pricing\"")
            case 1: out.raw("[\"/pricing\",\"v_1\"]")
            case 2: out.raw("null")
            case 3: out.raw("42")
            default: out.raw("true")
            }
            out.byte(Ch.rbrace)
        case 6: // a full card number outside free text (in free text alone it would be masked, not refused)
            let card = cardNumber(&r, format: variant % 3)
            if variant % 4 == 3 {
                envelope("SurveyAnswered", at: t)
                out.beginObject()
                out.key("survey"); out.raw("\"feature-priorities-"); for d in card { out.byte(d) }; out.byte(Ch.quote)
                out.key("answers"); out.beginObject()
                out.key("backups"); out.int(r.range(1, 5))
                out.key("comment"); out.raw("\"I tried to pay with ")
                for d in card { out.byte(d) }
                out.raw(" but it was declined twice.\"")
                out.endObject()
                out.endObject()
            } else {
                envelope("SupportMessageReceived", at: t)
                out.beginObject()
                out.key("ticket"); out.raw("\"T-"); for d in card { out.byte(d) }; out.byte(Ch.quote)
                out.key("from_email")
                if let a { writeEmail(a) } else { out.raw("\"someone@example.com\"") }
                out.key("body")
                if let a {
                    writeBody(a, &r, subject: 1, followUp: false, card: card)
                } else {
                    out.raw("\"My card is "); for d in card { out.byte(d) }; out.raw(", please charge it.\"")
                }
                out.key("subject"); out.raw("\"Payment failed\"")
                out.endObject()
            }
            out.byte(Ch.rbrace)
        case 7: // older than the account's latest event
            var older: Int64
            if let a, a.lastAt - a.signupAt > 2000 {
                older = a.signupAt + Int64(r.unit() * Double(a.lastAt - a.signupAt - 1000))
            } else {
                older = (a?.lastAt ?? t) - Int64(Generator.hour + r.unit() * 3 * Generator.day)
            }
            older = older / 1000 * 1000
            envelope(neutral == 2 ? "SupportMessageReceived" : "PageViewed", at: older)
            writeNeutralData(a, &r, kind: neutral == 2 ? 2 : 0)
            out.byte(Ch.rbrace)
        case 9: // data that breaks its type's schema (EVENTS.md)
            switch variant % 8 {
            case 0:
                envelope("PageViewed", at: t)
                out.raw("{\"path\":\"/pricing\"}")  // visitor missing
            case 1:
                envelope("BillingAddressSet", at: t)
                out.raw("{\"line1\":\"1 Main St\",\"city\":\"Berlin\",\"country\":\"Germany\"}")
            case 2:
                envelope("AccountAccessed", at: t)
                out.raw("{\"actor\":\"staff_01\",\"ip\":\"300.12.7.1\",\"reason\":\"support\"}")
            case 3:
                envelope("PaymentRecorded", at: t)
                out.raw("{\"transaction\":\"tx_bad\",\"amount_minor\":1999,\"currency\":\"USD\",\"card_last4\":\"42424\"}")
            case 4:
                envelope("PaymentRecorded", at: t)
                out.raw("{\"transaction\":\"tx_bad\",\"amount_minor\":\"19.99\",\"currency\":\"USD\",\"card_last4\":\"4242\"}")
            case 5:
                envelope("ProfileUpdated", at: t)
                out.raw("{\"email\":\"not-an-address\"}")
            case 6:
                envelope("PageViewed", at: t)
                out.raw("{\"path\":\"/pricing\",\"visitor\":\"v_1\",\"utm_source\":\"newsletter\"}")  // unknown field
            default:
                envelope("PaymentRecorded", at: t)
                out.raw("{\"transaction\":\"tx_bad\",\"amount_minor\":500,\"currency\":\"EURO\",\"card_last4\":\"4242\"}")
            }
            out.byte(Ch.rbrace)
        default: // engine-only type
            switch variant % 4 {
            case 0:
                envelope("ItemPurged", at: t)
                out.beginObject()
                out.key("item")
                writeItemID(a?.trash.last?.item ?? a?.live.last ?? Item(id: itemCounter + 1 + r.below(50), kind: r.below(4)))
                out.key("rule"); out.raw("\"trash-30d\"")
                out.endObject()
            case 1:
                envelope("AccountPurged", at: t)
                out.beginObject()
                out.key("rule"); out.raw(r.chance(0.5) ? "\"cancellation-30d\"" : "\"erasure-request\"")
                out.endObject()
            case 2:
                envelope("RecordsExpired", at: t)
                out.beginObject()
                out.key("category"); out.raw("\"PageViewed\"")
                out.key("rule"); out.raw("\"page-views-90d\"")
                out.endObject()
            default:
                envelope("ProcessorErasureRequested", at: t)
                out.beginObject()
                out.key("processor"); out.raw("\"spark\"")
                out.endObject()
            }
            out.byte(Ch.rbrace)
        }
        out.endLine()
        badWritten += 1
    }

    /// A timestamp that is not a valid RFC 3339 UTC time.
    func writeBadTime(_ t: Int64, variant: Int) {
        let f = Civil.fields(t)
        func date(_ sep: UInt8) { out.int(f.year); out.byte(sep); out.padded(f.month, 2); out.byte(sep); out.padded(f.day, 2) }
        func time() { out.padded(f.hour, 2); out.byte(Ch.colon); out.padded(f.minute, 2); out.byte(Ch.colon); out.padded(f.second, 2) }
        switch variant % 8 {
        case 0: out.byte(Ch.quote); date(Ch.dash); out.byte(Ch.space); time(); out.byte(Ch.quote) // space, no zone
        case 1: // local time with an offset
            let g = Civil.fields(t + 3_600_000)
            out.byte(Ch.quote); out.int(g.year); out.byte(Ch.dash); out.padded(g.month, 2); out.byte(Ch.dash); out.padded(g.day, 2)
            out.byte(0x54); out.padded(g.hour, 2); out.byte(Ch.colon); out.padded(g.minute, 2); out.byte(Ch.colon)
            out.padded(g.second, 2); out.raw("+01:00\"")
        case 2: out.byte(Ch.quote); date(Ch.dash); out.byte(0x54); time(); out.byte(Ch.quote) // no zone
        case 3: out.int(Int(Civil.floorDiv(t, 1000))) // epoch seconds as a number
        case 4: // day/month/year
            out.byte(Ch.quote); out.padded(f.day, 2); out.byte(0x2F); out.padded(f.month, 2); out.byte(0x2F); out.int(f.year)
            out.byte(Ch.space); out.padded(f.hour, 2); out.byte(Ch.colon); out.padded(f.minute, 2); out.byte(Ch.quote)
        case 5: out.byte(Ch.quote); out.int(f.year); out.raw("-02-30T"); time(); out.raw("Z\"") // impossible date
        case 6: // offset with fractional seconds
            let g = Civil.fields(t - 5 * 3_600_000)
            out.byte(Ch.quote); out.int(g.year); out.byte(Ch.dash); out.padded(g.month, 2); out.byte(Ch.dash); out.padded(g.day, 2)
            out.byte(0x54); out.padded(g.hour, 2); out.byte(Ch.colon); out.padded(g.minute, 2); out.byte(Ch.colon)
            out.padded(g.second, 2); out.raw(".123-05:00\"")
        default: out.raw("\"yesterday\"")
        }
    }

    /// A 16-digit Luhn-valid card number; format 0 groups with spaces, 1 with dashes, 2 plain.
    func cardNumber(_ r: inout SplitMix64, format: Int) -> [UInt8] {
        let prefixes = ["4", "51", "52", "53", "54", "55", "2221", "2720", "2500", "6011", "65", "3528", "3589"]
        var digits = Array(r.pick(prefixes).utf8).map { Int($0) - 48 }
        while digits.count < 15 { digits.append(r.below(10)) }
        var sum = 0
        for (i, d) in digits.reversed().enumerated() {
            let v = i % 2 == 0 ? d * 2 : d // the check digit's neighbour is doubled
            sum += v > 9 ? v - 9 : v
        }
        digits.append((10 - sum % 10) % 10)
        var text: [UInt8] = []
        for (i, d) in digits.enumerated() {
            if i > 0 && i % 4 == 0 && format < 2 { text.append(format == 0 ? Ch.space : Ch.dash) }
            text.append(UInt8(48 + d))
        }
        return text
    }
}

// MARK: - Entry point

func openOutput(_ path: String?) -> FileHandle {
    guard let path, path != "-" else { return FileHandle.standardOutput }
    guard FileManager.default.createFile(atPath: path, contents: nil),
          let handle = FileHandle(forWritingAtPath: path) else { Log.fail("cannot open \(path) for writing") }
    return handle
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let handle = openOutput(options.output)
Generator(options: options, out: Output(handle: handle)).run()
try? handle.close()
