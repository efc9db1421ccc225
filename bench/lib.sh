# shellcheck shell=bash
# Helpers shared by bench/run.sh and the bench/measure-*.sh scripts:
# settings, the services (PostgreSQL, SMTP sink, HTTP sink, Echelon's
# nginx), psql, and the record of every command that produced a figure.
#
# Sourced after tools/env.sh. Everything listens on 127.0.0.1 only.

BENCH_DIR=$ECHELON_ROOT/bench

: "${BENCH_PG_PORT:=45432}"
: "${BENCH_SMTP_PORT:=42525}"
: "${BENCH_PORT:=48080}"
: "${BENCH_SINK_PORT:=48081}"
: "${BENCH_ROUNDS:=3}"          # rounds of each measure (medians over them)
: "${BENCH_SECONDS:=5}"         # length of one wrk or pgbench run
: "${BENCH_CONNECTIONS:=64}"    # wrk connections and pgbench clients
: "${BENCH_POOL:=16}"           # echelon_database_pool, per worker
: "${BENCH_BATCH:=50}"          # echelon_scheduler_batch (the default)
: "${BENCH_ROWS:=1000000}"      # deliveries in the table (items 2 and 4)
: "${BENCH_BIG:=}"              # 1: item 4 again with 10 million ahead
: "${BENCH_BIG_ROWS:=10000000}"
: "${BENCH_MEM_REQUESTS:=1000000}"
: "${BENCH_ADMIN_TOKEN:=bench-admin-token}"
: "${BENCH_RESULTS:=$BENCH_DIR/results}"
: "${BENCH_SQL_SOURCE:=$ECHELON_ROOT/src/ngx_echelon_sql.c}"  # statements for pgbench

export BENCH_PG_PORT BENCH_SMTP_PORT BENCH_PORT BENCH_SINK_PORT BENCH_BATCH

PG_BIN=$(pg_bindir)
BENCH_PSQL=("$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1
            -h 127.0.0.1 -p "$BENCH_PG_PORT" -U postgres -d echelon_bench)
# The same with a header line, for results read by sql_field.
BENCH_PSQL_REPORT=("$PG_BIN/psql" -X -q -A -P footer=off -v ON_ERROR_STOP=1
                   -h 127.0.0.1 -p "$BENCH_PG_PORT" -U postgres
                   -d echelon_bench)

say() {
    printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# SQL on the bench database; the output without alignment.
psql_bench() {
    "${BENCH_PSQL[@]}" "$@"
}

# One figure's command: kept in $OUT/commands.txt under an id (C1, C2...),
# run with its output in $OUT/raw/<name>.txt. Sets CMD_ID. A command that
# fails is reported and the bench goes on: the checks of its output void
# the figure.
CMD_N=0
run_recorded() {
    local name=$1
    shift
    CMD_N=$((CMD_N + 1))
    CMD_ID=C$CMD_N
    {
        printf '%s  [%s]  ' "$CMD_ID" "$name"
        printf '%q ' "$@"
        printf '\n'
    } >> "$OUT/commands.txt"
    "$@" > "$OUT/raw/$name.txt" 2>&1 \
        || say "WARNING: $name exited with status $? (raw/$name.txt)"
    # how busy the machine was (others may be running builds and tests)
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" \
        >> "$OUT/raw/$name.txt"
}

# A result line: measure, side (echelon|anchor|...), round, value, unit,
# command id. bench/table.pl reads $OUT/results.tsv.
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$OUT/results.tsv"
}

# wrk's "Requests/sec:" and its latency percentile lines (--latency).
wrk_rate() {
    awk '/^Requests\/sec:/ { print $2 }' "$1"
}

# "99%  12.34ms" -> milliseconds
wrk_percentile_ms() {
    awk -v p="$2%" '$1 == p {
        v = $2
        if (v ~ /us$/)      { sub(/us$/, "", v); v = v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) }
        else if (v ~ /m$/)  { sub(/m$/, "", v); v = v * 60000 }
        else if (v ~ /s$/)  { sub(/s$/, "", v); v = v * 1000 }
        print v
    }' "$1"
}

