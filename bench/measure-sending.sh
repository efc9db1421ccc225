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
#
# 3c, the database's own limit on sending: with Echelon's scheduler
# switched off (a reload), pgbench runs bench_send_cycle(50) on as many due
# SMS deliveries: the module's claim and result statements, as the
# scheduler runs them, with no transport at all (bench/sql/send-cycle.pl).
# Rate as above, from sent_at.

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

# the same deliveries as an HTTP round, claimed and finished by pgbench
db_round() {
    local name=$1 tag=$2 load_id
    RATE=
    echelon_scheduler_switch off
    load_due "$name-load" "$tag" "$BENCH_SEND" "now()" "interval '0'" sms
    load_id=$CMD_ID
    run_recorded "$name" "$PG_BIN/pgbench" -n -M simple -c 2 -j 2 \
        -t $((BENCH_SEND / 100 + 1)) -f "$OUT/work/send-cycle.pgbench" \
        -h 127.0.0.1 -p "$BENCH_PG_PORT" -U postgres echelon_bench
    pgbench_check "$OUT/raw/$name.txt" || true
    run_recorded "$name-rate" "${BENCH_PSQL_REPORT[@]}" -v tag="$tag" \
        -v trigger="$(trigger_for sms)" -f "$BENCH_DIR/sql/rate.sql"
    CMD_ID=$load_id+$CMD_ID
    echelon_scheduler_switch on
    if [ "$(sql_field "$OUT/raw/$name-rate.txt" not_sent)" = 0 ]; then
        RATE=$(sql_field "$OUT/raw/$name-rate.txt" per_second)
    else
        say "WARNING: $name is void: not all sent (see raw/$name-rate.txt)"
    fi
}

measure_sending() {
    local r blast http smtp sms sms_cmd message=$OUT/work/message.eml
    local request=$OUT/work/sms-request.txt
    say "item 3: sending, $BENCH_ROUNDS rounds"
    "$BENCH_DIR/sql/send-cycle.pl" "$ECHELON_ROOT/src/ngx_echelon_sql.c" \
        | psql_bench > /dev/null
    echo 'CALL bench_send_cycle(50);' > "$OUT/work/send-cycle.pgbench"
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
        sms_cmd=$CMD_ID
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
        [ -n "$sms" ] && record httpdb echelon "$r" "$sms" deliveries/s "$sms_cmd"
        db_round "sending-db-anchor-r$r" "db-r$r"
        [ -n "$RATE" ] && record httpdb anchor "$r" "$RATE" deliveries/s "$CMD_ID"

        say "  round $r: SMTP ${smtp:-?}/s (the sink's limit ${blast:-?}/s)," \
            "SMS ${sms:-?}/s (wrk at the HTTP sink ${http:-?} req/s," \
            "the database alone ${RATE:-?}/s)"
    done
}
