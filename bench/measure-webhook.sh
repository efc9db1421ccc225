# shellcheck shell=bash
# Item 1, webhook ingest: correctly signed Stripe invoice.finalized events,
# each with its own event id, invoice and customer, at BENCH_CONNECTIONS
# connections (wrk + bench/webhook.lua over requests pre-signed by
# bench/sign.pl right before the round). Each one commits the event, the
# invoice, the contact and three deliveries (the employee's three
# invoice.issued triggers).
# Anchor: pgbench running the same transaction, the module's prepared
# statement echelon_stripe_event on the same event body, same clients.

webhook_pgbench_script() {
    local file=$1 t due event
    t=$(date +%s)
    due=$((t + 14 * 86400))
    event=$(sed -e "s/@T@/$t/g" -e "s/@DUE@/$due/g" "$BENCH_DIR/sql/event.json")
    {
        echo '\if :prepared = 0'
        "$BENCH_DIR/sql/statement.pl" "$BENCH_SQL_SOURCE" echelon_stripe_event
        echo '\set prepared 1'
        echo '\endif'
        echo '\set k :k + 1'
        echo "EXECUTE echelon_stripe_event('$ACCOUNT', replace('$event', '@N@', 'p' || :round || 'c' || :client_id || 'k' || :k)::jsonb);"
    } > "$file"
}

# What round r's events committed, by the prefix of their ids.
webhook_check() {
    local r=$1
    psql_bench -F ' ' <<SQL
SELECT 'events', count(*) FROM events WHERE event_id LIKE 'evt_benchr${r}x%';
SELECT 'invoices', count(*) FROM invoices WHERE external_id LIKE 'in_benchr${r}x%';
SELECT 'contacts', count(*) FROM contacts WHERE external_id LIKE 'cus_benchr${r}x%';
SELECT 'deliveries', count(*) FROM deliveries d JOIN invoices i
    ON i.id = d.invoice_id WHERE i.external_id LIKE 'in_benchr${r}x%';
SQL
}

measure_webhook() {
    local r file script rate tps c=$BENCH_CONNECTIONS
    say "item 1: webhook ingest, $BENCH_ROUNDS rounds"
    for r in $(seq "$BENCH_ROUNDS"); do
        file=$OUT/work/webhook-r$r.tsv
        "$BENCH_DIR/sign.pl" "$STRIPE_SECRET" "r${r}x" \
            $((BENCH_SECONDS * 5000)) > "$file"
        run_recorded "webhook-echelon-r$r" wrk -t 2 -c "$c" \
            -d "${BENCH_SECONDS}s" --latency -s "$BENCH_DIR/webhook.lua" \
            "http://127.0.0.1:$BENCH_PORT" -- "$file" "$ACCOUNT" 2
        rate=$(wrk_rate "$OUT/raw/webhook-echelon-r$r.txt")
        if wrk_check "$OUT/raw/webhook-echelon-r$r.txt" \
            && grep -q 'ran out: 0 times' "$OUT/raw/webhook-echelon-r$r.txt"
        then
            record webhook echelon "$r" "$rate" req/s "$CMD_ID"
        else
            say "WARNING: webhook round $r void (errors or repeated ids)"
        fi
        webhook_check "$r" >> "$OUT/raw/webhook-echelon-r$r.txt"
        rm -f "$file"

        script=$OUT/work/webhook-r$r.pgbench
        webhook_pgbench_script "$script"
        run_recorded "webhook-anchor-r$r" "$PG_BIN/pgbench" -n -M simple \
            -c "$c" -j 2 -T "$BENCH_SECONDS" -D prepared=0 -D k=0 \
            -D round="$r" -f "$script" \
            -h 127.0.0.1 -p "$BENCH_PG_PORT" -U postgres echelon_bench
        tps=$(pgbench_tps "$OUT/raw/webhook-anchor-r$r.txt")
        pgbench_check "$OUT/raw/webhook-anchor-r$r.txt" \
            && record webhook anchor "$r" "$tps" tx/s "$CMD_ID"
        say "  round $r: echelon ${rate:-?} req/s, pgbench ${tps:-?} tx/s"
    done
}
