#!/usr/bin/env bash
# Fuzzes Lethe's decoders with libFuzzer (the Swift toolchain's -sanitize=fuzzer, with AddressSanitizer).
#
#   Tools/fuzz.sh TARGET SECONDS   run one target for SECONDS on a copy of its seed corpus
#   Tools/fuzz.sh all SECONDS      run every target, one after the other, SECONDS each
#   Tools/fuzz.sh TARGET FILE      run one input once (to reproduce a finding)
#   Tools/fuzz.sh build            only build the targets
#
# Targets: ndjson (a line parsed and validated), payload (the payload codec), block (the block
# decoder), lz4 (a stored LZ4 frame, then its block), backup (a backup's content stream and header),
# index (a chunk of the event id index, a run of the block index).
# Each run starts from Fixtures/fuzz/TARGET (copied: the fixtures are never written) and prints the
# executions it ran. A crash, a failed check, a timeout (10 s per input) or memory past 2 GB is a
# finding: its input is kept under .build-fuzz/findings/TARGET/ and printed in base64, and the
# script exits non-zero. Put the input in Fixtures/fuzz/TARGET/ and write a regression test for it
# in Tests/LetheTests/CorruptInputTests.swift.
#
# The build (release, into .build-fuzz) is skipped with LETHE_FUZZ_NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(ndjson payload block lz4 backup index)
scratch=.build-fuzz

usage() {
    sed -n '4,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

build() {
    # lld: gold (the default here) stops with an internal error linking the instrumented targets.
    # No manifest caching: the engine is a dependency here, and a source file added to it since the
    # last build was left out of the cached plan.
    swift build -c release --package-path Tools/Fuzz --scratch-path "$scratch" --disable-build-manifest-caching \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld >&2
}

binary() { echo "$scratch/release/fuzz-$1"; }

# run TARGET SECONDS: prints "TARGET: N executions in S s, ..." and returns libFuzzer's status.
run() {
    local target=$1 seconds=$2
    local work findings log status executions
    work=$(mktemp -d "${TMPDIR:-/tmp}/lethe-fuzz-$target.XXXXXX")
    findings="$scratch/findings/$target"
    mkdir -p "$work/corpus" "$findings"
    cp Fixtures/fuzz/"$target"/* "$work/corpus/"
    log="$work/log"
    local dict=()
    [[ -f Tools/Fuzz/$target.dict ]] && dict=(-dict="Tools/Fuzz/$target.dict")
    set +e
    # (SWIFT_BACKTRACE: the Swift runtime's own crash handler trips AddressSanitizer; libFuzzer's prints the stack.)
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 "$(binary "$target")" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$findings/" "${dict[@]}" "$work/corpus" >"$log" 2>&1
    status=$?
    set -e
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [[ $status -eq 0 ]]; then
        echo "$target: ${executions:-?} executions in ${seconds} s, no finding (corpus $(ls "$work/corpus" | wc -l) inputs)"
        rm -rf "$work"
    else
        echo "$target: FINDING after ${executions:-?} executions (libFuzzer status $status); log $log"
        grep -E 'ERROR|Swift runtime failure|Fatal error|SUMMARY|Test unit written|fuzz-[a-z0-9]+: ' "$log" | head -12
        grep -E '^ +#[0-9]+ .*/Sources/' "$log" | head -6
        local input
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        if [[ -n $input && -f $input && $(stat -c %s "$input") -le 65536 ]]; then
            echo "input (base64): $(base64 -w0 "$input")"
        fi
    fi
    return $status
}

[[ $# -ge 1 ]] || usage
case $1 in
    build)
        build
        exit 0
        ;;
    all)
        selected=("${targets[@]}")
        ;;
    *)
        [[ " ${targets[*]} " == *" $1 "* ]] || { echo "unknown target $1 (targets: ${targets[*]})" >&2; exit 2; }
        selected=("$1")
        ;;
esac
[[ $# -eq 2 ]] || usage
[[ ${LETHE_FUZZ_NO_BUILD:-0} == 1 ]] || build

if [[ -f $2 ]]; then
    [[ ${#selected[@]} -eq 1 ]] || usage
    exec env SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 "$(binary "${selected[0]}")" "$2"
fi
[[ $2 =~ ^[0-9]+$ ]] || usage

failed=0
for target in "${selected[@]}"; do
    run "$target" "$2" || failed=1
done
exit $failed
