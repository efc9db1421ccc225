#!/usr/bin/env bash
# Walks the product guide's setup story through the API of a running
# development server (make run; then make demo in another terminal):
#
#   1. the operator creates an account (admin token) and gets its API key
#   2. the account connects email and Stripe
#   3. it creates a billing employee and an "invoice issued" trigger
#   4. Stripe sends invoice.finalized, signed as Stripe signs
#   5. the activity feed shows the email sent; the sink has the message
#
# Uses the same ECHELON_* settings as make run (defaults in tools/env.sh).
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

BASE=http://127.0.0.1:$ECHELON_PORT
MAIL_NEW=$ECHELON_RUN_DIR/mail/new
FIXTURE=$ECHELON_ROOT/../shared/fixtures/stripe/invoice.json
WAIT_SECONDS=15

SCRATCH=
RESPONSE=
STEP=0

step() {
    STEP=$((STEP + 1))
    if [ -t 1 ]; then
        printf '\n\033[1m%d. %s\033[0m\n' "$STEP" "$*"
    else
        printf '\n%d. %s\n' "$STEP" "$*"
    fi
}

show_json() {
    jq . 2>/dev/null <<<"$1" || printf '%s\n' "$1"
}

check_tools() {
    local tool
    for tool in curl jq openssl; do
        command -v "$tool" > /dev/null || die "$tool is missing: make deps"
    done
}

check_server() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
           "$BASE/v1/account" || true)
    if [ "$code" = 000 ] || [ -z "$code" ]; then
        die "Echelon is not answering on $BASE." \
            "Start it with 'make run' in another terminal (with the same" \
            "ECHELON_* settings), then run 'make demo' again."
    fi
}

# call STATUS_PATTERN METHOD PATH TOKEN [JSON_BODY]: prints the exchange,
# leaves the response body in RESPONSE, fails on another status.
call() {
    local expect=$1 method=$2 path=$3 token=$4 body=${5:-} code
    local args=(-sS -X "$method" -o "$SCRATCH/response" -w '%{http_code}'
                -H "Authorization: Bearer $token")
    echo "--> $method $path"
    if [ -n "$body" ]; then
        show_json "$body" | sed 's/^/    /'
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    code=$(curl "${args[@]}" "$BASE$path") || die "$method $path: no answer"
    RESPONSE=$(cat "$SCRATCH/response")
    echo "<-- $code"
    show_json "$RESPONSE" | sed 's/^/    /'
    # shellcheck disable=SC2254
    case $code in
        $expect) ;;
        *) die "$method $path: expected $expect, got $code" ;;
    esac
}

field() {
    local value
    value=$(jq -r "$1 // empty" <<<"$RESPONSE" 2>/dev/null || true)
    [ -n "$value" ] || die "the response has no $1"
    printf '%s' "$value"
}

# A Stripe-shaped invoice: the shared fixture when it is there, else a
# minimal one; the fields the story needs are set either way.
stripe_invoice() {
    local now=$1 suffix=$2 base='{}'
    if [ -f "$FIXTURE" ]; then
        base=$(cat "$FIXTURE")
    fi
    jq -c --argjson now "$now" --arg suffix "$suffix" '. + {
        id: ("in_demo" + $suffix),
        object: "invoice",
        customer: ("cus_demo" + $suffix),
        customer_email: "jenny@example.com",
        customer_name: "Jenny Rosen",
        number: "ACME-0001",
        amount_due: 125000,
        amount_paid: 0,
        amount_remaining: 125000,
        subtotal: 125000,
        total: 125000,
        currency: "usd",
        collection_method: "send_invoice",
        created: $now,
        effective_at: $now,
        due_date: ($now + 14 * 86400),
        hosted_invoice_url: "https://invoice.stripe.com/i/acct_demo/test",
        status: "open",
        livemode: false
    }' <<<"$base"
}

stripe_event() {
    local now=$1 suffix=$2 invoice=$3
    jq -cn --argjson now "$now" --arg suffix "$suffix" \
        --argjson invoice "$invoice" '{
        id: ("evt_demo" + $suffix),
        object: "event",
        api_version: "2024-06-20",
        created: $now,
        type: "invoice.finalized",
        livemode: false,
        data: {object: $invoice}
    }'
}

# Stripe-Signature: t=<time>,v1=<hex HMAC-SHA256 of "<time>.<raw body>">.
stripe_signature() {
    local secret=$1 t=$2 file=$3 mac
    mac=$({ printf '%s.' "$t"; cat "$file"; } \
          | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
    printf 't=%s,v1=%s' "$t" "$mac"
}

post_webhook() {
    local account=$1 secret=$2 body_file=$3 code t signature
    t=$(date +%s)
    signature=$(stripe_signature "$secret" "$t" "$body_file")
    echo "--> POST /webhooks/stripe/$account"
    echo "    Stripe-Signature: $signature"
    jq '{id, type, created, invoice: .data.object | {id, number, customer_email,
         amount_due, currency, due_date, hosted_invoice_url}}' "$body_file" \
        | sed 's/^/    /'
    code=$(curl -sS -X POST -o "$SCRATCH/response" -w '%{http_code}' \
           -H 'Content-Type: application/json' \
           -H "Stripe-Signature: $signature" \
           --data-binary "@$body_file" "$BASE/webhooks/stripe/$account") \
        || die "webhook: no answer"
    RESPONSE=$(cat "$SCRATCH/response")
    echo "<-- $code"
    show_json "$RESPONSE" | sed 's/^/    /'
    case $code in
        2??) ;;
        *) die "the webhook was not accepted (status $code)" ;;
    esac
}

