import Dispatch
import Foundation
import Synchronization

extension Array where Element: Sendable {
    /// `transform` of every element, in order, computed on every core in contiguous slices of at
    /// least `minimumSlice` elements (on the calling thread alone when the array is smaller).
    ///
    /// Meant for pure, CPU-bound work such as parsing or sealing a batch: the caller waits until
    /// every slice is done.
    package func parallelMap<T: Sendable>(minimumSlice: Int = 1024, _ transform: @Sendable (Element) -> T) -> [T] {
        let slices = Swift.min(ProcessInfo.processInfo.activeProcessorCount * 2, count / Swift.max(minimumSlice, 1))
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
