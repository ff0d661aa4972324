/// Self-contained HTML pages (no scripts, styles inline, nothing fetched) rendered from JSON
/// reports, so that the page says exactly what the JSON says.
public enum HTML {
    /// Text made safe for element content and attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    public static let style = """
        body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1d2330}
        h1{font-size:1.6rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d5d9e0;padding-bottom:.2rem}
        table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border:1px solid #d5d9e0;padding:.3rem .5rem;text-align:left;vertical-align:top}
        th{background:#f1f3f6}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
        .empty{color:#6b7280;font-style:italic}.null{color:#9ca3af}
        """

    /// A page: a title, a line under it, then one section per field of `report` (in order).
    public static func page(title: String, subtitle: String, report: JSONObject) -> String {
        var body = "<h1>\(escape(title))</h1>\n<p>\(escape(subtitle))</p>\n"
        var facts: [JSONObject.Field] = []
        for field in report.fields {
            switch field.value {
            case .array, .object: continue
            default: facts.append(field)
            }
        }
        body += render(.object(JSONObject(facts)))
        for field in report.fields {
            switch field.value {
            case .array, .object:
                body += "<section><h2>\(escape(heading(field.key)))</h2>\n\(render(field.value))</section>\n"
            default: continue
            }
        }
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title))</title><style>\(style)</style></head>
            <body>
            \(body)</body></html>

            """
    }

    /// `billing_addresses` → `Billing addresses`.
    static func heading(_ key: String) -> String {
        let words = String(key.map { $0 == "_" ? " " : $0 })
        return words.prefix(1).uppercased() + words.dropFirst()
    }

    /// Objects as definition lists, arrays of objects as tables, other arrays as lists.
    static func render(_ value: JSONValue) -> String {
        switch value {
        case .null: return "<span class=\"null\">none</span>"
        case .bool(let b): return b ? "yes" : "no"
        case .int(let i): return String(i)
        case .number(let n): return escape(n.text)
        case .string(let s): return escape(s)
        case .object(let o):
            if o.isEmpty { return "<span class=\"empty\">nothing</span>" }
            return "<dl>" + o.fields.map { "<dt>\(escape($0.key))</dt><dd>\(render($0.value))</dd>" }.joined() + "</dl>\n"
        case .array(let items):
            if items.isEmpty { return "<p class=\"empty\">nothing held</p>\n" }
            let objects = items.compactMap(\.object)
            guard objects.count == items.count else {
                return "<ul>" + items.map { "<li>\(render($0))</li>" }.joined() + "</ul>\n"
            }
            var columns: [String] = []
            for o in objects { for k in o.keys where !columns.contains(k) { columns.append(k) } }
            let head = "<tr>" + columns.map { "<th>\(escape($0))</th>" }.joined() + "</tr>"
            let rows = objects.map { o in "<tr>" + columns.map { "<td>\(render(o[$0] ?? .null))</td>" }.joined() + "</tr>" }
            return "<table>\n\(head)\n\(rows.joined(separator: "\n"))\n</table>\n"
        }
    }
}
