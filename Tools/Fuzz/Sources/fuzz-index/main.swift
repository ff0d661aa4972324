import FuzzDriver
@_spi(Fuzzing) import LetheJournal

// A chunk of the event id index after its key, and a run of the block index (`JournalFuzzing.indexRun`).
runFuzzer("fuzz-index", JournalFuzzing.indexRun)
