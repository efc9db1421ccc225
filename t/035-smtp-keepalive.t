# Connections to the SMTP relay are kept between messages: emails sent one
# after another share a connection; emails due together take turns on at
# most echelon_smtp_keepalive connections; a refused recipient leaves one
# usable;
# a relay that closes a kept connection, or answers 421 on it, loses no
# message; echelon_smtp_keepalive 0 is one connection a message; a
# graceful exit does not wait for idle connections.
#
# The SMTP sink writes each message's connection serial number in an
# X-Echelon-Connection header.  nginx runs with a master and one worker, as
# in production, so the test starts it itself rather than through
# Test::Nginx.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use HTTP::Tiny;
use Test::More;
use Time::HiRes qw(sleep);

my $port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 11;
my $dir = "$FindBin::Bin/servroot-keepalive";
my $base = "http://127.0.0.1:$port";
my $maildir = Echelon::env_or_die('TEST_NGINX_MAIL_DIR');
my $serial = 0;

Echelon::setup_account(name => 'Keepalive', triggers => [
    { event => 'invoice.issued', channel => 'email', delay => '0',
      template => { subject => 'Invoice {{invoice.number}}',
                    body => 'Hi {{contact.name}}' } },
]);

my $key = $ENV{TEST_NGINX_API_KEY};

# nginx with these http{} directives; the one before is stopped first
sub start {
    my ($extra) = @_;
    stop();
    Echelon::write_conf($dir, $port,
                        Echelon::http_config(extra => $extra || ''),
                        workers => 1);
    Echelon::nginx_run($dir);
    Echelon::wait_until(sub { HTTP::Tiny->new(timeout => 1)
                              ->get("$base/v1/account", { headers =>
                                    { Authorization => "Bearer $key" } })
                              ->{status} == 200 }, 30);
}

sub stop {
    my $pid = Echelon::nginx_pid($dir) or return;
    kill 'QUIT', $pid;
    Echelon::wait_until(sub { !kill(0, $pid) }, 20);
    unlink "$dir/logs/nginx.pid";
}

END {
    Echelon::nginx_kill($dir);
}

# an invoice for a new contact, and so an email due now
sub invoice_for {
    my ($email) = @_;
    my $ctc = Echelon::api($base, 'POST', '/v1/contacts', $key,
                           { name => $email, email => $email });
    Echelon::api($base, 'POST', '/v1/invoices', $key,
                 { contact => $ctc->{id}, number => 'K-' . ++$serial,
                   amount_due => 100, currency => 'usd' });
    return $ctc->{id};
}

# the delivery's end, once it has one: its status, attempts and reason
sub outcome {
    my ($contact) = @_;
    Echelon::wait_for_sql("SELECT count(*) FROM deliveries WHERE contact_id"
                          . " = '$contact' AND status IN ('sent', 'failed')",
                          1);
    return Echelon::sql("SELECT status || ' ' || attempts"
                        . " || coalesce(' ' || reason, '')"
                        . " FROM deliveries WHERE contact_id = '$contact'");
}

# one email, sent before the next is created
sub send_one {
    my ($email) = @_;
    return outcome(invoice_for($email));
}

sub employee_enabled {
    my ($on) = @_;
    Echelon::api($base, 'PATCH', "/v1/employees/$ENV{TEST_NGINX_EMPLOYEE}",
                 $key, { enabled => $on ? JSON::PP::true : JSON::PP::false });
}

# the connection serial of the message the sink stored for a recipient
sub connection_of {
    my ($email) = @_;
    for my $f (glob("$maildir/new/*")) {
        open(my $fh, '<', $f) or next;
        local $/;
        my $t = <$fh>;
        next unless $t =~ /^X-Echelon-Envelope-To: <\Q$email\E>$/m;
        return $1 if $t =~ /^X-Echelon-Connection: (\d+)$/m;
    }
    return 'none';
}

sub error_log {
    open(my $fh, '<', "$dir/logs/error.log") or return '';
    local $/;
    return <$fh>;
}

