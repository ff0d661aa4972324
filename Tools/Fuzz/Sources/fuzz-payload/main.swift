import FuzzDriver
@_spi(Fuzzing) import LetheEvents

// A payload's plaintext, its first byte picking the type (`EventsFuzzing.payload`).
runFuzzer("fuzz-payload", EventsFuzzing.payload)
