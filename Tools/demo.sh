#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set-up, a release build, a realistic generated
# workload (with a few deliberately bad lines), its import, verification, a look at one account,
# and a summary; at the end, two instances sharing one PostgreSQL journal while a third process
# follows it. Everything it writes goes to ./out (override with LETHE_DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
Tools/setup.sh
# One release build of the products it runs (Tools/release-build.sh): about 5 minutes from nothing on
# 2 cores, most of it swift-crypto's BoringSSL; a minute or less once built.
Tools/release-build.sh
bin=.build/release
out=${LETHE_DEMO_DIR:-out}
rm -rf "$out" && mkdir -p "$out"
journal="$out/demo.lethe"
# The master key never lives beside the data: a directory of its own, outside $out.
secrets=${LETHE_DEMO_SECRETS:-$out.secrets}
rm -rf "$secrets" && mkdir -p "$secrets" && chmod 700 "$secrets"
echo "== a master key, made explicitly and kept apart from the data"
"$bin/lethe" keys init "$secrets/master.key" | sed 's/^/   /'
export LETHE_MASTER_KEY_FILE="$secrets/master.key"
unset LETHE_MASTER_KEY

echo "== generating a year of history for 2,000 accounts (with 10 bad lines, one of each kind)"
"$bin/lethe-gen" --accounts 2000 --events 200000 --seed 2026 --bad 10 --output "$out/history.ndjson"

echo "== importing (each rejected line is reported; the rest is kept)"
set +e
"$bin/lethe" import "$out/history.ndjson" --journal "$journal" 2> "$out/rejections.txt"
status=$?
set -e
sed 's/^/   /' "$out/rejections.txt"
echo "   (import exit status $status: non-zero because lines were rejected)"

echo "== verifying every block and the hash chain"
"$bin/lethe" verify --journal "$journal"

# Reads of personal data are recorded as accesses; the history runs to the end of 2026, so the
# investigator reads "now" = mid-January 2027.
now=2027-01-15T09:00:00Z
account=$(head -1 "$out/history.ndjson" | sed 's/.*"account":"\([^"]*\)".*/\1/')
echo "== $account as of 1 July 2026 (read by staff_07 for a compliance review, recorded as an access)"
"$bin/lethe" state --journal "$journal" --account "$account" --at 2026-07-01T00:00:00Z \
    --actor staff_07 --reason "compliance review" --ip 198.51.100.7 --now "$now"
echo "== the first events of its timeline, decrypted"
"$bin/lethe" replay --journal "$journal" --account "$account" --until 2026-03-01T00:00:00Z \
    --actor staff_07 --reason "compliance review" --ip 198.51.100.7 --now "$now" | head -5
echo "== the two reads above, as the journal recorded them"
"$bin/lethe" export --journal "$journal" | grep '"AccountAccessed"' | grep '"staff_07"' | grep "$now"

echo "== staff accesses to $account, judged (authorized: a ticket it had opened, or an open legal case)"
"$bin/lethe" access-log --journal "$journal" --account "$account" | tail -6
echo "== the customer's own copy: everything held about $account, as a self-contained page (recorded as an access)"
"$bin/lethe" subject-report --journal "$journal" --account "$account" --format html --output "$out/subject-report.html" \
    --actor support_02 --reason "subject access request" --now "$now"
"$bin/lethe" subject-report --journal "$journal" --account "$account" --actor support_02 --reason "subject access request" \
    --now "$now" --output "$out/subject-report.json"
