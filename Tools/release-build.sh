#!/usr/bin/env bash
# The one release build the demo and the benchmarks share: the products they run (`lethe`,
# `lethe-gen`, `lethe-bench`), without debug info (`-g0` for BoringSSL's C, whose `-g` costs
# about a seventh of its compile; `-gnone` for Swift). Symbols stay, so profilers still name
# functions. Every script that builds for release goes through here: other flags would rebuild
# everything. With `--product P`, only P. Extra arguments go to `swift build` (e.g.
# --scratch-path DIR).
#
# Embedded only (`--disable-default-traits`): without the PostgreSQL trait `lethe` does not link
# the PostgreSQL backend, whose postgres-nio, NIO and second BoringSSL take a release build from
# nothing from about 5 to about 13 minutes on 2 cores. `--with-postgres` (first argument) keeps
# the trait, for runs against a server. Product by product rather than the whole package, which
# includes the backend's target either way.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release -Xcc -g0 -Xswiftc -gnone)
if [ "${1:-}" = --with-postgres ]; then
    shift
else
    flags+=(--disable-default-traits)
fi
for arg in "$@"; do
    if [ "$arg" = --product ]; then exec swift build "${flags[@]}" "$@"; fi
done
for product in lethe lethe-gen lethe-bench; do
    swift build "${flags[@]}" --product "$product" "$@"
done
