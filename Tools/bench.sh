#!/usr/bin/env bash
# Benchmarks Lethe and the peer (Python eventsourcing, ../shared/bench/peer_eventsourcing.py) side
# by side on the same generated NDJSON file, in one run. Usage: Tools/bench.sh [EVENTS] [ACCOUNTS]
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
accounts=${2:-10000}
Tools/setup.sh
swift build -c release --product lethe-bench
swift build -c release --product lethe-gen
file=.build/bench-$events.ndjson
[ -f "$file" ] || .build/release/lethe-gen --accounts "$accounts" --events "$events" --seed 7 --output "$file"
peer=${PEER:-../shared/bench/peer_eventsourcing.py}
venv=.build/peer-venv
if [ -f "$peer" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q eventsourcing==9.5.6 cryptography
    fi
    echo "== peer (eventsourcing, SQLite, zlib, AES)"
    "$venv/bin/python" "$peer" "$file"
else
    echo "== peer script not found at $peer: skipped"
fi
echo "== lethe"
.build/release/lethe-bench "$file" --single 5000
