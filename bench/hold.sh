#!/usr/bin/env bash
# Holds one webhook request's query in PostgreSQL, 2 s at a time, for
# about SECONDS (item 5, bench/measure-blocked.sh). One psql session takes
# LOCK TABLE events IN EXCLUSIVE MODE in transactions of 2 s each
# (pg_sleep), one after the other; 0.2 s into each, a signed webhook is
# POSTed with curl, whose INSERT INTO events waits for the lock until that
# transaction ends. Its answer comes right after the lock is released, so
# the next POST, 0.2 s later, falls into the next transaction. The
# webhooks are signed beforehand, so that little else runs meanwhile.
# Prints "held <status> <seconds>" per webhook.
#
#   bench/hold.sh SECONDS TAG     (ACCOUNT and STRIPE_SECRET from the env)
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tools/env.sh"
# shellcheck source=bench/lib.sh
. "$ECHELON_ROOT/bench/lib.sh"

[ $# -eq 2 ] || die "usage: hold.sh SECONDS TAG"
cycles=$(( ($1 + 1) / 2 ))
mapfile -t signed < <("$BENCH_DIR/sign.pl" "$STRIPE_SECRET" "hold$2x" "$cycles")

for _ in $(seq "$cycles"); do
    printf '%s\n' 'BEGIN;' 'LOCK TABLE events IN EXCLUSIVE MODE;' \
        'SELECT pg_sleep(2);' 'COMMIT;'
done | psql_bench > /dev/null &
locker=$!

for line in "${signed[@]}"; do
    sleep 0.2
    result=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' \
        -H 'Content-Type: application/json' \
        -H "Stripe-Signature: ${line%%$'\t'*}" \
        --data-binary "${line#*$'\t'}" \
        "http://127.0.0.1:$BENCH_PORT/webhooks/stripe/$ACCOUNT")
    # held: answered 200 after waiting at least 1.5 s for the lock
    if awk -v r="$result" 'BEGIN { split(r, a, " ");
            exit !(a[1] == 200 && a[2] >= 1.5) }'; then
        echo "held $result"
    else
        echo "not held $result"
    fi
done
wait "$locker"
