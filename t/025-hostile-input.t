# Input an attacker controls, each case once a crash or a wrong answer:
# always a JSON error, never a dead worker, never an HTML page.

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
our $json = "$auth\nContent-Type: application/json";

# the same invoice, first as a newer yen event, then as an older dollar one
our $newer = Echelon::stripe_event('invoice.updated',
    Echelon::stripe_invoice(id => 'in_order', number => 'NEW-1',
                            currency => 'jpy', amount => 5000));
our $older = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(id => 'in_order', number => 'OLD-1',
                            currency => 'usd', amount => 100),
    created => time() - 3600);
our $bad_email = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'INJ-1',
                            email => "a\@b.c\r\nRCPT TO:<x\@y.z>",
                            name => 'Injected'));
our $long_id = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'LONG-1'), id => 'evt_' . 'x' x 6000);

# nginx's own errors answered by echelon_errors, as conf/ sets them up
our $errors = <<'CONF';
    error_page 400 404 405 408 413 414 494 500 501 502 503 504 505 /.echelon/error;
    location = /.echelon/error { internal; echelon_errors; }
    location /v1/ { echelon_api; }
CONF

Echelon::default_blocks(Echelon::http_config(), <<'CONF');
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
CONF

no_shuffle();
no_long_string();
run_tests();

# what the blocks above left in the database

is(Echelon::sql("SELECT number || ' ' || amount_due || ' ' || currency "
                . "FROM invoices WHERE external_id = 'in_order'"),
   'NEW-1 5000 jpy',
   'an older event did not rewrite the invoice\'s number, amount or currency');

is(Echelon::sql("SELECT coalesce(email, 'none') FROM contacts "
                . "WHERE name = 'Injected'"),
   'none', 'a customer email with a line break is not kept as an address');

__DATA__

=== TEST 1: an empty webhook body is a JSON 400, not a dead worker
--- request
POST /webhooks/stripe/acct_anything
--- more_headers
Content-Length: 0
--- error_code: 400
--- response_body_like: ^\{"error":\{"code":"signature_missing",
--- no_error_log
[alert]
exited on signal



=== TEST 2: an empty API body is a JSON 400
--- request
POST /v1/contacts
--- more_headers eval
"$main::json\nContent-Length: 0"
--- error_code: 400
--- response_body_like: ^\{"error":\{"code":"invalid_json",
--- no_error_log
[alert]



=== TEST 3: a chunked body is refused with 411 in JSON
--- request eval
"POST /webhooks/stripe/acct_anything\n" . "a\r\n{\"id\":\"x\"}\r\n0\r\n\r\n"
--- more_headers
Transfer-Encoding: chunked
Content-Type: application/json
--- error_code: 411
--- response_body_like: ^\{"error":\{"code":"length_required",
--- no_error_log
[alert]



=== TEST 4: an id that is not UTF-8 is a JSON 404
--- request
GET /v1/employees/%FF
--- more_headers eval
$main::auth
--- error_code: 404
--- response_headers
Content-Type: application/json
--- response_body_like: "code":"not_found"



=== TEST 5: a webhook account that cannot exist is a JSON 404, not a 500
--- request
POST /webhooks/stripe/%FF
{}
--- more_headers
Content-Type: application/json
--- error_code: 404
--- response_body_like: "code":"not_found"
--- no_error_log
[error]



=== TEST 6: an error quoting 300 accented letters is still JSON
--- request eval
"POST /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/triggers
{\"event\": \"invoice.issued\", \"channel\": \"email\", \"template\": {\"subject\": \"s\", \"body\": \"{{a" . ("\xc3\xa9" x 300) . "}}\"}}"
--- more_headers eval
$main::json
--- error_code: 422
--- response_headers
Content-Type: application/json
--- response_body_like: ^\{"error":\{"code":"unknown_variable","message":"unknown template variable



=== TEST 7: a cursor that is not an id is a 400 naming it
--- request eval
"GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity?cursor=%FF"
--- more_headers eval
$main::auth
--- error_code: 400
--- response_body_like: "field":"cursor"



=== TEST 8: a 405 says which methods are allowed
--- request
DELETE /v1/contacts
--- more_headers eval
$main::auth
--- error_code: 405
--- response_headers
Allow: POST
--- response_body_like: "code":"method_not_allowed"



=== TEST 9: the newer Stripe event sets the invoice in yen
--- request eval
Echelon::stripe_request($main::newer)
--- more_headers eval
Echelon::stripe_headers($main::newer)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 10: an older event about the same invoice is accepted
--- request eval
Echelon::stripe_request($main::older)
--- more_headers eval
Echelon::stripe_headers($main::older)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 11: a customer email with a line break is not used as an address
--- request eval
Echelon::stripe_request($main::bad_email)
--- more_headers eval
Echelon::stripe_headers($main::bad_email)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 12: an event id of 6000 bytes is a 400, not a 500
--- request eval
Echelon::stripe_request($main::long_id)
--- more_headers eval
Echelon::stripe_headers($main::long_id)
--- error_code: 400
--- response_body_like: "code":"invalid_event"



=== TEST 13: a URI too long for nginx is a JSON 414 through echelon_errors
--- config eval
$main::errors
--- request eval
"GET /v1/contacts?x=" . ("a" x 9000)
--- error_code: 414
--- response_headers
Content-Type: application/json
--- response_body
{"error":{"code":"uri_too_long","message":"the request URI is too long"}}



=== TEST 14: a header line nginx cannot read is a JSON 400, not HTML
--- config eval
$main::errors
--- request
GET /v1/account
--- more_headers eval
"Bad\x01Header: x"
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body
{"error":{"code":"bad_request","message":"the request could not be read: its request line or a header is malformed or too large"}}



=== TEST 15: TRACE, refused by nginx itself, is a JSON 405
--- config eval
$main::errors
--- request
TRACE /v1/account
--- error_code: 405
--- response_body
{"error":{"code":"method_not_allowed","message":"this method is not allowed here"}}



=== TEST 16: nginx's own 413 (client_max_body_size, outside our locations) is JSON too
--- config eval
$main::errors . "    location /upload/ { client_max_body_size 1k; return 204; }\n"
--- request eval
"POST /upload/x\n" . ("b" x 4000)
--- error_code: 413
--- response_body
{"error":{"code":"body_too_large","message":"the request body is too large"}}



=== TEST 17: a path outside the API is a JSON 404, and so is the error page itself
--- config eval
$main::errors
--- request
GET /.echelon/error
--- error_code: 404
--- response_body
{"error":{"code":"not_found","message":"there is nothing here"}}



=== TEST 18: a header line over nginx's buffers (its 494) is a JSON 400
--- config eval
$main::errors
--- request
GET /v1/account
--- more_headers eval
"X-Big: " . ("a" x 9000)
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body_like: "code":"bad_request"



=== TEST 19: a transfer coding nginx does not know (its 501) is JSON
--- config eval
$main::errors
--- request
POST /v1/contacts
{}
--- more_headers
Transfer-Encoding: gzip
--- error_code: 501
--- response_body_like: "code":"not_implemented"
