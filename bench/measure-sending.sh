# shellcheck shell=bash
# Item 3, sending: deliveries per second from the scheduler to the sinks.
#
# SMTP: BENCH_SEND deliveries due at once (SQL), sent by the scheduler to
# the SMTP sink; the rate between the first and the last sent_at. Anchor:
# the sink's own limit, bench/smtp_blast.py sending one of those very
# messages the same number of times over 8 reused connections.
#
# HTTP: the anchor is wrk straight at the HTTP sink (bench/sink.conf.in)
# with the request body of a provider's SMS (bench/sink-post.lua). The
# Echelon figure needs the HTTP provider transport; until the module has
# it (src/ngx_echelon_fetch.c and sms deliveries sent by the scheduler),
# it is printed as n/a.

: "${BENCH_SEND:=3000}"

http_providers_built() {
    [ -f "$ECHELON_ROOT/src/ngx_echelon_fetch.c" ] \
        && grep -q 'ngx_echelon_fetch(' "$ECHELON_ROOT/src/ngx_echelon_scheduler.c"
}

measure_sending() {
    local r tag rate blast http load_id message
    say "item 3: sending, $BENCH_ROUNDS rounds"
    message=$OUT/work/message.eml
    for r in $(seq "$BENCH_ROUNDS"); do
        tag=send-r$r
        load_due "sending-load-r$r" "$tag" "$BENCH_SEND" "now()" "interval '0'"
        load_id=$CMD_ID
        wait_sent "$tag" 120 || true
        run_recorded "sending-smtp-echelon-r$r" "${BENCH_PSQL_REPORT[@]}" \
            -v tag="$tag" -f "$BENCH_DIR/sql/rate.sql"
        rate=$(sql_field "$OUT/raw/sending-smtp-echelon-r$r.txt" per_second)
        if [ "$(sql_field "$OUT/raw/sending-smtp-echelon-r$r.txt" not_sent)" = 0 ]
        then
            record smtp echelon "$r" "$rate" deliveries/s "$load_id+$CMD_ID"
        else
            say "WARNING: round $r of item 3 (SMTP) is void: not all sent"
        fi

        if [ ! -f "$message" ]; then
            cp "$(find "$MAIL_DIR/new" -type f | head -n 1)" "$message"
        fi
        run_recorded "sending-smtp-anchor-r$r" "$BENCH_DIR/smtp_blast.py" \
            "$BENCH_SMTP_PORT" "$message" "$BENCH_SEND" 8
        blast=$(sed -n 's/^messages\/s: //p' "$OUT/raw/sending-smtp-anchor-r$r.txt")
        grep -q '^errors: 0' "$OUT/raw/sending-smtp-anchor-r$r.txt" \
            && record smtp anchor "$r" "$blast" messages/s "$CMD_ID"

        run_recorded "sending-http-anchor-r$r" wrk -t 2 \
            -c "$BENCH_CONNECTIONS" -d "${BENCH_SECONDS}s" --latency \
            -s "$BENCH_DIR/sink-post.lua" "http://127.0.0.1:$BENCH_SINK_PORT"
        http=$(wrk_rate "$OUT/raw/sending-http-anchor-r$r.txt")
        wrk_check "$OUT/raw/sending-http-anchor-r$r.txt" \
            && record http anchor "$r" "$http" req/s "$CMD_ID"
        if http_providers_built; then
            record http echelon "$r" "n/a (not driven by the bench yet)" - -
        else
            record http echelon "$r" "n/a (HTTP providers not built yet)" - -
        fi
        say "  round $r: SMTP ${rate:-?}/s (sink's limit ${blast:-?}/s)," \
            "HTTP sink ${http:-?} req/s"
    done
}