grep -o '"processor":"[^"]*","categories":\[[^]]*\]' "$out/subject-report.json" | sed 's/^/   /'
grep -o '"scheduled_purges":.*' "$out/subject-report.json" | sed 's/^/   /'
echo "   $out/subject-report.html"
echo "== the read models, rebuilt from the journal alone, equal the ones caught up along the way"
"$bin/lethe" rebuild --journal "$journal" --check
"$bin/lethe" rebuild --journal "$journal"
echo "== retention as of $now: the dry run (changes nothing), also as JSON and as an HTML page"
"$bin/lethe" retention dry-run --journal "$journal" --as-of "$now" --horizon 30 | tail -1 | sed 's/^/   /'
"$bin/lethe" retention dry-run --journal "$journal" --as-of "$now" --horizon 30 --format json --output "$out/retention.json"
"$bin/lethe" retention dry-run --journal "$journal" --as-of "$now" --horizon 30 --format html --output "$out/retention.html"
echo "   $out/retention.json, $out/retention.html"
# A copy of the journal taken before the run, as a VM snapshot or a careless `cp` would.
cp "$journal" "$out/before-run.lethe"
[ -f "$journal-wal" ] && cp "$journal-wal" "$out/before-run.lethe-wal"
echo "== the scheduler's run at $now: every due, unheld obligation executed, raw records past their windows expired"
"$bin/lethe" retention run --journal "$journal" --now "$now" | sed 's/^/   /'
echo "== run again at the same time: nothing more"
"$bin/lethe" retention run --journal "$journal" --now "$now" | sed 's/^/   /'
"$bin/lethe" verify --journal "$journal" | cut -c1-100 | sed 's/^/   /'
# (awk reads to the end: a reader that stops early would kill the export with SIGPIPE)
purged=$("$bin/lethe" export --journal "$journal" | awk '/"type":"AccountPurged"/ && !found { found = 1; print }' | sed 's/.*"account":"\([^"]*\)".*/\1/')
echo "== $purged was purged; what the journal still says about it (ids, types, times, the engine's events):"
"$bin/lethe" export --journal "$journal" --account "$purged" | tail -4 | cut -c1-160 | sed 's/^/   /'
purged_email=$(grep -m1 "\"AccountSignedUp\",\"account\":\"$purged\"" "$out/history.ndjson" | sed 's/.*"email":"\([^"]*\)".*/\1/')
if grep -a -q -F "$purged_email" "$journal"* ; then
    echo "   FOUND $purged's e-mail address in a file"; exit 1
else
    echo "   $purged's e-mail address is in none of the engine's files (journal, WAL, keys, read models)"
fi
echo "== the copy taken before the run, put forward with the live key store: refused as a rollback, and the purged data is not in it"
set +e
"$bin/lethe" export --journal "$out/before-run.lethe" --keys "$journal.keys" > "$out/before-run.ndjson" 2> "$out/before-run.err"
status=$?
set -e
sed 's/^/   /' "$out/before-run.err"
if [ "$status" = 0 ]; then
    echo "   the old copy was read as if it were the journal"; exit 1
fi
if grep -q -a -F "$purged_email" "$out/before-run.lethe" "$out/before-run.ndjson" 2>/dev/null \
    || { [ -f "$out/before-run.lethe-wal" ] && grep -q -a -F "$purged_email" "$out/before-run.lethe-wal"; }; then
    echo "   FOUND $purged's e-mail address in the old copy"; exit 1
fi
echo "   (exit status $status) and $purged's e-mail address is nowhere in the copy's bytes: sealed under keys the run destroyed"
rm -f "$out/before-run.lethe" "$out/before-run.lethe-wal" "$out/before-run.ndjson" "$out/before-run.err"
"$bin/lethe" retention dry-run --journal "$journal" --as-of "$now" --horizon 30 --format html --output "$out/retention-after-run.html"
echo "   after the run: $out/retention-after-run.html (with each purge's delay after its due time)"
echo "== an encrypted backup, what it says of itself (no key needed), and a restore verified before it is written"
"$bin/lethe" backup create "$out/demo.backup" --journal "$journal" --now "$now" | sed 's/^/   /'
"$bin/lethe" backup inspect "$out/demo.backup" | sed 's/^/   /'
"$bin/lethe" backup restore "$out/demo.backup" --journal "$out/restored.lethe" --keys "$journal.keys" --now "$now" | sed 's/^/   /'
"$bin/lethe" verify --journal "$out/restored.lethe" --keys "$journal.keys" | cut -c1-100 | sed 's/^/   /'
echo "== active accounts not yet told of policy version 2026-06"
"$bin/lethe" policy-notices --journal "$journal" --version 2026-06 | sed 's/"pending":\[[^]]*\]/"pending":[…]/'
echo "== what is on disk (every file owner-only; the master key elsewhere)"
ls -l "$journal" "$journal.keys" "$journal.views" "$out/demo.backup" | awk '{print "   " $1 "  " $5 " bytes  " $9}'
echo "   NDJSON: $(wc -c < "$out/history.ndjson") bytes; master key: $LETHE_MASTER_KEY_FILE"
email=$(head -1 "$out/history.ndjson" | sed 's/.*"email":"\([^"]*\)".*/\1/')
if grep -a -q -F "$email" "$journal" "$journal.keys" "$journal.views"; then
    echo "   FOUND the first customer's e-mail address in plain text"; exit 1
