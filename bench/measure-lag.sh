# shellcheck shell=bash
# Item 4, scheduling lag, with BENCH_ROWS deliveries scheduled ahead (from
# tomorrow on), then with BENCH_BIG_ROWS (BENCH_BIG=1):
#
#   steady  BENCH_LAG_SECONDS x 1,000 deliveries, due 1 ms apart (1,000
#           coming due each second); p50 and p99 of sent_at - due_at;
#   burst   BENCH_BURST deliveries due at the same instant; the time from
#           that instant to the last send (the drain), whose rate table.pl
#           compares with item 3's;
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

lag_rounds() {
    local label=$1 r tag p50 p99 drain claim
    claim_script "$OUT/work/claim.sql"
    for r in $(seq "$BENCH_ROUNDS"); do
        tag=lag-$label-r$r
        load_due "lag-load-$label-r$r" "$tag" $((BENCH_LAG_SECONDS * 1000)) \
            "now() + interval '2 seconds'" "interval '1 millisecond'"
        sleep $((BENCH_LAG_SECONDS + 2))
        wait_sent "$tag" 60 || true
        run_recorded "lag-$label-r$r" "${BENCH_PSQL_REPORT[@]}" \
            -v tag="$tag" -f "$BENCH_DIR/sql/lag.sql"
        p50=$(sql_field "$OUT/raw/lag-$label-r$r.txt" p50_ms)
        p99=$(sql_field "$OUT/raw/lag-$label-r$r.txt" p99_ms)
        if [ "$(sql_field "$OUT/raw/lag-$label-r$r.txt" not_sent)" = 0 ]; then
            record "lag_p50_$label" echelon "$r" "$p50" ms "$CMD_ID"
            record "lag_p99_$label" echelon "$r" "$p99" ms "$CMD_ID"
        else
            say "WARNING: lag round $r ($label) void: not all sent"
        fi

        tag=burst-$label-r$r
        load_due "burst-load-$label-r$r" "$tag" "$BENCH_BURST" \
            "now() + interval '2 seconds'" "interval '0'"
        sleep 2
        wait_sent "$tag" 120 || true
        run_recorded "burst-$label-r$r" "${BENCH_PSQL_REPORT[@]}" \
            -v tag="$tag" -f "$BENCH_DIR/sql/lag.sql"
        drain=$(sql_field "$OUT/raw/burst-$label-r$r.txt" drain_s)
        if [ "$(sql_field "$OUT/raw/burst-$label-r$r.txt" not_sent)" = 0 ]; then
            record "burst_$label" echelon "$r" "$drain" s "$CMD_ID"
            record "burstn_$label" echelon "$r" "$BENCH_BURST" - -
        fi

        run_recorded "claim-$label-r$r" "${BENCH_PSQL[@]}" \
            -f "$OUT/work/claim.sql"
        claim=$(sed -n 's/.*Execution Time: \([0-9.]*\) ms.*/\1/p' \
                "$OUT/raw/claim-$label-r$r.txt")
        record "claim_$label" echelon "$r" "$claim" ms "$CMD_ID"
        say "  round $r ($label ahead): lag p50 ${p50:-?} ms, p99 ${p99:-?} ms;" \
            "burst of $BENCH_BURST drained in ${drain:-?} s; claim ${claim:-?} ms"
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