# wrk counts non-2xx answers and socket errors; a run with any is void.
wrk_check() {
    if grep -qE '^  Non-2xx or 3xx responses|^  Socket errors' "$1"; then
        say "WARNING: errors in $(basename "$1"):"
        grep -E '^  Non-2xx|^  Socket errors' "$1" >&2
        return 1
    fi
}

pgbench_tps() {
    sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$1"
}

pgbench_check() {
    local failed
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$1")
    if [ -z "$(pgbench_tps "$1")" ] || [ "${failed:-0}" != 0 ]; then
        say "WARNING: pgbench failed or had failed transactions: $1"
        tail -n 5 "$1" >&2
        return 1
    fi
}

# ---- services --------------------------------------------------------

# The bench's ports lie in Linux's ephemeral range (32768-60999), so an
# outgoing connection of another program may hold one for a while (60 s in
# TIME-WAIT), and a listener cannot bind it then. Waits until a listener
# could bind it (as nginx does, with SO_REUSEADDR), at most 90 s.
can_bind() {
    "$SYSTEM_PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

wait_port_free() {
    local port=$1
    for _ in $(seq 450); do
        can_bind "$port" && return 0
        sleep 0.2
    done
    die "127.0.0.1:$port stays in use: $(ss -Htan "( sport = :$port )" | head -n 1)"
}

wait_port() {
    local port=$1 pid=$2 what=$3
    for _ in $(seq 200); do
        port_in_use "$port" && return 0
        kill -0 "$pid" 2>/dev/null || die "$what did not start"
        sleep 0.05
    done
    die "$what did not listen on 127.0.0.1:$port in 10 s"
}

start_postgres() {
    say "PostgreSQL on 127.0.0.1:$BENCH_PG_PORT ($PG_DATA)"
    wait_port_free "$BENCH_PG_PORT"
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" init "$BENCH_PG_PORT"
    # Settings of the bench, on top of tools/pg.sh's: room for 64 pgbench
    # clients beside nginx's pools, the data set in memory, no checkpoint
    # in the middle of a round, and autovacuum in the log (it runs during
    # the rounds). fsync stays on: commits are durable, as the webhook's
    # 2xx promises.
    cat > "$PG_DATA/bench.conf" <<'CONF'
max_connections = 200
shared_buffers = 1GB
work_mem = 16MB
maintenance_work_mem = 512MB
max_wal_size = 16GB
checkpoint_timeout = 30min
log_autovacuum_min_duration = 0
log_checkpoints = on
CONF
    chown postgres: "$PG_DATA/bench.conf"
    grep -q "bench.conf" "$PG_DATA/postgresql.conf" \
        || echo "include_if_exists = 'bench.conf'" >> "$PG_DATA/postgresql.conf"
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" start
    PG_STARTED=yes
    "$ECHELON_ROOT/tools/pg.sh" "$PG_DATA" createdb echelon_bench
}

start_smtp_sink() {
    say "SMTP sink on 127.0.0.1:$BENCH_SMTP_PORT"
    wait_port_free "$BENCH_SMTP_PORT"
    "$SYSTEM_PYTHON" "$ECHELON_ROOT/tools/smtp_sink.py" --quiet \
        --host 127.0.0.1 --port "$BENCH_SMTP_PORT" \
        --maildir "$MAIL_DIR" > "$OUT/logs/smtp-sink.log" 2>&1 &
    SINK_PID=$!
    wait_port "$BENCH_SMTP_PORT" "$SINK_PID" "the SMTP sink"
}

# nginx from a template in bench/: $1 template, $2 name (conf and pid).
start_nginx() {
    local template=$1 name=$2 port=$3 pid
    mkdir -p "$SCRATCH/$name/logs" "$SCRATCH/$name/tmp"
    BENCH_NGINX_DIR=$SCRATCH/$name BENCH_LOG_DIR=$OUT/logs \
        BENCH_POOL=$BENCH_POOL BENCH_ADMIN_TOKEN=$BENCH_ADMIN_TOKEN \
        BENCH_NAME=$name \
        "$ECHELON_ROOT/tools/genconf.sh" "$BENCH_DIR/$template" \
        "$SCRATCH/$name/nginx.conf"
    cp "$SCRATCH/$name/nginx.conf" "$OUT/$name.nginx.conf"
    wait_port_free "$port"
    "$NGINX_BIN" -q -t -p "$SCRATCH/$name/" -c "$SCRATCH/$name/nginx.conf" \
        || die "nginx rejected $SCRATCH/$name/nginx.conf"
    "$NGINX_BIN" -p "$SCRATCH/$name/" -c "$SCRATCH/$name/nginx.conf" &
    pid=$!
    wait_port "$port" "$pid" "nginx ($name)"
    eval "${name^^}_PID=$pid"
}

# Echelon's scheduler on or off, by a reload of its nginx with the
# directive changed; the old workers finish what they hold first.
echelon_scheduler_switch() {
    local conf=$SCRATCH/echelon/nginx.conf
    sed -i "s/^\( *echelon_scheduler \+\)\(on\|off\);/\1$1;/" "$conf"
    "$NGINX_BIN" -q -p "$SCRATCH/echelon/" -c "$conf" -s reload 2> /dev/null \
        || die "nginx did not reload $conf"
    sleep 2
}

# Stops a process started here (and its children, nginx's workers, if it
# has to be killed).
stop_pid() {
    local pid=$1 sig=${2:-TERM} children
    [ -n "$pid" ] || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid did not stop in 20 s: killing it"
        children=$(pgrep -P "$pid" || true)
        # shellcheck disable=SC2086  # one word per child
        kill -KILL "$pid" $children 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# The worker processes of an nginx master.
nginx_workers() {
    pgrep -P "$1" | sort -n
}

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# ---- deliveries for the scheduler -------------------------------------

# The trigger of the deliveries loaded with SQL on CHANNEL (email, sms).
trigger_for() {
    if [ "$1" = sms ]; then echo "$TRIGGER_SMS"; else echo "$TRIGGER_SEND"; fi
}

# COUNT deliveries tagged TAG, due at DUE (SQL) + i * SPACING (SQL), by
# email, or by SMS when CHANNEL is sms.
load_due() {
    local name=$1 tag=$2 count=$3 due=$4 spacing=$5 channel=${6:-email}
    local trigger
    trigger=$(trigger_for "$channel")
    run_recorded "$name" "${BENCH_PSQL[@]}" -v account="$ACCOUNT" \
        -v employee="$EMPLOYEE" -v trigger="$trigger" -v channel="$channel" \
        -v tag="$tag" -v count="$count" -v due="$due" -v spacing="$spacing" \
        -f "$BENCH_DIR/sql/due.sql"
}

# Waits until nothing tagged TAG (on CHANNEL) is left to send, at most
# SECONDS.
wait_sent() {
    local tag=$1 seconds=$2 channel=${3:-email} left end
    end=$((SECONDS + seconds))
    while [ "$SECONDS" -lt "$end" ]; do
        left=$(psql_bench -v tag="$tag" -v trigger="$(trigger_for "$channel")" \
               -f "$BENCH_DIR/sql/pending.sql")
        [ "$left" = 0 ] && return 0
        # figures come from the rows' own times, not from this loop: poll
        # slowly, so that psql's start-ups do not take the CPU measured
        sleep 1
    done
    say "WARNING: $left deliveries tagged $tag still unsent after $seconds s"
    return 1
}

# A column of a one-row psql -A -t result with a header line (-P footer=off)
sql_field() {
    awk -F'|' -v name="$2" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
        NR == 2 { print $(col[name]) }' "$1"
}

# Deliveries FIRST..LAST scheduled ahead (bench/sql/deliveries.sql), with
# the plain indexes of the table built after the rows are in.
bulk_load() {
    psql_bench -f "$BENCH_DIR/sql/indexes-drop.sql" > /dev/null
    psql_bench -v account="$ACCOUNT" -v employee="$EMPLOYEE" \
        -v trigger="$TRIGGER_SEND" -v first="$1" -v last="$2" \
        -f "$BENCH_DIR/sql/deliveries.sql"
    psql_bench -f "$BENCH_DIR/sql/indexes-create.sql" > /dev/null
    psql_bench -c "VACUUM ANALYZE deliveries"
}
