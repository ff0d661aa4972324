// An account service embedding Lethe: it records typed events as customers act, a background
// task follows committed events (here: erasure requests, to hand to support and processors),
// and a reader answers "what do we hold about this customer?" while the writer goes on.
//
// It uses the async API, as a service on Hummingbird or Vapor would: every call below runs on
// Lethe's own threads (`BlockingPool`), never blocking the cooperative pool.
//
// Run: swift run lethe-example-service [DIRECTORY]   (a temporary directory by default)
import Foundation
import LetheEvents
import LetheJournal
import LetheViews
import Logging

// The service's work, in an async function as a server's handlers would be (top-level code
// would pick the synchronous overloads).
func main() async throws {
    let directory = CommandLine.arguments.dropFirst().first ?? NSTemporaryDirectory() + "lethe-example-\(getpid())"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let logger: Logger = {
        var logger = Logger(label: "accounts")
        logger.logLevel = .info
        return logger
    }()

    var options = Journal.Options()
    options.rules = ContractRules()
    options.logger = logger
    // The master key comes from the host's secret store, never from beside the data: here the
    // environment (LETHE_MASTER_KEY or LETHE_MASTER_KEY_FILE), or, for a first try, a key file made
    // in a directory of its own.
    var master = MasterKeySource()
    if !master.isGiven {
        let secrets = NSTemporaryDirectory() + "lethe-example-secrets-\(getpid())"
        try FileManager.default.createDirectory(atPath: secrets, withIntermediateDirectories: true)
        try MasterKeySource.createKeyFile(at: secrets + "/master.key")
        master.keyFile = secrets + "/master.key"
        logger.info("no master key given: made one for this run", metadata: ["file": "\(secrets)/master.key"])
    }
    let journal = try await Journal.open(path: directory + "/accounts.lethe", master: master, options: options)

    // Follow committed events from where this service last stopped (0 on a first run).
    let follower = Task {
        var handled = 0
        for try await event in journal.subscribe(after: 0, poll: .milliseconds(20)) {
            if event.header.type == EventType.erasureRequested.rawValue {
                logger.info("erasure requested", metadata: ["account": "\(event.header.account)", "seq": "\(event.header.seq)"])
            }
            handled += 1
            if handled == 9 { break }
        }
        return handled
    }

    // Customers act; the service records what the privacy policy says it keeps.
    var clock = Timestamp(rfc3339: "2026-03-01T09:00:00Z")!
    func next() -> Timestamp {
        clock = clock.adding(seconds: 60)
        return clock
    }
    try await journal.record(Events.AccountSignedUp(name: "Ada Lovelace", email: "ada@example.com", company: "Analytical Engines"), account: "acc_ada", at: next(), expectedVersion: 0)
    try await journal.record(Events.BillingAddressSet(line1: "12 St James's Square", city: "London", postcode: "SW1Y 4JH", country: "GB"), account: "acc_ada", at: next())
    try await journal.record(Events.PaymentRecorded(transaction: "tx_1001", amountMinor: 2900, currency: "GBP", cardLast4: "4242", processor: "spark"), account: "acc_ada", at: next())
    try await journal.record(Events.ItemCreated(item: "site_1", kind: "site", label: "engines.example"), account: "acc_ada", at: next())
    try await journal.record(Events.SupportMessageReceived(ticket: "T-7", fromEmail: "ada@example.com", body: "Please restore my site."), account: "acc_ada", at: next())
    try await journal.record(Events.AccountAccessed(actor: "staff_04", ip: "198.51.100.4", reason: "support", ticket: "T-7"), account: "acc_ada", at: next())
    try await journal.record(Events.AccountSignedUp(name: "Charles Babbage", email: "charles@example.com"), account: "acc_charles", at: next(), expectedVersion: 0)
    try await journal.record(Events.AccountCancelled(reason: "moving on"), account: "acc_charles", at: next())
    try await journal.record(Events.ErasureRequested(channel: "support"), account: "acc_charles", at: next())

    // A refused event leaves no trace: the item was never deleted, so it cannot be restored.
    do {
        try await journal.record(Events.ItemRestored(item: "site_1"), account: "acc_ada", at: next())
    } catch let error as JournalError {
        logger.info("refused", metadata: ["why": "\(error.message)"])
    }

    // The read models: caught up from their checkpoint, then read while the writer could go on.
    let views = try await ReadModels.open(journal: journal, logger: logger)
    try await views.catchUp()
    if let ada = try await views.run({ try $0.account("acc_ada") }) { print(JSONValue.object(ada.json).jsonText) }
    for item in try await views.run({ try $0.items(account: "acc_ada") }) {
        logger.info("item", metadata: ["item": "\(item.item)", "state": "\(item.state)"])
    }
    let accesses = try await views.run { views in
        var accesses: [Views.Access] = []
        try views.accessLog(account: "acc_ada") { accesses.append($0) }
        return accesses
    }
    logger.info("staff accesses", metadata: ["count": "\(accesses.count)", "authorized": "\(accesses.filter { $0.authorized == true }.count)"])

    // Point in time, from the account's own events: what did we hold an hour into its life?
    let events = try await journal.read { reader in
        var events: [StoredEvent] = []
        try reader.events(account: "acc_ada") { events.append($0) }
        return events
    }
    let early = try AccountState.fold(events, account: "acc_ada", until: Timestamp(rfc3339: "2026-03-01T09:02:30Z")!)
    logger.info("acc_ada at 09:02:30", metadata: ["items": "\(early.items.count)", "email": "\(early.email ?? "none")"])

    print("followed \(try await follower.value) committed events")
}

try await main()
