#!/usr/bin/env bash
# Runs the Test::Nginx suites (make test) against services of their own:
# a throwaway PostgreSQL cluster and the SMTP sink in test mode, both in a
# scratch folder that is removed afterwards. Exits with prove's status.
#
# Settings (environment or make command line):
#   TEST_FILES             what prove runs (default t/), e.g. t/webhooks.t
#   TEST_NGINX_LIB         a folder with upstream Test::Nginx, used instead
#                          of the bundled runner in t/lib
#   TEST_NGINX_PG_PORT     PostgreSQL's port (default 15432)
#   TEST_NGINX_SMTP_PORT   the SMTP sink's port (default 12525)
#   TEST_NGINX_SERVER_PORT nginx's port under test (default 1984)
#   TEST_NGINX_USE_VALGRIND=1  run nginx under valgrind (make test-valgrind)
#   PROVE_OPTS             extra options for prove, e.g. -v
#   TEST_KEEP_TMP=1        keep the scratch folder (logs, Maildir)
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

: "${TEST_NGINX_PG_PORT:=15432}"
: "${TEST_NGINX_SMTP_PORT:=12525}"
: "${TEST_NGINX_SERVER_PORT:=1984}"
: "${TEST_FILES:=t/}"
: "${PROVE_OPTS:=}"

SCRATCH=
PG_DATA=
SINK_PID=
PROVE_PID=
PROVE_PGID=

say() {
    echo "test: $*"
}

check_ready_to_start() {
    local name port
    [ "$(id -u)" = 0 ] || die "run as root (PostgreSQL is run as postgres)"
    [ -f "$ECHELON_MODULE" ] || die "$ECHELON_MODULE not found: make build"
    for name in TEST_NGINX_PG_PORT TEST_NGINX_SMTP_PORT TEST_NGINX_SERVER_PORT
    do
        port=${!name}
        if port_in_use "$port"; then
            die "127.0.0.1:$port is already in use ($name): choose another"
        fi
    done
}

make_scratch() {
    SCRATCH=$(mktemp -d /tmp/echelon-test.XXXXXX)
    chown postgres: "$SCRATCH"
    PG_DATA=$SCRATCH/pg
}

start_postgres() {
    say "PostgreSQL on 127.0.0.1:$TEST_NGINX_PG_PORT ($PG_DATA)"
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" init "$TEST_NGINX_PG_PORT" --fast
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" start

    # One command for the suites: "$TEST_NGINX_PG_CTL stop" / "... start".
    {
        echo '#!/usr/bin/env bash'
        printf 'exec %q %q "$@"\n' "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA"
    } > "$SCRATCH/pg-ctl"
    chmod 755 "$SCRATCH/pg-ctl"
}

start_smtp_sink() {
    local pidfile=$SCRATCH/smtp-sink.pid
    say "SMTP sink (test rules) on 127.0.0.1:$TEST_NGINX_SMTP_PORT"
    "$SYSTEM_PYTHON" "$ECHELON_ROOT/tools/smtp_sink.py" --test-rules \
        --host 127.0.0.1 --port "$TEST_NGINX_SMTP_PORT" \
        --maildir "$SCRATCH/mail" --pidfile "$pidfile" \
        > "$SCRATCH/smtp-sink.log" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 100); do
        [ -s "$pidfile" ] && return
        if ! kill -0 "$SINK_PID" 2>/dev/null; then
            cat "$SCRATCH/smtp-sink.log" >&2
            die "the SMTP sink did not start"
        fi
        sleep 0.1
    done
    die "the SMTP sink did not start listening in 10 s"
}

