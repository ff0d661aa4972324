import CFuzzer

#if canImport(Glibc)
import Glibc
#endif

/// The check of the running target: libFuzzer's callback is a C function, which captures nothing.
nonisolated(unsafe) private var currentCheck: ([UInt8]) -> String? = { _ in nil }

/// Hands the command line to libFuzzer's driver, which runs `check` on every input. A check that
/// finds something wrong traps, naming `target`; libFuzzer reports that as a crash and saves the
/// input.
public func runFuzzer(_ target: String, _ check: @escaping ([UInt8]) -> String?) -> Never {
    currentCheck = { bytes in check(bytes).map { "\(target): \($0)" } }
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        if let problem = currentCheck(Array(UnsafeBufferPointer(start: data, count: size))) {
            fatalError(problem)
        }
        return 0
    })
}
