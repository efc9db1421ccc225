# From a signed Stripe invoice to a customer's inbox: the scheduler claims
# the delivery, renders it and sends it through the SMTP sink, and the
# activity feed tells what became of it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use Test::Nginx::Socket 'no_plan';

Echelon::setup_account(name => 'Acme Studio', triggers => [
    { event => 'invoice.issued', channel => 'email', delay => '0',
      template => {
          subject => 'Invoice {{invoice.number}} from {{account.name}}',
          body => "Hi {{contact.name}},\n\n"
                . "Your invoice {{invoice.number}} for {{invoice.amount}} "
                . "is due on {{invoice.due_date}}.\n"
                . "Pay it here: {{invoice.url}}\n\n{{employee.name}}" } },
]);

# 2031-03-15 12:00 UTC
our $due = 1931342400;

our $jenny = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(id => 'in_jenny', number => 'ACME-0001',
                            amount => 125000, due_date => $due));
our $nomail = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'ACME-0002', email => undef,
                            name => 'No Mail Ltd'));
our $reject = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'ACME-0003',
                            email => 'reject-me@example.com',
                            name => 'Rejected Recipient'));
our $tempfail = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'ACME-0004',
                            email => 'tempfail-me@example.com',
                            name => 'Busy Mailbox'));
our $yen = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(number => 'ACME-0005', currency => 'jpy',
                            amount => 5000, email => 'kenji@example.com',
                            name => 'Kenji Sato'));

our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";
our $activity = "GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity";

Echelon::default_blocks(
    Echelon::http_config(extra => 'echelon_max_attempts 2;'), <<"CONF");
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
    location = /t/mail {
        default_type text/plain;
        alias $ENV{TEST_NGINX_MAIL_DIR}/latest;
    }
CONF

no_shuffle();
no_long_string();
run_tests();

__DATA__

=== TEST 1: an issued invoice is accepted
--- request eval
Echelon::stripe_request($main::jenny)
--- more_headers eval
Echelon::stripe_headers($main::jenny)
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}
--- wait: 2



=== TEST 2: the activity feed shows the email sent to the contact
--- request eval
"$main::activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/^\{"data":\[\{"id":"dlv_\w+","trigger":"trg_\w+","event":"invoice.issued","channel":"email","contact":\{"id":"ctc_\w+","name":"Jenny Rosen","address":"jenny\@example.com"\},"invoice":"inv_\w+","status":"sent","reason":null,"attempts":1,"due_at":"[-0-9T:]+Z","sent_at":"[-0-9T:]+Z","delivered_at":null,"created_at":"[-0-9T:]+Z","subject":"Invoice ACME-0001 from Acme Studio"\}\],"has_more":false,"next_cursor":null\}$/



=== TEST 3: the email in the Maildir has the rendered headers
--- init
Echelon::link_mail('jenny@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like eval
qr/(?=.*^From: "Acme Billing" <billing\@acme\.test>\r?$)(?=.*^To: jenny\@example\.com\r?$)(?=.*^Subject: Invoice ACME-0001 from Acme Studio\r?$)(?=.*^Message-ID: <dlv_\w+\@)/ms
--- response_body_unlike: \{\{



=== TEST 4: the email in the Maildir has the rendered body
--- init
Echelon::link_mail('jenny@example.com');
--- request
GET /t/mail
--- response_body_like eval
qr/\r?\n\r?\nHi Jenny Rosen,\r?\n\r?\nYour invoice ACME-0001 for \$1,250\.00 is due on March 15, 2031\.\r?\nPay it here: https:\/\/invoice\.stripe\.com\/i\/acct_test\/in_jenny\r?\n\r?\nBilling \xe2\x80\x94 Accounts Receivable\r?\n/



=== TEST 5: an invoice whose customer has no email is accepted
--- request eval
Echelon::stripe_request($main::nomail)
--- more_headers eval
Echelon::stripe_headers($main::nomail)
--- error_code: 200
--- wait: 1.5



=== TEST 6: its delivery ends skipped with the reason
--- request eval
"$main::activity?status=skipped"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/^\{"data":\[\{[^{}]*"contact":\{"id":"ctc_\w+","name":"No Mail Ltd","address":null\},[^{}]*"status":"skipped","reason":"the contact has no email address","attempts":0,(?:[^{}]|\{[^{}]*\})*\}\],"has_more":false/



=== TEST 7: a recipient the SMTP server refuses with 550 is accepted
--- request eval
Echelon::stripe_request($main::reject)
--- more_headers eval
Echelon::stripe_headers($main::reject)
--- error_code: 200
--- wait: 1.5



=== TEST 8: its delivery ends failed with the server's reply
--- request eval
"$main::activity?status=failed"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/"name":"Rejected Recipient","address":"reject-me\@example.com"\},[^{}]*"status":"failed","reason":"550 5\.1\.1 [^"]*Recipient address rejected[^"]*","attempts":1,/



=== TEST 9: a 451 reply is retried, then fails after the last attempt
--- request eval
Echelon::stripe_request($main::tempfail)
--- more_headers eval
Echelon::stripe_headers($main::tempfail)
--- error_code: 200
--- wait: 4
--- error_log
will retry
giving up



=== TEST 10: the feed shows both attempts and the reason
--- init
Echelon::wait_for_sql("SELECT status FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE c.name = 'Busy Mailbox'", 'failed');
--- request eval
"$main::activity?status=failed"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/"name":"Busy Mailbox","address":[^}]*\}[^{}]*"status":"failed","reason":"gave up after 2 attempts: 451 4\.3\.0 [^"]*","attempts":2,/



=== TEST 11: a yen invoice is written without minor units
--- request eval
Echelon::stripe_request($main::yen)
--- more_headers eval
Echelon::stripe_headers($main::yen)
--- error_code: 200
--- wait: 1.5



=== TEST 12: the yen amount in the email
--- init
Echelon::link_mail('kenji@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: for \xc2\xa55,000 is due on



=== TEST 13: one delivery's detail has the message and its attempts
--- request eval
"$main::activity?status=sent&limit=1"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: ^\{"data":\[\{"id":"dlv_\w+",.*"has_more":true,"next_cursor":"dlv_\w+"\}$