else
    echo "   the first customer's e-mail address appears nowhere in the journal, key store or read models files"
fi
echo "== rotating the master key: the key store re-wrapped online; then the old key is destroyed"
"$bin/lethe" keys init "$secrets/master-2.key" > /dev/null
"$bin/lethe" keys rotate --journal "$journal" --new-master-key "$secrets/master-2.key" | sed 's/^/   /'
rm -f "$secrets/master.key"
export LETHE_MASTER_KEY_FILE="$secrets/master-2.key"
"$bin/lethe" verify --journal "$journal" | cut -c1-100 | sed 's/^/   /'

echo "== several instances on one PostgreSQL journal (keys in a second database): two import at once while a third process follows; they share the read models"
# Everything above is the embedded default and needs no server. This part starts a throwaway one
# (Tools/pg.sh: its own folder, a loopback port, stopped at the end) and runs a `lethe` built with
# the PostgreSQL backend; its first build adds about 7 minutes (postgres-nio and its NIO stack).
echo "   (building lethe with the PostgreSQL backend)"
Tools/release-build.sh --with-postgres --product lethe > "$out/build-postgres.log" 2>&1 \
    || { cat "$out/build-postgres.log" >&2; exit 1; }
pgdir=.build/pg-demo
url=$(Tools/pg.sh start "$pgdir")
trap 'Tools/pg.sh stop "$pgdir"' EXIT
# The key store in a database of its own on the same server (never the journal's: a dump of the
# journal's database holds no key), so that the instances share nothing but the server.
pg=("--journal" "$url?schema=demo" "--keys" "${url%/lethe}/lethe_keys?schema=demo")
"$bin/lethe-gen" --accounts 1000 --events 40000 --seed 11 --output "$out/shared-history.ndjson"
# Two services' shares of the history, by account (each keeps its accounts' order).
awk -v a="$out/instance-a.ndjson" -v b="$out/instance-b.ndjson" \
    '{ match($0, /"account":"[^"]*"/); d = substr($0, RSTART + RLENGTH - 2, 1); print > ((d % 2) ? a : b) }' \
    "$out/shared-history.ndjson"
total=$(wc -l < "$out/shared-history.ndjson")
: | "$bin/lethe" import - "${pg[@]}" > /dev/null   # the journal's schema, made once
"$bin/lethe" follow "${pg[@]}" --count "$total" > "$out/followed.ndjson" &
follower=$!
"$bin/lethe" import "$out/instance-a.ndjson" "${pg[@]}" | sed 's/^/   instance A: /' &
a=$!
"$bin/lethe" import "$out/instance-b.ndjson" "${pg[@]}" | sed 's/^/   instance B: /' &
b=$!
wait "$a" "$b"
timeout 120 tail --pid="$follower" -f /dev/null || { echo "   the follower did not see every event" >&2; exit 1; }
echo "   the follower printed $(wc -l < "$out/followed.ndjson") headers (no data), woken by each commit; the first and the last:"
sed -n '1p;$p' "$out/followed.ndjson" | sed 's/^/   /'
awk -F'[:,]' '{ if ($2 != NR) { print "   GAP at line " NR; exit 1 } }' "$out/followed.ndjson"
echo "   sequence numbers 1 to $total, no gap, no repeat; the one chain both instances extended:"
"$bin/lethe" verify "${pg[@]}" | cut -c1-100 | sed 's/^/   /'
echo "   the read models, in the journal's database: both instances catch them up at once (one projects at a time)"
"$bin/lethe" views "${pg[@]}" --digest > "$out/views-a.txt" &
a=$!
"$bin/lethe" views "${pg[@]}" --digest > "$out/views-b.txt" &
b=$!
wait "$a" "$b"
cmp -s "$out/views-a.txt" "$out/views-b.txt" || { echo "   the instances read different read models" >&2; exit 1; }
echo "   both read the same rows (digest $(cut -c1-16 "$out/views-a.txt")…); a rebuild from the journal alone:"
"$bin/lethe" rebuild "${pg[@]}" --check | cut -c1-100 | sed 's/^/   /'
echo "== done: $out"
