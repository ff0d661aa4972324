import LetheEvents
import LetheJournal

/// The retention report as a table, CSV, or a self-contained HTML page.
extension RetentionReport {
    /// An aligned text table, one obligation a line, and a summary line.
    public var table: String {
        let header = ["due", "status", "held", "rule", "account", "item"]
        let rows = [header] + obligations.map {
            [$0.due.rfc3339, $0.status, $0.held ? "held (\($0.cases.joined(separator: ", ")))" : "no", $0.rule, $0.account, $0.item ?? "-"]
        }
        let widths = header.indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        var out = ""
        for row in rows {
            var line = row.enumerated().map { c, cell in cell + String(repeating: " ", count: widths[c] - cell.count) }.joined(separator: "  ")
            while line.last == " " { line.removeLast() }
            out += line + "\n"
        }
        let due = obligations.filter { $0.status == "due" }
        out += "as of \(asOf.rfc3339), horizon \(horizonDays) days: \(obligations.count) obligations, \(due.count) due "
            + "(\(due.filter(\.held).count) held), \(obligations.count - due.count) upcoming\n"
        return out
    }

    /// RFC 4180 CSV: `account,item,rule,due,status,held`, every cell through `csvCell`.
    public var csv: String {
        var out = "account,item,rule,due,status,held\r\n"
        for o in obligations {
            let cells = [o.account, o.item ?? "", o.rule, o.due.rfc3339, o.status, o.held ? "true" : "false"]
            out += cells.map(RetentionReport.csvCell).joined(separator: ",") + "\r\n"
        }
        return out
    }

