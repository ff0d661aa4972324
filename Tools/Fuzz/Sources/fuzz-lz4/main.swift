import FuzzDriver
@_spi(Fuzzing) import LetheJournal

// A stored block's LZ4 frame, then its content (`JournalFuzzing.blockFrame`).
runFuzzer("fuzz-lz4", JournalFuzzing.blockFrame)
