#!/usr/bin/env bash
# Installs what Lethe needs on a fresh Debian machine with Swift (as root): the SQLite and LZ4
# development packages, and the sqlite3 and lz4 command-line tools the tests use to inspect
# journals as an investigator would, Chromium, in which the tests open the HTML reports, and
# PostgreSQL's server, which the tests of the PostgreSQL backend start a throwaway copy of.
# Does nothing when everything is already there.
set -euo pipefail
need=()
dpkg -s libsqlite3-dev >/dev/null 2>&1 || need+=(libsqlite3-dev)
dpkg -s liblz4-dev >/dev/null 2>&1 || need+=(liblz4-dev)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v lz4 >/dev/null 2>&1 || need+=(lz4)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# The PostgreSQL backend is tested against a throwaway server of Debian's (Tools/pg.sh).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# The retention report's HTML page is checked in a real headless browser.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
