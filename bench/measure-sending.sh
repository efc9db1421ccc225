# shellcheck shell=bash
# Item 3, sending: deliveries per second from the scheduler to the sinks,
# BENCH_SEND deliveries due at once (SQL); the rate between the first and
# the last sent_at (bench/sql/rate.sql).
#
# SMTP: email deliveries to the SMTP sink. Anchor: the sink's own limit,
# bench/smtp_blast.py sending one of those very messages as many times
# over 8 reused connections.
#
# HTTP: SMS deliveries through the Twilio transport to the HTTP sink
# (bench/sink.conf.in, nginx answering as Twilio does). Anchor: wrk
# straight at the sink with the same request (bench/sms-request.pl rebuilds
# the body of one delivery Echelon sent; bench/sink-post.lua).

: "${BENCH_SEND:=3000}"

# One round of the scheduler sending: NAME TAG CHANNEL -> sets RATE, or
# leaves it empty when the round is void.
send_round() {
    local name=$1 tag=$2 channel=$3 load_id
    RATE=
    load_due "$name-load" "$tag" "$BENCH_SEND" "now()" "interval '0'" "$channel"
    load_id=$CMD_ID
    wait_sent "$tag" 120 "$channel" || true
    run_recorded "$name" "${BENCH_PSQL_REPORT[@]}" -v tag="$tag" \
        -v trigger="$(trigger_for "$channel")" -f "$BENCH_DIR/sql/rate.sql"
    CMD_ID=$load_id+$CMD_ID
    if [ "$(sql_field "$OUT/raw/$name.txt" not_sent)" = 0 ]; then
        RATE=$(sql_field "$OUT/raw/$name.txt" per_second)
    else
        say "WARNING: $name is void: not all sent (see raw/$name.txt)"
    fi
}

measure_sending() {
    local r blast http smtp sms message=$OUT/work/message.eml
    local request=$OUT/work/sms-request.txt
    say "item 3: sending, $BENCH_ROUNDS rounds"
    for r in $(seq "$BENCH_ROUNDS"); do
        send_round "sending-smtp-echelon-r$r" "send-r$r" email
        smtp=$RATE
        [ -n "$smtp" ] && record smtp echelon "$r" "$smtp" deliveries/s "$CMD_ID"

        if [ ! -f "$message" ]; then
            cp "$(find "$MAIL_DIR/new" -type f | head -n 1)" "$message"
        fi
        run_recorded "sending-smtp-anchor-r$r" "$BENCH_DIR/smtp_blast.py" \
            "$BENCH_SMTP_PORT" "$message" "$BENCH_SEND" 8
        blast=$(sed -n 's/^messages\/s: //p' "$OUT/raw/sending-smtp-anchor-r$r.txt")
        grep -q '^errors: 0' "$OUT/raw/sending-smtp-anchor-r$r.txt" \
            && record smtp anchor "$r" "$blast" messages/s "$CMD_ID"

        send_round "sending-http-echelon-r$r" "sms-r$r" sms
        sms=$RATE
        [ -n "$sms" ] && record http echelon "$r" "$sms" deliveries/s "$CMD_ID"

        if [ ! -s "$request" ]; then
            psql_bench -F $'\x1f' -c "SELECT address, body, id FROM deliveries
                WHERE trigger_id = '$TRIGGER_SMS' AND occurrence LIKE 'sms-r$r:%'
                  AND status = 'sent' LIMIT 1" \
                | "$BENCH_DIR/sms-request.pl" +15550000000 > "$request"
        fi
        run_recorded "sending-http-anchor-r$r" wrk -t 2 \
            -c "$BENCH_CONNECTIONS" -d "${BENCH_SECONDS}s" --latency \
            -s "$BENCH_DIR/sink-post.lua" "http://127.0.0.1:$BENCH_SINK_PORT" \
            -- "$request"
        http=$(wrk_rate "$OUT/raw/sending-http-anchor-r$r.txt")
        wrk_check "$OUT/raw/sending-http-anchor-r$r.txt" \
            && record http anchor "$r" "$http" req/s "$CMD_ID"
        say "  round $r: SMTP ${smtp:-?}/s (the sink's limit ${blast:-?}/s)," \
            "SMS ${sms:-?}/s (wrk at the HTTP sink ${http:-?} req/s)"
    done
}
