# PostgreSQL stopped under a running nginx: handlers answer 503 in JSON at
# once, store nothing, and the pool reconnects by itself once it is back.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use Test::Nginx::Socket 'no_plan';

Echelon::setup_account(triggers => [
    { event => 'invoice.issued', channel => 'email', delay => '1h',
      template => { subject => 'Invoice {{invoice.number}}',
                    body => 'Hi {{contact.name}}' } },
]);

our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";
our $event = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'OUTAGE-1'), id => 'evt_outage');

# nginx has no sleep; a slow response is the pause between two requests
our $pause = 'x' x 250;

Echelon::default_blocks(Echelon::http_config(), <<"CONF");
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
    location = /t/pause { limit_rate 100; return 200 "$main::pause"; }
CONF

no_shuffle();
no_long_string();
run_tests();

__DATA__

=== TEST 1: with the database up, the account answers
--- request
GET /v1/account
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "plan":"starter"



=== TEST 2: with the database stopped, the API answers 503 in JSON
--- init
system("$ENV{TEST_NGINX_PG_CTL} stop >/dev/null") == 0 or die "pg stop";
--- request
GET /v1/account
--- more_headers eval
$main::auth
--- error_code: 503
--- response_headers
Retry-After: 1
Content-Type: application/json
--- response_body_like: ^\{"error":\{"code":"store_unavailable","message":"[^"]+"\}\}$
--- timeout: 5



=== TEST 3: a webhook while the database is down is 503, not acknowledged
--- request eval
Echelon::stripe_request($main::event)
--- more_headers eval
Echelon::stripe_headers($main::event)
--- error_code: 503
--- response_body_like: "code":"store_unavailable"
--- timeout: 5



=== TEST 4: the same nginx reconnects by itself when the database is back
--- init
system("(sleep 0.5; $ENV{TEST_NGINX_PG_CTL} start) >/dev/null 2>&1 &");
--- request eval
["GET /v1/account", "GET /t/pause", "GET /v1/account"]
--- more_headers eval
$main::auth
--- error_code eval
[503, 200, 200]
--- response_body_like eval
[qr/"code":"store_unavailable"/, qr/^x+$/, qr/"plan":"starter"/]
--- timeout: 10



=== TEST 5: the webhook Stripe retries after the outage is stored
--- request eval
Echelon::stripe_request($main::event)
--- more_headers eval
Echelon::stripe_headers($main::event)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 6: exactly one delivery came of it
--- request eval
"GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
Echelon::exactly(1, qr/"id":"dlv_/)
