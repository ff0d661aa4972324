#!/usr/bin/env bash
# What users run, measured side by side with the peer (Python `eventsourcing`,
# ../shared/bench/peer_eventsourcing.py), on the same NDJSON files, in one run:
#
#   - two shapes of history with the same number of events: "many" accounts with a few events
#     each (20,000 accounts, ~16 events each, as an account service has) and "few" accounts
#     with many events each (1,000 accounts, ~320 each);
#   - for each, in rounds, the peer (import, replay, bytes) and then the `lethe` command
#     (`lethe import`, `lethe export > /dev/null`, `lethe verify`, journal + key store bytes),
#     interleaved so that the machine's drift hits both; the medians and the ratios are printed
#     as one table;
#   - then the in-process figures of `lethe-bench` on each file (single appends, rebuild,
#     retention, memory).
#
# Usage: Tools/bench.sh [ROUNDS] [--first-run] [--postgres | --only-postgres]
#   ROUNDS       rounds of peer and lethe on each shape (default 3; the medians are reported)
#   --first-run  also time the release build (Tools/release-build.sh) from nothing, in a scratch
#                folder of its own, the packages fetched again: what a fresh clone's demo waits for
#   --postgres   then the same side by side on PostgreSQL (a throwaway server, Tools/pg.sh): the
#                peer's PostgreSQL recorder against `lethe --journal postgres://...` on the
#                many-account history, and single appends with synchronous commit by 1 and by 4
#                writers at once (lethe-bench --postgres); builds lethe with the backend
#   --only-postgres  the PostgreSQL part alone
# LETHE_BENCH_EVENTS sets the number of events of each file (default 320,000).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
first_run=0
postgres=0
sqlite=1
for arg in "$@"; do
    case $arg in
        --first-run) first_run=1 ;;
        --postgres) postgres=1 ;;
        --only-postgres) postgres=1; sqlite=0 ;;
        [0-9]*) rounds=$arg ;;
        *) echo "usage: Tools/bench.sh [ROUNDS] [--first-run] [--postgres | --only-postgres]" >&2; exit 2 ;;
    esac
done
events=${LETHE_BENCH_EVENTS:-320000}
work=.build/bench
mkdir -p "$work"
Tools/setup.sh

rm -f "$work/first-run.txt"  # (a figure from another run is not this run's)
if [ "$first_run" = 1 ]; then
    rm -rf .build-first-run
    t0=$(date +%s.%N)
    Tools/release-build.sh --scratch-path .build-first-run >/dev/null
    t1=$(date +%s.%N)
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$t0" "$t1" > "$work/first-run.txt"
    rm -rf .build-first-run
fi

if [ "$sqlite" = 1 ]; then
    Tools/release-build.sh
else
    Tools/release-build.sh --with-postgres  # (the PostgreSQL part alone: built once, with the backend)
fi
bin=.build/release

declare -A accounts=([many]=20000 [few]=1000)
for shape in many few; do
    file=$work/$shape-$events.ndjson
    [ -f "$file" ] || "$bin/lethe-gen" --accounts "${accounts[$shape]}" --events "$events" --seed 7 --output "$file"
done

peer=${PEER:-../shared/bench/peer_eventsourcing.py}
venv=.build/peer-venv
if [ ! -f "$peer" ]; then
    echo "the peer's script is not at $peer (set PEER): nothing to compare with" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q eventsourcing==9.5.6 cryptography
fi

# A master key for the run only.
LETHE_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export LETHE_MASTER_KEY
unset LETHE_MASTER_KEY_FILE

now() { date +%s.%N; }
results=$work/results.tsv
if [ "$sqlite" = 1 ]; then
: > "$results"
for round in $(seq "$rounds"); do
    for shape in many few; do
        file=$work/$shape-$events.ndjson
        n=$(wc -l < "$file")
        echo "== round $round, $shape: peer" >&2
        "$venv/bin/python" "$peer" "$file" --json > "$work/peer.json"
        python3 - "$work/peer.json" "$round" "$shape" >> "$results" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("\t".join([sys.argv[2], sys.argv[3], "peer", str(r["events"]), f'{r["import_eps"]:.0f}', f'{r["replay_eps"]:.0f}', "", f'{r["bytes_per_event"]:.1f}']))
