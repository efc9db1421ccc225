# What a message says and how writes behave: each tone in its own words,
# money in each currency's minor unit, dates in the contact's time zone,
# Idempotency-Key, and the rules of the write endpoints.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use Test::Nginx::Socket 'no_plan';

our $due = 1931371200;    # 2031-03-15 20:00 UTC: the 16th in Tokyo

Echelon::setup_account(name => 'Acme Studio', tone => 'formal',
    triggers => [
        { event => 'invoice.issued', channel => 'email', delay => '0' },
    ],
    more => sub {
        my ($call) = @_;
        my $i = 0;
        for my $c ([yen => 'jpy', 5000, 'Asia/Tokyo'],
                   [dinar => 'kwd', 1500, 'UTC'],
                   [euro => 'eur', 99, 'Europe/Paris'],
                   [dollar => 'usd', 123456789, 'America/Los_Angeles'])
        {
            my $ctc = $call->('POST', '/v1/contacts',
                { name => "Client \u$c->[0]", email => "$c->[0]\@example.com",
                  timezone => $c->[3] });
            $call->('POST', '/v1/invoices',
                { contact => $ctc->{id}, number => "M-" . ++$i,
                  amount_due => $c->[2], currency => $c->[1],
                  due_date => Echelon::rfc3339($main::due),
                  url => "https://pay.example.com/M-$i" });
            $ENV{'TEST_NGINX_CONTACT_' . uc $c->[0]} = $ctc->{id};
        }
        my $nourl = $call->('POST', '/v1/contacts',
            { name => 'Client Nourl', email => 'nourl@example.com' });
        $call->('POST', '/v1/invoices',
            { contact => $nourl->{id}, number => 'M-5', amount_due => 700,
              currency => 'usd', due_date => Echelon::rfc3339($main::due) });
        my $paid = $call->('POST',
            "/v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/triggers",
            { event => 'payment.received', channel => 'email',
              delay => '7d' });
        $ENV{TEST_NGINX_TRIGGER_PAID} = $paid->{id};
    });

our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";
our $json = "$auth\nContent-Type: application/json";
our $admin = "Authorization: Bearer $Echelon::ADMIN_TOKEN\n"
           . "Content-Type: application/json";

Echelon::default_blocks(Echelon::http_config(), <<"CONF");
    location /v1/ { echelon_api; }
    location = /t/mail {
        default_type text/plain;
        alias $ENV{TEST_NGINX_MAIL_DIR}/latest;
    }
CONF

no_shuffle();
no_long_string();
run_tests();

is(Echelon::sql("SELECT count(*) FROM contacts WHERE name = 'Ida Idem'"), 1,
   'two requests with one Idempotency-Key made one contact');

__DATA__

=== TEST 1: the scheduler sends the four invoices
--- request
GET /v1/account
--- more_headers eval
$main::auth
--- error_code: 200
--- wait: 1.5



