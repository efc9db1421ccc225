# shellcheck shell=bash
# Item 2, API read: the activity feed, 50 items a page, of an employee with
# BENCH_ROWS deliveries, at BENCH_CONNECTIONS connections (wrk).
# Anchor: pgbench running what the request runs: the module's prepared
# echelon_activity, the one statement of a feed page (it finds the account
# by the key's hash, checks the employee and reads the page), with the
# same parameters (the key's hash, no filter, limit 51 for has_more), same
# clients.

feed_pgbench_script() {
    local file=$1 hash
    hash=$(printf '%s' "$API_KEY" | sha256sum | cut -d' ' -f1)
    {
        echo '\if :prepared = 0'
        "$BENCH_DIR/sql/statement.pl" "$BENCH_SQL_SOURCE" echelon_activity
        echo '\set prepared 1'
        echo '\endif'
        echo "EXECUTE echelon_activity('$hash', '$EMPLOYEE', NULL, NULL, NULL, NULL, NULL, '51');"
    } > "$file"
}

measure_feed() {
    local r rate tps c=$BENCH_CONNECTIONS url
    say "item 2: activity feed over $BENCH_ROWS deliveries, $BENCH_ROUNDS rounds"
    url="http://127.0.0.1:$BENCH_PORT/v1/employees/$EMPLOYEE/activity?limit=50"
    curl -s -H "Authorization: Bearer $API_KEY" "$url" > "$OUT/raw/feed-page.json"
    [ "$(jq '.data | length' "$OUT/raw/feed-page.json")" = 50 ] \
        || say "WARNING: the feed page has not 50 items (raw/feed-page.json)"
    feed_pgbench_script "$OUT/work/feed.pgbench"

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
        say "  round $r: echelon ${rate:-?} req/s, pgbench ${tps:-?} tx/s"
    done
}
