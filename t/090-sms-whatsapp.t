# SMS and WhatsApp through Twilio's Messages API, against a fake Twilio on
# loopback that records every request: the exact request, each failure
# kind, retries with one idempotency key, and status callbacks signed as
# Twilio signs them, which only move a delivery forward.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use FakeProvider;
use Digest::SHA qw(hmac_sha1_base64);
use MIME::Base64 qw(encode_base64);
use Test::Nginx::Socket 'no_plan';

our $fake_port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 7;
our $fake_log = "$FindBin::Bin/servroot-fake-twilio.log";
our $public = 'https://billing.example.test';
our $sid = 'AC0123456789abcdef0123456789abcdef';
our $token = 'twilio-test-auth-token';

our %to = (ok => '+15557770001', busy => '+15557770429',
           down => '+15557770500', bad => '+15557770400',
           hang => '+15557770000', long => '+15557770256',
           odd => '+15557770777');

Echelon::setup_account(plan => 'growth', more => sub {
    my ($call) = @_;
    $call->('PUT', '/v1/channels/sms', { from => '+15550001111' });
    $call->('PUT', '/v1/channels/whatsapp', { from => '+15550002222' });
    $call->('PATCH', "/v1/employees/$ENV{TEST_NGINX_EMPLOYEE}",
            { channels => ['email', 'sms', 'whatsapp'] });
    for my $ch ('sms', 'whatsapp') {
        $call->('POST', "/v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/triggers",
                { event => 'invoice.issued', channel => $ch, delay => '0',
                  template => { body => 'Invoice {{invoice.number}}: '
                                      . '{{invoice.amount}} & more' } });
    }
    for my $who (sort keys %to, 'none') {
        my $ctc = $call->('POST', '/v1/contacts',
            { name => "Client \u$who",
              ($who eq 'none' ? () : (phone => $to{$who},
                                      whatsapp => $to{$who})) });
        $call->('POST', '/v1/invoices',
            { contact => $ctc->{id}, number => "S-$who",
              amount_due => 4200, currency => 'usd' });
    }
});

our $fake = FakeProvider::start($fake_port, $fake_log);
END { FakeProvider::stop($fake) if $fake }

our $acct = $ENV{TEST_NGINX_ACCOUNT};
our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";
our $activity = "GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity";

