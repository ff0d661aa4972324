#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The shape of each event type's `data` (EVENTS.md): which fields it has, which are required,
/// and what each must hold. Checks one event on its own; rules that need an account's history
/// (item life cycle, second signups, …) are not here.
public enum DataSchema {
    /// What a field must hold.
    enum Kind {
        /// A non-empty string.
        case text
        /// A string that looks like an e-mail address.
        case email
        /// An ISO 3166-1 alpha-2 country code.
        case country
        /// An ISO 4217 currency code.
        case currency
        /// Exactly four digits.
        case last4
        /// A JSON integer.
        case integer
        /// An IPv4 or IPv6 address.
        case ip
        /// A JSON object.
        case object
        /// A JSON array of strings.
        case strings
        /// One of the listed strings.
        case oneOf([String])
    }

    struct Field {
        let name: String
        let kind: Kind
        let required: Bool
    }

    static func r(_ name: String, _ kind: Kind = .text) -> Field { Field(name: name, kind: kind, required: true) }
    static func o(_ name: String, _ kind: Kind = .text) -> Field { Field(name: name, kind: kind, required: false) }

    static let fields: [EventType: [Field]] = [
        .accountSignedUp: [r("name"), r("email", .email), o("company")],
        .profileUpdated: [o("name"), o("company"), o("email", .email)],
        .billingAddressSet: [r("line1"), o("line2"), r("city"), o("region"), o("postcode"), r("country", .country)],
        .paymentRecorded: [r("transaction"), r("amount_minor", .integer), r("currency", .currency), r("card_last4", .last4), o("processor")],
        .supportMessageReceived: [r("ticket"), r("from_email", .email), r("body"), o("subject")],
        .pageViewed: [r("path"), r("visitor"), o("referrer")],
        .surveyAnswered: [r("survey"), r("answers", .object)],
        .accountAccessed: [r("actor"), r("ip", .ip), r("reason"), o("ticket")],
        .itemCreated: [r("item"), r("kind"), o("label"), o("content")],
        .itemDeleted: [r("item")],
        .itemRestored: [r("item")],
        .accountCancelled: [o("reason")],
        .accountReactivated: [],
        .erasureRequested: [o("channel")],
        .consentGranted: [r("purpose")],
        .consentRevoked: [r("purpose")],
        .dataShared: [r("recipient"), r("basis", .oneOf(["consent", "legal", "merger"])), r("categories", .strings)],
        .noticeSent: [r("topic", .oneOf(["policy-change", "merger"])), o("version")],
        .legalHoldPlaced: [r("case"), r("reason")],
        .legalHoldReleased: [r("case")],
        .itemPurged: [r("item"), r("rule")],
        .accountPurged: [r("rule")],
        .recordsExpired: [r("category"), r("rule")],
        .processorErasureRequested: [r("processor")],
    ]

    /// The first thing wrong with `data` for `type`, naming the field (never its value); nil when it is fine.
    public static func check(_ type: EventType, _ data: JSONObject) -> Rejection? {
        let spec = fields[type] ?? []
        for f in data.fields where !spec.contains(where: { sameBytes($0.name, f.key) }) {
            return Rejection(field: "data", "unknown field \(EnvelopeValidator.printable(f.key, allowing: "_-")) for \(type.rawValue)")
        }
        for f in spec {
            guard let value = data[f.name] else {
                if f.required { return Rejection(field: "data.\(f.name)", "missing (required for \(type.rawValue))") }
                continue
            }
            if let why = problem(with: value, kind: f.kind) { return Rejection(field: "data.\(f.name)", why) }
        }
        if type == .profileUpdated && data.isEmpty {
            return Rejection(field: "data", "ProfileUpdated needs at least one of name, company, email")
        }
        return nil
    }

    static func problem(with value: JSONValue, kind: Kind) -> String? {
        switch kind {
        case .integer:
            switch value {
            case .int: return nil
            case .number(let n) where n.isInteger: return "must be an integer from \(Int64.min) to \(Int64.max)"
            case .number: return "must be an integer, not a fraction"
            default: return "must be an integer, not \(value.typeName)"
            }
        case .object:
            guard case .object = value else { return "must be an object, not \(value.typeName)" }
            return nil
        case .strings:
            guard case .array(let items) = value else { return "must be an array of strings, not \(value.typeName)" }
            for item in items {
                guard case .string(let s) = item, !s.isEmpty else { return "must be an array of non-empty strings" }
            }
            return nil
        default:
            break
        }
        guard case .string(let s) = value else { return "must be a string, not \(value.typeName)" }
        guard !s.isEmpty else { return "must not be empty" }
        switch kind {
        case .text: return nil
        case .email: return looksLikeEmail(s) ? nil : "must be an e-mail address like name@example.com"
        case .country: return countries.contains(s) ? nil : "must be an ISO 3166-1 alpha-2 country code, like DE"
        case .currency: return currencies.contains(s) ? nil : "must be an ISO 4217 currency code, like EUR"
        case .last4: return s.utf8.count == 4 && s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) ? nil : "must be exactly 4 digits"
        case .ip: return isIPAddress(s) ? nil : "must be an IPv4 or IPv6 address"
        case .oneOf(let allowed): return allowed.contains(s) ? nil : "must be one of \(allowed.joined(separator: ", "))"
        case .integer, .object, .strings: return nil
        }
    }

    /// `local@domain.tld`: one `@`, no spaces, control characters, `<`, `>` or `,`, and a domain
    /// of at least two dot-separated labels.
    public static func looksLikeEmail(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count <= 254, let at = u.firstIndex(of: 0x40), u.lastIndex(of: 0x40) == at else { return false }
        let local = u[..<at], domain = u[(at + 1)...]
        guard !local.isEmpty, local.count <= 64 else { return false }
        guard u.allSatisfy({ $0 > 0x20 && $0 != 0x7F && $0 != 0x3C && $0 != 0x3E && $0 != 0x2C }) else { return false }
        let labels = domain.split(separator: 0x2E, omittingEmptySubsequences: false)
        return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty }
    }

    /// IPv4 in dotted-decimal, or IPv6 in any RFC 4291 text form (as `inet_pton` reads them).
    public static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    /// ISO 3166-1 alpha-2, officially assigned codes.
    public static let countries: Set<String> = Set("""
        AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
        CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO \
        FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE \
        JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO \
        MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW \
        PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM \
        TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
        """.split(separator: " ").map(String.init))

    /// ISO 4217 codes of currencies and funds in use (not the test and "no currency" codes XTS, XXX).
    public static let currencies: Set<String> = Set("""
        AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF \
        CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD \
        GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR \
        LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK \
        PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT \
        TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG \
        XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
        """.split(separator: " ").map(String.init))
}
