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
    /// What is locked: the lock file, or the lock's name on a server.
    public let path: String
    private let letGo: Mutex<(@Sendable () -> Void)?>
    private let stillHeld: @Sendable () -> Bool

    /// `isHeld` answers whether the lock behind the lease is still this holder's (asked only
    /// until the lease is released).
    package init(purpose: String, path: String, isHeld: @escaping @Sendable () -> Bool, release: @escaping @Sendable () -> Void) {
        self.purpose = purpose
        self.path = path
        stillHeld = isHeld
        letGo = Mutex(release)
    }

    /// Whether the lease is still this holder's: false once released, and once the lock behind
    /// it went without a release (its lock file removed or replaced, so that another holder can
    /// lock a new one; its connection to the server lost, so that the server let go of it). A
    /// holder asks before each step that acts (`ensureHeld`): the work of two holders can then
    /// overlap by one step at most.
    public var isHeld: Bool { letGo.withLock { $0 != nil && stillHeld() } }

    /// Throws `.busy`, naming the lease, when it is no longer held.
    public func ensureHeld() throws {
        guard !isHeld else { return }
        throw JournalError(.busy, "the \(purpose) lease (\(path)) is no longer held: its lock file was removed or replaced, or its connection to the server ended, so another run may hold it now; this run stopped before its next step, and the next run finishes what is left")
    }

    /// Lets go of the lease (at once; also when the lease is freed).
    public func release() {
        letGo.withLock { release in
            release?()
            release = nil
        }
    }

    deinit { release() }

    /// Whether `purpose` is a lease's name: lower-case letters and digits.
    static func isPurpose(_ purpose: String) -> Bool {
        !purpose.isEmpty && purpose.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) }
    }

    /// The embedded store's lease: an exclusive `flock` on `path`, waiting at most `wait`.
    static func lockFile(_ path: String, purpose: String, wait: Duration) throws -> Lease? {
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
        // Held while the file locked is the one at `path`: once it is removed or replaced,
        // another holder locks the new one. Closing the only descriptor drops the lock.
        return Lease(purpose: purpose, path: path, isHeld: {
            var locked = stat(), named = stat()
            return fstat(fd, &locked) == 0 && stat(path, &named) == 0 && locked.st_dev == named.st_dev && locked.st_ino == named.st_ino
        }, release: { close(fd) })
    }
}

extension Journal {
    /// Takes the lease for `purpose` (lower-case letters and digits), waiting at most `wait` while
    /// another holder has it; nil if it is still held then.
    public func lease(_ purpose: String, wait: Duration = .zero) throws -> Lease? {
        precondition(Lease.isPurpose(purpose), "a lease's purpose is lower-case letters and digits")
        return try backend.lease(purpose, wait: wait)
    }

    /// What the lease for `purpose` is, for messages: a lock file beside the journal, or an
    /// advisory lock on its server.
    public func leaseName(_ purpose: String) -> String { backend.leaseName(purpose) }
}

/// The lock file, made owner-only if missing; never followed through a link. (Outside the
/// `Journal` extension, where `open` names `Journal.open`.)
private func openLockFile(_ path: String) -> Int32 {
    open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, PrivateFile.mode)
}
