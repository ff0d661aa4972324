import CFuzzer
@_spi(Fuzzing) import LetheEvents

#if canImport(Glibc)
import Glibc
#endif

// One NDJSON line, parsed, validated, encoded and exported (`EventsFuzzing.ndjsonLine`).
// libFuzzer's driver runs this on every input; a violated check traps, which libFuzzer reports
// as a crash, saving the input.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    if let problem = EventsFuzzing.ndjsonLine(Array(UnsafeBufferPointer(start: data, count: size))) {
        fatalError("fuzz-ndjson: \(problem)")
    }
    return 0
})
