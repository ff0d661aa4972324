// What the commands write: JSON lines, reports, progress, and errors as one line on stderr.
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import LetheEvents
import LetheJournal

/// One JSON value and a newline.
func jsonLine(_ value: JSONValue) -> [UInt8] {
    var w = JSONWriter()
    w.write(value)
    w.bytes.append(0x0A)
    return w.bytes
}

/// Writes one JSON value and a newline to standard output.
func printJSON(_ value: JSONValue) { writeAll(1, jsonLine(value)) }

/// Progress on stderr, only when stderr is a terminal, at most a few times a second.
struct Progress {
    let label: String
    let enabled = isatty(2) == 1
    private var last: Int64 = 0

    init(_ label: String) { self.label = label }

    mutating func update(_ done: Int64, of total: Int64, unit: String) {
        guard enabled else { return }
        let now = Clock.system.now().nanoseconds
        guard now - last > 200_000_000 || done == total else { return }
        last = now
        let pct = total > 0 ? " (\(done * 100 / total)%)" : ""
        writeStderr("\r\(label): \(done) of \(total) \(unit)\(pct)\u{1B}[K")
    }

    func finish() {
        if enabled { writeStderr("\r\u{1B}[K") }
    }
}

/// Writes all of `bytes` to a file descriptor (unbuffered, so no shared `FILE*` is involved); a
/// closed stdout or stderr is not an error worth more than the output itself.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) { _ = PrivateFile.writeAll(fd, bytes) }

func writeStderr(_ text: String) { writeAll(2, Array(text.utf8)) }

/// Writes a report to `path`, or to standard output. Reports hold personal data: the file is
/// made anew, readable by its owner only, and put in place atomically; a link at `path` is
/// replaced, never followed.
func writeOutput(_ bytes: [UInt8], to path: String?) throws {
    guard let path else { return writeAll(1, bytes) }
    try PrivateFile.replace(path, with: bytes)
}

func writeStdout(_ text: String) { writeAll(1, Array(text.utf8)) }

/// Buffered standard output.
struct Output {
    var buffer: [UInt8] = []

    mutating func write(_ bytes: [UInt8]) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 20 { flush() }
    }

    mutating func flush() {
        writeAll(1, buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Runs a command body, turning the engine's errors into a one-line reason on stderr and exit 1.
func guarded(_ command: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as JournalError {
        writeStderr("lethe \(command): \(e.description)\n")
        throw ExitCode(1)
    }
}
