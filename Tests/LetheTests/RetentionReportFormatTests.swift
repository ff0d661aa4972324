import Foundation
import LetheEvents
import LetheJournal
import LetheRetention
import LetheViews
import Synchronization
import Testing

/// The dry run's formats, as scripts read them (EVENTS.md's JSON exactly).
@Suite struct RetentionReportFormatTests {
    let history = """
        {"type":"AccountSignedUp","account":"acc_42","at":"2026-01-01T00:00:00Z","data":{"name":"Ada","email":"ada@example.com"}}
        {"type":"AccountCancelled","account":"acc_42","at":"2026-01-21T10:00:00Z","data":{}}
        {"type":"AccountSignedUp","account":"acc_7","at":"2026-01-01T00:00:00Z","data":{"name":"Bo","email":"bo@example.com"}}
        {"type":"ItemCreated","account":"acc_7","at":"2026-01-02T00:00:00Z","data":{"item":"itm_3","kind":"site"}}
        {"type":"ItemDeleted","account":"acc_7","at":"2026-02-10T08:30:00Z","data":{"item":"itm_3"}}
        {"type":"ItemCreated","account":"acc_7","at":"2026-02-11T00:00:00Z","data":{"item":"itm, \\"quoted\\"","kind":"site"}}
        {"type":"ItemDeleted","account":"acc_7","at":"2026-02-12T00:00:00Z","data":{"item":"itm, \\"quoted\\""}}
        {"type":"LegalHoldPlaced","account":"acc_7","at":"2026-02-13T00:00:00Z","data":{"case":"C-9","reason":"audit"}}
        {"type":"AccountSignedUp","account":"acc_9","at":"2026-01-01T00:00:00Z","data":{"name":"Cy","email":"cy@example.com"}}
        {"type":"ErasureRequested","account":"acc_9","at":"2026-03-05T00:00:00Z","data":{}}
        """

    @Test func jsonIsTheContractsReport() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        #expect(try run("lethe", ["import", "-", "--journal", journal], stdin: history).status == 0)
        let r = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z", "--horizon", "30", "--format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == #"""
            {"as_of":"2026-03-01T00:00:00Z","horizon_days":30,"obligations":[\#
            {"account":"acc_42","item":null,"rule":"cancellation-30d","due":"2026-02-20T10:00:00Z","status":"due","held":false},\#
            {"account":"acc_7","item":"itm_3","rule":"trash-30d","due":"2026-03-12T08:30:00Z","status":"upcoming","held":true},\#
            {"account":"acc_7","item":"itm, \"quoted\"","rule":"trash-30d","due":"2026-03-14T00:00:00Z","status":"upcoming","held":true}]}

            """#)
        // acc_9's request comes after the moment: not taken into account, though due within the
        // horizon. A moment before anything happened: nothing; a horizon of 0: only what is due.
        let early = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-01-01T00:00:00Z", "--format", "json"])
        #expect(early.stdout == #"{"as_of":"2026-01-01T00:00:00Z","horizon_days":30,"obligations":[]}"# + "\n")
        let zero = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z", "--horizon", "0", "--format", "json"])
        #expect(zero.stdout.components(separatedBy: "\"account\"").count - 1 == 1)
    }

    @Test func csvAndTableListTheSameObligations() throws {
        let dir = try TempDir()
        let journal = dir.path("j.lethe")
        _ = try run("lethe", ["import", "-", "--journal", journal], stdin: history)
        let csv = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z", "--format", "csv"]).stdout
        #expect(csv.components(separatedBy: "\r\n") == [
            "account,item,rule,due,status,held",
            "acc_42,,cancellation-30d,2026-02-20T10:00:00Z,due,false",
            "acc_7,itm_3,trash-30d,2026-03-12T08:30:00Z,upcoming,true",
            #"acc_7,"itm, ""quoted""",trash-30d,2026-03-14T00:00:00Z,upcoming,true"#,
            "",
        ])
        let table = try run("lethe", ["retention", "dry-run", "--journal", journal, "--as-of", "2026-03-01T00:00:00Z"]).stdout
        #expect(table.hasPrefix("due  ") && table.contains("held (C-9)"))
        #expect(table.hasSuffix("as of 2026-03-01T00:00:00Z, horizon 30 days: 3 obligations, 1 due (0 held), 2 upcoming\n"))
        // A dry run changes nothing.
        #expect(!(try run("lethe", ["export", "--journal", journal]).stdout.contains("Purged")))
    }
}
