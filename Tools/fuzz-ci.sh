#!/usr/bin/env bash
# CI's fuzzing step: every fuzz target for a short, bounded time (20 s each by default,
# LETHE_FUZZ_SECONDS to change it), on its seed corpus. About two minutes with the runs, plus the
# first build of the targets (swift-crypto included, with sanitizers). Exits non-zero on any
# finding; the log shows the input in base64 (see Tools/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
Tools/setup.sh
exec Tools/fuzz.sh all "${LETHE_FUZZ_SECONDS:-20}"
