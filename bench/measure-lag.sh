# shellcheck shell=bash
# Item 4, scheduling lag, with BENCH_ROWS deliveries scheduled ahead (from
# tomorrow on), then with BENCH_BIG_ROWS (BENCH_BIG=1):
#
#   steady  BENCH_LAG_SECONDS x 1,000 email deliveries, due 1 ms apart
#           (1,000 coming due each second); p50 and p99 of sent_at - due_at;
#           with 1M ahead, the same by SMS too (context: the HTTP transport
#           is faster than the SMTP one);
#   burst   BENCH_BURST deliveries due at the same instant; the time from
#           that instant to the last send (the drain), and the rate from
#           the first send to the last, which table.pl compares with item
#           3's (measured the same way);
#   claim   the scheduler's claim statement (echelon_claim, batch 50) with
#           nothing due, under EXPLAIN ANALYZE in a transaction rolled
#           back: its cost must not grow with what is scheduled ahead.

: "${BENCH_LAG_SECONDS:=10}"
: "${BENCH_BURST:=10000}"

claim_script() {
    {
        echo 'BEGIN;'
        "$BENCH_DIR/sql/statement.pl" "$BENCH_SQL_SOURCE" echelon_claim
        echo "EXPLAIN (ANALYZE, BUFFERS) EXECUTE echelon_claim('$BENCH_BATCH', '60');"
        echo 'ROLLBACK;'
    } > "$1"
}

# BENCH_LAG_SECONDS x 1,000 deliveries on CHANNEL coming due 1 ms apart;
# records the p50 and p99 of their lag as PREFIX_p50_LABEL, PREFIX_p99_LABEL.
lag_steady() {
    local name=$1 channel=$2 prefix=$3 label=$4 r=$5 p50 p99
    load_due "$name-load" "$name" $((BENCH_LAG_SECONDS * 1000)) \
        "now() + interval '2 seconds'" "interval '1 millisecond'" "$channel"
    sleep $((BENCH_LAG_SECONDS + 2))
    wait_sent "$name" 60 "$channel" || true
    run_recorded "$name" "${BENCH_PSQL_REPORT[@]}" -v tag="$name" \
        -v trigger="$(trigger_for "$channel")" -f "$BENCH_DIR/sql/lag.sql"
    p50=$(sql_field "$OUT/raw/$name.txt" p50_ms)
    p99=$(sql_field "$OUT/raw/$name.txt" p99_ms)
    if [ "$(sql_field "$OUT/raw/$name.txt" not_sent)" = 0 ]; then
        record "${prefix}_p50_$label" echelon "$r" "$p50" ms "$CMD_ID"
        record "${prefix}_p99_$label" echelon "$r" "$p99" ms "$CMD_ID"
    else
        say "WARNING: $name void: not all sent"
    fi
    say "  round $r: $channel lag p50 ${p50:-?} ms, p99 ${p99:-?} ms"
}

lag_rounds() {
    local label=$1 r tag drain rate claim
    claim_script "$OUT/work/claim.sql"
    for r in $(seq "$BENCH_ROUNDS"); do
        lag_steady "lag-$label-r$r" email lag "$label" "$r"
        # the same through the HTTP transport (SMS), which sends faster
        # than the SMTP one: the scheduler's own lag, as a context figure
        if [ "$label" = 1m ]; then
            lag_steady "lagsms-$label-r$r" sms lagsms "$label" "$r"
        fi

        tag=burst-$label-r$r
        load_due "burst-load-$label-r$r" "$tag" "$BENCH_BURST" \
            "now() + interval '2 seconds'" "interval '0'"
        sleep 2
        wait_sent "$tag" 120 || true
        run_recorded "burst-$label-r$r" "${BENCH_PSQL_REPORT[@]}" \
            -v tag="$tag" -v trigger="$TRIGGER_SEND" -f "$BENCH_DIR/sql/lag.sql"
        drain=$(sql_field "$OUT/raw/burst-$label-r$r.txt" drain_s)
        rate=$(sql_field "$OUT/raw/burst-$label-r$r.txt" per_second)
        if [ "$(sql_field "$OUT/raw/burst-$label-r$r.txt" not_sent)" = 0 ]; then
            record "burst_$label" echelon "$r" "$drain" s "$CMD_ID"
            record "burstrate_$label" echelon "$r" "$rate" deliveries/s "$CMD_ID"
        fi

        run_recorded "claim-$label-r$r" "${BENCH_PSQL[@]}" \
            -f "$OUT/work/claim.sql"
        claim=$(sed -n 's/.*Execution Time: \([0-9.]*\) ms.*/\1/p' \
                "$OUT/raw/claim-$label-r$r.txt")
        record "claim_$label" echelon "$r" "$claim" ms "$CMD_ID"
        # pages the claim read (hit or read): what it had to step over
        record "claimbuf_$label" echelon "$r" "$(awk '/Buffers: shared/ {
            n = 0
            for (i = 1; i <= NF; i++)
                if ($i ~ /^(hit|read)=/) { split($i, a, "="); n += a[2] }
            print n; exit }' "$OUT/raw/claim-$label-r$r.txt")" pages "$CMD_ID"
        say "  round $r ($label ahead): burst of $BENCH_BURST drained in" \
            "${drain:-?} s (${rate:-?}/s); claim ${claim:-?} ms"
    done
}

measure_lag() {
    local t0 t1
    say "item 4: scheduling lag with $BENCH_ROWS ahead, $BENCH_ROUNDS rounds"
    lag_rounds 1m
    if [ -z "$BENCH_BIG" ]; then
        record lag_p99_10m echelon 1 "not run (make bench BENCH_BIG=1)" - -
        return
    fi
    say "loading $((BENCH_BIG_ROWS - BENCH_ROWS)) more deliveries (BENCH_BIG)"
    t0=$(date +%s.%N)
    bulk_load $((BENCH_ROWS + 1)) "$BENCH_BIG_ROWS"
    t1=$(date +%s.%N)
    echo "load of $((BENCH_BIG_ROWS - BENCH_ROWS)) more deliveries: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s" \
        >> "$OUT/machine.txt"
    say "item 4 again with $BENCH_BIG_ROWS ahead"
    lag_rounds 10m
}
