# Stripe delivers at least once and in any order: a paid invoice stays
# paid, a late event moves nothing backwards, Stripe's own overdue event
# sends no second reminder, and an invoice charged automatically (no due
# date) gets no overdue reminder.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use Test::Nginx::Socket 'no_plan';

Echelon::setup_account(triggers => [
    { event => 'invoice.issued', channel => 'email', delay => '0',
      template => { subject => 'Invoice {{invoice.number}}' } },
    { event => 'invoice.issued', channel => 'email', delay => '1h',
      unless => 'paid', template => { subject => 'Reminder' } },
    { event => 'invoice.overdue', channel => 'email', delay => '0' },
    { event => 'payment.received', channel => 'email' },
    { event => 'billing_details.updated', channel => 'email' },
]);

our $t = time();
our %ev;

# paid first, finalized late, then a stale payment failure
$ev{paid} = Echelon::stripe_event('invoice.paid',
    { %{ Echelon::stripe_invoice(id => 'in_p', customer => 'cus_p',
                                 number => 'P-1', email => 'pat@example.com',
                                 name => 'Pat Paid') },
      status => 'paid', amount_paid => 125000 }, created => $t);
$ev{late_final} = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(id => 'in_p', customer => 'cus_p',
                            number => 'P-1', email => 'pat@example.com',
                            name => 'Pat Paid'), created => $t - 60);
$ev{late_fail} = Echelon::stripe_event('invoice.payment_failed',
    Echelon::stripe_invoice(id => 'in_p', customer => 'cus_p',
                            number => 'P-1'), created => $t - 30);

# an invoice past due, then Stripe's own overdue event for it
$ev{due} = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(id => 'in_o', customer => 'cus_o',
                            number => 'O-1', email => 'olga@example.com',
                            name => 'Olga Overdue', due_date => $t - 3600),
    created => $t - 10);
$ev{stripe_overdue} = Echelon::stripe_event('invoice.overdue',
    Echelon::stripe_invoice(id => 'in_o', customer => 'cus_o',
                            number => 'O-1', due_date => $t - 3600),
    created => $t);

# a due date moved a week later by a newer invoice.updated
our $moved_to = $t + 8 * 86400;
$ev{due_first} = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(id => 'in_m', customer => 'cus_m',
                            number => 'M-1', email => 'mo@example.com',
                            name => 'Mo Moved', due_date => $t + 86400),
    created => $t - 20);
$ev{due_moved} = Echelon::stripe_event('invoice.updated',
    Echelon::stripe_invoice(id => 'in_m', customer => 'cus_m',
                            number => 'M-1', due_date => $moved_to),
    created => $t);

# charged automatically: no due date
$ev{auto} = Echelon::stripe_event('invoice.finalized',
    Echelon::stripe_invoice(id => 'in_a', customer => 'cus_a',
                            number => 'A-1', email => 'andy@example.com',
                            name => 'Andy Auto', due_date => undef));

# a customer's email changes; an older update arrives after it
$ev{customer} = Echelon::stripe_event('customer.updated',
    { id => 'cus_p', object => 'customer', name => 'Pat Paid',
      email => 'pat.new@example.com', phone => undef, address => undef },
    created => $t);
$ev{customer}= do {
    my $e = $Echelon::JSON->decode($ev{customer});
    $e->{data}{previous_attributes} = { email => 'pat@example.com' };
    $Echelon::JSON->encode($e);
};
$ev{old_customer} = do {
    my $e = $Echelon::JSON->decode(Echelon::stripe_event('customer.updated',
        { id => 'cus_p', object => 'customer', name => 'Pat Paid',
          email => 'pat.old@example.com' }, created => $t - 600));
    $e->{data}{previous_attributes} = { email => 'pat.older@example.com' };
    $Echelon::JSON->encode($e);
};

our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";
our $activity = "GET /v1/employees/$ENV{TEST_NGINX_EMPLOYEE}/activity";

sub hook {
    my ($name) = @_;
    return (Echelon::stripe_request($ev{$name}),
            Echelon::stripe_headers($ev{$name}));
}

Echelon::default_blocks(Echelon::http_config(), <<'CONF');
    location /v1/ { echelon_api; }
    location /webhooks/ { echelon_webhooks; }
CONF

