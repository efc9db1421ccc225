# Faults during a batch of sends: a reload, workers killed with SIGKILL,
# and PostgreSQL restarted.  Nothing is lost: every delivery ends sent.
# Nothing is doubled but where a crash fell between the provider's answer
# and our commit: then a message goes out once more, never twice more.
#
# nginx runs here with a master and two workers, as in production, so the
# test starts it itself rather than through Test::Nginx.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use FakeProvider;
use HTTP::Tiny;
use Test::More;
use Time::HiRes qw(sleep time);

my $N = 240;
my $batch = 20;
my $port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 9;
my $fake_port = $port + 1;
my $dir = "$FindBin::Bin/servroot-faults";
my $fake_log = "$dir/fake-twilio.log";
my $base = "http://127.0.0.1:$port";

Echelon::fresh_database();

Echelon::write_conf($dir, $port, Echelon::http_config(extra => <<"X"),
    echelon_scheduler_batch $batch;
    echelon_scheduler_lease 5s;
    echelon_smtp_timeout 2s;
    echelon_provider_timeout 2s;
    echelon_twilio_url http://127.0.0.1:$fake_port;
    echelon_twilio_account_sid ACfaults;
    echelon_twilio_auth_token faults-token;
X
                   workers => 2);

my $fake = FakeProvider::start($fake_port, $fake_log);

# the master's children; a process that ends while we look is no worker
sub workers {
    my $master = Echelon::nginx_pid($dir);
    my @pids;
    for my $stat (glob('/proc/[0-9]*/stat')) {
        open(my $s, '<', $stat) or next;
        my @f = split / /, (<$s> // '');
        push @pids, $f[0] if @f > 3 && $f[3] == $master;
    }
    return @pids;
}

END {
    Echelon::nginx_kill($dir);
    FakeProvider::stop($fake) if $fake;
}

Echelon::nginx_run($dir);
Echelon::wait_until(sub { HTTP::Tiny->new(timeout => 1)
                          ->get("$base/v1/account")->{status} == 401 }, 10);

# an account whose employee is paused while its deliveries are created

my $acct = Echelon::api($base, 'POST', '/v1/accounts',
                        $Echelon::ADMIN_TOKEN,
                        { name => 'Faults', plan => 'growth' });
my $key = $acct->{api_key};
Echelon::api($base, 'PUT', '/v1/channels/sms', $key,
             { from => '+15550001111' });
my $emp = Echelon::api($base, 'POST', '/v1/employees', $key,
                       { name => 'B', role => 'billing',
                         channels => ['sms'] });
Echelon::api($base, 'PATCH', "/v1/employees/$emp->{id}", $key,
             { enabled => JSON::PP::false });
Echelon::api($base, 'POST', "/v1/employees/$emp->{id}/triggers", $key,
             { event => 'invoice.issued', channel => 'sms',
               template => { body => 'Invoice {{invoice.number}}' } });

for my $i (1 .. $N) {
    my $ctc = Echelon::api($base, 'POST', '/v1/contacts', $key,
        { name => "C$i", phone => sprintf('+1555888%04d', 7000 + $i) });
    Echelon::api($base, 'POST', '/v1/invoices', $key,
        { contact => $ctc->{id}, number => "F-$i", amount_due => 100,
          currency => 'usd' });
}

is(Echelon::sql("SELECT count(*) FROM deliveries WHERE status = 'scheduled'"),
   $N, "$N deliveries are due");

# every one due at once; then the faults, while the batches go out

Echelon::api($base, 'PATCH', "/v1/employees/$emp->{id}", $key,
             { enabled => JSON::PP::true });

sleep 0.7;
Echelon::nginx_run($dir, '-s', 'reload');

sleep 1.0;
my @killed = workers();
kill 'KILL', @killed;

sleep 1.0;
system("$ENV{TEST_NGINX_PG_CTL} stop >/dev/null") == 0 or die "pg stop";
sleep 0.5;
system("$ENV{TEST_NGINX_PG_CTL} start >/dev/null") == 0 or die "pg start";

ok(scalar @killed, 'workers were killed with SIGKILL during the sends');

# leases run out in 5 s; everything must end sent within a minute

my $left;
my $end = time + 60;
while (time < $end) {
    $left = eval { Echelon::sql("SELECT count(*) FROM deliveries "
                                . "WHERE status <> 'sent'") };
    last if defined $left && $left == 0;
    sleep 0.5;
}

is($left, 0, 'nothing is lost: every delivery ends sent');

my %sent;
for my $r (FakeProvider::requests($fake_log)) {
    my ($tok) = map { $_->[1] } grep { lc $_->[0] eq 'i-twilio-idempotency-token' }
                @{ $r->{headers} };
    $sent{$tok}++;
}

my @twice = grep { $sent{$_} > 1 } keys %sent;
my @more = grep { $sent{$_} > 2 } keys %sent;

is(scalar keys %sent, $N, 'every delivery reached the provider');
is(scalar @more, 0, 'no delivery went out more than twice');
cmp_ok(scalar @twice, '<=', 2 * $batch,
       'only deliveries in flight when workers died went out again');
diag(scalar(@twice) . " of $N went out a second time (in flight at the kill)");

done_testing();
