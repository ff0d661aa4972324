#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import Synchronization

/// An exclusive claim on one kind of work over a journal (a retention run, say): one holder at
/// a time, across threads, processes and instances, released when the holder lets go, or when
/// its process dies however it dies, so that the next one takes over.
///
/// On the embedded store it is an advisory `flock(2)` on an empty owner-only file beside the
/// journal, `JOURNAL.PURPOSE.lock`: the kernel drops it with the holder's last descriptor.
public final class Lease: Sendable {
    /// What the lease is for (`retention`).
    public let purpose: String
    /// The file whose lock is held.
    public let path: String
    private let fd: Mutex<Int32>

    fileprivate init(purpose: String, path: String, fd: Int32) {
        self.purpose = purpose
        self.path = path
        self.fd = Mutex(fd)
    }

    /// Lets go of the lease (at once; also when the lease is freed).
    public func release() {
        fd.withLock { fd in
            guard fd >= 0 else { return }
            close(fd)  // closing the only descriptor drops the lock
            fd = -1
        }
    }

    deinit { release() }
}

extension Journal {
    /// Takes the lease for `purpose` (lower-case letters and digits), waiting at most `wait` while
    /// another holder has it; nil if it is still held then.
    public func lease(_ purpose: String, wait: Duration = .zero) throws -> Lease? {
        precondition(!purpose.isEmpty && purpose.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) },
                     "a lease's purpose is lower-case letters and digits")
        // Beside the journal's real path: two instances that reach the file through different
        // links or relative paths share one lock.
        let path = (PrivateFile.realPath(self.path) ?? self.path) + "." + purpose + ".lock"
        let fd = openLockFile(path)
        guard fd >= 0 else {
            throw JournalError(.storage, "cannot open the lock file \(path): \(String(cString: strerror(errno)))")
        }
        let deadline = ContinuousClock.now + wait
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let error = errno
            if error == EINTR { continue }  // a signal is not a holder
            guard error == EWOULDBLOCK else {
                close(fd)
                throw JournalError(.storage, "cannot lock \(path): \(String(cString: strerror(error)))")
            }
            guard ContinuousClock.now < deadline else {
                close(fd)
                return nil
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return Lease(purpose: purpose, path: path, fd: fd)
    }
}

/// The lock file, made owner-only if missing; never followed through a link. (Outside the
/// `Journal` extension, where `open` names `Journal.open`.)
private func openLockFile(_ path: String) -> Int32 {
    open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, PrivateFile.mode)
}
