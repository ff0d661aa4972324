/// When the recent rows of an index kept in runs (`EventIDIndex`, `BlockIndex`) move into its
/// runs: once at least `minimumRecent` and `perRun` per run have gathered, at most
/// `maximumRecent` (which bounds a merge's work and memory); or, when the journal's options give
/// one, at exactly `limit` (tests use small ones). A merge rewrites up to every run, so `perRun`
/// says how many recent rows share the cost of rewriting one.
struct MergePolicy {
    static let minimumRecent = 1 << 14
    static let maximumRecent = 1 << 20

    let index: IndexName
    let perRun: Int

    /// Whether a merge is due now (`force`: whenever there is a recent row).
    func isDue(_ store: any JournalStore, limit: Int?, force: Bool) throws -> Bool {
        let count = try store.recentRowCount(index)
        guard count > 0 else { return false }
        if force { return true }
        if let limit { return count >= Int64(limit) }
        let runCount = try store.runRowCount(index)
        return count >= max(Int64(MergePolicy.minimumRecent), min(runCount * Int64(perRun), Int64(MergePolicy.maximumRecent)))
    }
}

/// Decodes a stored run (`body`): a read past its end or a malformed value becomes `.corrupt`
/// through `corrupt`, which names the run; a `JournalError` of `body` passes as it is.
func decodingRun<T>(_ corrupt: (String) -> JournalError, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as JournalError {
        throw e
    } catch is BinaryReader.Truncated {
        throw corrupt("is truncated")
    } catch let e as BinaryReader.Malformed {
        throw corrupt("is damaged (\(e.what))")
    }
}
