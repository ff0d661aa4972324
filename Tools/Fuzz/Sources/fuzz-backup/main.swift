import CFuzzer
@_spi(Fuzzing) import LetheJournal

#if canImport(Glibc)
import Glibc
#endif

// A backup's content stream, and header (`JournalFuzzing.backupStream`).
// libFuzzer's driver runs this on every input; a violated check traps, which libFuzzer reports
// as a crash, saving the input.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    if let problem = JournalFuzzing.backupStream(Array(UnsafeBufferPointer(start: data, count: size))) {
        fatalError("fuzz-backup: \(problem)")
    }
    return 0
})
