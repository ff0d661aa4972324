import FuzzDriver
@_spi(Fuzzing) import LetheEvents

// One NDJSON line, parsed, validated, encoded and exported (`EventsFuzzing.ndjsonLine`).
runFuzzer("fuzz-ndjson", EventsFuzzing.ndjsonLine)
