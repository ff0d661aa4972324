/// Rules of a domain that the writer applies to each event at the moment it decides it, with the
/// account's history at hand (a second signup, an item deleted twice, …). The journal itself
/// knows no event types; `LetheEvents.ContractRules` are the contract's.
public protocol EventRules: Sendable {
    func makeChecker() -> any RulesChecker
}

/// One writer's view of the rules: a state per account, built from its history and advanced by
/// each admitted event. Used by one writer, under its lock.
public protocol RulesChecker: AnyObject {
    /// Whether the checker already follows `account`; if not, the writer `load`s it first.
    func follows(_ account: String) -> Bool
    /// Whether an event of `type` for an account the checker does not follow needs its history
    /// loaded first; when not, `admit` is asked without it and must not track the account.
    func needsHistory(type: String) -> Bool
    /// Makes room for `count` more accounts (by dropping states), so that loading them does not
    /// drop the ones just loaded.
    func makeRoom(for count: Int)
    /// Builds the account's state from its stored events, in order.
    func load(_ account: String, history: [StoredEvent]) throws
    /// nil admits the event (and the checker applies it); otherwise the reason it is refused.
    /// `scope` is the key it is sealed under, which the domain may require per type.
    func admit(account: String, type: String, payload: [UInt8], scope: KeyScope, at: Timestamp) -> String?
    /// Drops every state: after a rolled-back batch, or when another process moved the journal.
    func forget()
    /// Drops the states of `accounts`: another writer appended to them.
    func forget(_ accounts: Set<String>)
}

extension RulesChecker {
    /// (A checker that cannot drop states one by one drops them all.)
    public func forget(_ accounts: Set<String>) { forget() }
}
