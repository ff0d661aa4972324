import Foundation
import LetheEvents
import LetheJournal
import Testing

@Suite struct TypedEventTests {
    let all: [any TypedEvent] = [
        Events.AccountSignedUp(name: "Ada", email: "ada@example.com", company: "AE Ltd"),
        Events.ProfileUpdated(company: "New Co"),
        Events.BillingAddressSet(line1: "1 Main St", city: "Berlin", postcode: "10115", country: "DE"),
        Events.PaymentRecorded(transaction: "tx_1", amountMinor: 1999, currency: "EUR", cardLast4: "4242", processor: "spark"),
        Events.SupportMessageReceived(ticket: "T-1", fromEmail: "ada@example.com", body: "Help", subject: "Hi"),
        Events.PageViewed(path: "/pricing", visitor: "v1"),
        Events.SurveyAnswered(survey: "nps", answers: ["score": .number(9), "comment": .text("fast"), "again": .flag(true)]),
        Events.AccountAccessed(actor: "staff_1", ip: "2001:db8::1", reason: "support", ticket: "T-1"),
        Events.ItemCreated(item: "i1", kind: "site", label: "blog"),
        Events.ItemDeleted(item: "i1"),
        Events.ItemRestored(item: "i1"),
        Events.AccountCancelled(reason: "moving"),
        Events.AccountReactivated(),
        Events.ErasureRequested(channel: "support"),
        Events.ConsentGranted(purpose: "share:vms"),
        Events.ConsentRevoked(purpose: "share:vms"),
        Events.DataShared(recipient: "vms", basis: .consent, categories: ["billing"]),
        Events.NoticeSent(topic: .policyChange, version: "2026-03"),
        Events.LegalHoldPlaced(case: "C-1", reason: "subpoena"),
        Events.LegalHoldReleased(case: "C-1"),
    ]

    @Test func everyServiceTypeIsTypedAndMatchesTheSchema() throws {
        let types = Set(all.map { type(of: $0).type })
        #expect(types == Set(EventType.allCases.filter { !$0.isEngineOnly }))
        for event in all {
            #expect(DataSchema.check(type(of: event).type, event.data) == nil, "\(type(of: event).type)")
        }
        // snake_case on the wire; absent optionals are left out.
        let payment = Events.PaymentRecorded(transaction: "t", amountMinor: 5, currency: "USD", cardLast4: "0042").data
        #expect(Set(payment.keys) == ["transaction", "amount_minor", "currency", "card_last4"])
        #expect(payment["amount_minor"] == 5 && payment["card_last4"] == "0042")
        let back = Events.SupportMessageReceived(data: ["ticket": "T", "from_email": "a@b.co", "body": "x"])
        #expect(back == Events.SupportMessageReceived(ticket: "T", fromEmail: "a@b.co", body: "x"))
        #expect(Events.PageViewed(data: ["path": "/"]) == nil)
    }

    @Test(arguments: TestBackend.allCases)
    func theServiceRecordsTypedEventsThroughTheSameChecks(_ backend: TestBackend) throws {
        let place = try TestPlace(backend)
        let j = try place.open(rules: ContractRules())
        let t0 = ts("2026-01-01T00:00:00Z")
        for (k, event) in all.enumerated() {
            try j.record(event, account: "acc_1", at: t0.adding(seconds: Int64(k)), id: "t\(k)")
        }
        #expect(j.headSeq == 20)
        var stored: [StoredEvent] = []
        try j.read { try $0.events(account: "acc_1") { stored.append($0) } }
        #expect(try stored.map { try data($0) } == all.map(\.data))
        // The contract's checks hold for typed events too: schema, card numbers, history.
        #expect(throws: JournalError.self) {
            try j.record(Events.PaymentRecorded(transaction: "t", amountMinor: 1, currency: "EURO", cardLast4: "4242"), account: "acc_1", at: t0.adding(seconds: 99))
        }
        // A card number in free text is masked (the contract since issue 10), elsewhere refused.
        var masked: [String] = []
        let header = try j.record(Events.SupportMessageReceived(ticket: "T", fromEmail: "a@b.co", body: "card 4111 1111 1111 1111"),
                                  account: "acc_1", at: t0.adding(seconds: 99), onMasked: { masked.append($0) })
        #expect(masked == ["data.body"])
        #expect(try data(try #require(try allEvents(j).first { $0.header.seq == header.seq }))["body"] == "card **** **** **** 1111")
        #expect {
            try j.record(Events.SupportMessageReceived(ticket: "4111 1111 1111 1111", fromEmail: "a@b.co", body: "hi"), account: "acc_1", at: t0.adding(seconds: 99))
        } throws: { !"\($0)".contains("4111") && "\($0)".hasPrefix("field data.ticket:") }
        #expect {
            try j.record(Events.ItemRestored(item: "i1"), account: "acc_1", at: t0.adding(seconds: 99))
        } throws: { ($0 as? JournalError)?.code == .refusedByRules }
    }
}
