# shellcheck shell=bash
# Item 5, never blocked: the p99 latency of a cheap API call (GET
# /v1/account with an API key; wrk, 16 connections) while another
# request's query waits 2 s in PostgreSQL, against the same p99 without it.
#
# How a query is held: bench/hold.sh, for as long as wrk runs, over and
# over: psql takes LOCK TABLE events IN EXCLUSIVE MODE in a transaction
# that lasts 2 s (pg_sleep), and 0.2 s after it took the lock a signed
# webhook is POSTed with curl; its INSERT INTO events waits for the lock,
# so that request's query is held ~1.8 s in the database while it occupies
# one of the worker's pooled connections. The lock does not touch the
# tables GET /v1/account reads. hold.sh logs each webhook's status and
# time, so that the hold is visible in the raw output.
#
# Context: the same wrk at the HTTP sink (plain nginx, no database) in each
# round, the p99 this machine gives with nothing of Echelon's in the way:
# when it is high, others are using the machine and item 5 says little.

BLOCKED_CONNECTIONS=16
# p99s are what other programs on the machine disturb most: more rounds
: "${BENCH_BLOCKED_ROUNDS:=$(( BENCH_ROUNDS > 5 ? BENCH_ROUNDS : 5 ))}"

measure_blocked() {
    local r p99 p99_held p99_floor url
    say "item 5: never blocked, $BENCH_BLOCKED_ROUNDS rounds"
    url="http://127.0.0.1:$BENCH_PORT/v1/account"
    for r in $(seq "$BENCH_BLOCKED_ROUNDS"); do
        run_recorded "blocked-anchor-r$r" wrk -t 2 -c "$BLOCKED_CONNECTIONS" \
            -d "${BENCH_SECONDS}s" --latency \
            -H "Authorization: Bearer $API_KEY" "$url"
        p99=$(wrk_percentile_ms "$OUT/raw/blocked-anchor-r$r.txt" 99)
        wrk_check "$OUT/raw/blocked-anchor-r$r.txt" \
            && record blocked anchor "$r" "$p99" ms "$CMD_ID"

        "$BENCH_DIR/hold.sh" "$((BENCH_SECONDS + 1))" "$r" \
            > "$OUT/raw/blocked-hold-r$r.txt" 2>&1 &
        LOCKER_PID=$!
        sleep 0.5
        run_recorded "blocked-echelon-r$r" wrk -t 2 \
            -c "$BLOCKED_CONNECTIONS" -d "${BENCH_SECONDS}s" --latency \
            -H "Authorization: Bearer $API_KEY" "$url"
        wait "$LOCKER_PID" || say "WARNING: hold.sh failed (see raw/blocked-hold-r$r.txt)"
        LOCKER_PID=
        echo "$CMD_ID ran alongside: $BENCH_DIR/hold.sh $((BENCH_SECONDS + 1)) $r" \
            >> "$OUT/commands.txt"
        p99_held=$(wrk_percentile_ms "$OUT/raw/blocked-echelon-r$r.txt" 99)
        if wrk_check "$OUT/raw/blocked-echelon-r$r.txt" \
            && grep -q '^held ' "$OUT/raw/blocked-hold-r$r.txt"; then
            record blocked echelon "$r" "$p99_held" ms "$CMD_ID"
        else
            say "WARNING: round $r of item 5 is void (no request was held)"
        fi
        run_recorded "blocked-floor-r$r" wrk -t 2 -c "$BLOCKED_CONNECTIONS" \
            -d "${BENCH_SECONDS}s" --latency "http://127.0.0.1:$BENCH_SINK_PORT/"
        p99_floor=$(wrk_percentile_ms "$OUT/raw/blocked-floor-r$r.txt" 99)
        wrk_check "$OUT/raw/blocked-floor-r$r.txt" \
            && record blocked floor "$r" "$p99_floor" ms "$CMD_ID"
        say "  round $r: p99 ${p99_held:-?} ms with a query held, ${p99:-?} ms" \
            "without (plain nginx: ${p99_floor:-?} ms)"
    done
}
