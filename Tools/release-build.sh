#!/usr/bin/env bash
# The one release build the demo and the benchmarks share: every product in one invocation (so
# that `lethe-gen`, which needs only the journal, compiles beside the modules `lethe` needs one
# after the other), without debug info (`-g0` for BoringSSL's C, whose `-g` costs about a
# seventh of its compile; `-gnone` for Swift). Symbols stay, so profilers still name functions.
# Every script that builds for release goes through here: other flags would rebuild everything.
# Extra arguments go to `swift build` (e.g. --scratch-path DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
exec swift build -c release -Xcc -g0 -Xswiftc -gnone "$@"
