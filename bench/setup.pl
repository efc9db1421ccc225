#!/usr/bin/perl
# Sets up the bench's account through Echelon's API, as t/inc/Echelon.pm
# does for the suites: an account, email connected, a Stripe signing
# secret, SMS connected (the growth plan), the employee "Billing — Accounts
# Receivable" (email and SMS) with three invoice.issued triggers (the
# webhook's fan-out) and two payment.received ones, email and SMS, for the
# deliveries loaded with SQL (items 2 to 4).
#
#   bench/setup.pl BASE_URL ADMIN_TOKEN > ids.sh
#
# Prints shell assignments: ACCOUNT, API_KEY, EMPLOYEE, STRIPE_SECRET,
# TRIGGER_SEND (email), TRIGGER_SMS.

use strict;
use warnings;
use utf8;

use HTTP::Tiny;
use JSON::PP;

my ($base, $admin) = @ARGV;
die "usage: setup.pl BASE_URL ADMIN_TOKEN\n" unless $admin;

my $json = JSON::PP->new->canonical->utf8;
my $http = HTTP::Tiny->new(timeout => 10);

sub api {
    my ($method, $path, $key, $body) = @_;
    my %h = (Authorization => "Bearer $key");
    my %args = (headers => \%h);
    if (defined $body) {
        $h{'Content-Type'} = 'application/json';
        $args{content} = $json->encode($body);
    }
    my $r = $http->request($method, "$base$path", \%args);
    die "$method $path: $r->{status} $r->{content}\n"
        unless $r->{status} =~ /^2/;
    return $json->decode($r->{content});
}

# The module answers 503 until its pool is connected and migrated.
for (1 .. 100) {
    my $r = $http->get("$base/v1/account");
    last if $r->{status} == 401;
    select(undef, undef, undef, 0.1);
}

my $secret = 'whsec_bench_' . join('', map { sprintf '%02x', rand 256 } 1 .. 12);

my $acct = api('POST', '/v1/accounts', $admin,
               { name => 'Acme Studio', plan => 'growth' });
my $key = $acct->{api_key};
api('PUT', '/v1/channels/email', $key,
    { from => 'Acme Billing <billing@acme.test>' });
api('PUT', '/v1/channels/sms', $key, { from => '+15550000000' });
api('PUT', '/v1/integrations/stripe', $key, { signing_secret => $secret });
my $emp = api('POST', '/v1/employees', $key,
              { name => 'Billing — Accounts Receivable', role => 'billing',
                channels => ['email', 'sms'], tone => 'friendly' });

# The webhook's three triggers are a week ahead, so that the scheduler
# does not send during items 1, 2, 5 and 6.
for my $n (1 .. 3) {
    api('POST', "/v1/employees/$emp->{id}/triggers", $key,
        { event => 'invoice.issued', channel => 'email', delay => '7d',
          template => { subject => "Invoice {{invoice.number}} ($n)",
                        body => "Hello {{contact.name}}, invoice "
                              . "{{invoice.number}} for {{invoice.amount}} "
                              . "is due {{invoice.due_date}}: "
                              . "{{invoice.url}}\n\n{{employee.name}}, "
                              . "{{account.name}}" } });
}

# The scheduler's deliveries (items 2 to 4) are inserted with SQL on this
# trigger; its event is one that the webhook's invoices do not fire.
my $send = api('POST', "/v1/employees/$emp->{id}/triggers", $key,
               { event => 'payment.received', channel => 'email',
                 delay => '0',
                 template => { subject => 'Thank you from {{account.name}}',
                               body => "Hello {{contact.name}},\n\n"
                                     . "{{message}}\n\n{{closing}}" } });

my $sms = api('POST', "/v1/employees/$emp->{id}/triggers", $key,
              { event => 'payment.received', channel => 'sms', delay => '0',
                template => { body => 'Hello {{contact.name}}, thank you: '
                                    . 'we received your payment. '
                                    . '{{account.name}}' } });

printf "ACCOUNT=%s\nAPI_KEY=%s\nEMPLOYEE=%s\nSTRIPE_SECRET=%s\n"
     . "TRIGGER_SEND=%s\nTRIGGER_SMS=%s\n",
    $acct->{id}, $key, $emp->{id}, $secret, $send->{id}, $sms->{id};
