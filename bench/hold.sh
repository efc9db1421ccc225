#!/usr/bin/env bash
# Holds one webhook request's query in PostgreSQL, 2 s at a time, for
# SECONDS (item 5, bench/measure-blocked.sh): psql locks the events table
# (LOCK TABLE events IN EXCLUSIVE MODE) in a transaction that lasts 2 s;
# 0.2 s later a signed webhook is POSTed, whose INSERT INTO events waits
# for the lock. Prints "held <status> <seconds>" per webhook.
#
#   bench/hold.sh SECONDS TAG     (ACCOUNT and STRIPE_SECRET from the env)
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tools/env.sh"
# shellcheck source=bench/lib.sh
. "$ECHELON_ROOT/bench/lib.sh"

[ $# -eq 2 ] || die "usage: hold.sh SECONDS TAG"
end=$((SECONDS + $1))
n=0
while [ "$SECONDS" -lt "$end" ]; do
    n=$((n + 1))
    line=$("$BENCH_DIR/sign.pl" "$STRIPE_SECRET" "hold$2x${n}x" 1)
    psql_bench > /dev/null <<'SQL' &
BEGIN;
LOCK TABLE events IN EXCLUSIVE MODE;
SELECT pg_sleep(2);
COMMIT;
SQL
    locker=$!
    sleep 0.2
    result=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' \
        -H 'Content-Type: application/json' \
        -H "Stripe-Signature: ${line%%$'\t'*}" \
        --data-binary "${line#*$'\t'}" \
        "http://127.0.0.1:$BENCH_PORT/webhooks/stripe/$ACCOUNT")
    wait "$locker"
    # held: answered 200 after waiting at least 1.5 s for the lock
    if awk -v r="$result" 'BEGIN { split(r, a, " ");
            exit !(a[1] == 200 && a[2] >= 1.5) }'; then
        echo "held $result"
    else
        echo "not held $result"
    fi
done
