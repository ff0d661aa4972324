#!/usr/bin/env bash
# A throwaway local PostgreSQL server for the tests, the demo and the benchmarks: its own data
# directory under the build folder, a Unix socket there, a free loopback port, password
# authentication over TCP. Nothing outside the folder is touched and nothing is left behind:
# `stop` removes the folder.
#
#   Tools/pg.sh start [DIR]   starts one (default DIR: .build/pg); prints its URL, also in DIR/url
#   Tools/pg.sh url [DIR]     prints the URL of the running one
#   Tools/pg.sh restart [DIR] stops it and starts it again (fast shutdown: sessions are cut)
#   Tools/pg.sh stop [DIR]    stops it and removes DIR
#   Tools/pg.sh standby DIR URL [SLOT]
#                             starts a hot standby in DIR of the server at URL (one of this
#                             script's), streaming from it, with hot_standby_feedback on: what
#                             keeps old row versions on the server for a query on the standby
#                             (through a replication slot made on the server when SLOT is given);
#                             prints its URL (the same user and database) once the server has
#                             the standby's first feedback; `stop DIR` ends it and drops its slot
#
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user that
# Debian's package makes (or `nobody`), and owns only DIR's data. The URL names a database
# `lethe` and a user `lethe` whose password is random, made at start and asked for on the socket
# and over TCP alike; DIR is owner-only. A second database, `lethe_keys`, is for key stores (the
# same URL with `/lethe_keys` for `/lethe`): a key store never shares its journal's database.
# Prepared transactions are allowed (a few), for the test that one holds a purge's old row
# versions back.
set -euo pipefail
cd "$(dirname "$0")/.."
command=${1:-}
dir=$(realpath -m "${2:-.build/pg}")
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$bin" ] || { echo "pg.sh: PostgreSQL's server is not installed (Tools/setup.sh installs it)" >&2; exit 1; }

# The user the server runs as when this script runs as root.
server_user() {
    if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$(server_user)" -- "$@"
    else
        "$@"
    fi
}

# DIR, made just now, handed to the server's user.
own_dir() {
    if [ "$(id -u)" = 0 ]; then chown -R "$(server_user)" "$dir"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

umask 077
case "$command" in
start)
    if [ -f "$dir/url" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        cat "$dir/url"
        exit 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir/run"
    port=$(free_port)
    password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    printf '%s\n' "$password" > "$dir/password"
    own_dir
    as_owner "$bin/initdb" -D "$dir/data" -U lethe --pwfile="$dir/password" --auth=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$dir/password"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/run -c max_connections=100 -c max_prepared_transactions=4 -c fsync=on" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner env PGPASSWORD="$password" "$bin/createdb" -h "$dir/run" -p "$port" -U lethe lethe
    # A second database for key stores: a key store never shares its journal's database.
    as_owner env PGPASSWORD="$password" "$bin/createdb" -h "$dir/run" -p "$port" -U lethe lethe_keys
    url="postgres://lethe:$password@127.0.0.1:$port/lethe"
    (umask 077; printf '%s\n' "$url" > "$dir/url")
    echo "$url"
    ;;
url)
    cat "$dir/url"
    ;;
standby)
    primary=${3:?usage: Tools/pg.sh standby DIR PRIMARY_URL [SLOT]}
    slot=${4:-}
    rm -rf "$dir"
    mkdir -p "$dir/run"
    # (Kept for `stop`, which drops the slot: left, it would hold the server's old versions for ever.)
    (umask 077; printf '%s\n' "$primary" > "$dir/primary"; if [ -n "$slot" ]; then printf '%s\n' "$slot" > "$dir/slot"; fi)
    port=$(free_port)
    own_dir
    # (-R: the copy starts as a standby of the server it was taken from.)
    as_owner "$bin/pg_basebackup" -d "$primary" -D "$dir/data" -R -X stream -c fast ${slot:+-C -S "$slot"} >"$dir/basebackup.log" 2>&1 \
        || { cat "$dir/basebackup.log" >&2; exit 1; }
    # (A standby allows at least as many prepared transactions as its server: `start`'s four.)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/run -c max_connections=100 -c max_prepared_transactions=4 -c hot_standby=on -c hot_standby_feedback=on -c wal_receiver_status_interval=1" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    url=$(printf '%s' "$primary" | sed -E "s#@([^:/]+):[0-9]+/#@\1:$port/#")
    (umask 077; printf '%s\n' "$url" > "$dir/url")
    # Ready once the server has the standby's first feedback: until then nothing on the server
    # holds old row versions back for the standby's queries (they may be removed, and a query on
    # the standby that still sees them is cancelled when the removal is replayed). Through a slot
    # the feedback is the slot's xmin; without one, the WAL sender's.
    if [ -n "$slot" ]; then
        fed="SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active AND xmin IS NOT NULL"
    else
        fed="SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND backend_xmin IS NOT NULL"
    fi
    for _ in $(seq 300); do
        [ "$(psql "$primary" -X -q -At -c "$fed" 2>/dev/null || echo 0)" -ge 1 ] && break
        sleep 0.2
    done
    [ "$(psql "$primary" -X -q -At -c "$fed" 2>/dev/null || echo 0)" -ge 1 ] \
        || { echo "pg.sh: the standby in $dir sent no feedback to its server within 60 s" >&2; cat "$dir/server.log" >&2; exit 1; }
    echo "$url"
    ;;
restart)
    # Same port, socket and password: what a server restart looks like to its clients.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    ;;
stop)
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/slot" ]; then
        psql "$(cat "$dir/primary")" -X -q -At -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$(cat "$dir/slot")'" >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: Tools/pg.sh start|url|restart|stop [DIR] | standby DIR URL [SLOT]" >&2
    exit 2
    ;;
esac