# a status callback, signed as Twilio signs: the URL, then each parameter
sub callback {
    my (%p) = @_;
    my $path = "/webhooks/twilio/$main::acct";
    my $data = $main::public . $path
             . join('', map { $_ . $p{$_} } sort keys %p);
    my $sig = hmac_sha1_base64($data, $p{_token} // $main::token);
    $sig .= '=' x ((4 - length($sig) % 4) % 4);
    delete $p{_token};
    my $body = join('&', map { "$_=" . FakeProvider::escape($p{$_}) }
                         sort keys %p);
    return ("POST $path\n$body",
            "Content-Type: application/x-www-form-urlencoded\n"
            . "X-Twilio-Signature: $sig\n");
}

Echelon::default_blocks(Echelon::http_config(extra => <<"X"), <<'CONF');
    echelon_max_attempts 3;
    echelon_public_url $main::public;
    echelon_twilio_url http://127.0.0.1:$main::fake_port;
    echelon_twilio_account_sid $main::sid;
    echelon_twilio_auth_token $main::token;
    echelon_provider_timeout 2s;
X
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
CONF

no_shuffle();
no_long_string();
run_tests();

# what the fake Twilio received

my @reqs = FakeProvider::requests($fake_log);
my ($sms) = grep { $_->{body} =~ /^To=%2B15557770001&/ } @reqs;
my ($wa) = grep { $_->{body} =~ /^To=whatsapp%3A%2B15557770001&/ } @reqs;
my %h = map { lc($_->[0]) => $_->[1] } @{ $sms->{headers} || [] };

is($sms->{method}, 'POST', 'SMS: POST');
is($sms->{path}, "/2010-04-01/Accounts/$sid/Messages.json",
   "SMS: the account's Messages resource");
is($h{authorization}, 'Basic ' . encode_base64("$sid:$token", ''),
   'SMS: basic authentication with the account SID and auth token');
is($h{'content-type'}, 'application/x-www-form-urlencoded',
   'SMS: form-encoded');
like($h{'i-twilio-idempotency-token'}, qr/^dlv_\w+$/,
     "SMS: the delivery id as Twilio's idempotency token");
is($sms->{body}, 'To=%2B15557770001&From=%2B15550001111'
                 . '&Body=Invoice%20S-ok%3A%20%2442.00%20%26%20more'
                 . '&StatusCallback=https%3A%2F%2Fbilling.example.test'
                 . "%2Fwebhooks%2Ftwilio%2F$acct",
   'SMS: the exact fields');
like($wa->{body}, qr/^To=whatsapp%3A%2B15557770001&From=whatsapp%3A%2B15550002222&Body=/,
     'WhatsApp through Twilio: whatsapp: addresses');

my @busy = grep { $_->{body} =~ /^To=%2B15557770429&/ } @reqs;
my %tokens = map { my %x = map { lc($_->[0]) => $_->[1] } @{ $_->{headers} };
                   ($x{'i-twilio-idempotency-token'} => 1) } @busy;
is(scalar @busy, 3, 'a 429 is tried three times (echelon_max_attempts)');
is(scalar keys %tokens, 1, 'every retry carries the same idempotency key');

is(Echelon::wait_for_sql("SELECT string_agg(status || ' ' || "
                         . "coalesce(provider_id, 'none'), ',') FROM "
                         . "deliveries d JOIN contacts c ON c.id = "
                         . "d.contact_id WHERE c.phone = '+15557770256'",
                         'sent none,sent none'),
   'sent none,sent none',
   'a message id too long to keep: sent all the same, without the id');

is(Echelon::sql("SELECT count(*) > 0 FROM delivery_attempts a JOIN "
                . "deliveries d ON d.id = a.delivery_id JOIN contacts c ON "
                . "c.id = d.contact_id WHERE c.name = 'Client Hang' AND "
                . "a.outcome = 'transient' AND a.error ~ "
                . "'^timed out after 2000 ms'"),
   't', 'a provider that never answers: attempts end in a timeout '
        . '(one cut by a restart of the suite counts too, its lease run out)');

my @bad = grep { $_->{body} =~ /^To=%2B15557770400&/ } @reqs;
is(scalar @bad, 1, 'a 400 is not retried');

__DATA__

=== TEST 1: the scheduler sends and retries
--- request
GET /v1/account
--- more_headers eval
$main::auth
--- error_code: 200
--- wait: 5



=== TEST 2: SMS and WhatsApp to the contact are sent with the provider's id
--- request eval
"$main::activity?status=sent&contact=" . Echelon::sql("SELECT id FROM contacts WHERE name = 'Client Ok'")
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/(?=.*"channel":"sms","contact":\{"id":"ctc_\w+","name":"Client Ok","address":"\+15557770001"\},[^{}]*"status":"sent","reason":null,"attempts":1)(?=.*"channel":"whatsapp",[^{}]*\{[^{}]*\},[^{}]*"status":"sent")/s



=== TEST 3: a 400 fails at once with the provider's words
--- request eval
"$main::activity?status=failed"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/"channel":"sms","contact":\{"id":"ctc_\w+","name":"Client Bad",[^}]*\},[^{}]*"status":"failed","reason":"HTTP 400 from the provider: The 'To' number is not a valid phone number\.","attempts":1,/



=== TEST 4: a 429 and a 503 end failed after their attempts
--- init
Echelon::wait_for_sql("SELECT count(*) FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE c.name IN ('Client Busy', 'Client Down') AND d.status = 'failed'", 4);
--- request eval
"$main::activity?status=failed"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/(?=.*"name":"Client Busy",[^}]*\},[^{}]*"status":"failed","reason":"gave up after 3 attempts: HTTP 429 from the provider: Too Many Requests","attempts":3)(?=.*"name":"Client Down",[^}]*\},[^{}]*"status":"failed","reason":"gave up after 3 attempts: HTTP 503 from the provider[^"]*","attempts":3)/s



