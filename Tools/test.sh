#!/usr/bin/env bash
# The test command: set-up, build (tests and tools, which the CLI and crash tests run), then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
Tools/setup.sh
swift build --build-tests
swift test --skip-build "$@"
