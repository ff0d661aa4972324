#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A program started with posix_spawn(3), its standard input, output and error on pipes, its exit
/// awaited on a thread of its own.
///
/// Not Foundation's `Process`: on this toolchain (Swift 6.3.1) `Process.run()` copies the whole
/// 256-byte name of every `/proc/self/fd` entry, and when an entry ends glibc's buffer the copy
/// reads past it and the test process dies of SIGSEGV, now and then (one CI run in several;
/// swift-corelibs-foundation pull request 5472, merged after 6.3.1 was cut).
final class Child: Sendable {
    /// Held while a child is started: see `init`.
    private static let spawning = Mutex(())

    let pid: pid_t
    /// The parent's ends of the pipes: write to `input`, read `output` and `errors` to their end.
    let input: FileHandle, output: FileHandle, errors: FileHandle
    private let status = Mutex<Int32?>(nil)
    private let exited = DispatchSemaphore(value: 0)

    /// Starts `path` (absolute) with `arguments` and exactly `environment`.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: AddCloseFrom.self) }

    init(_ path: String, _ arguments: [String], environment: [String: String]) throws {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        let (pid, stdin, stdout, stderr) = try Child.spawning.withLock { _ in
            // Every pipe is close-on-exec, so no other child (tests start them concurrently) holds
            // one open and keeps its reader waiting; dup2 clears the flag on the child's 0, 1 and 2.
            // (pipe2 is not in Swift's Glibc module: the lock keeps every spawn of this process
            // out of the moment between pipe and fcntl.)
            func pipe() throws -> (read: Int32, write: Int32) {
                var fds: [Int32] = [-1, -1]
                guard Glibc.pipe(&fds) == 0 else { throw TestFailure("pipe: \(String(cString: strerror(errno)))") }
                for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
                return (fds[0], fds[1])
            }
            var opened: [Int32] = []
            func pipeKept() throws -> (read: Int32, write: Int32) {
                do {
                    let p = try pipe()
                    opened += [p.read, p.write]
                    return p
                } catch {
                    opened.forEach { _ = close($0) }  // the pipes made before this one
                    throw error
                }
            }
            let stdin = try pipeKept(), stdout = try pipeKept(), stderr = try pipeKept()
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, stdin.read, 0)
            posix_spawn_file_actions_adddup2(&actions, stdout.write, 1)
            posix_spawn_file_actions_adddup2(&actions, stderr.write, 2)
            // Nothing else of this process reaches the child, close-on-exec or not (NIO's
            // sockets are not: a server started from a test held the test's connections open).
            // (glibc 2.34's posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module
            // does not declare.)
            if let closeFrom = Child.addCloseFrom { _ = closeFrom(&actions, 3) }
            // The test process ignores SIGPIPE (see `ignoreBrokenPipes`), and an ignored signal
            // stays ignored across exec: the child gets the default back, and no blocked signals.
            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            var defaults = sigset_t(), mask = sigset_t()
            sigemptyset(&defaults)
            sigaddset(&defaults, SIGPIPE)
            sigemptyset(&mask)
            posix_spawnattr_setsigdefault(&attributes, &defaults)
            posix_spawnattr_setsigmask(&attributes, &mask)
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
            var pid: pid_t = 0
            let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
            for fd in [stdin.read, stdout.write, stderr.write] { close(fd) }
            guard spawned == 0 else {
                for fd in [stdin.write, stdout.read, stderr.read] { close(fd) }
                throw TestFailure("cannot start \(path): \(String(cString: strerror(spawned)))")
            }
            return (pid, stdin, stdout, stderr)
        }
        self.pid = pid
        input = FileHandle(fileDescriptor: stdin.write, closeOnDealloc: true)
        output = FileHandle(fileDescriptor: stdout.read, closeOnDealloc: true)
        errors = FileHandle(fileDescriptor: stderr.read, closeOnDealloc: true)
        Thread.detachNewThread { [self] in
            // Waits without reaping, then reaps under the lock `send` takes: a signal is never
            // sent to a pid the system may have given to another process.
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) == -1 && errno == EINTR {}
            status.withLock {
                var raw: Int32 = 0
                var reaped = waitpid(pid, &raw, 0)
                while reaped == -1 && errno == EINTR { reaped = waitpid(pid, &raw, 0) }
                // As Foundation reports it: the exit code, or the number of the signal that ended
                // it; -1 if it could not be reaped (never a made-up success).
                $0 = reaped == -1 ? -1 : raw & 0x7f == 0 ? (raw >> 8) & 0xff : raw & 0x7f
            }
            exited.signal()
        }
    }

    /// Whether the program has not been seen to exit yet.
    var isRunning: Bool { status.withLock { $0 } == nil }

    /// The exit code (or the signal that ended it), once it exited before `deadline`; else nil.
    func wait(until deadline: DispatchTime) -> Int32? {
        guard exited.wait(timeout: deadline) == .success else { return nil }
        exited.signal()  // a later wait returns at once
        return status.withLock { $0 }
    }

    /// Sends `signal` to the program, if it has not been reaped (its pid cannot have been reused).
    func send(_ signal: Int32) {
        status.withLock { if $0 == nil { _ = kill(pid, signal) } }
    }
}
