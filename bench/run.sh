#!/usr/bin/env bash
# make bench: Echelon's benchmark suite, end to end, in one command.
#
# Starts its own PostgreSQL cluster, SMTP sink, HTTP sink and Echelon's
# nginx, all on 127.0.0.1, sets an account up through the API, loads the
# deliveries with SQL, runs each measure with its anchor in the same run
# (alternating, BENCH_ROUNDS rounds), prints the table and every command,
# and stops everything. Raw results: bench/results/<date>/ (and
# bench/results/last).
#
# Settings (environment or make command line), defaults in bench/lib.sh:
#   BENCH_ROUNDS=3 BENCH_SECONDS=5 BENCH_CONNECTIONS=64 BENCH_POOL=16
#   BENCH_PORT=48080 BENCH_SINK_PORT=48081 BENCH_PG_PORT=45432
#   BENCH_SMTP_PORT=42525 BENCH_BIG=1 (item 4 with 10 million ahead too)
#   BENCH_ONLY="webhook feed"  run only these items (webhook feed blocked
#                              sending lag memory)
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tools/env.sh"
# shellcheck source=bench/lib.sh
. "$ECHELON_ROOT/bench/lib.sh"

SCRATCH=
MAIL_DIR=
PG_DATA=
PG_STARTED=no
LOCKER_PID=
SINK_PID=
ECHELON_PID=
HTTPSINK_PID=
: "${BENCH_ONLY:=webhook feed blocked sending lag memory}"

check_ready() {
    local name port tool
    [ "$(id -u)" = 0 ] || die "run as root (PostgreSQL is run as postgres)"
    [ -f "$ECHELON_MODULE" ] || die "$ECHELON_MODULE not found: make build"
    if ! command -v wrk > /dev/null; then
        say "installing Debian's wrk"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends wrk > /dev/null || die "could not install wrk"
    fi
    for tool in wrk "$PG_BIN/pgbench" "$NGINX_BIN" perl curl jq; do
        command -v "$tool" > /dev/null || die "$tool is missing"
    done
    for name in BENCH_PORT BENCH_SINK_PORT BENCH_PG_PORT BENCH_SMTP_PORT; do
        port=${!name}
        if port_in_use "$port"; then
            die "127.0.0.1:$port is already in use ($name): choose another"
        fi
    done
}

stop_all() {
    local status=$?
    trap '' INT TERM HUP
    [ -n "$LOCKER_PID" ] && stop_pid "$LOCKER_PID"
    stop_pid "$ECHELON_PID" TERM
    stop_pid "$HTTPSINK_PID" QUIT
    stop_pid "$SINK_PID"
    if [ "$PG_STARTED" = yes ]; then
        cp "$PG_DATA/postgresql.log" "$OUT/logs/" 2>/dev/null || true
        "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" stop || true
    fi
    [ -n "$SCRATCH" ] && rm -rf "$SCRATCH"
    [ -n "$MAIL_DIR" ] && rm -rf "$MAIL_DIR"
    exit "$status"
}

make_dirs() {
    local stamp
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    OUT=$BENCH_RESULTS/$stamp
    mkdir -p "$OUT/raw" "$OUT/logs" "$OUT/work"
    ln -sfn "$stamp" "$BENCH_RESULTS/last"
    : > "$OUT/commands.txt"
    : > "$OUT/results.tsv"
    SCRATCH=$(mktemp -d /tmp/echelon-bench.XXXXXX)
    chown postgres: "$SCRATCH"
    PG_DATA=$SCRATCH/pg
    # The SMTP sink's Maildir on tmpfs: the sink fsyncs each message, and
    # on disk that, not Echelon, would set the pace of items 3 and 4.
    MAIL_DIR=$(mktemp -d /dev/shm/echelon-bench-mail.XXXXXX)
}

# The module's sources that differ from the commit (others may be editing
# them while the bench builds).
changed_sources() {
    local files
    files=$(git -C "$ECHELON_ROOT" status --porcelain -- config \
            ngx_http_echelon_module.c src 2>/dev/null | awk '{ print $2 }' \
            | tr '\n' ' ')
    [ -n "$files" ] && echo ", with uncommitted changes in: $files"
}

machine() {
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "cpus: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
        echo "memory: $(awk '/^MemTotal:/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo)"
        echo "kernel: $(uname -sr)"
        echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
        echo "postgresql: $("$PG_BIN/postgres" --version)"
        echo "nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
        echo "wrk: $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f2)"
        echo "source: commit $(git -C "$ECHELON_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(changed_sources)"
        echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "settings: rounds=$BENCH_ROUNDS seconds=$BENCH_SECONDS connections=$BENCH_CONNECTIONS echelon_database_pool=$BENCH_POOL echelon_scheduler_batch=$BENCH_BATCH rows=$BENCH_ROWS"
    } > "$OUT/machine.txt"
}

setup() {
    local t0 t1
    start_postgres
    start_smtp_sink
    start_nginx sink.conf.in httpsink "$BENCH_SINK_PORT"
    start_nginx echelon.conf.in echelon "$BENCH_PORT"

    say "account through the API"
    "$BENCH_DIR/setup.pl" "http://127.0.0.1:$BENCH_PORT" "$BENCH_ADMIN_TOKEN" \
        > "$OUT/work/ids.sh"
    set -a
    # shellcheck disable=SC1091
    . "$OUT/work/ids.sh"
    set +a

    say "loading $BENCH_ROWS deliveries with SQL"
    t0=$(date +%s.%N)
    psql_bench -v account="$ACCOUNT" -f "$BENCH_DIR/sql/contacts.sql"
    bulk_load 1 "$BENCH_ROWS"
    psql_bench -c "VACUUM ANALYZE"
    t1=$(date +%s.%N)
    LOAD_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    echo "load of $BENCH_ROWS deliveries (INSERT ... SELECT generate_series, indexes built after, VACUUM ANALYZE): $LOAD_SECONDS s" >> "$OUT/machine.txt"
    say "loaded in $LOAD_SECONDS s"
}

main() {
    local t0 item
    t0=$(date +%s)
    check_ready
    make_dirs
    trap stop_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    machine
    setup

    for item in $BENCH_ONLY; do
        # shellcheck disable=SC1090
        . "$BENCH_DIR/measure-$item.sh"
        "measure_$item"
    done

    {
        echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "bench/run.sh wall time: $(( $(date +%s) - t0 )) s"
    } >> "$OUT/machine.txt"
    "$BENCH_DIR/table.pl" "$OUT" | tee "$OUT/table.md"
}

main "$@"
