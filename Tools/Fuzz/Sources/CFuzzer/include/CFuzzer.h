#ifndef LETHE_CFUZZER_H
#define LETHE_CFUZZER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt, with `-sanitize=fuzzer`): parses the command line and runs
/// `callback` on every input. The targets call it from their own `main`, which SwiftPM requires
/// of an executable (it links `main` to the module's entry point), instead of libFuzzer's.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
