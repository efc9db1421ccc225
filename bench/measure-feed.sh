# shellcheck shell=bash
# Item 2, API read: the activity feed, 50 items a page, of an employee with
# BENCH_ROWS deliveries, at BENCH_CONNECTIONS connections (wrk).
# Anchor: pgbench running the same query (the module's prepared statement
# echelon_activity, same parameters: no filter, limit 51 for has_more),
# same clients. Context: pgbench running every statement the request runs
# (echelon_auth, echelon_employee_get, echelon_activity), one after the
# other, as the module does.

feed_pgbench_script() {
    local file=$1 all=$2 hash s
    hash=$(printf '%s' "$API_KEY" | sha256sum | cut -d' ' -f1)
    {
        echo '\if :prepared = 0'
        for s in echelon_auth echelon_employee_get echelon_activity; do
            "$BENCH_DIR/sql/statement.pl" "$BENCH_SQL_SOURCE" "$s"
        done
        echo '\set prepared 1'
        echo '\endif'
        if [ "$all" = yes ]; then
            echo "EXECUTE echelon_auth('$hash');"
            echo "EXECUTE echelon_employee_get('$ACCOUNT', '$EMPLOYEE');"
        fi
        echo "EXECUTE echelon_activity('$ACCOUNT', '$EMPLOYEE', NULL, NULL, NULL, NULL, NULL, '51');"
    } > "$file"
}

measure_feed() {
    local r rate tps tps_all c=$BENCH_CONNECTIONS url
    say "item 2: activity feed over $BENCH_ROWS deliveries, $BENCH_ROUNDS rounds"
    url="http://127.0.0.1:$BENCH_PORT/v1/employees/$EMPLOYEE/activity?limit=50"
    curl -s -H "Authorization: Bearer $API_KEY" "$url" > "$OUT/raw/feed-page.json"
    [ "$(jq '.data | length' "$OUT/raw/feed-page.json")" = 50 ] \
        || say "WARNING: the feed page has not 50 items (raw/feed-page.json)"
    feed_pgbench_script "$OUT/work/feed.pgbench" no
    feed_pgbench_script "$OUT/work/feed-all.pgbench" yes

    for r in $(seq "$BENCH_ROUNDS"); do
        run_recorded "feed-echelon-r$r" wrk -t 2 -c "$c" \
            -d "${BENCH_SECONDS}s" --latency \
            -H "Authorization: Bearer $API_KEY" "$url"
        rate=$(wrk_rate "$OUT/raw/feed-echelon-r$r.txt")
        wrk_check "$OUT/raw/feed-echelon-r$r.txt" \
            && record feed echelon "$r" "$rate" req/s "$CMD_ID"

        run_recorded "feed-anchor-r$r" "$PG_BIN/pgbench" -n -M simple \
            -c "$c" -j 2 -T "$BENCH_SECONDS" -D prepared=0 \
            -f "$OUT/work/feed.pgbench" \
            -h 127.0.0.1 -p "$BENCH_PG_PORT" -U postgres echelon_bench
        tps=$(pgbench_tps "$OUT/raw/feed-anchor-r$r.txt")
        pgbench_check "$OUT/raw/feed-anchor-r$r.txt" \
            && record feed anchor "$r" "$tps" tx/s "$CMD_ID"

        run_recorded "feed-anchor-all-r$r" "$PG_BIN/pgbench" -n -M simple \
            -c "$c" -j 2 -T "$BENCH_SECONDS" -D prepared=0 \
            -f "$OUT/work/feed-all.pgbench" \
            -h 127.0.0.1 -p "$BENCH_PG_PORT" -U postgres echelon_bench
        tps_all=$(pgbench_tps "$OUT/raw/feed-anchor-all-r$r.txt")
        pgbench_check "$OUT/raw/feed-anchor-all-r$r.txt" \
            && record feed anchor_all "$r" "$tps_all" tx/s "$CMD_ID"
        say "  round $r: echelon ${rate:-?} req/s, pgbench ${tps:-?} tx/s" \
            "(all statements ${tps_all:-?} tx/s)"
    done
}
