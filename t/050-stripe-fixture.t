# Stripe's own published invoice object, as it is (most contact fields
# null, a draft with no number), wrapped in an event and signed as Stripe
# signs: stored, and its delivery skipped with the reason, never a crash.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;

our $fixture = "$FindBin::Bin/../../shared/fixtures/stripe/invoice.json";

BEGIN {
    my $f = "$FindBin::Bin/../../shared/fixtures/stripe/invoice.json";
    unless (-f $f) {
        require Test::More;
        Test::More::plan(skip_all => "no Stripe fixtures at $f");
    }
}

use Test::Nginx::Socket 'no_plan';

Echelon::setup_account(triggers => [
    { event => 'invoice.issued', channel => 'email', delay => '0',
      template => { subject => 'Invoice {{invoice.number}}',
                    body => 'Hi {{contact.name}}, {{invoice.amount}}' } },
]);

our $invoice = do {
    open(my $fh, '<', $fixture) or die "$fixture: $!";
    local $/;
    $Echelon::JSON->decode(<$fh>);
};
our $event = Echelon::stripe_event('invoice.finalized', $invoice);
our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";

Echelon::default_blocks(Echelon::http_config(), <<'CONF');
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
CONF

no_shuffle();
no_long_string();
run_tests();

__DATA__

=== TEST 1: Stripe's invoice fixture in a signed invoice.finalized is stored
--- request eval
Echelon::stripe_request($main::event)
--- more_headers eval
Echelon::stripe_headers($main::event)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}
--- wait: 1.5
--- no_error_log
[alert]
[crit]



=== TEST 2: its customer has no email, so the delivery is skipped
--- request eval
"GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: ^\{"data":\[\{(?:[^{}]|\{[^{}]*\})*"contact":\{"id":"ctc_\w+","name":null,"address":null\},[^{}]*"status":"skipped","reason":"the contact has no email address",
