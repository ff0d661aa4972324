/// Finds and masks full payment card numbers, which the policy forbids storing (only the last 4
/// digits may be). Nothing here ever returns or prints the digits.
///
/// A card number (EVENTS.md, "Card numbers") is 13 to 19 digits that pass the Luhn check,
/// written unbroken or in digit groups separated by short runs (1 to 3 characters) of
/// separators. Digits are every Unicode decimal digit (`numericType == .decimal`: full-width,
/// Arabic-Indic, ...). Separators are the contract's spaces, tabs, line breaks, no-break spaces,
/// `-`, `.`, `/` and `_`, read as widely as customers type them: every Unicode space (U+00A0,
/// U+2007, U+202F, U+3000, ...), every line break (LF, VT, FF, CR, NEL, U+2028, U+2029), every
/// dash (U+2010 to U+2015, the full-width hyphen, ...) and the full-width `．`, `／`, `＿`.
///
/// Digit groups joined by short separator runs form a *chain*; anything else (a letter, a
/// longer run of separators) ends it. In every chain, every run of consecutive groups that
/// holds 13 to 19 digits in all is checked, so digits next to a card number (an expiry date, a
/// CVV, a year) do not hide it: `4111 1111 1111 1111 12/26` holds one. A single group of more
/// than 19 digits is not a card number.
///
/// - Complexity: linear in the text. An ASCII text of fewer than 13 digits is ruled out in one
///   pass over its bytes; each group starts at most 19 runs of at most 19 digits.
public enum CardNumbers {
    /// Whether `text` holds a full card number anywhere.
    public static func contains(_ text: String) -> Bool {
        guard mayHold(text) else { return false }
        var found = false
        scan(text) { _ in
            found = true
            return false
        }
        return found
    }

    /// `text` with every card number masked, or nil when it holds none.
    ///
    /// Every digit of a card number but the last four becomes one `*` (a full-width digit too);
    /// everything else stays as written: `my card 4111 1111 1111 1111 exp 12/27` becomes
    /// `my card **** **** **** 1111 exp 12/27`. Where several checked runs of a chain pass, the
    /// union of their digits is masked and each maximal stretch of masked digits keeps only its
    /// last four: privacy first, so two card numbers written as one chain keep four digits in all.
    public static func masked(_ text: String) -> String? {
        guard mayHold(text) else { return nil }
        var hidden: [Int] = []  // scalar offsets, increasing
        scan(text) { chainHidden in
            hidden.append(contentsOf: chainHidden)
            return true
        }
        guard !hidden.isEmpty else { return nil }
        var out = String.UnicodeScalarView()
        var next = 0
        for (k, s) in text.unicodeScalars.enumerated() {
            if next < hidden.count && hidden[next] == k {
                out.append("*")
                next += 1
            } else {
                out.append(s)
            }
        }
        return String(out)
    }

    /// Whether a JSON number holds a card number, however written: in its text as written
    /// (`4111111111111111.0`) or in its exact decimal value (`4.111111111111111e15` is
    /// 4111111111111111).
    public static func contains(_ number: JSONNumber) -> Bool {
        contains(number.text) || exactDecimal(number.text).map(contains) == true
    }

    /// Whether an integer holds a card number (its digits, without the sign).
    public static func contains(_ number: Int64) -> Bool {
        number.magnitude >= 1_000_000_000_000 && contains(String(number.magnitude))
    }

    // MARK: - Scanning

    /// False when `text` surely holds no card number: fewer than 13 digits in all. One pass over
    /// the bytes for ASCII text (the common case); other text counts its Unicode digits too.
    static func mayHold(_ text: String) -> Bool {
        var text = text
        let (ascii, digits) = text.withUTF8 { utf8 -> (Bool, Int) in
            var digits = 0, high: UInt8 = 0
            for c in utf8 {
                if c &- 48 < 10 { digits += 1 }
                high |= c
            }
            return (high < 0x80, digits)
        }
        if digits >= 13 { return true }
        if ascii { return false }
        var all = 0
        for s in text.unicodeScalars where digitValue(s) != nil {
            all += 1
            if all >= 13 { return true }
        }
        return false
    }

