import FuzzDriver
@_spi(Fuzzing) import LetheJournal

// A block's decompressed content (`JournalFuzzing.blockContent`).
runFuzzer("fuzz-block", JournalFuzzing.blockContent)
