#!/usr/bin/env bash
# The one release build the demo and the benchmarks share: the products they run (`lethe`,
# `lethe-gen`, `lethe-bench`), without debug info (`-g0` for BoringSSL's C, whose `-g` costs
# about a seventh of its compile; `-gnone` for Swift). Symbols stay, so profilers still name
# functions. Every script that builds for release goes through here: other flags would rebuild
# everything. With `--product P`, only P. Extra arguments go to `swift build` (e.g.
# --scratch-path DIR).
#
# Product by product rather than the whole package: the whole package includes the PostgreSQL
# backend (`LethePostgres`) and its NIO stack, which the embedded demo does not need.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release -Xcc -g0 -Xswiftc -gnone)
for arg in "$@"; do
    if [ "$arg" = --product ]; then exec swift build "${flags[@]}" "$@"; fi
done
for product in lethe lethe-gen lethe-bench; do
    swift build "${flags[@]}" --product "$product" "$@"
done
