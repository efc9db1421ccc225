# The network under the providers: the provider's host is looked up with
# nginx's resolver (the http block's "resolver") for each new connection,
# not once when the configuration is read, so a change in DNS needs no
# reload; a name that does not resolve, a connection refused and a
# connection reset are transient failures, retried with the reason kept.
#
# A fake DNS server on loopback answers from a map the test rewrites; the
# fake Twilio listens on 127.0.0.1 only, so 127.0.0.2 refuses.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use FakeDNS;
use FakeProvider;
use HTTP::Tiny;
use Test::More;
use Time::HiRes qw(sleep);

my $binary = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 11;
my $fake_port = $port + 1;
my $dns_port = $port + 2;
my $dir = "$FindBin::Bin/servroot-network";
my $host = 'twilio.echelon.test';
my $base = "http://127.0.0.1:$port";

Echelon::fresh_database();

Echelon::write_conf($dir, $port, Echelon::http_config(extra => <<"X"));
    resolver 127.0.0.1:$dns_port valid=1s ipv6=off;
    resolver_timeout 2s;
    echelon_max_attempts 8;
    echelon_retry_backoff 1s;
    echelon_provider_timeout 2s;
    echelon_twilio_url http://$host:$fake_port;
    echelon_twilio_account_sid ACnetwork;
    echelon_twilio_auth_token network-token;
X

my $map = "$dir/dns.map";
my $dns_log = "$dir/dns.log";
my $fake_log = "$dir/fake-twilio.log";

FakeDNS::set($map);
my $dns = FakeDNS::start($dns_port, $map, $dns_log);
my $fake = FakeProvider::start($fake_port, $fake_log);

END {
    Echelon::nginx_kill($dir);
    FakeProvider::stop($fake) if $fake;
    FakeDNS::stop($dns) if $dns;
}

is(system($binary, '-p', "$dir/", '-c', "$dir/conf/nginx.conf"), 0,
   'nginx starts while the provider\'s name does not resolve yet');
Echelon::wait_until(sub { HTTP::Tiny->new(timeout => 1)
                          ->get("$base/v1/account")->{status} == 401 }, 10);

my $acct = Echelon::api($base, 'POST', '/v1/accounts', $Echelon::ADMIN_TOKEN,
                        { name => 'Network', plan => 'growth' });
my $key = $acct->{api_key};
sub call { Echelon::api($base, $_[0], $_[1], $key, $_[2]) }

call('PUT', '/v1/channels/sms', { from => '+15550001111' });
my $emp = call('POST', '/v1/employees',
               { name => 'B', role => 'billing', channels => ['sms'] });
call('POST', "/v1/employees/$emp->{id}/triggers",
     { event => 'invoice.issued', channel => 'sms',
       template => { body => 'Invoice {{invoice.number}}' } });

sub invoice_to {
    my ($phone) = @_;
    my $ctc = call('POST', '/v1/contacts', { name => "C$phone",
                                             phone => $phone });
    call('POST', '/v1/invoices', { contact => $ctc->{id}, number => $phone,
                                   amount_due => 100, currency => 'usd' });
    return Echelon::sql("SELECT id FROM deliveries "
                        . "WHERE contact_id = '$ctc->{id}'");
}

sub attempts_like {
    my ($id, $pattern) = @_;
    return "SELECT count(*) > 0 FROM delivery_attempts "
           . "WHERE delivery_id = '$id' AND error ~ '$pattern'";
}

# 1. no such name yet, then an address that refuses, then the provider

my $dlv = invoice_to('+15557770001');

is(Echelon::wait_for_sql(attempts_like($dlv, 'could not resolve'), 't', 20),
   't', 'a name that does not resolve is a failed attempt, with the reason');
is(Echelon::sql("SELECT status FROM deliveries WHERE id = '$dlv'"),
   'scheduled', '... and the delivery is tried again');

FakeDNS::set($map, $host => '127.0.0.2');

is(Echelon::wait_for_sql(attempts_like($dlv, 'Connection refused'), 't', 20),
   't', 'the new DNS answer is used without a reload: the address refuses, '
        . 'and that attempt fails with the reason');
is(Echelon::sql("SELECT status FROM deliveries WHERE id = '$dlv'"),
   'scheduled', '... and a refused connection is retried');

FakeDNS::set($map, $host => '127.0.0.1');

is(Echelon::wait_for_sql("SELECT status FROM deliveries WHERE id = '$dlv'",
                         'sent', 30),
   'sent', 'once the name points at the provider, the delivery is sent');

my @reqs = grep { $_->{body} =~ /^To=%2B15557770001&/ }
           FakeProvider::requests($fake_log);
my %h = map { lc($_->[0]) => $_->[1] } @{ $reqs[0]{headers} || [] };
is(scalar @reqs, 1, 'the provider received the message once');
is($h{host}, "$host:$fake_port", 'with the name in the Host header');

open(my $dl, '<', $dns_log) or die "$dns_log: $!";
my @asked = grep { /^\Q$host\E 1$/ } <$dl>;
cmp_ok(scalar @asked, '>=', 3, 'nginx\'s resolver asked the DNS server '
                               . 'again as answers expired');

is(Echelon::sql("SELECT string_agg(outcome, ',' ORDER BY attempt) "
                . "FROM delivery_attempts WHERE delivery_id = '$dlv'")
   =~ /^(transient,)+sent$/ ? 'ok' : 'no', 'ok',
   'every failed attempt is recorded as transient, the last as sent');

# 2. a provider that resets the connection after reading the request

my $reset = invoice_to('+15557770104');

my $twice = "SELECT count(*) >= 2 FROM delivery_attempts "
            . "WHERE delivery_id = '$reset' AND outcome = 'transient' "
            . "AND error ~* 'reset'";
is(Echelon::wait_for_sql($twice, 't', 30), 't',
   'a connection reset is a transient failure, recorded with the reason');
is(Echelon::sql("SELECT status FROM deliveries WHERE id = '$reset'"),
   'scheduled', '... and retried');

my @resets = grep { $_->{body} =~ /^To=%2B15557770104&/ }
             FakeProvider::requests($fake_log);
my %tokens = map { my %x = map { lc($_->[0]) => $_->[1] } @{ $_->{headers} };
                   ($x{'i-twilio-idempotency-token'} => 1) } @resets;
cmp_ok(scalar @resets, '>=', 2, 'each attempt reached the provider');
is(join(',', keys %tokens), $reset,
   'every retry carries the same idempotency key: the delivery id');

# the API answered throughout

is(HTTP::Tiny->new(timeout => 2)->get("$base/v1/account")->{status}, 401,
   'the API answers while the provider is unreachable');

done_testing();
