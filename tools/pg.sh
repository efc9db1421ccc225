#!/usr/bin/env bash
# Controls one PostgreSQL cluster of Echelon's own, run as the postgres user.
#
#   tools/pg.sh DATADIR init PORT [--fast]   initdb once, (re)write settings
#   tools/pg.sh DATADIR start                start and wait until ready
#   tools/pg.sh DATADIR stop                 pg_ctl stop -m fast
#   tools/pg.sh DATADIR status               exit 0 when running
#   tools/pg.sh DATADIR port                 print the configured port
#   tools/pg.sh DATADIR createdb NAME        create a database if missing
#
# Run it as root. The cluster listens on 127.0.0.1 only, over TCP (no Unix
# socket), with trust authentication for loopback connections: a development
# and test default, not a production one. --fast turns fsync off (tests).
# start and stop are idempotent: starting a running cluster or stopping a
# stopped one succeeds.
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PG_BIN=$(pg_bindir)
PG_USER=postgres

# fd 9 holds the lock (take_lock): the server must not inherit it.
as_postgres() {
    (cd / && runuser -u "$PG_USER" -- "$@" 9>&-)
}

settings_file() {
    echo "$DATA/echelon.conf"
}

configured_port() {
    sed -n "s/^port = \([0-9]*\)$/\1/p" "$(settings_file)" 2>/dev/null
}

check_reachable() {
    local dir
    dir=$(dirname "$DATA")
    if ! runuser -u "$PG_USER" -- test -x "$dir"; then
        die "the $PG_USER user cannot reach $dir; choose a folder it can" \
            "traverse (for example under /tmp)"
    fi
}

write_settings() {
    local port=$1 fast=$2
    {
        echo "# Written by tools/pg.sh init; rewritten by each init."
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = ''"
        echo "timezone = 'UTC'"
        echo "log_timezone = 'UTC'"
        if [ "$fast" = yes ]; then
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
    } > "$(settings_file)"
    cat > "$DATA/pg_hba.conf" <<'HBA'
# Written by tools/pg.sh: loopback TCP only, trusted (development and tests).
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   127.0.0.1/32  trust
HBA
    chown "$PG_USER:" "$(settings_file)" "$DATA/pg_hba.conf"
    chmod 600 "$(settings_file)" "$DATA/pg_hba.conf"
}

do_init() {
    local port=${1:-} fast=no initdb_opts=()
    [ -n "$port" ] || die "init needs a port"
    [ "${2:-}" = "--fast" ] && fast=yes
    check_reachable

    if [ ! -f "$DATA/PG_VERSION" ]; then
        mkdir -p "$DATA"
        chown "$PG_USER:" "$DATA"
        chmod 700 "$DATA"
        [ "$fast" = yes ] && initdb_opts+=(--no-sync)
        as_postgres "$PG_BIN/initdb" -D "$DATA" -U "$PG_USER" --auth=trust \
            -E UTF8 --locale=C "${initdb_opts[@]}" > "$DATA.initdb.log" 2>&1 \
            || { cat "$DATA.initdb.log" >&2; die "initdb failed"; }
        rm -f "$DATA.initdb.log"
        echo "include_if_exists = 'echelon.conf'" >> "$DATA/postgresql.conf"
    fi
    write_settings "$port" "$fast"
}

is_running() {
    [ -f "$DATA/PG_VERSION" ] &&
        as_postgres "$PG_BIN/pg_ctl" -D "$DATA" status > /dev/null 2>&1
}

do_start() {
    [ -f "$DATA/PG_VERSION" ] || die "no cluster in $DATA (run init first)"
    if is_running; then
        return
    fi
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$DATA" -l "$DATA/postgresql.log" \
            -w -t 60 start > /dev/null; then
        tail -n 20 "$DATA/postgresql.log" >&2 || true
        die "PostgreSQL did not start (log: $DATA/postgresql.log)"
    fi
}

do_stop() {
    if ! is_running; then
        return
    fi
    as_postgres "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop > /dev/null
}

do_createdb() {
    local name=${1:-} port exists
    [ -n "$name" ] || die "createdb needs a name"
    port=$(configured_port)
    exists=$("$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres \
             -XtAq -v name="$name" \
             <<<"SELECT 1 FROM pg_database WHERE datname = :'name'")
    if [ "$exists" != 1 ]; then
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" "$name"
    fi
}

# start, stop and init wait for each other: a suite may start the cluster
# in the background while the test run is being stopped.
take_lock() {
    exec 9> "$DATA.ctl-lock"
    flock -w 120 9 || echo "pg.sh: $DATA.ctl-lock still held after 120 s;" \
                           "going on without it" >&2
}

main() {
    [ $# -ge 2 ] || die "usage: pg.sh DATADIR init PORT [--fast]|start|stop|status|port|createdb NAME"
    [ "$(id -u)" = 0 ] || die "run as root (it switches to $PG_USER itself)"
    case $1 in
        /*) DATA=$1 ;;
        *)  DATA=$PWD/$1 ;;
    esac
    local action=$2
    shift 2
    case $action in
        init)     take_lock; do_init "$@" ;;
        start)    take_lock; do_start ;;
        stop)     take_lock; do_stop ;;
        status)   is_running ;;
        port)     configured_port ;;
        createdb) do_createdb "$@" ;;
        *)        die "unknown action '$action'" ;;
    esac
}

main "$@"