no_shuffle();
no_long_string();
run_tests();

is(Echelon::sql("SELECT status FROM invoices WHERE external_id = 'in_p'"),
   'paid', 'the invoice paid first stays paid after late events');
is(Echelon::sql("SELECT payment_failures FROM invoices "
                . "WHERE external_id = 'in_p'"),
   1, 'the late payment failure is recorded, and nothing more');
is(Echelon::sql("SELECT email FROM contacts WHERE external_id = 'cus_p'"),
   'pat.new@example.com', 'an older customer.updated does not undo a newer');

__DATA__

=== TEST 1: invoice.paid before its invoice.finalized
--- request eval
(main::hook('paid'))[0]
--- more_headers eval
(main::hook('paid'))[1]
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 2: the late invoice.finalized
--- request eval
(main::hook('late_final'))[0]
--- more_headers eval
(main::hook('late_final'))[1]
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 3: a stale invoice.payment_failed
--- request eval
(main::hook('late_fail'))[0]
--- more_headers eval
(main::hook('late_fail'))[1]
--- error_code: 200
--- wait: 1.5



=== TEST 4: Pat got the invoice and the thank-you; the reminder is cancelled
--- request eval
"$main::activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/(?=.*"event":"payment.received","channel":"email","contact":\{"id":"ctc_\w+","name":"Pat Paid","address":[^}]*\}[^{}]*"status":"sent")(?=.*"event":"invoice.issued","channel":"email","contact":\{"id":"ctc_\w+","name":"Pat Paid","address":[^}]*\}[^{}]*"status":"cancelled","reason":"the invoice is paid")/s



=== TEST 5: an invoice past its due date is issued
--- request eval
(main::hook('due'))[0]
--- more_headers eval
(main::hook('due'))[1]
--- error_code: 200



=== TEST 6: Stripe's own invoice.overdue for it
--- request eval
(main::hook('stripe_overdue'))[0]
--- more_headers eval
(main::hook('stripe_overdue'))[1]
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}
--- wait: 1.5



=== TEST 7: exactly one overdue reminder went to Olga
--- request eval
"$main::activity?status=sent"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
Echelon::exactly(1, qr/"event":"invoice.overdue","channel":"email","contact":\{"id":"ctc_\w+","name":"Olga Overdue"/)



=== TEST 8: an invoice without a due date
--- request eval
(main::hook('auto'))[0]
--- more_headers eval
(main::hook('auto'))[1]
--- error_code: 200
--- wait: 1



=== TEST 9: gets its invoice email and no overdue reminder
--- request eval
"$main::activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/^(?!.*"event":"invoice.overdue","channel":"email","contact":\{"id":"ctc_\w+","name":"Andy Auto").*"event":"invoice.issued","channel":"email","contact":\{"id":"ctc_\w+","name":"Andy Auto"/s



=== TEST 10: customer.updated with a new email
--- request eval
(main::hook('customer'))[0]
--- more_headers eval
(main::hook('customer'))[1]
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 11: an older customer.updated after it changes nothing
--- request eval
(main::hook('old_customer'))[0]
--- more_headers eval
(main::hook('old_customer'))[1]
--- error_code: 200
--- wait: 1.5



=== TEST 12: one billing-details notice, to the new address
--- request eval
"$main::activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
Echelon::exactly(1, qr/"event":"billing_details.updated","channel":"email","contact":\{"id":"ctc_\w+","name":"Pat Paid","address":"pat.new\@example.com"\}/)



=== TEST 13: an invoice due tomorrow
--- request eval
(main::hook('due_first'))[0]
--- more_headers eval
(main::hook('due_first'))[1]
--- error_code: 200



=== TEST 14: its due date moves a week later
--- request eval
(main::hook('due_moved'))[0]
--- more_headers eval
(main::hook('due_moved'))[1]
--- error_code: 200
--- response_body
{"received":true,"outcome":"processed"}



=== TEST 15: the overdue reminder moved with it
--- request eval
"$main::activity?status=scheduled"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
my $due = Echelon::rfc3339($main::moved_to);
qr/"event":"invoice.overdue","channel":"email","contact":\{"id":"ctc_\w+","name":"Mo Moved","address":[^}]*\}[^{}]*"status":"scheduled",[^{}]*"due_at":"\Q$due\E"/
