/// Finds full payment card numbers, which the policy forbids storing (only the last 4 digits may be).
///
/// A card number is a run of 13 to 19 digits, with single spaces or dashes allowed between digits,
/// that passes the Luhn check. A run is maximal: digits with separators on both sides of a
/// separator belong to it, so `4111 1111 1111 1111` is one run of 16 digits; a run longer than 19
/// digits is not a card number. Nothing here ever returns or prints the digits.
public enum CardNumbers {
    /// Whether `text` holds a full card number anywhere.
    public static func contains(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { utf8 in
            // Most strings hold fewer than 13 digits in all: one cheap pass rules them out.
            var total = 0
            for c in utf8 where c &- 48 < 10 { total += 1 }
            guard total >= 13 else { return false }
            var digits: [UInt8] = []
            digits.reserveCapacity(24)
            var pendingSeparator = false
            for c in utf8 {
                if c &- 48 < 10 {
                    digits.append(c - 48)
                    pendingSeparator = false
                } else if (c == 0x20 || c == 0x2D) && !digits.isEmpty && !pendingSeparator {
                    pendingSeparator = true
                } else {
                    if isCard(digits) { return true }
                    digits.removeAll(keepingCapacity: true)
                    pendingSeparator = false
                }
            }
            return isCard(digits)
        }
    }

    static func isCard(_ digits: [UInt8]) -> Bool {
        guard (13...19).contains(digits.count) else { return false }
        var sum = 0
        for (k, d) in digits.reversed().enumerated() {
            if k % 2 == 1 {
                let doubled = Int(d) * 2
                sum += doubled > 9 ? doubled - 9 : doubled
            } else {
                sum += Int(d)
            }
        }
        return sum % 10 == 0
    }

    /// The path (e.g. `data.answers.comment`) of the first string in `value` that holds a card
    /// number, keys included; nil when there is none.
    public static func firstPath(in value: JSONValue, path: String) -> String? {
        switch value {
        case .string(let s):
            return contains(s) ? path : nil
        case .array(let items):
            for (k, item) in items.enumerated() {
                if let p = firstPath(in: item, path: "\(path)[\(k)]") { return p }
            }
            return nil
        case .object(let o):
            for f in o.fields {
                if contains(f.key) { return "\(path) (a field name)" }
                if let p = firstPath(in: f.value, path: "\(path).\(f.key)") { return p }
            }
            return nil
        case .null, .bool, .int, .number:
            // A number is digits too: a 13-19 digit integer that passes Luhn is refused as well.
            if case .int(let n) = value, contains(String(n.magnitude)) { return path }
            return nil
        }
    }
}