EOF
        echo "== round $round, $shape: lethe" >&2
        journal=$work/$shape.lethe
        rm -f "$journal" "$journal"-* "$journal".keys*
        t0=$(now)
        "$bin/lethe" import "$file" --journal "$journal" >/dev/null
        t1=$(now)
        "$bin/lethe" export --journal "$journal" >/dev/null
        t2=$(now)
        "$bin/lethe" verify --journal "$journal" >/dev/null
        t3=$(now)
        bytes=$(cat "$journal" "$journal".keys "$journal"-wal "$journal".keys-wal 2>/dev/null | wc -c)
        python3 -c '
import sys
n, t0, t1, t2, t3, b = int(sys.argv[3]), *map(float, sys.argv[4:8]), int(sys.argv[8])
print("\t".join([sys.argv[1], sys.argv[2], "lethe", str(n), f"{n/(t1-t0):.0f}", f"{n/(t2-t1):.0f}", f"{n/(t3-t2):.0f}", f"{b/n:.1f}"]))
' "$round" "$shape" "$n" "$t0" "$t1" "$t2" "$t3" "$bytes" >> "$results"
    done
done

echo
echo "== $rounds rounds, peer and lethe interleaved; medians (events/s; bytes per event: journal + key store)"
python3 - "$results" "$work/first-run.txt" <<'EOF'
import sys, statistics, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def med(shape, who, col):
    v = [float(r[col]) for r in rows if r[1] == shape and r[2] == who and r[col]]
    return statistics.median(v) if v else None
def rng(shape, who, col):
    v = sorted(float(r[col]) for r in rows if r[1] == shape and r[2] == who and r[col])
    return f"{v[0]:,.0f}–{v[-1]:,.0f}" if len(v) > 1 else ""
print("| history | events | measure | peer | `lethe` | ratio | target |")
print("|---|---|---|---|---|---|---|")
for shape, label in (("many", "20,000 accounts"), ("few", "1,000 accounts")):
    n = next(r[3] for r in rows if r[1] == shape)
    imp_p, imp_l = med(shape, "peer", 4), med(shape, "lethe", 4)
    rd_p, rd_l = med(shape, "peer", 5), med(shape, "lethe", 5)
    b_p, b_l = med(shape, "peer", 7), med(shape, "lethe", 7)
    print(f"| {label} | {int(n):,} | import (`lethe import`) | {imp_p:,.0f} | {imp_l:,.0f} ({rng(shape, 'lethe', 4)}) | {imp_l/imp_p:.1f}× | ≥ 10× |")
    print(f"| | | full read (peer: replay; `lethe export > /dev/null`) | {rd_p:,.0f} | {rd_l:,.0f} ({rng(shape, 'lethe', 5)}) | {rd_l/rd_p:.1f}× | ≥ 5× |")
    print(f"| | | `lethe verify` | | {med(shape, 'lethe', 6):,.0f} | | |")
    print(f"| | | bytes per event | {b_p:.0f} | {b_l:.1f} | {b_p/b_l:.1f}× fewer | ≤ 100 |")
if os.path.exists(sys.argv[2]):
    print(f"\nfirst run: the release build (Tools/release-build.sh) from nothing took {open(sys.argv[2]).read().strip()} s")
EOF

echo
for shape in many few; do
    echo "== in process (lethe-bench), $shape"
    "$bin/lethe-bench" "$work/$shape-$events.ndjson" --repeat 1 --single 2000
done
fi

if [ "$postgres" = 1 ]; then
    echo "== PostgreSQL: lethe and lethe-bench with the backend, a throwaway server" >&2
    Tools/release-build.sh --with-postgres --product lethe >/dev/null
    Tools/release-build.sh --with-postgres --product lethe-bench >/dev/null
    "$venv/bin/python" -c "import psycopg" 2>/dev/null || "$venv/bin/pip" install -q "eventsourcing[postgres]==9.5.6"
    pgdir=.build/pg-bench
    # A fresh server: `start` would reuse one left running there, whose earlier work (tables made
    # and dropped, WAL, dirty buffers) would be measured along with this run's.
    Tools/pg.sh stop "$pgdir"
    url=$(Tools/pg.sh start "$pgdir")
    trap 'Tools/pg.sh stop "$pgdir"' EXIT
    pgresults=$work/results-postgres.tsv
    : > "$pgresults"
    file=$work/many-$events.ndjson
    n=$(wc -l < "$file")
    for round in $(seq "$rounds"); do
        echo "== round $round, many, PostgreSQL: peer" >&2
        "$venv/bin/python" "$peer" "$file" --json --postgres "$url" > "$work/peer.json"
        python3 - "$work/peer.json" "$round" >> "$pgresults" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("\t".join([sys.argv[2], "peer", str(r["events"]), f'{r["import_eps"]:.0f}', f'{r["replay_eps"]:.0f}', "", f'{r["bytes_per_event"]:.1f}']))