start();

# several emails one after another: one connection

is(send_one("ka-$_\@example.com"), 'sent 1', "email $_ of 3 is sent")
    for 1 .. 3;

my $kept = connection_of('ka-1@example.com');
is(connection_of('ka-2@example.com'), $kept,
   'the second email goes over the first one\'s connection');
is(connection_of('ka-3@example.com'), $kept, '... and so does the third');

# a recipient refused on a kept connection, then a good email on it

like(send_one('reject-ka@example.com'),
     qr/^failed 1 550 5\.1\.1 .*Recipient address rejected/,
     'a 550 to RCPT on a kept connection fails that delivery');
is(send_one('ka-4@example.com'), 'sent 1', 'the next email is sent');
is(connection_of('ka-4@example.com'), $kept,
   '... on the same connection, after RSET');

# the relay closes the connection after a message

is(send_one('hangup-ka@example.com'), 'sent 1',
   'an email after which the relay closes the connection is sent');
is(send_one('ka-5@example.com'), 'sent 1',
   'the next email is sent, at its first attempt');
isnt(connection_of('ka-5@example.com'), connection_of('hangup-ka@example.com'),
     '... on a new connection');

# the relay answers 421 to MAIL FROM on a kept connection

is(send_one('expire-ka@example.com'), 'sent 1',
   'an email after which the relay will answer 421 is sent');
is(send_one('ka-6@example.com'), 'sent 1',
   'the next email, refused with 421 on the kept connection, is sent '
   . 'at its first attempt');
isnt(connection_of('ka-6@example.com'), connection_of('expire-ka@example.com'),
     '... on a new connection');
like(error_log(),
     qr/kept connection to \S+ failed \(421 4\.4\.2 [^)]*\), trying a new one/,
     '... and the retry is logged');

# a graceful exit closes the idle connection and does not wait for it

start('echelon_smtp_keepalive_timeout 1h;');
is(send_one('ka-7@example.com'), 'sent 1', 'an email is sent');

my $master = Echelon::nginx_pid($dir);
kill 'QUIT', $master;
ok(eval { Echelon::wait_until(sub { !kill(0, $master) }, 20) },
   'nginx quits with an idle connection kept for an hour');
unlike(error_log(), qr/open socket|\[alert\]|\[crit\]/,
       '... leaving no socket open');
unlink "$dir/logs/nginx.pid";

# emails due together take turns on at most echelon_smtp_keepalive
# connections

start('echelon_smtp_keepalive 2;');
employee_enabled(0);
my @together = map { invoice_for("kt-$_\@example.com") } 1 .. 6;
employee_enabled(1);
is(join(',', map { outcome($_) } @together), join(',', ('sent 1') x 6),
   'six emails due together are sent');
my %used = map { connection_of("kt-$_\@example.com") => 1 } 1 .. 6;
cmp_ok(scalar keys %used, '<=', 2,
       '... over at most two connections (echelon_smtp_keepalive 2)');

# at most echelon_smtp_keepalive_requests messages a connection

start('echelon_smtp_keepalive_requests 2;');
is(send_one("kr-$_\@example.com"), 'sent 1', "email $_ of 3 is sent")
    for 1 .. 3;
is(connection_of('kr-2@example.com'), connection_of('kr-1@example.com'),
   'two emails go over one connection');
isnt(connection_of('kr-3@example.com'), connection_of('kr-2@example.com'),
     'the third over another');

# echelon_smtp_keepalive 0: one connection a message

start('echelon_smtp_keepalive 0;');
is(send_one("k0-$_\@example.com"), 'sent 1', "email $_ of 2 is sent")
    for 1 .. 2;
isnt(connection_of('k0-2@example.com'), connection_of('k0-1@example.com'),
     'with echelon_smtp_keepalive 0 each email has its own connection');

stop();

unlike(error_log(), qr/\[alert\]|\[crit\]|\[emerg\]/,
       'no alert in the error log');

done_testing();
