import Dispatch
import Foundation
import Synchronization

/// The cores this process may use, read once: `activeProcessorCount` reads files of `/proc` and
/// the cgroup each time, which cost a single append as much as its sealing did.
private let processors = ProcessInfo.processInfo.activeProcessorCount

extension Array where Element: Sendable {
    /// `transform` of every element, in order, computed on every core in contiguous slices of at
    /// least `minimumSlice` elements (on the calling thread alone when the array is smaller).
    ///
    /// Meant for pure, CPU-bound work such as parsing or sealing a batch: the caller waits until
    /// every slice is done.
    package func parallelMap<T: Sendable>(minimumSlice: Int = 1024, _ transform: @Sendable (Element) -> T) -> [T] {
        let slices = Swift.min(processors * 2, count / Swift.max(minimumSlice, 1))
        guard slices > 1 else { return map(transform) }
        let parts = Mutex<[[T]]>(Array<[T]>(repeating: [], count: slices))
        DispatchQueue.concurrentPerform(iterations: slices) { s in
            let part = self[(count * s / slices)..<(count * (s + 1) / slices)].map(transform)
            parts.withLock { $0[s] = part }
        }
        return parts.withLock { parts in
            var all: [T] = []
            all.reserveCapacity(count)
            for part in parts { all.append(contentsOf: part) }
            return all
        }
    }
}

/// A value computed on another thread while the caller goes on; `value()` waits for it.
///
/// Work too small to repay the hand-over (`inline`) is done at once, on the caller's thread.
package final class Background<T: Sendable>: Sendable {
    private let result: Mutex<T?>
    private let done: DispatchGroup

    package init(inline: Bool = false, _ work: @escaping @Sendable () -> T) {
        result = Mutex(nil)
        done = DispatchGroup()
        if inline {
            result.withLock { $0 = work() }
            return
        }
        DispatchQueue.global().async(group: done) { [self] in
            let value = work()
            result.withLock { $0 = value }
        }
    }

    package func value() -> T {
        done.wait()
        return result.withLock { $0! }
    }
}
