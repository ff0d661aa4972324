import CFuzzer
@_spi(Fuzzing) import LetheEvents

#if canImport(Glibc)
import Glibc
#endif

// A payload's plaintext, its first byte picking the type (`EventsFuzzing.payload`).
// libFuzzer's driver runs this on every input; a violated check traps, which libFuzzer reports
// as a crash, saving the input.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    if let problem = EventsFuzzing.payload(Array(UnsafeBufferPointer(start: data, count: size))) {
        fatalError("fuzz-payload: \(problem)")
    }
    return 0
})