wait_for_sent() {
    local key=$1 employee=$2 deadline status
    deadline=$((SECONDS + WAIT_SECONDS))
    echo "    polling GET /v1/employees/$employee/activity (up to" \
         "$WAIT_SECONDS s)"
    while [ "$SECONDS" -lt "$deadline" ]; do
        RESPONSE=$(curl -sS -H "Authorization: Bearer $key" \
                   "$BASE/v1/employees/$employee/activity" || true)
        status=$(jq -r '[.data[]?.status] | join(",")' <<<"$RESPONSE" \
                 2>/dev/null || true)
        echo "    statuses: ${status:-none yet}"
        case ",$status," in
            *,sent,*|*,delivered,*)
                return 0 ;;
            *,failed,*|*,skipped,*|*,cancelled,*)
                show_json "$RESPONSE" | sed 's/^/    /'
                die "the delivery did not go out (see reason above)" ;;
        esac
        sleep 1
    done
    show_json "$RESPONSE" | sed 's/^/    /'
    die "no delivery reached 'sent' in $WAIT_SECONDS s"
}

show_newest_mail() {
    local newest
    newest=$(ls -t "$MAIL_NEW" 2>/dev/null | head -n 1 || true)
    [ -n "$newest" ] || die "no message in $MAIL_NEW"
    if [ ! "$MAIL_NEW/$newest" -nt "$SCRATCH/started" ]; then
        die "the newest message in $MAIL_NEW is older than this demo"
    fi
    echo "    $MAIL_NEW/$newest"
    echo
    sed 's/^/    | /' "$MAIL_NEW/$newest"
}

main() {
    local account key secret employee now suffix invoice
    check_tools
    check_server
    SCRATCH=$(mktemp -d /tmp/echelon-demo.XXXXXX)
    trap 'rm -rf "$SCRATCH"' EXIT
    touch "$SCRATCH/started"
    echo "Echelon demo against $BASE"

    step "The operator creates an account (admin token)"
    call 201 POST /v1/accounts "$ECHELON_ADMIN_TOKEN" \
        '{"name":"Acme Studio","plan":"starter"}'
    account=$(field .id)
    key=$(field .api_key)

    step "The account connects email"
    call "2??" PUT /v1/channels/email "$key" \
        '{"from":"Acme Billing <billing@acme.test>"}'

    step "The account connects Stripe (a fresh signing secret)"
    secret=whsec_demo_$(openssl rand -hex 16)
    call "2??" PUT /v1/integrations/stripe "$key" \
        "$(jq -cn --arg s "$secret" '{signing_secret: $s}')"

    step "New AI Employee: Billing — Accounts Receivable"
    call 201 POST /v1/employees "$key" \
        '{"name":"Billing — Accounts Receivable","role":"billing","channels":["email"],"tone":"friendly"}'
    employee=$(field .id)

    step "Trigger: invoice issued → send the invoice by email at once"
    call 201 POST "/v1/employees/$employee/triggers" "$key" \
        "$(jq -cn '{event: "invoice.issued", channel: "email", delay: "0",
            template: {
              subject: "Invoice {{invoice.number}} from {{account.name}}",
              body: "Hi {{contact.name}},\n\nYour invoice {{invoice.number}} for {{invoice.amount}} is due on {{invoice.due_date}}.\nPay it here: {{invoice.url}}\n\n{{employee.name}}"
            }}')"

    step "Stripe sends invoice.finalized (signed as Stripe signs)"
    now=$(date +%s)
    suffix=_$(openssl rand -hex 8)
    invoice=$(stripe_invoice "$now" "$suffix")
    stripe_event "$now" "$suffix" "$invoice" | tr -d '\n' > "$SCRATCH/event.json"
    post_webhook "$account" "$secret" "$SCRATCH/event.json"

    step "The activity feed shows the email sent"
    wait_for_sent "$key" "$employee"
    call 200 GET "/v1/employees/$employee/activity" "$key"

    step "The email, as the SMTP sink stored it"
    show_newest_mail

    printf '\nDone: account %s, employee %s.\n' "$account" "$employee"
    printf 'Go on with the API yourself:\n'
    printf '  KEY=%s EMP=%s\n' "$key" "$employee"
    printf '  curl -H "Authorization: Bearer $KEY" %s/v1/employees/$EMP/activity\n' \
        "http://127.0.0.1:$ECHELON_PORT"
}

main "$@"