=== TEST 5: a contact without a number is skipped with the reason
--- request eval
"$main::activity?status=skipped&channel=sms"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "name":"Client None",[^}]*\},[^{}]*"status":"skipped","reason":"the contact has no phone number"



=== TEST 6: Twilio says the SMS was delivered
--- request eval
(main::callback(MessageSid => 'SM15557770001', MessageStatus => 'delivered'))[0]
--- more_headers eval
(main::callback(MessageSid => 'SM15557770001', MessageStatus => 'delivered'))[1]
--- error_code: 200
--- response_body
{"received":true,"applied":1}



=== TEST 7: a late "sent" after "delivered" changes nothing
--- request eval
(main::callback(MessageSid => 'SM15557770001', MessageStatus => 'sent'))[0]
--- more_headers eval
(main::callback(MessageSid => 'SM15557770001', MessageStatus => 'sent'))[1]
--- error_code: 200
--- response_body
{"received":true,"applied":0}



=== TEST 8: a callback signed with another token is 403 and changes nothing
--- request eval
(main::callback(MessageSid => 'SMw15557770001', MessageStatus => 'failed', _token => 'wrong'))[0]
--- more_headers eval
(main::callback(MessageSid => 'SMw15557770001', MessageStatus => 'failed', _token => 'wrong'))[1]
--- error_code: 403
--- response_body_like: "code":"signature_invalid"



=== TEST 9: WhatsApp undelivered, with Twilio's error
--- request eval
(main::callback(MessageSid => 'SMw15557770001', MessageStatus => 'undelivered', ErrorCode => '63016', ErrorMessage => 'Outside the allowed window'))[0]
--- more_headers eval
(main::callback(MessageSid => 'SMw15557770001', MessageStatus => 'undelivered', ErrorCode => '63016', ErrorMessage => 'Outside the allowed window'))[1]
--- error_code: 200
--- response_body
{"received":true,"applied":1}



=== TEST 10: the feed shows delivered and failed with the provider's error
--- request eval
"$main::activity?contact=" . Echelon::sql("SELECT id FROM contacts WHERE name = 'Client Ok'")
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/(?=.*"channel":"sms",[^{}]*\{[^{}]*\},[^{}]*"status":"delivered",[^{}]*"delivered_at":"[-0-9T:]+Z")(?=.*"channel":"whatsapp",[^{}]*\{[^{}]*\},[^{}]*"status":"failed","reason":"Twilio error 63016: Outside the allowed window")/s



=== TEST 11: the API answers while a provider hangs
--- request
GET /v1/account
--- more_headers eval
$main::auth
--- error_code: 200
--- wait: 5



=== TEST 12: a provider that never answers times out, and is tried again
--- init
Echelon::wait_for_sql("SELECT count(*) FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE c.name = 'Client Hang' AND d.status = 'failed'", 2);
--- request eval
"$main::activity?status=failed&channel=sms"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/"name":"Client Hang",[^}]*\},[^{}]*"status":"failed","reason":"gave up after 3 attempts: (?:timed out after 2000 ms[^"]*|the result of the last was never stored)","attempts":3/



=== TEST 13: a failed status whose error text is not UTF-8 still applies
--- request eval
(main::callback(MessageSid => 'SM15557770777', MessageStatus => 'failed', ErrorCode => '30003', ErrorMessage => "bad\xff\xc3\xc3x"))[0]
--- more_headers eval
(main::callback(MessageSid => 'SM15557770777', MessageStatus => 'failed', ErrorCode => '30003', ErrorMessage => "bad\xff\xc3\xc3x"))[1]
--- error_code: 200
--- response_body
{"received":true,"applied":1}



=== TEST 14: a MessageSid with a NUL byte is a 400, not a 500
--- request eval
(main::callback(MessageSid => "SMx\0y", MessageStatus => 'delivered'))[0]
--- more_headers eval
(main::callback(MessageSid => "SMx\0y", MessageStatus => 'delivered'))[1]
--- error_code: 400
--- response_body_like: "code":"invalid_field"
