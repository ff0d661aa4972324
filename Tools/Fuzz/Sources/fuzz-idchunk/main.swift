import FuzzDriver
@_spi(Fuzzing) import LetheJournal

// A chunk of the event id index, after its key (`JournalFuzzing.idChunk`).
runFuzzer("fuzz-idchunk", JournalFuzzing.idChunk)
