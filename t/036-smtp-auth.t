# SMTP AUTH: with echelon_smtp_user and echelon_smtp_password (a secret, read
# here from the environment), Echelon logs in with AUTH PLAIN once a
# connection before its first message; credentials the relay refuses are a
# transient failure with the relay's reply, so that the message goes out
# once they are fixed (a reload); credentials are never sent in clear text
# to a relay off this machine (the sink is on loopback, where they may be).
#
# The suite starts an SMTP sink of its own that requires AUTH, and nginx
# with a master and one worker.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use HTTP::Tiny;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep);

my $port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 15;
my $sink_port = $port + 1;
my $dir = "$FindBin::Bin/servroot-auth";
my $maildir = "$dir/mail";
my $base = "http://127.0.0.1:$port";
my $python = $ENV{SYSTEM_PYTHON} || '/usr/bin/python3';
my $serial = 0;

Echelon::setup_account(name => 'Auth', triggers => [
    { event => 'invoice.issued', channel => 'email', delay => '0',
      template => { subject => 'Invoice {{invoice.number}}' } },
]);

my $key = $ENV{TEST_NGINX_API_KEY};

my $sink;

END {
    Echelon::nginx_kill($dir);
    if ($sink) { kill 'TERM', $sink; waitpid($sink, 0) }
}

# nginx with the relay's credentials, the password from the environment
$ENV{ECHELON_TEST_SMTP_PASSWORD} = 'correct horse';
Echelon::write_conf($dir, $port, Echelon::http_config(extra => <<"X"),
    echelon_smtp_url smtp://127.0.0.1:$sink_port;
    echelon_smtp_user billing\@acme.test;
    echelon_smtp_password env:ECHELON_TEST_SMTP_PASSWORD;
    echelon_max_attempts 10;
X
                    workers => 1,
                    main => 'env ECHELON_TEST_SMTP_PASSWORD;');

# the password line changed in place, and a reload
sub password {
    my ($line) = @_;
    my $conf = "$dir/conf/nginx.conf";
    open(my $in, '<', $conf) or die "$conf: $!";
    my $text = do { local $/; <$in> };
    close $in;
    $text =~ s/^(\s*echelon_smtp_password )[^\n]*;$/$1$line;/m;
    open(my $out, '>', $conf) or die "$conf: $!";
    print $out $text;
    close $out;
    Echelon::nginx_run($dir, '-s', 'reload');
    sleep 1.5;
}

mkdir $maildir;
$sink = fork();
die "fork: $!" unless defined $sink;
if ($sink == 0) {
    exec($python, "$FindBin::Bin/../tools/smtp_sink.py", '--host', '127.0.0.1',
         '--port', $sink_port, '--maildir', $maildir, '--quiet',
         '--auth', 'billing@acme.test:correct horse');
    die "exec: $!";
}
Echelon::wait_until(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                                PeerPort => $sink_port) }, 10);

Echelon::nginx_run($dir);
Echelon::wait_until(sub { HTTP::Tiny->new(timeout => 1)
                          ->get("$base/v1/account")->{status} == 401 }, 10);

sub invoice_for {
    my ($email) = @_;
    my $ctc = Echelon::api($base, 'POST', '/v1/contacts', $key,
                           { name => $email, email => $email });
    Echelon::api($base, 'POST', '/v1/invoices', $key,
                 { contact => $ctc->{id}, number => 'AU-' . ++$serial,
                   amount_due => 100, currency => 'usd' });
    return $ctc->{id};
}

sub status_of {
    my ($contact) = @_;
    return Echelon::sql("SELECT status FROM deliveries "
                        . "WHERE contact_id = '$contact'");
}

sub wait_status {
    my ($contact, $status) = @_;
    return Echelon::wait_for_sql("SELECT status FROM deliveries "
                                 . "WHERE contact_id = '$contact'",
                                 $status, 30);
}

# the sink's headers of the message stored for a recipient
sub stored {
    my ($email) = @_;
    for my $f (glob("$maildir/new/*")) {
        open(my $fh, '<', $f) or next;
        local $/;
        my $t = <$fh>;
        next unless $t =~ /^X-Echelon-Envelope-To: <\Q$email\E>$/m;
        my %h = map { /^(X-Echelon-[\w-]+): (.*)$/ ? ($1 => $2) : () }
                split /\n/, $t;
        return \%h;
    }
    return {};
}

# 1. the right credentials: logged in once, two messages on the connection

my $one = invoice_for('one@example.com');
is(wait_status($one, 'sent'), 'sent', 'with credentials, an email is sent');
my $two = invoice_for('two@example.com');
is(wait_status($two, 'sent'), 'sent', 'and the next one too');

my ($h1, $h2) = (stored('one@example.com'), stored('two@example.com'));
is($h1->{'X-Echelon-Auth'}, 'billing@acme.test',
   'the relay saw AUTH with the configured user');
is($h2->{'X-Echelon-Connection'}, $h1->{'X-Echelon-Connection'},
   'the second message went on the same connection, without a second AUTH');

# 2. a wrong password: a transient failure with the relay's reply

password('"wrong horse"');

my $three = invoice_for('three@example.com');
is(Echelon::wait_for_sql("SELECT count(*) > 0 FROM delivery_attempts a "
                         . "JOIN deliveries d ON d.id = a.delivery_id "
                         . "WHERE d.contact_id = '$three' "
                         . "AND a.outcome = 'transient' AND a.error ~ "
                         . "'refused our credentials: 535'", 't', 30),
   't', 'refused credentials: a transient failure with the relay\'s reply');
is(status_of($three), 'scheduled', '... and the email is tried again');
ok(!%{ stored('three@example.com') }, '... and nothing was stored');

# 3. fixed (the secret from the environment again): the retry goes out

password('env:ECHELON_TEST_SMTP_PASSWORD');

is(wait_status($three, 'sent'), 'sent',
   'once the password is fixed (a reload), the retry is sent');
is(stored('three@example.com')->{'X-Echelon-Auth'}, 'billing@acme.test',
   '... logged in as the configured user');

open(my $log, '<', "$dir/logs/error.log") or die $!;
my @leaks = grep { /correct horse|wrong horse|Y29ycmVjdC/ } <$log>;
is(scalar @leaks, 0, 'the password is not in the error log');

done_testing();
