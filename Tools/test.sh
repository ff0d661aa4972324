#!/usr/bin/env bash
# The test command: set-up, build (tests and tools, which the CLI and crash tests run), a
# throwaway PostgreSQL server, every test, then every fuzz target for a short bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
Tools/setup.sh
swift build --build-tests
# The tests of the PostgreSQL backend run against a throwaway server (its own folder, socket and
# port; stopped and removed whatever the outcome).
LETHE_TEST_POSTGRES=$(Tools/pg.sh start .build/pg-test)
export LETHE_TEST_POSTGRES
# (A standby a test started and could not stop, killed say, goes first.)
trap 'for d in .build/pg-standby-*; do if [ -d "$d" ]; then Tools/pg.sh stop "$d"; fi; done; Tools/pg.sh stop .build/pg-test' EXIT
swift test --skip-build "$@"
# The decoders under libFuzzer, each target for a short bounded time on its seed corpus
# (Tools/fuzz.sh; LETHE_FUZZ_SECONDS, 20 by default; LETHE_FUZZ_SECONDS=0 skips it).
if [ "${LETHE_FUZZ_SECONDS:-20}" != 0 ]; then Tools/fuzz-ci.sh; fi
