import LetheEvents
import LetheJournal
import Testing

@Suite struct DataSchemaTests {
    func check(_ type: EventType, _ json: String) throws -> String? {
        DataSchema.check(type, try #require(JSONParser.parse(json).object))?.description
    }

    @Test func everyContractTypeAcceptsItsExample() throws {
        let examples: [EventType: String] = [
            .accountSignedUp: #"{"name":"Ada","email":"ada@example.com","company":"AE Ltd"}"#,
            .profileUpdated: #"{"company":"New Co"}"#,
            .billingAddressSet: #"{"line1":"1 Main St","line2":"Suite 2","city":"Berlin","region":"BE","postcode":"10115","country":"DE"}"#,
            .paymentRecorded: #"{"transaction":"tx_1","amount_minor":-500,"currency":"EUR","card_last4":"0042","processor":"spark"}"#,
            .supportMessageReceived: #"{"ticket":"T-1","from_email":"a.b+c@mail.example.org","body":"Hello","subject":"Hi"}"#,
            .pageViewed: #"{"path":"/pricing","visitor":"v1","referrer":"https://example.com/"}"#,
            .surveyAnswered: #"{"survey":"nps","answers":{"score":9,"why":"fast"}}"#,
            .accountAccessed: #"{"actor":"staff_1","ip":"2001:db8::1","reason":"support","ticket":"T-1"}"#,
            .itemCreated: #"{"item":"i1","kind":"site","label":"blog","content":"<h1>hi</h1>"}"#,
            .itemDeleted: #"{"item":"i1"}"#,
            .itemRestored: #"{"item":"i1"}"#,
            .accountCancelled: #"{}"#,
            .accountReactivated: #"{}"#,
            .erasureRequested: #"{"channel":"support"}"#,
            .consentGranted: #"{"purpose":"share:vms"}"#,
            .consentRevoked: #"{"purpose":"marketing-name-use"}"#,
            .dataShared: #"{"recipient":"vms","basis":"legal","categories":["billing","profile"]}"#,
            .noticeSent: #"{"topic":"merger","version":"2026-03"}"#,
            .legalHoldPlaced: #"{"case":"C-1","reason":"subpoena"}"#,
            .legalHoldReleased: #"{"case":"C-1"}"#,
            .itemPurged: #"{"item":"i1","rule":"trash-30d"}"#,
            .accountPurged: #"{"rule":"cancellation-30d"}"#,
            .recordsExpired: #"{"category":"page-views","rule":"page-views-90d"}"#,
            .processorErasureRequested: #"{"processor":"Zendesk"}"#,
        ]
        #expect(Set(examples.keys) == Set(EventType.allCases))
        for (type, json) in examples {
            #expect(try check(type, json) == nil, "\(type)")
        }
    }

    @Test func namesWhatIsWrong() throws {
        #expect(try check(.accountSignedUp, #"{"name":"Ada"}"#) == "field data.email: missing (required for AccountSignedUp)")
        #expect(try check(.accountSignedUp, #"{"name":"Ada","email":"ada@example.com","age":3}"#) == "field data: unknown field \"age\" for AccountSignedUp")
        #expect(try check(.accountSignedUp, #"{"name":"","email":"ada@example.com"}"#) == "field data.name: must not be empty")
        #expect(try check(.accountSignedUp, #"{"name":7,"email":"ada@example.com"}"#) == "field data.name: must be a string, not number")
        #expect(try check(.accountSignedUp, #"{"name":"Ada","email":"ada@example.com","company":null}"#) == "field data.company: must be a string, not null")
        #expect(try check(.profileUpdated, #"{}"#) == "field data: ProfileUpdated needs at least one of name, company, email")
        #expect(try check(.paymentRecorded, #"{"transaction":"t","amount_minor":1.5,"currency":"EUR","card_last4":"4242"}"#) == "field data.amount_minor: must be an integer, not a fraction")
        #expect(try check(.paymentRecorded, #"{"transaction":"t","amount_minor":"150","currency":"EUR","card_last4":"4242"}"#) == "field data.amount_minor: must be an integer, not string")
        #expect(try check(.paymentRecorded, #"{"transaction":"t","amount_minor":150,"currency":"EURO","card_last4":"4242"}"#)?.hasPrefix("field data.currency: must be an ISO 4217") == true)
        #expect(try check(.paymentRecorded, #"{"transaction":"t","amount_minor":150,"currency":"EUR","card_last4":"42424"}"#) == "field data.card_last4: must be exactly 4 digits")
        #expect(try check(.billingAddressSet, #"{"line1":"x","city":"y","country":"XX"}"#)?.hasPrefix("field data.country: must be an ISO 3166-1") == true)
        #expect(try check(.billingAddressSet, #"{"line1":"x","city":"y","country":"de"}"#)?.hasPrefix("field data.country") == true)
        #expect(try check(.dataShared, #"{"recipient":"x","basis":"whim","categories":[]}"#) == "field data.basis: must be one of consent, legal, merger")
        #expect(try check(.dataShared, #"{"recipient":"x","basis":"legal","categories":"billing"}"#) == "field data.categories: must be an array of strings, not string")
        #expect(try check(.dataShared, #"{"recipient":"x","basis":"legal","categories":[1]}"#) == "field data.categories: must be an array of non-empty strings")
        #expect(try check(.noticeSent, #"{"topic":"news"}"#) == "field data.topic: must be one of policy-change, merger")
        #expect(try check(.surveyAnswered, #"{"survey":"s","answers":[1]}"#) == "field data.answers: must be an object, not array")
        #expect(try check(.accountReactivated, #"{"why":"x"}"#) == "field data: unknown field \"why\" for AccountReactivated")
    }

    @Test(arguments: ["ada@example.com", "a.b+tag@sub.example.co.uk", "x@y.z", "o'brien@example.ie", "用户@例子.广告"])
    func acceptsEmails(_ s: String) { #expect(DataSchema.looksLikeEmail(s)) }

    @Test(arguments: ["ada", "ada@", "@example.com", "ada@example", "ada@@example.com", "a@b@c.com", "ada @example.com",
                      "ada@example..com", "ada@.example.com", "ada@example.com.", "<ada@example.com>", "a,b@example.com"])
    func refusesNonEmails(_ s: String) { #expect(!DataSchema.looksLikeEmail(s)) }

    @Test(arguments: ["203.0.113.7", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::1", "::", "fe80::1:2:3:4", "::ffff:192.0.2.1"])
    func acceptsAddresses(_ s: String) { #expect(DataSchema.isIPAddress(s)) }

    @Test(arguments: ["256.1.1.1", "1.2.3", "1.2.3.4.5", "203.0.113.7/24", "2001:db8:::1", "gggg::1", "localhost", " 1.2.3.4", "1.2.3.4 "])
    func refusesNonAddresses(_ s: String) { #expect(!DataSchema.isIPAddress(s)) }

    @Test func codeListsAreComplete() {
        #expect(DataSchema.countries.count == 249)
        #expect(DataSchema.countries.allSatisfy { $0.count == 2 && $0.uppercased() == $0 })
        #expect(["US", "DE", "GB", "JP", "BR", "IN", "SS", "XK"].map { DataSchema.countries.contains($0) } == [true, true, true, true, true, true, true, false])
        #expect(DataSchema.currencies.allSatisfy { $0.count == 3 && $0.uppercased() == $0 })
        #expect(["USD", "EUR", "GBP", "JPY", "CHF", "XTS", "XXX", "DEM"].map { DataSchema.currencies.contains($0) } == [true, true, true, true, true, false, false, false])
    }
}

@Suite struct AccountStateTests {
    func fold(_ steps: [(EventType, JSONObject)]) -> AccountState {
        var s = AccountState(account: "a")
        for (k, (type, data)) in steps.enumerated() { s.apply(type, data: data, at: Timestamp(seconds: Int64(k))) }
        return s
    }

    @Test func refusedTransitionsChangeNothing() {
        let s = fold([
            (.profileUpdated, ["name": "Before signup"]),  // nothing exists yet
            (.accountSignedUp, ["name": "Ada", "email": "ada@example.com"]),
            (.accountSignedUp, ["name": "Impostor", "email": "x@example.com"]),  // second signup
            (.itemCreated, ["item": "i1", "kind": "site"]),
            (.itemCreated, ["item": "i1", "kind": "other"]),  // ids are unique
            (.itemRestored, ["item": "i1"]),  // not in the trash
            (.itemDeleted, ["item": "i9"]),  // not live
            (.accountReactivated, [:]),  // not cancelled
            (.legalHoldReleased, ["case": "C-1"]),  // not open
            (.legalHoldPlaced, ["case": "C-2", "reason": "r"]),
            (.supportMessageReceived, ["ticket": "T-1", "from_email": "ada@example.com", "body": "hi"]),
        ])
        #expect(s.exists && s.status == .active && s.name == "Ada" && s.email == "ada@example.com" && s.company == nil)
        #expect(s.items == [AccountState.Item(item: "i1", kind: "site", inTrash: false)])
        #expect(s.legalHolds == ["C-2"] && s.tickets == ["T-1"])
    }

    @Test func aPurgeLeavesOnlyTheStatus() {
        let s = fold([
            (.accountSignedUp, ["name": "Ada", "email": "ada@example.com"]),
            (.itemCreated, ["item": "i1", "kind": "site"]),
            (.accountCancelled, [:]),
            (.accountPurged, ["rule": "cancellation-30d"]),
            (.accountReactivated, [:]),
        ])
        #expect(s.status == .purged && s.name == nil && s.email == nil && s.items.isEmpty)
    }
}
