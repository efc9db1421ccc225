# Stripe webhooks in: the signature over the raw bytes, Stripe's tolerance
# both ways, bad input answered in JSON, and an event id recorded once.
#
# Signatures are computed when the blocks are read, before the first one
# runs: the file must run within Stripe's 300 s tolerance, and the "out of
# tolerance" blocks keep a margin of 100 s.

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

our $first = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'GOOD-1'), id => 'evt_first');
our $rejected = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'REJECTED-1'), id => 'evt_rejected');
our $rotated = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'ROTATED-1'));
our $ignored = Echelon::stripe_event('customer.subscription.created',
    { id => 'sub_1', object => 'subscription' });
our $not_invoice = Echelon::stripe_event('invoice.finalized', 'oops');

# about 1 MB: an invoice with many line items, kept by nginx in a file
our $large = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'LARGE-1', lines => 1));
{
    my $inv = Echelon::stripe_invoice(number => 'LARGE-1');
    $inv->{lines}{data} = [ map { { id => "il_$_", object => 'line_item',
        amount => 100, description => 'Seat licence ' . ('x' x 180) } }
        1 .. 4000 ];
    $large = Echelon::stripe_event('invoice.finalized', $inv);
}

our $activity = "GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity";

Echelon::default_blocks(Echelon::http_config(), <<'CONF');
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
CONF

no_shuffle();
no_long_string();
run_tests();

__DATA__

=== TEST 1: a correctly signed invoice.finalized is stored and answered 200
--- request eval
Echelon::stripe_request($main::first)
--- more_headers eval
Echelon::stripe_headers($main::first)
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body
{"received":true,"outcome":"processed"}
--- no_error_log
[error]



=== TEST 2: the same event id again is 200 and changes nothing
--- request eval
Echelon::stripe_request($main::first)
--- more_headers eval
Echelon::stripe_headers($main::first)
--- error_code: 200
--- response_body
{"received":true,"outcome":"duplicate"}



=== TEST 3: a signature made with another secret is 400 and stores nothing
--- request eval
Echelon::stripe_request($main::rejected)
--- more_headers eval
Echelon::stripe_headers($main::rejected, secret => 'whsec_not_the_one')
--- error_code: 400
--- response_body_like: ^\{"error":\{"code":"signature_invalid","message":"no signature matches the body"\}\}$
--- error_log
Stripe webhook for



=== TEST 4: a body changed after signing is 400
--- request eval
Echelon::stripe_request($main::rejected =~ s/REJECTED-1/REJECTED-2/r)
--- more_headers eval
Echelon::stripe_headers($main::rejected)
--- error_code: 400
--- response_body_like: "code":"signature_invalid"



=== TEST 5: a timestamp older than 300 s is 400
--- request eval
Echelon::stripe_request($main::rejected)
--- more_headers eval
Echelon::stripe_headers($main::rejected, offset => -400)
--- error_code: 400
--- response_body_like: "code":"signature_expired"



=== TEST 6: a timestamp more than 300 s ahead is 400
--- request eval
Echelon::stripe_request($main::rejected)
--- more_headers eval
Echelon::stripe_headers($main::rejected, offset => 400)
--- error_code: 400
--- response_body_like: "code":"signature_expired"



=== TEST 7: a timestamp just inside the tolerance is accepted
--- request eval
Echelon::stripe_request($main::rotated)
--- more_headers eval
Echelon::stripe_headers($main::rotated, offset => -250,
                        extra => 'ab' x 32)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 8: no Stripe-Signature header is 400
--- request eval
Echelon::stripe_request($main::rejected)
--- more_headers
Content-Type: application/json
--- error_code: 400
--- response_body_like: ^\{"error":\{"code":"signature_missing",



=== TEST 9: a header without v1 is 400
--- request eval
Echelon::stripe_request($main::rejected)
--- more_headers eval
"Content-Type: application/json\nStripe-Signature: t=" . time() . ",v0=abc\n"
--- error_code: 400
--- response_body_like: "code":"signature_invalid"



=== TEST 10: malformed JSON with a valid signature is 400 invalid_json
--- request eval
Echelon::stripe_request('{"id": "evt_broken", "type":')
--- more_headers eval
Echelon::stripe_headers('{"id": "evt_broken", "type":')
--- error_code: 400
--- response_body_like: ^\{"error":\{"code":"invalid_json","message":"[^"]+"\}\}$



=== TEST 11: an invoice event whose object is not an invoice is 400
--- request eval
Echelon::stripe_request($main::not_invoice)
--- more_headers eval
Echelon::stripe_headers($main::not_invoice)
--- error_code: 400
--- response_body_like: "code":"invalid_event"



=== TEST 12: an event type Echelon does not use is 200 and ignored
--- request eval
Echelon::stripe_request($main::ignored)
--- more_headers eval
Echelon::stripe_headers($main::ignored)
--- error_code: 200
--- response_body
{"received":true,"outcome":"ignored"}



=== TEST 13: a 1 MB event that nginx keeps in a temporary file verifies
--- config
    client_body_buffer_size 16k;
    location /webhooks/ { echelon_webhooks; }
--- request eval
Echelon::stripe_request($main::large)
--- more_headers eval
Echelon::stripe_headers($main::large)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}
--- error_log
a client request body is buffered to a temporary file



=== TEST 14: a body over echelon_max_body_size is 413 in JSON
--- config
    echelon_max_body_size 64k;
    location /webhooks/ { echelon_webhooks; }
--- request eval
Echelon::stripe_request($main::large)
--- more_headers eval
Echelon::stripe_headers($main::large)
--- error_code: 413
--- response_body_like: ^\{"error":\{"code":"body_too_large",



=== TEST 15: GET on a webhook is 405 in JSON
--- request
GET /webhooks/stripe/acct_x
--- error_code: 405
--- response_body_like: "code":"method_not_allowed"



=== TEST 16: an account without a Stripe secret is 404 in JSON
--- request eval
"POST /webhooks/stripe/acct_unknown\n$main::first"
--- more_headers eval
Echelon::stripe_headers($main::first)
--- error_code: 404
--- response_body_like: "code":"not_found"



=== TEST 17: only the accepted invoices made deliveries
--- request eval
"$main::activity"
--- more_headers eval
"Authorization: Bearer $ENV{TEST_NGINX_API_KEY}"
--- error_code: 200
--- response_body_like eval
Echelon::exactly(3, qr/"id":"dlv_/)