    /// The value of a decimal digit of any script, or nil.
    @inline(__always)
    static func digitValue(_ s: Unicode.Scalar) -> Int? {
        if s.value &- 48 < 10 { return Int(s.value - 48) }
        guard s.value >= 0x80, s.properties.numericType == .decimal, let v = s.properties.numericValue else { return nil }
        return Int(v)
    }

    /// Whether `s` may separate the digit groups of a card number (see the type's comment).
    static func isSeparator(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x2D, 0x2E, 0x2F, 0x5F: return true  // tab, line breaks, space, - . / _
        case 0x85, 0x2028, 0x2029: return true  // NEL, line and paragraph separators
        case 0xFF0E, 0xFF0F, 0xFF3F: return true  // full-width . / _
        case 0..<0x80: return false
        default:
            switch s.properties.generalCategory {
            case .spaceSeparator, .dashPunctuation: return true  // no-break and other spaces; dashes
            default: return false
            }
        }
    }

    /// Walks the chains of `text` and calls `found` with the scalar offsets to mask of each chain
    /// that holds a card number (increasing); stops when `found` returns false.
    static func scan(_ text: String, _ found: ([Int]) -> Bool) {
        var chain = Chain()
        var separators = 0  // the length of the separator run since the last digit
        var going = true
        for (offset, s) in text.unicodeScalars.enumerated() {
            if let d = digitValue(s) {
                if separators > 3 || (separators == 0 && !chain.inGroup) { going = chain.close(found) && going }
                guard going else { return }
                chain.add(d, at: offset)
                separators = 0
            } else if isSeparator(s) {
                chain.inGroup = false
                separators += 1
            } else {
                chain.inGroup = false
                separators = 4  // ends the chain at the next digit
            }
        }
        _ = chain.close(found)
    }

    /// Digit groups joined by short separator runs.
    struct Chain {
        var values: [UInt8] = []
        /// The digit count at the start of each group.
        var groupStarts: [Int] = []
        /// Where each group starts in the text, in Unicode scalars (its digits follow one another).
        var groupOffsets: [Int] = []
        /// Whether the last scalar read was a digit of this chain.
        var inGroup = false

        mutating func add(_ digit: Int, at offset: Int) {
            if !inGroup {
                groupStarts.append(values.count)
                groupOffsets.append(offset)
            }
            values.append(UInt8(digit))
            inGroup = true
        }

        /// Checks the chain, reports what to mask in it, and empties it. False: stop scanning.
        mutating func close(_ found: ([Int]) -> Bool) -> Bool {
            defer {
                values.removeAll(keepingCapacity: true)
                groupStarts.removeAll(keepingCapacity: true)
                groupOffsets.removeAll(keepingCapacity: true)
                inGroup = false
            }
            guard values.count >= 13 else { return true }
            var marked: [Bool] = []
            for (g, start) in groupStarts.enumerated() {
                // The runs starting at group g: up to the end of group g, g + 1, ..., while at most 19 digits.
                for h in (g + 1)...groupStarts.count {
                    let end = h < groupStarts.count ? groupStarts[h] : values.count
                    let n = end - start
                    if n > 19 { break }
                    guard n >= 13, CardNumbers.luhn(values[start..<end]) else { continue }
                    if marked.isEmpty { marked = [Bool](repeating: false, count: values.count) }
                    for k in start..<end { marked[k] = true }
                }
            }
            guard !marked.isEmpty else { return true }
            extendPastKeptDigits(&marked)
            // Each maximal stretch of marked digits keeps its last four.
            var hidden: [Int] = []
            var group = 0
            func hide(_ digit: Int) {
                while group + 1 < groupStarts.count && groupStarts[group + 1] <= digit { group += 1 }
                hidden.append(groupOffsets[group] + digit - groupStarts[group])
            }
            var k = 0
            while k < values.count {
                guard marked[k] else {
                    k += 1
                    continue
                }
                var end = k
                while end < values.count && marked[end] { end += 1 }
                for m in k..<(end - 4) { hide(m) }
                k = end
            }
            return found(hidden)
        }

        /// Masking keeps the last four digits of each stretch of marked digits, and in the masked
        /// text they start a chain of their own (the `*` before them ends the one before): with the
        /// unmarked groups after them, they may be another card number, which masking the text again
        /// would find (`9223372036854/758901-007` masked to `*********6854/758901-007` holds
        /// `6854758901007`). Those runs are marked too, until none is left, so that masking is a
        /// fixpoint. (Every other run of the masked text starts at a group start and was checked.)
        ///
        /// - Complexity: each round moves a stretch's end forward by 9 digits or more and checks
        ///   at most 7 runs of at most 19 digits: linear in the chain.
        func extendPastKeptDigits(_ marked: inout [Bool]) {
            var isGroupEnd = [Bool](repeating: false, count: values.count + 1)
            for start in groupStarts.dropFirst() { isGroupEnd[start] = true }
            isGroupEnd[values.count] = true
            var k = 0
            while k < values.count {
                guard marked[k] else {
                    k += 1
                    continue
                }
                var end = k
                while end < values.count && marked[end] { end += 1 }
                while true {
                    let start = end - 4  // (a stretch holds 13 digits or more)
                    // The masked text's chain from the kept digits ends where the next stretch
                    // begins (looked for only as far as a run can reach).
                    var next = end
                    while next < min(values.count, start + 19) && !marked[next] { next += 1 }
                    guard let e = (start + 13...start + 19).first(where: { e in
                        e <= next && isGroupEnd[e] && CardNumbers.luhn(values[start..<e])
                    }) else { break }
                    for m in end..<e { marked[m] = true }
                    end = e
                    while end < values.count && marked[end] { end += 1 }
                }
                k = end
            }
        }
    }

    /// The Luhn check: doubling every second digit from the right, the sum ends in 0.
    static func luhn(_ digits: ArraySlice<UInt8>) -> Bool {
        var sum = 0
        for (k, d) in digits.reversed().enumerated() {
            let v = k % 2 == 1 ? Int(d) * 2 : Int(d)
            sum += v > 9 ? v - 9 : v
        }
        return sum % 10 == 0
    }

    /// The exact decimal value of a JSON number's `text` (`4.1e3` → `4100`, `12e-3` → `0.012`),
    /// without its sign, leading zeros or trailing fraction zeros; nil when written without an
    /// exponent (its text is its value then). A part of more than 19 digits cannot take part in
    /// a card number, so it is written as 20 zeros: the result stays short whatever the exponent.
    static func exactDecimal(_ text: String) -> String? {
        let b = Array(text.utf8)
        guard let e = b.firstIndex(where: { $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }) else { return nil }
        var digits: [UInt8] = []
        var point = 0  // digits before the decimal point, in `digits`
        for c in b[..<e] {
            if c == UInt8(ascii: ".") {
                point = digits.count
            } else if c &- 48 < 10 {
                digits.append(c)
            }
        }
        if !b[..<e].contains(UInt8(ascii: ".")) { point = digits.count }
        // The exponent, saturated: past ±10^9 the value has no part short enough to matter anyway.
        var exponent = 0
        var k = e + 1
        var negative = false
        if k < b.count, b[k] == UInt8(ascii: "+") || b[k] == UInt8(ascii: "-") {
            negative = b[k] == UInt8(ascii: "-")
            k += 1
        }
        while k < b.count {
            exponent = min(exponent * 10 + Int(b[k] - 48), 1_000_000_000)
            k += 1
        }
        point += negative ? -exponent : exponent
        // Leading zeros move the point; trailing zeros of the digits do not change the value.
        let lead = digits.firstIndex { $0 != UInt8(ascii: "0") } ?? digits.count
        digits.removeFirst(lead)
        point -= lead
        while digits.last == UInt8(ascii: "0") { digits.removeLast() }
        guard !digits.isEmpty else { return "0" }
        let intCount = max(point, 0)
        let fracCount = max(-point, 0) + max(digits.count - max(point, 0), 0)
        let long = [UInt8](repeating: UInt8(ascii: "0"), count: 20)
        var out: [UInt8] = []
        if intCount > 19 {
            out = long
        } else if intCount > 0 {
            out = Array(digits.prefix(intCount)) + [UInt8](repeating: UInt8(ascii: "0"), count: max(intCount - digits.count, 0))
        } else {
            out = [UInt8(ascii: "0")]
        }
        if fracCount > 0 {
            out.append(UInt8(ascii: "."))
            if fracCount > 19 {
                out += long
            } else {
                out += [UInt8](repeating: UInt8(ascii: "0"), count: max(-point, 0)) + digits.dropFirst(max(point, 0))
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - Events

/// A card number where the contract allows none, by the path of its field (never the digits).
struct CardNumberFound: Error {
    var path: String
    /// The card number is in a field's name, not its value.
    var inName: Bool

    var rejection: Rejection {
        Rejection(field: path, inName
            ? "a field name holds what looks like a full card number"
            : "holds what looks like a full card number; only the last 4 digits may be stored")
    }
}

/// Where a value sits in an event (`data.answers.why`, `data.categories[0]`), built only when a
/// message needs it.
struct FieldPath {
    enum Step {
        /// A field, and its place among its object's fields (1 first).
        case field(String, position: Int)
        case index(Int)
    }

    var root: String
    var steps: [Step] = []

    /// The path for a message. A field name other than a short word of ASCII letters, digits,
    /// `_` and `-` is shown by its place (`(field 3)`): names are data too.
    var description: String {
        var out = root
        for step in steps {
            switch step {
            case .field(let name, let position):
                let plain = (1...64).contains(name.utf8.count) && name.utf8.allSatisfy {
                    ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x5F || $0 == 0x2D
                }
                out += plain ? ".\(name)" : ".(field \(position))"
            case .index(let k):
                out += "[\(k)]"
            }
        }
        return out
    }
}

extension CardNumbers {
    /// Screens one value of an event for card numbers: in free text (`freeText`: the strings of
    /// that value, at any depth) a card number is masked, and the path of each masked string is
    /// added to `masked`; anywhere else (field names, numbers, other strings) it is refused.
    ///
    /// - Returns: the value with its free text masked, or nil when nothing had to change (the
    ///   value is not copied then).
    static func screen(_ value: JSONValue, freeText: Bool, at path: inout FieldPath, masked: inout [String])
        throws(CardNumberFound) -> JSONValue? {
        switch value {
        case .null, .bool:
            return nil
        case .int(let n):
            if contains(n) { throw CardNumberFound(path: path.description, inName: false) }
            return nil
        case .number(let n):
            if contains(n) { throw CardNumberFound(path: path.description, inName: false) }
            return nil
        case .string(let s):
            guard freeText else {
                if contains(s) { throw CardNumberFound(path: path.description, inName: false) }
                return nil
            }
            guard let m = CardNumbers.masked(s) else { return nil }
            masked.append(path.description)
            return .string(m)
        case .array(let items):
            var changed: [JSONValue]?
            for (k, item) in items.enumerated() {
                path.steps.append(.index(k))
                defer { path.steps.removeLast() }
                if let new = try screen(item, freeText: freeText, at: &path, masked: &masked) {
                    if changed == nil { changed = items }
                    changed![k] = new
                }
            }
            return changed.map(JSONValue.array)
        case .object(let o):
            var changed: JSONObject?
            for (k, f) in o.fields.enumerated() {
                if contains(f.key) { throw CardNumberFound(path: path.description, inName: true) }
                path.steps.append(.field(f.key, position: k + 1))
                defer { path.steps.removeLast() }
                if let new = try screen(f.value, freeText: freeText, at: &path, masked: &masked) {
                    if changed == nil { changed = o }
                    changed!.fields[k].value = new
                }
            }
            return changed.map(JSONValue.object)
        }
    }
}

extension CardNumbers {
    /// The path (e.g. `data.answers.comment`) of the first place in `value` that holds a card
    /// number, field names and numbers included (`data.answers (a field name)` for a name); nil
    /// when there is none. Free text is not told apart here: see `EnvelopeValidator`.
    public static func firstPath(in value: JSONValue, path: String) -> String? {
        var at = FieldPath(root: path)
        var masked: [String] = []
        do {
            _ = try screen(value, freeText: false, at: &at, masked: &masked)
            return nil
        } catch {
            return error.inName ? "\(error.path) (a field name)" : error.path
        }
    }
}