export_for_suites() {
    export TEST_NGINX_BINARY=$NGINX_BIN
    export TEST_NGINX_LOAD_MODULES=$ECHELON_MODULE
    export TEST_NGINX_MODULE=$ECHELON_MODULE
    export TEST_NGINX_SERVER_PORT
    export TEST_NGINX_PG_HOST=127.0.0.1
    export TEST_NGINX_PG_PORT
    export TEST_NGINX_PG_USER=postgres
    export TEST_NGINX_PG_DATA=$PG_DATA
    export TEST_NGINX_PG_CTL=$SCRATCH/pg-ctl
    export TEST_NGINX_SMTP_PORT
    export TEST_NGINX_MAIL_DIR=$SCRATCH/mail
    # So that psql, createdb and dropdb reach the cluster without options.
    export PGHOST=127.0.0.1 PGPORT=$TEST_NGINX_PG_PORT PGUSER=postgres
}

# What the suites left running in prove's process group (a background
# "$TEST_NGINX_PG_CTL start", say) gets 10 s to finish, then is stopped.
stop_prove_group() {
    [ -n "$PROVE_PGID" ] || return 0
    for _ in $(seq 100); do
        kill -0 -- "-$PROVE_PGID" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -TERM -- "-$PROVE_PGID" 2>/dev/null || true
}

# An nginx that a suite started and could not stop (the run was cut short).
stop_test_nginx() {
    local pidfile pid
    for pidfile in "$ECHELON_ROOT"/t/servroot*/logs/nginx.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && grep -q nginx "/proc/$pid/comm" 2>/dev/null; then
            say "stopping the suites' nginx (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
}

stop_all() {
    local status=$?
    trap '' INT TERM HUP
    if [ -n "$PROVE_PID" ]; then
        kill -TERM -- "-$PROVE_PID" 2>/dev/null || true
        wait "$PROVE_PID" 2>/dev/null || true
    fi
    stop_prove_group
    stop_test_nginx
    if [ -n "$SINK_PID" ]; then
        kill -TERM "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
    fi
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/PG_VERSION" ]; then
        "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" stop || true
    fi
    if [ -n "$SCRATCH" ]; then
        if [ -n "${TEST_KEEP_TMP:-}" ]; then
            say "kept $SCRATCH"
        else
            rm -rf "$SCRATCH"
        fi
    fi
    exit "$status"
}

# prove runs in the background, in a process group of its own, so that a
# signal to this script is handled at once (bash runs traps only between
# foreground commands) and stops prove with every test it started.
run_prove() {
    local lib=${TEST_NGINX_LIB:-$ECHELON_ROOT/t/lib} status=0
    [ -d "$lib" ] || die "no Test::Nginx library folder at $lib"
    lib=$(cd "$lib" && pwd)
    cd "$ECHELON_ROOT"
    say "prove -I $lib -r $PROVE_OPTS $TEST_FILES"
    # shellcheck disable=SC2086
    setsid prove -I "$lib" -r $PROVE_OPTS $TEST_FILES \
        > >(tee "$SCRATCH/prove.log") 2>&1 &
    PROVE_PID=$!
    PROVE_PGID=$PROVE_PID
    wait "$PROVE_PID" || status=$?
    PROVE_PID=
    if [ -n "${TEST_NGINX_USE_VALGRIND:-}" ]; then
        valgrind_verdict "$status"
        return
    fi
    return "$status"
}

# Under valgrind everything runs many times slower, and blocks that wait a
# fixed time for the scheduler can fail for that alone: the leak mode's
# verdict is valgrind's, while make test judges the behaviour.
valgrind_verdict() {
    local found other
    found=$(grep -c 'valgrind reported leaks or memory errors' \
            "$SCRATCH/prove.log" || true)
    other=$(grep -c "Failed test '" "$SCRATCH/prove.log" || true)
    say "valgrind: $found block(s) with leaks or memory errors;" \
        "$((other - found)) other failure(s) under valgrind's slowdown," \
        "not counted here (make test checks them; prove said $1)"
    [ "$found" -eq 0 ]
}

main() {
    local status=0
    check_ready_to_start
    trap stop_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP

    make_scratch
    start_postgres
    start_smtp_sink
    export_for_suites
    run_prove || status=$?
    exit "$status"
}

main "$@"
