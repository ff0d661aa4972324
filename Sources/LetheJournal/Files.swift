import Foundation

/// Files the engine writes: readable and writable by their owner only, never written through a
/// symbolic link, and put in place atomically.
package enum PrivateFile {
    package static let mode: mode_t = 0o600

    private static func failure(_ what: String, _ path: String) -> JournalError {
        JournalError(.storage, "cannot \(what) \(path): \(String(cString: strerror(errno)))")
    }

    /// Creates `path` with `contents`, owner-only; fails if anything (a file, a link) is there.
    package static func create(_ path: String, contents: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure("create", path) }
        defer { close(fd) }
        guard writeAll(fd, contents), fsync(fd) == 0 else { throw failure("write", path) }
    }

    /// Makes an SQLite database file owner-only before SQLite opens it: a missing file is created
    /// 0600 (SQLite then gives its WAL and shared-memory files the same mode), and an existing
    /// one, with its WAL and shared memory, is narrowed to 0600 if group or others could read it.
    package static func prepareDatabase(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if fd >= 0 {
            close(fd)
            return
        }
        guard errno == EEXIST else { throw failure("create", path) }
        for file in [path, path + "-wal", path + "-shm"] {
            var st = stat()
            guard stat(file, &st) == 0, st.st_mode & 0o077 != 0 else { continue }
            guard chmod(file, mode) == 0 else { throw failure("make owner-only", file) }
        }
    }

    /// Writes `bytes` to `path` atomically: a new owner-only file beside it, synced, then renamed
    /// over `path`. A link at `path` is replaced, never followed; an existing file's mode is not
    /// inherited.
    package static func replace(_ path: String, with bytes: [UInt8], entropy: Entropy = .system) throws {
        try replace(path, entropy: entropy) { fd in
            guard writeAll(fd, bytes) else { throw failure("write", path) }
        }
    }

    /// Like `replace(_:with:)`, with `write` filling the new file through its descriptor.
    package static func replace(_ path: String, entropy: Entropy = .system, _ write: (Int32) throws -> Void) throws {
        let temporary = path + ".tmp-" + Hex.encode(entropy.bytes(6))
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure("create", temporary) }
        var done = false
        defer {
            close(fd)
            if !done { unlink(temporary) }
        }
        try write(fd)
        guard fsync(fd) == 0 else { throw failure("sync", temporary) }
        guard rename(temporary, path) == 0 else { throw failure("put in place", path) }
        done = true
    }

    /// Writes all of `bytes`; false on an error.
    package static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// `path` with every link and `.`/`..` resolved (realpath(3)); nil when it does not exist.
    package static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The processes (pid and name) that hold `path` open, read from /proc: who keeps a WAL busy.
    /// Best effort: empty where /proc cannot be read.
    package static func holders(of path: String) -> [String] {
        guard let resolved = realPath(path) else { return [] }
        let me = getpid()
        var found: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), pid != me else { continue }
            let fds = "/proc/\(entry)/fd"
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: fds)) ?? [] {
                guard (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fds)/\(fd)")) == resolved else { continue }
                let name = ((try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8)) ?? "?")
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                found.append("\(pid) (\(name))")
                break
            }
        }
        return found
    }
}
