import FuzzDriver
@_spi(Fuzzing) import LetheJournal

// A backup's content stream, and header (`JournalFuzzing.backupStream`).
runFuzzer("fuzz-backup", JournalFuzzing.backupStream)
