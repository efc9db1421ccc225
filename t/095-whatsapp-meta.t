# WhatsApp through Meta's WhatsApp Cloud API, against a fake Graph API on
# loopback: the exact JSON request with its bearer token, the subscription
# handshake, and status notifications signed with the app secret.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use FakeProvider;
use Digest::SHA qw(hmac_sha256_hex);
use Test::Nginx::Socket 'no_plan';

our $fake_port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 8;
our $fake_log = "$FindBin::Bin/servroot-fake-meta.log";
our $phone_id = '106540352242922';
our $token = 'meta-test-access-token';
our $secret = 'meta-test-app-secret';

Echelon::setup_account(plan => 'scale', more => sub {
    my ($call) = @_;
    $call->('PUT', '/v1/channels/whatsapp', { from => '+15550002222' });
    $call->('PATCH', "/v1/employees/$ENV{TEST_NGINX_EMPLOYEE}",
            { channels => ['email', 'whatsapp'] });
    $call->('POST', "/v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/triggers",
            { event => 'invoice.issued', channel => 'whatsapp',
              template => { body => 'Invoice {{invoice.number}} is ready.' } });
    my $ctc = $call->('POST', '/v1/contacts',
                      { name => 'Wendy', whatsapp => '+15557770001' });
    $call->('POST', '/v1/invoices',
            { contact => $ctc->{id}, number => 'W-1', amount_due => 100,
              currency => 'eur' });

    # the fake provider resets the connection once it has read the request
    my $reset = $call->('POST', '/v1/contacts',
                        { name => 'Reset', whatsapp => '+15557770104' });
    $call->('POST', '/v1/invoices',
            { contact => $reset->{id}, number => 'R-1', amount_due => 100,
              currency => 'eur' });
});

our $fake = FakeProvider::start($fake_port, $fake_log);
END { FakeProvider::stop($fake) if $fake }

our $acct = $ENV{TEST_NGINX_ACCOUNT};
our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";

sub notification {
    my ($status, $key) = @_;
    my $body = $Echelon::JSON->encode({
        object => 'whatsapp_business_account',
        entry => [ { id => '1', changes => [ { field => 'messages',
            value => { messaging_product => 'whatsapp',
                       statuses => [ { id => 'wamid.15557770001',
                                       status => $status,
                                       recipient_id => '15557770001' } ] }
        } ] } ] });
    return ("POST /webhooks/meta/$main::acct\n$body",
            "Content-Type: application/json\nX-Hub-Signature-256: sha256="
            . hmac_sha256_hex($body, $key // $main::secret) . "\n");
}

Echelon::default_blocks(Echelon::http_config(extra => <<"X"), <<'CONF');
    echelon_max_attempts 3;
    echelon_whatsapp_provider meta;
    echelon_meta_url http://127.0.0.1:$main::fake_port;
    echelon_meta_phone_number_id $main::phone_id;
    echelon_meta_access_token $main::token;
    echelon_meta_app_secret $main::secret;
    echelon_meta_verify_token handshake-token;
X
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
CONF

no_shuffle();
no_long_string();
run_tests();

my ($req) = grep { $_->{body} =~ /"to":"15557770001"/ }
            FakeProvider::requests($fake_log);
my %h = map { lc($_->[0]) => $_->[1] } @{ $req->{headers} || [] };

is($req->{method}, 'POST', 'Meta: POST');
is($req->{path}, "/v19.0/$phone_id/messages", "Meta: the number's messages");
is($h{authorization}, "Bearer $token", 'Meta: the bearer token');
is($h{'content-type'}, 'application/json', 'Meta: JSON');
like($h{'idempotency-key'}, qr/^dlv_\w+$/, 'Meta: the delivery id as key');
is($req->{body}, '{"messaging_product":"whatsapp","recipient_type":'
                 . '"individual","to":"15557770001","type":"text","text":'
                 . '{"preview_url":false,"body":"Invoice W-1 is ready."}}',
   'Meta: the exact message');

# Meta has no idempotency key: a request it may have read is never sent a
# second time within an attempt, even on a kept-alive connection

is(Echelon::wait_for_sql("SELECT status FROM deliveries d JOIN contacts c "
                         . "ON c.id = d.contact_id WHERE c.name = 'Reset'",
                         'failed', 30),
   'failed', 'Meta: a connection reset after the request, every attempt: '
             . 'failed after the last');
my @resets = grep { $_->{body} =~ /"to":"15557770104"/ }
             FakeProvider::requests($fake_log);
is(scalar @resets, 3, 'Meta: one request an attempt, no automatic second '
                      . 'copy (Meta documents no idempotency key)');

__DATA__

=== TEST 1: the scheduler sends the WhatsApp message
--- request
GET /v1/account
--- more_headers eval
$main::auth
--- error_code: 200
--- wait: 1.5



=== TEST 2: it is sent
--- request eval
"GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity?channel=whatsapp"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "channel":"whatsapp","contact":\{"id":"ctc_\w+","name":"Wendy","address":"\+15557770001"\},[^{}]*"status":"sent"



=== TEST 3: Meta's subscription handshake is answered with the challenge
--- request eval
"GET /webhooks/meta/$main::acct?hub.mode=subscribe&hub.verify_token=handshake-token&hub.challenge=1158201444"
--- error_code: 200
--- response_body chomp
1158201444



=== TEST 4: a wrong verify token is 403
--- request eval
"GET /webhooks/meta/$main::acct?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1"
--- error_code: 403
--- response_body_like: "code":"verification_failed"



=== TEST 5: a status signed with another secret is 403
--- request eval
(main::notification('delivered', 'not-the-secret'))[0]
--- more_headers eval
(main::notification('delivered', 'not-the-secret'))[1]
--- error_code: 403
--- response_body_like: "code":"signature_invalid"



=== TEST 6: "delivered", signed with the app secret
--- request eval
(main::notification('delivered'))[0]
--- more_headers eval
(main::notification('delivered'))[1]
--- error_code: 200
--- response_body
{"received":true,"applied":1}



=== TEST 7: the feed shows it delivered
--- request eval
"GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity?channel=whatsapp&status=delivered"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "status":"delivered",[^{}]*"delivered_at":"[-0-9T:]+Z"
