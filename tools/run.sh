#!/usr/bin/env bash
# Echelon's development server, in the foreground (make run):
#
#   PostgreSQL  its own cluster in $ECHELON_RUN_DIR/pg, database "echelon"
#   SMTP sink   tools/smtp_sink.py, mail stored in $ECHELON_RUN_DIR/mail
#   nginx       Debian's /usr/sbin/nginx loading build/ngx_http_echelon_module.so
#
# Ctrl-C or SIGTERM stops all three. Starting again reuses the cluster and
# the mail. Settings come from the environment; defaults in tools/env.sh.
# ECHELON_NO_MODULE=1 runs nginx without the module (echelon_* lines
# commented out): a check of this script and of the services alone.
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PG_DATA=$ECHELON_RUN_DIR/pg
MAIL_DIR=$ECHELON_RUN_DIR/mail
LOG_DIR=$ECHELON_RUN_DIR/logs
NGINX_CONF=$ECHELON_RUN_DIR/nginx.conf
SINK_PIDFILE=$ECHELON_RUN_DIR/smtp-sink.pid

NGINX_PID=
SINK_PID=
PG_STARTED=no

say() {
    echo "run: $*"
}

check_ready_to_start() {
    local port name
    [ "$(id -u)" = 0 ] || die "run as root (PostgreSQL is run as postgres)"
    if [ -z "${ECHELON_NO_MODULE:-}" ] && [ ! -f "$ECHELON_MODULE" ]; then
        die "$ECHELON_MODULE not found: make build"
    fi
    if "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" status 2>/dev/null; then
        die "the PostgreSQL cluster in $PG_DATA is still running (an earlier" \
            "run that did not stop?): tools/pg.sh $PG_DATA stop"
    fi
    for name in ECHELON_PORT ECHELON_PG_PORT ECHELON_SMTP_PORT; do
        port=${!name}
        if port_in_use "$port"; then
            die "127.0.0.1:$port is already in use ($name); is another" \
                "make run up? Stop it, or choose another port."
        fi
    done
}

start_postgres() {
    say "PostgreSQL: $PG_DATA, port $ECHELON_PG_PORT"
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" init "$ECHELON_PG_PORT"
    PG_STARTED=yes
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" start
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" createdb echelon
}

start_smtp_sink() {
    say "SMTP sink: 127.0.0.1:$ECHELON_SMTP_PORT, Maildir $MAIL_DIR"
    rm -f "$SINK_PIDFILE"
    setsid "$SYSTEM_PYTHON" "$ECHELON_ROOT/tools/smtp_sink.py" \
        --host 127.0.0.1 --port "$ECHELON_SMTP_PORT" --maildir "$MAIL_DIR" \
        --pidfile "$SINK_PIDFILE" &
    SINK_PID=$!
    for _ in $(seq 100); do
        [ -s "$SINK_PIDFILE" ] && return
        kill -0 "$SINK_PID" 2>/dev/null || die "the SMTP sink did not start"
        sleep 0.1
    done
    die "the SMTP sink did not start listening in 10 s"
}

start_nginx() {
    say "nginx: $NGINX_BIN, configuration $NGINX_CONF"
    mkdir -p "$LOG_DIR" "$ECHELON_RUN_DIR/tmp"
    local genconf_opts=()
    if [ -n "${ECHELON_NO_MODULE:-}" ]; then
        say "ECHELON_NO_MODULE is set: nginx runs without the module"
        genconf_opts=(--without-module)
    fi
    "$ECHELON_ROOT/tools/genconf.sh" "${genconf_opts[@]}" \
        "$ECHELON_ROOT/conf/nginx.conf.in" "$NGINX_CONF"
    "$NGINX_BIN" -t -q -p "$ECHELON_RUN_DIR" -c "$NGINX_CONF" \
        || die "nginx rejected $NGINX_CONF"
    setsid "$NGINX_BIN" -p "$ECHELON_RUN_DIR" -c "$NGINX_CONF" &
    NGINX_PID=$!

    for _ in $(seq 100); do
        port_in_use "$ECHELON_PORT" && return
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx did not start" \
            "(see above and $LOG_DIR/error.log)"
        sleep 0.1
    done
    die "nginx did not start listening in 10 s"
}

banner() {
    if [ -n "${ECHELON_NO_MODULE:-}" ]; then
        cat <<EOF_BANNER

nginx, PostgreSQL and the SMTP sink are up, WITHOUT the Echelon module
(ECHELON_NO_MODULE is set): /v1/ and /webhooks/ answer 404 until the
module is built and make run is started without it. Ctrl-C stops everything.

EOF_BANNER
        return
    fi

    cat <<EOF_BANNER

Echelon is up. Ctrl-C stops everything.

  API          http://127.0.0.1:$ECHELON_PORT/v1/
  Webhooks     http://127.0.0.1:$ECHELON_PORT/webhooks/stripe/<account id>
  Admin token  $ECHELON_ADMIN_TOKEN
  PostgreSQL   host=127.0.0.1 port=$ECHELON_PG_PORT dbname=echelon user=postgres
  SMTP sink    smtp://127.0.0.1:$ECHELON_SMTP_PORT
  Mail         $MAIL_DIR/new/  (one file per message)
  Logs         $LOG_DIR/error.log, $LOG_DIR/access.log,
               $PG_DATA/postgresql.log

  Try it:      make demo    (in another terminal)

EOF_BANNER
}

# Sends a signal, waits up to $3 tenths of a second, then kills.
stop_child() {
    local pid=$1 sig=$2 patience=$3
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq "$patience"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid did not stop in time: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    trap '' INT TERM HUP
    say "stopping"
    stop_child "$NGINX_PID" TERM 100
    stop_child "$SINK_PID" TERM 50
    if [ "$PG_STARTED" = yes ]; then
        "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" stop || true
    fi
    say "stopped"
}

on_signal() {
    echo
    say "got SIG$1"
    case $1 in
        INT) exit 130 ;;
        HUP) exit 129 ;;
        *)   exit 143 ;;
    esac
}

main() {
    check_ready_to_start
    mkdir -p "$ECHELON_RUN_DIR" "$MAIL_DIR"
    trap stop_all EXIT
    trap 'on_signal INT' INT
    trap 'on_signal TERM' TERM
    trap 'on_signal HUP' HUP

    start_postgres
    start_smtp_sink
    start_nginx
    banner

    local status=0
    wait -n "$NGINX_PID" "$SINK_PID" || status=$?
    if ! kill -0 "$NGINX_PID" 2>/dev/null; then
        say "nginx exited (status $status); see $LOG_DIR/error.log"
    else
        say "the SMTP sink exited (status $status)"
    fi
    exit 1
}

main "$@"
