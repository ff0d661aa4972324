import Crypto
import Foundation

/// Where the master key comes from, and the rules it must keep (CLI.md): a key file named
/// explicitly (`--master-key FILE`), else `LETHE_MASTER_KEY` (64 hexadecimal digits) in the
/// environment, else the key file `LETHE_MASTER_KEY_FILE` names. A key file must be one that only its owner can read and that does not lie in the directory
/// of the journal or of the key store. Nothing is ever created silently: `createKeyFile` (`lethe
/// keys init FILE`) makes a key file.
///
/// The master key wraps the key store's keys. Kept beside the data, a copy of the folder (a VM
/// snapshot, a stolen disk, `scp -r`) would decrypt everything, so the rules are enforced, not
/// advised.
public struct MasterKeySource: Sendable {
    public static let environmentVariable = "LETHE_MASTER_KEY"
    public static let fileVariable = "LETHE_MASTER_KEY_FILE"

    public var environment: [String: String]
    /// The key file named explicitly (`--master-key`); otherwise `LETHE_MASTER_KEY_FILE`.
    public var keyFile: String?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment, keyFile: String? = nil) {
        self.environment = environment
        self.keyFile = keyFile
    }

    /// A source holding the key itself (tests, hosts with their own secret store).
    public static func key(_ hex: String) -> MasterKeySource {
        MasterKeySource(environment: [environmentVariable: hex])
    }

    /// The key file in force, if any: the explicit one, else the environment's.
    public var file: String? { keyFile ?? environment[Self.fileVariable] }

    /// Whether a key is given at all (it may still be refused when loaded).
    public var isGiven: Bool { keyFile != nil || environment[Self.environmentVariable] != nil || file != nil }

    public static let missing = "no master key: set \(environmentVariable) (64 hexadecimal digits) or name a key file with --master-key FILE or \(fileVariable) (`lethe keys init FILE` makes one; keep it outside the journal's directory)"

    /// The master key. `dataPaths` are the files it protects (journal, key store): a key file in
    /// the directory of any of them is refused.
    package func load(besides dataPaths: [String]) throws -> SymmetricKey {
        // A file named on the command line wins over the environment.
        if keyFile == nil, let text = environment[Self.environmentVariable] {
            guard let bytes = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 else {
                throw JournalError(.keys, "\(Self.environmentVariable) must be 64 hexadecimal digits (a 256-bit key)")
            }
            return SymmetricKey(data: bytes)
        }
        guard let file else { throw JournalError(.keys, Self.missing) }
        var st = stat()
        guard lstat(file, &st) == 0 else {
            throw JournalError(.keys, "cannot read the master key file \(file): \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw JournalError(.keys, "the master key file \(file) is not a regular file (a link or a directory is refused)")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw JournalError(.keys, "the master key file \(file) is readable by group or others (mode \(String(st.st_mode & 0o777, radix: 8))): make it owner-only with `chmod 600 \(file)`")
        }
        let keyDirectory = Self.directory(of: file)
        for path in dataPaths where Self.directory(of: path) == keyDirectory {
            throw JournalError(.keys, "the master key file \(file) is in the same directory as \(path): a copy of that directory would hold everything needed to read it; keep the key elsewhere")
        }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
              let bytes = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32
        else { throw JournalError(.keys, "the master key file \(file) does not hold 64 hexadecimal digits") }
        return SymmetricKey(data: bytes)
    }

    /// The directory a file is in, with links resolved (the file itself need not exist).
    static func directory(of path: String) -> String {
        let parent = (path as NSString).deletingLastPathComponent
        let dir = parent.isEmpty ? "." : parent
        return PrivateFile.realPath(dir) ?? dir
    }

    /// Creates a new master key file (32 random bytes, hex), readable and writable by its owner
    /// only; refuses to overwrite anything or to write through a link.
    public static func createKeyFile(at path: String, entropy: Entropy = .system) throws {
        let text = Array((Hex.encode(entropy.bytes(32)) + "\n").utf8)
        try PrivateFile.create(path, contents: text)
    }
}