EOF
        echo "== round $round, many, PostgreSQL: lethe" >&2
        schema=bench_$round
        keys=$work/pg-$round.keys
        rm -f "$keys" "$keys"-* "$keys".views*
        PGOPTIONS="-c client_min_messages=warning" psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE"
        journal="$url?schema=$schema"
        t0=$(now)
        "$bin/lethe" import "$file" --journal "$journal" --keys "$keys" >/dev/null
        t1=$(now)
        "$bin/lethe" export --journal "$journal" --keys "$keys" >/dev/null
        t2=$(now)
        "$bin/lethe" verify --journal "$journal" --keys "$keys" >/dev/null
        t3=$(now)
        # As the peer counts its own: every table's total size (with its indexes and TOAST),
        # after a checkpoint; plus the key store file, which is Lethe's too.
        relations=$(psql "$url" -Atc "CHECKPOINT" -c "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = '$schema' AND c.relkind = 'r'" | tail -1)
        bytes=$((relations + $(cat "$keys" "$keys"-wal 2>/dev/null | wc -c)))
        python3 -c '
import sys
n, t0, t1, t2, t3, b = int(sys.argv[2]), *map(float, sys.argv[3:7]), int(sys.argv[7])
print("\t".join([sys.argv[1], "lethe", str(n), f"{n/(t1-t0):.0f}", f"{n/(t2-t1):.0f}", f"{n/(t3-t2):.0f}", f"{b/n:.1f}"]))
' "$round" "$n" "$t0" "$t1" "$t2" "$t3" "$bytes" >> "$pgresults"
        PGOPTIONS="-c client_min_messages=warning" psql "$url" -qc "DROP SCHEMA $schema CASCADE"
        rm -f "$keys" "$keys"-* "$keys".views*
    done
    echo
    echo "== PostgreSQL, $rounds rounds, peer and lethe interleaved; medians (events/s; bytes: relations + key store)"
    python3 - "$pgresults" <<'EOF'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def col(who, c): return [float(r[c]) for r in rows if r[1] == who and r[c]]
def med(who, c): return statistics.median(col(who, c))
def rng(who, c):
    v = sorted(col(who, c))
    return f" ({v[0]:,.0f}–{v[-1]:,.0f})" if len(v) > 1 else ""
n = int(rows[0][2])
print("| history | events | measure | peer (PostgreSQL recorder) | `lethe` on PostgreSQL | ratio | target |")
print("|---|---|---|---|---|---|---|")
print(f"| 20,000 accounts | {n:,} | import (`lethe import`) | {med('peer', 3):,.0f} | {med('lethe', 3):,.0f}{rng('lethe', 3)} | {med('lethe', 3)/med('peer', 3):.1f}× | ≥ 10× |")
print(f"| | | full read (peer: replay; `lethe export > /dev/null`) | {med('peer', 4):,.0f} | {med('lethe', 4):,.0f}{rng('lethe', 4)} | {med('lethe', 4)/med('peer', 4):.1f}× | ≥ 5× |")
print(f"| | | `lethe verify` | | {med('lethe', 5):,.0f} | | |")
print(f"| | | bytes per event | {med('peer', 6):.1f} | {med('lethe', 6):.1f} | {med('peer', 6)/med('lethe', 6):.1f}× fewer | ≥ 3× fewer |")
EOF
    echo
    echo "== PostgreSQL: single appends with synchronous commit, 1 writer and 4 at once (lethe-bench --postgres)"
    "$bin/lethe-bench" --postgres "$url" --keys "$work/pg-writers" --single 500
    rm -rf "$work/pg-writers"
fi