=== TEST 2: yen have no minor unit; the date is Tokyo's
--- init
Echelon::link_mail('yen@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: in the amount of \xc2\xa55,000, payable by March 16, 2031\.



=== TEST 3: the formal tone: subject, greeting and closing
--- init
Echelon::link_mail('yen@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: Subject: Invoice M-1 issued by Acme Studio\r?\n.*\r?\n\r?\nDear Client Yen,\r?\n\r?\nWe enclose invoice M-1 .*Yours sincerely,\r?\n



=== TEST 4: dinars have three decimals
--- init
Echelon::link_mail('dinar@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: in the amount of 1\.500 KWD, payable by March 15, 2031\.



=== TEST 5: 99 euro cents
--- init
Echelon::link_mail('euro@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: in the amount of \xe2\x82\xac0\.99, payable by March 15, 2031\.



=== TEST 6: dollars with separators, on the Los Angeles date
--- init
Echelon::link_mail('dollar@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: in the amount of \$1,234,567\.89, payable by March 15, 2031\.



=== TEST 7: the employee's tone changes to firm
--- request eval
"PATCH /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}\n{\"tone\": \"firm\"}"
--- more_headers eval
$main::json
--- error_code: 200
--- response_body_like: "tone":"firm"



=== TEST 8: an invoice to the yen client in the firm tone
--- request eval
"POST /v1/invoices\n{\"contact\": \"$ENV{TEST_NGINX_CONTACT_YEN}\", \"number\": \"F-1\", \"amount_due\": 700, \"currency\": \"jpy\", \"due_date\": \"2031-03-15\"}"
--- more_headers eval
$main::json
--- error_code: 201
--- response_body_like: "status":"open"
--- wait: 1.5



=== TEST 9: firm words (an invoice without URL: no "pay it by then")
--- init
Echelon::link_mail('yen@example.com', 'Invoice F-1: payment due March 15, 2031');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: \r?\n\r?\nClient Yen,\r?\n\r?\nInvoice F-1 for \xc2\xa5700 is due March 15, 2031\.\r?\n\r?\nRegards,\r?\n



=== TEST 10: a write with an Idempotency-Key
--- request
POST /v1/contacts
{"name": "Ida Idem", "email": "ida@example.com"}
--- more_headers eval
"$main::json\nIdempotency-Key: key-ida-1"
--- error_code: 201
--- response_body_like: ^\{"id":"ctc_\w+","name":"Ida Idem"



=== TEST 11: the same key and body again gets the first answer
--- request
POST /v1/contacts
{"name": "Ida Idem", "email": "ida@example.com"}
--- more_headers eval
"$main::json\nIdempotency-Key: key-ida-1"
--- error_code: 201
--- response_body_like: ^\{"id":"ctc_\w+","name":"Ida Idem"



=== TEST 12: the same key with another body is a conflict
--- request
POST /v1/contacts
{"name": "Someone Else"}
--- more_headers eval
"$main::json\nIdempotency-Key: key-ida-1"
--- error_code: 409
--- response_body_like: "code":"idempotency_key_reused"



=== TEST 13: an invoice for an unknown contact is 422
--- request
POST /v1/invoices
{"contact": "ctc_nobody", "amount_due": 100, "currency": "usd"}
--- more_headers eval
$main::json
--- error_code: 422
--- response_body_like: "code":"unknown_contact",.*"field":"contact"



=== TEST 14: an amount that is not a whole number is 400
--- request eval
"POST /v1/invoices\n{\"contact\": \"$ENV{TEST_NGINX_CONTACT_YEN}\", \"amount_due\": 12.5, \"currency\": \"jpy\"}"
--- more_headers eval
$main::json
--- error_code: 400
--- response_body
{"error":{"code":"invalid_type","message":"\"amount_due\" must be a whole number","field":"amount_due"}}



=== TEST 15: a currency that is not ISO 4217 is 422
--- request eval
"POST /v1/invoices\n{\"contact\": \"$ENV{TEST_NGINX_CONTACT_YEN}\", \"amount_due\": 1, \"currency\": \"USD\"}"
--- more_headers eval
$main::json
--- error_code: 422
--- response_body_like: "code":"invalid_currency",.*"field":"currency"



=== TEST 16: a due date that is not a date is 422
--- request eval
"POST /v1/invoices\n{\"contact\": \"$ENV{TEST_NGINX_CONTACT_YEN}\", \"amount_due\": 1, \"currency\": \"jpy\", \"due_date\": \"next tuesday\"}"
--- more_headers eval
$main::json
--- error_code: 422
--- response_body_like: "code":"invalid_date",.*"field":"due_date"



=== TEST 17: a payment to an unknown invoice is 404
--- request eval
"POST /v1/invoices/" . "inv_nothing" . "/payments\n{\"amount\": 1, \"currency\": \"usd\"}"
--- more_headers eval
$main::json
--- error_code: 404
--- response_body_like: "code":"not_found"



=== TEST 18: a trigger patch with an unknown variable is 422 and changes nothing
--- request eval
"PATCH /v1/triggers/$ENV{TEST_NGINX_TRIGGER_0}\n{\"template\": {\"body\": \"{{invoice.total}}\"}}"
--- more_headers eval
$main::json
--- error_code: 422
--- response_body_like: "code":"unknown_variable",.*"field":"template.body"



=== TEST 19: a trigger patch sets a new subject
--- request eval
"PATCH /v1/triggers/$ENV{TEST_NGINX_TRIGGER_0}\n{\"template\": {\"subject\": \"Bill {{invoice.number}}\"}, \"delay\": \"30m\"}"
--- more_headers eval
$main::json
--- error_code: 200
--- response_body_like: "template":\{"subject":"Bill \{\{invoice.number\}\}","body":null\},"delay_seconds":1800



=== TEST 20: the admin moves the account to the growth plan
--- request eval
"PATCH /v1/account\n{\"account\": \"$ENV{TEST_NGINX_ACCOUNT}\", \"plan\": \"growth\"}"
--- more_headers eval
$main::admin
--- error_code: 200
--- response_body_like: "plan":"growth"



=== TEST 21: an API key cannot change the plan
--- request eval
"PATCH /v1/account\n{\"account\": \"$ENV{TEST_NGINX_ACCOUNT}\", \"plan\": \"scale\"}"
--- more_headers eval
$main::json
--- error_code: 401
--- response_body_like: "code":"unauthorized"



=== TEST 22: on growth, SMS can be connected
--- request
PUT /v1/channels/sms
{"from": "+15550000000"}
--- more_headers eval
$main::json
--- error_code: 200
--- response_body_like: ^\{"channel":"sms","from":"\+15550000000","connected":true,"allowed_by_plan":true,



=== TEST 23: an employee cannot use WhatsApp before it is connected
--- request
POST /v1/employees
{"name": "Chat", "role": "billing", "channels": ["whatsapp"]}
--- more_headers eval
$main::json
--- error_code: 422
--- response_body_like: "code":"channel_not_connected"



=== TEST 24: the same channel twice is 422
--- request
POST /v1/employees
{"name": "Twice", "role": "billing", "channels": ["email", "email"]}
--- more_headers eval
$main::json
--- error_code: 422
--- response_body_like: "code":"duplicate_value"



=== TEST 25: the same key on another query string is a conflict, not the stored answer
--- request
POST /v1/contacts?x=1
{"name": "Ida Idem", "email": "ida@example.com"}
--- more_headers eval
"$main::json\nIdempotency-Key: key-ida-1"
--- error_code: 409
--- response_body_like: "code":"idempotency_key_reused"



=== TEST 26: an Idempotency-Key that is not printable ASCII is a 400, not a 500
--- request
POST /v1/contacts
{"name": "Key Bytes"}
--- more_headers eval
"$main::json\nIdempotency-Key: k\xff\xfe"
--- error_code: 400
--- response_body_like: "code":"invalid_idempotency_key"



=== TEST 27: a due date PostgreSQL would read but RFC 3339 does not have is 422
--- request
POST /v1/invoices
{"contact": "ctc_none", "number": "INF-1", "amount_due": 100, "currency": "usd", "due_date": "infinity"}
--- more_headers eval
"$main::json"
--- error_code: 422
--- response_body_like: "code":"invalid_date"



=== TEST 28: an email sender that sending would refuse is refused at once
--- request
PUT /v1/channels/email
{"from": "a\"b@acme.test"}
--- more_headers eval
"$main::json"
--- error_code: 422
--- response_body_like: "code":"invalid_value","message":"\\"from\\" must be an email address



=== TEST 29: a payment confirmation "unless paid" could never be sent: 422
--- request eval
"POST /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/triggers
{\"event\": \"payment.received\", \"channel\": \"email\", \"unless\": \"paid\"}"
--- more_headers eval
"$main::json"
--- error_code: 422
--- response_body_like: "code":"condition_never_met"



=== TEST 30: and a payment confirmation cannot be patched into one either
--- request eval
"PATCH /v1/triggers/$ENV{TEST_NGINX_TRIGGER_PAID}
{\"unless\": \"paid\"}"
--- more_headers eval
"$main::json"
--- error_code: 422
--- response_body_like: "code":"condition_never_met"



=== TEST 31: without an invoice URL, the tone's sentence about it is left out
--- init
Echelon::link_mail('nourl@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: We enclose invoice M-5 in the amount of \$7\.00, payable by [A-Z][a-z]+ \d+, \d{4}\.\r?\n\r?\nYours sincerely,



=== TEST 32: a template may say something only when a variable has a value
--- request eval
"POST /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/triggers
{\"event\": \"invoice.overdue\", \"channel\": \"email\", \"template\": {\"body\": \"Late.{{#invoice.url}} Pay: {{invoice.url}}{{/invoice.url}}\"}}"
--- more_headers eval
"$main::json"
--- error_code: 201



=== TEST 33: a section that is not closed is refused
--- request eval
"POST /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/triggers
{\"event\": \"invoice.overdue\", \"channel\": \"email\", \"template\": {\"body\": \"Late.{{#invoice.url}} Pay: {{invoice.url}}\"}}"
--- more_headers eval
"$main::json"
--- error_code: 422
--- response_body_like: "code":"unknown_variable"