    /// One CSV cell that a spreadsheet shows as text, never runs: a cell starting with `=`, `+`,
    /// `-`, `@`, a tab or a carriage return (which Excel, LibreOffice and Google Sheets read as a
    /// formula) gets a leading `'`, as OWASP's CSV-injection advice says; then RFC 4180 quoting
    /// (a cell holding `,`, `"`, CR or LF is quoted, its quotes doubled). Item ids are free
    /// strings: `=cmd|' /C calc'!A0` comes out as `'=cmd|' /C calc'!A0`.
    public static func csvCell(_ s: String) -> String {
        var s = s
        if let first = s.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first) { s = "'" + s }
        let quoted = s.unicodeScalars.contains { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }
        return quoted ? "\"" + s.replacingAll("\"", with: "\"\"") + "\"" : s
    }

    /// A single self-contained page for a compliance officer: a chart of purges per day over the
    /// horizon, overdue obligations highlighted, held obligations with their cases, per-processor
    /// erasure lists, and the delete-persistence figure (how long after its due time each
    /// executed purge ran). No script, nothing fetched.
    public var html: String {
        let e = HTML.escape
        let day = RetentionPolicy.day * 1_000_000_000
        let firstDay = asOf.nanoseconds / day
        // Bar n: purges due on day n of the horizon (n = 0 is as_of's day); overdue ones (due before as_of) apart.
        let days = Int(max(1, horizonDays + 1))
        var perDay = [Int](repeating: 0, count: days)
        var heldPerDay = [Int](repeating: 0, count: days)
        var overdue = 0
        for o in obligations {
            if o.due < asOf { if !o.held { overdue += 1 }; continue }
            let n = Int(o.due.nanoseconds / day - firstDay)
            guard n >= 0 && n < days else { continue }
            if o.held { heldPerDay[n] += 1 } else { perDay[n] += 1 }
        }
        let peak = max(1, (perDay.indices.map { perDay[$0] + heldPerDay[$0] } + [overdue]).max() ?? 1)
        let barWidth = 14, gap = 4, height = 160, left = 40
        let width = left + (days + 1) * (barWidth + gap) + 20
        var svg = "<svg id=\"purges-per-day\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height + 50)\" viewBox=\"0 0 \(width) \(height + 50)\">"
        svg += "<title>Purges due per day over the next \(horizonDays) days</title>"
        svg += "<line x1=\"\(left)\" y1=\"\(height)\" x2=\"\(width - 10)\" y2=\"\(height)\" stroke=\"#555\"/>"
        svg += "<text x=\"4\" y=\"14\" font-size=\"11\">\(peak)</text><text x=\"4\" y=\"\(height)\" font-size=\"11\">0</text>"
        func bar(_ slot: Int, _ count: Int, base: Int, color: String, label: String) -> String {
            guard count > 0 else { return "" }
            let h = max(2, count * (height - 20) / peak)
            let x = left + slot * (barWidth + gap)
            return "<rect class=\"bar\" x=\"\(x)\" y=\"\(height - base - h)\" width=\"\(barWidth)\" height=\"\(h)\" fill=\"\(color)\"><title>\(e(label)): \(count)</title></rect>"
        }
        svg += bar(0, overdue, base: 0, color: "#c0392b", label: "overdue")
        svg += "<text x=\"\(left)\" y=\"\(height + 14)\" font-size=\"10\">overdue</text>"
        for n in 0..<days {
            let date = Timestamp(nanoseconds: (firstDay + Int64(n)) * day).rfc3339.prefix(10)
            let base = perDay[n] * (height - 20) / peak
            svg += bar(n + 1, perDay[n], base: 0, color: "#2e86c1", label: "due \(date)")
            svg += bar(n + 1, heldPerDay[n], base: perDay[n] > 0 ? max(2, base) : 0, color: "#b7950b", label: "held, due \(date)")
            if n % 7 == 0 {
                svg += "<text x=\"\(left + (n + 1) * (barWidth + gap))\" y=\"\(height + 28)\" font-size=\"10\">\(date.suffix(5))</text>"
            }
        }
        svg += "</svg>"

        func table(_ id: String, _ header: [String], _ rows: [(cells: [String], overdue: Bool)]) -> String {
            guard !rows.isEmpty else { return "<p class=\"empty\" id=\"\(id)\">none</p>\n" }
            var t = "<table id=\"\(id)\">\n<tr>" + header.map { "<th>\(e($0))</th>" }.joined() + "</tr>\n"
            for row in rows {
                t += (row.overdue ? "<tr class=\"overdue\">" : "<tr>") + row.cells.map { "<td>\(e($0))</td>" }.joined() + "</tr>\n"
            }
            return t + "</table>\n"
        }
        let due = obligations.filter { $0.status == "due" && !$0.held }
        let upcoming = obligations.filter { $0.status == "upcoming" && !$0.held }
        let held = obligations.filter(\.held)
        let delays = executed.map(\.delaySeconds)
        func duration(_ s: Int64) -> String {
            s >= 86_400 ? "\(s / 86_400) d \(s % 86_400 / 3600) h" : s >= 3600 ? "\(s / 3600) h \(s % 3600 / 60) min" : "\(s / 60) min \(s % 60) s"
        }
        var body = "<h1>Retention dry run</h1>\n"
        body += "<p>As of <strong>\(e(asOf.rfc3339))</strong>, over the next \(horizonDays) days. A dry run changes nothing.</p>\n"
        body += "<ul id=\"summary\"><li>\(obligations.count) obligations</li><li class=\"overdue\">\(due.count) overdue (due and not yet run)</li>"
        body += "<li>\(upcoming.count) upcoming</li><li>\(held.count) held by a legal case</li></ul>\n"
        body += "<h2>Purges per day</h2>\n\(svg)\n"
        body += "<p class=\"legend\"><span style=\"color:#c0392b\">■</span> overdue <span style=\"color:#2e86c1\">■</span> due that day "
            + "<span style=\"color:#b7950b\">■</span> held</p>\n"
        body += "<h2>Overdue: due and not yet run</h2>\n"
            + table("overdue", ["due", "rule", "account", "item"], due.map { ([$0.due.rfc3339, $0.rule, $0.account, $0.item ?? "-"], true) })
        body += "<h2>Upcoming</h2>\n"
            + table("upcoming", ["due", "rule", "account", "item"], upcoming.map { ([$0.due.rfc3339, $0.rule, $0.account, $0.item ?? "-"], false) })
        body += "<h2>Held by a legal case</h2>\n"
            + table("held", ["due", "rule", "account", "item", "cases"], held.map {
                ([$0.due.rfc3339, $0.rule, $0.account, $0.item ?? "-", $0.cases.joined(separator: ", ")], $0.status == "due")
            })
        body += "<h2>Erasure requests per processor</h2>\n<p>The processors that will be asked to erase each account listed above, by the categories of its data they received.</p>\n"
            + table("processors", ["processor", "accounts"], erasures.map { ([$0.processor, $0.accounts.joined(separator: ", ")], false) })
        body += "<h2>Delete persistence</h2>\n"
        body += delays.isEmpty
            ? "<p id=\"persistence\">No purge has run yet.</p>\n"
            : "<p id=\"persistence\">\(executed.count) purges ran by \(e(asOf.rfc3339)); the longest ran \(duration(delays.max()!)) after it was due.</p>\n"
        body += table("executed", ["rule", "account", "item", "due", "ran", "after due"], executed.map {
            ([$0.rule, $0.account, $0.item ?? "-", $0.due.rfc3339, $0.ran.rfc3339, duration($0.delaySeconds)], false)
        })
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Retention dry run as of \(e(asOf.rfc3339))</title>
            <style>\(HTML.style) tr.overdue td{background:#fdecea;color:#922b21;font-weight:600} li.overdue{color:#922b21;font-weight:600} svg{max-width:100%;height:auto}</style>
            </head><body>
            \(body)</body></html>

            """
    }
}

extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
