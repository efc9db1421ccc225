# The five triggers through the API: the invoice now, a reminder later
# unless paid, overdue and repeated reminders created ahead, a payment that
# cancels what is pending, a void, changed billing details, a paused
# employee and a deleted trigger.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use Test::Nginx::Socket 'no_plan';

our $now = time();

Echelon::setup_account(name => 'Acme Studio', triggers => [
    { event => 'invoice.issued', channel => 'email', delay => '0',
      template => { subject => 'Invoice {{invoice.number}}' } },
    { event => 'invoice.issued', channel => 'email', delay => '10s',
      unless => 'paid',
      template => { subject => 'Reminder {{invoice.number}}',
                    body => '{{invoice.number}} is still open.' } },
    { event => 'invoice.overdue', channel => 'email', delay => '0',
      template => { body => '{{greeting}} {{invoice.number}} is late.' } },
    { event => 'invoice.unpaid_repeated', channel => 'email',
      every_days => 1, max_times => 3,
      template => { subject => 'Again {{invoice.number}}' } },
    { event => 'payment.received', channel => 'email',
      template => { subject => 'Thanks for {{invoice.number}}' } },
    { event => 'billing_details.updated', channel => 'email' },
], more => sub {
    my ($call) = @_;
    for my $c ([ada => 'Ada Lovelace', 'Europe/London'],
               [bob => 'Bob Late', 'America/New_York'],
               [cy => 'Cy Void', 'UTC'],
               [dee => 'Dee Details', 'UTC'],
               [eve => 'Eve Paused', 'UTC'])
    {
        my $ctc = $call->('POST', '/v1/contacts',
                          { name => $c->[1], email => "$c->[0]\@example.com",
                            timezone => $c->[2] });
        $ENV{'TEST_NGINX_CONTACT_' . uc $c->[0]} = $ctc->{id};
    }

    # invoices whose ids the blocks need: created here, sent by the blocks
    for my $i ([A => 'ADA', 'A-1'], [C => 'CY', 'C-1']) {
        my $inv = $call->('POST', '/v1/invoices',
            { contact => $ENV{"TEST_NGINX_CONTACT_$i->[1]"},
              number => $i->[2], amount_due => 125000, currency => 'usd',
              due_date => Echelon::rfc3339(time() + 86400),
              url => "https://pay.example.com/$i->[2]" });
        $ENV{"TEST_NGINX_INVOICE_$i->[0]"} = $inv->{id};
    }
});

our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";
our $json = "$auth\nContent-Type: application/json";
our $emp = $ENV{TEST_NGINX_EMPLOYEE};

sub invoice {
    my ($who, $number, $due) = @_;
    return "POST /v1/invoices\n" . $Echelon::JSON->encode({
        contact => $ENV{"TEST_NGINX_CONTACT_$who"}, number => $number,
        amount_due => 125000, currency => 'usd',
        due_date => Echelon::rfc3339($due),
        url => "https://pay.example.com/$number" });
}

sub activity {
    my ($who, $query) = @_;
    return "GET /v1/contacts/$ENV{qq{TEST_NGINX_CONTACT_$who}}/activity"
           . ($query ? "?$query" : '');
}

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

# what the blocks left in the database, beyond what the feed shows

is(Echelon::sql("SELECT count(*) FROM deliveries d JOIN contacts c "
                . "ON c.id = d.contact_id WHERE c.name = 'Bob Late' "
                . "AND d.event = 'invoice.overdue'"),
   1, 'one overdue reminder for one invoice');

# the reminder trigger added last (TEST 27) and the invoices before it

my $late = Echelon::sql("SELECT id FROM triggers WHERE event = "
                        . "'invoice.overdue' AND delay_seconds = 7200");
my %got = map { split /\|/ } split /\n/, Echelon::sql(
    "SELECT i.number, (d.due_at = i.due_at + interval '2 hours')::text "
    . "FROM deliveries d JOIN invoices i ON i.id = d.invoice_id "
    . "WHERE d.trigger_id = '$late'");
is($got{'F-1'}, 'true', 'a reminder trigger added later is scheduled for an '
                        . 'open invoice, at its due date plus the delay');
ok(!exists $got{'P-1'}, '... but not for a reminder time already past');
is(Echelon::sql("SELECT count(*) FROM deliveries d JOIN invoices i "
                . "ON i.id = d.invoice_id WHERE d.trigger_id = '$late' "
                . "AND i.status <> 'open'"),
   0, '... nor for invoices paid or void');

__DATA__

