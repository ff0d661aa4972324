#!/usr/bin/env bash
# The test command: set-up, build (tests and tools, which the CLI and crash tests run), every
# test, then every fuzz target for a short bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
Tools/setup.sh
swift build --build-tests
swift test --skip-build "$@"
# The decoders under libFuzzer, each target for a short bounded time on its seed corpus
# (Tools/fuzz.sh; LETHE_FUZZ_SECONDS, 20 by default; LETHE_FUZZ_SECONDS=0 skips it).
if [ "${LETHE_FUZZ_SECONDS:-20}" != 0 ]; then Tools/fuzz-ci.sh; fi