=== TEST 1: an invoice due tomorrow is open
--- request eval
"GET /v1/invoices/$ENV{TEST_NGINX_INVOICE_A}"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: ^\{"id":"inv_\w+","contact":"ctc_\w+","number":"A-1","amount_due":125000,"amount_paid":0,"currency":"usd","due_date":"[-0-9T:]+Z","url":"https://pay.example.com/A-1","status":"open","external_id":null,"created_at":"[^"]+"\}$
--- wait: 1.5



=== TEST 2: the invoice went out now; the reminders wait, created ahead
--- request eval
main::activity('ADA')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/(?=.*"event":"invoice.issued","channel":"email",(?:[^{}]|\{[^{}]*\})*"status":"sent",(?:[^{}]|\{[^{}]*\})*"subject":"Invoice A-1")(?=.*"event":"invoice.issued",(?:[^{}]|\{[^{}]*\})*"status":"scheduled")(?=.*"event":"invoice.overdue",(?:[^{}]|\{[^{}]*\})*"status":"scheduled")(?=(?:.*"event":"invoice.unpaid_repeated",(?:[^{}]|\{[^{}]*\})*"status":"scheduled"){3})/s



=== TEST 3: the issued email leaves greeting, message and closing to the friendly employee
--- init
Echelon::link_mail('ada@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like eval
qr/Subject: Invoice A-1\r?\n.*\n\r?\nHi Ada Lovelace,\r?\n\r?\nHere's your invoice A-1 for \$1,250\.00, due [A-Z][a-z]+ \d+, \d{4}\. You can see it/s



=== TEST 4: a payment in full is recorded and closes the invoice
--- request eval
"POST /v1/invoices/$ENV{TEST_NGINX_INVOICE_A}/payments\n{\"amount\": 125000, \"currency\": \"usd\"}"
--- more_headers eval
$main::json
--- error_code: 201
--- response_body_like: ^\{"id":"pay_\w+","invoice":"inv_\w+","amount":125000,"currency":"usd","invoice_state":\{"status":"paid","amount_paid":125000\}\}$
--- wait: 1.5



=== TEST 5: the payment cancelled every pending reminder and sent a thank-you
--- request eval
main::activity('ADA', 'status=cancelled')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
Echelon::exactly(5, qr/"status":"cancelled","reason":"the invoice was paid"/)



=== TEST 6: the thank-you went out
--- request eval
main::activity('ADA', 'status=sent')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "event":"payment.received",(?:[^{}]|\{[^{}]*\})*"status":"sent",(?:[^{}]|\{[^{}]*\})*"subject":"Thanks for A-1"



=== TEST 7: a second payment on a paid invoice is a conflict
--- request eval
"POST /v1/invoices/$ENV{TEST_NGINX_INVOICE_A}/payments\n{\"amount\": 1, \"currency\": \"usd\"}"
--- more_headers eval
$main::json
--- error_code: 409
--- response_body_like: "code":"invoice_closed"



=== TEST 8: an invoice due 2.5 days ago is created
--- request eval
main::invoice('BOB', 'B-1', $main::now - 2.5 * 86400)
--- more_headers eval
$main::json
--- error_code: 201
--- wait: 1



=== TEST 9: overdue at once, two repeats past, one ahead, and the reminder 10 s later while unpaid
--- init
Echelon::wait_for_sql("SELECT count(*) FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE c.name = 'Bob Late' AND d.status = 'sent'", 5);
--- request eval
main::activity('BOB')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/(?=.*"event":"invoice.overdue",(?:[^{}]|\{[^{}]*\})*"status":"sent")(?=(?:.*"event":"invoice.unpaid_repeated",(?:[^{}]|\{[^{}]*\})*"status":"sent"){2})(?=.*"event":"invoice.unpaid_repeated",(?:[^{}]|\{[^{}]*\})*"status":"scheduled")(?=.*"status":"sent",(?:[^{}]|\{[^{}]*\})*"subject":"Reminder B-1")/s



=== TEST 10: the overdue email: the employee's subject, the template's words
--- init
Echelon::link_mail('bob@example.com', 'A friendly reminder about invoice B-1');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: \r?\n\r?\nHi Bob Late, B-1 is late\.\r?\n



=== TEST 11: voiding by id, once C-1's reminder has gone out
--- init
Echelon::wait_for_sql("SELECT count(*) FROM deliveries d JOIN invoices i ON i.id = d.invoice_id JOIN triggers t ON t.id = d.trigger_id WHERE i.number = 'C-1' AND t.unless_paid AND d.status = 'sent'", 1);
--- request eval
"POST /v1/invoices/$ENV{TEST_NGINX_INVOICE_C}/void"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "status":"void"



=== TEST 12: the void cancelled the four reminders still ahead, with the reason
--- request eval
main::activity('CY', 'status=cancelled')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
Echelon::exactly(4, qr/"reason":"the invoice was voided"/)



=== TEST 13: a void invoice cannot be voided again
--- request eval
"POST /v1/invoices/$ENV{TEST_NGINX_INVOICE_C}/void"
--- more_headers eval
$main::auth
--- error_code: 409
--- response_body_like: "code":"invoice_closed"



=== TEST 14: a changed email fires billing_details.updated
--- request eval
"PATCH /v1/contacts/$ENV{TEST_NGINX_CONTACT_DEE}\n{\"email\": \"dee.new\@example.com\"}"
--- more_headers eval
$main::json
--- error_code: 200
--- response_body_like: "email":"dee.new\@example.com",.*"billing_details_changed":true
--- wait: 1.5



=== TEST 15: a changed time zone alone does not
--- request eval
"PATCH /v1/contacts/$ENV{TEST_NGINX_CONTACT_DEE}\n{\"timezone\": \"Asia/Tokyo\"}"
--- more_headers eval
$main::json
--- error_code: 200
--- response_body_like: "timezone":"Asia/Tokyo",.*"billing_details_changed":false



=== TEST 16: the notice went to the new address, in the employee's words
--- init
Echelon::link_mail('dee.new@example.com');
--- request
GET /t/mail
--- error_code: 200
--- response_body_like: Subject: Your billing details were updated\r?\n.*Hi Dee Details,\r?\n\r?\nJust letting you know your billing details with Acme Studio were updated



=== TEST 17: an unknown time zone in a patch is 422 and changes nothing
--- request eval
"PATCH /v1/contacts/$ENV{TEST_NGINX_CONTACT_DEE}\n{\"timezone\": \"Mars/Olympus\", \"name\": \"Changed\"}"
--- more_headers eval
$main::json
--- error_code: 422
--- response_body_like: "code":"invalid_timezone"



=== TEST 18: a paused employee sends nothing; pending stays pending
--- request eval
[ "PATCH /v1/employees/$main::emp\n{\"enabled\": false}",
  main::invoice('EVE', 'E-1', $main::now + 86400) ]
--- more_headers eval
$main::json
--- error_code eval
[200, 201]
--- response_body_like eval
[qr/"enabled":false/, qr/"number":"E-1"/]
--- wait: 1.5



=== TEST 19: nothing was sent while paused
--- request eval
main::activity('EVE', 'status=scheduled')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "event":"invoice.issued",(?:[^{}]|\{[^{}]*\})*"status":"scheduled",(?:[^{}]|\{[^{}]*\})*"subject":null



=== TEST 20: enabled again, it sends
--- request eval
"PATCH /v1/employees/$main::emp\n{\"enabled\": true}"
--- more_headers eval
$main::json
--- error_code: 200
--- response_body_like: "enabled":true
--- wait: 1.5



=== TEST 21: the paused invoice went out once enabled
--- request eval
main::activity('EVE', 'status=sent')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "subject":"Invoice E-1"



=== TEST 22: deleting the reminder trigger cancels what it had pending
--- request eval
"DELETE /v1/triggers/$ENV{TEST_NGINX_TRIGGER_3}"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: ^\{"id":"trg_\w+","deleted":true,"cancelled_deliveries":[1-9]\d*\}$



=== TEST 23: its deliveries show why
--- request eval
main::activity('EVE', 'status=cancelled')
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: "event":"invoice.unpaid_repeated",(?:[^{}]|\{[^{}]*\})*"status":"cancelled","reason":"the trigger was deleted"



=== TEST 24: a deleted trigger is gone
--- request eval
"GET /v1/triggers/$ENV{TEST_NGINX_TRIGGER_3}"
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body_like: "code":"not_found"



=== TEST 25: an invoice due in two days, issued before the trigger below
--- request eval
main::invoice('DEE', 'F-1', time() + 2 * 86400)
--- more_headers eval
$main::json
--- error_code: 201



=== TEST 26: an invoice due two days ago, also before it
--- request eval
main::invoice('DEE', 'P-1', time() - 2 * 86400)
--- more_headers eval
$main::json
--- error_code: 201



=== TEST 27: a reminder trigger added now covers the invoices already open
--- request eval
"POST /v1/employees/$main::emp/triggers\n" . $Echelon::JSON->encode({
    event => 'invoice.overdue', channel => 'email', delay => '2h',
    template => { subject => 'Late {{invoice.number}}' } })
--- more_headers eval
$main::json
--- error_code: 201
--- response_body_like: "event":"invoice.overdue"
