package Echelon;

# What the suites share: a database of their own for each test file, an
# account set up through the real API before the blocks run, and Stripe's
# way of signing webhooks.
#
# The suites run under the bundled runner (t/lib) or upstream Test::Nginx;
# this module uses neither, only core Perl and Debian's perl modules.

use strict;
use warnings;
use utf8;

use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256_hex);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use HTTP::Tiny;
use JSON::PP;
use MIME::QuotedPrint ();
use POSIX ();
use Time::HiRes qw(sleep time);

our $JSON = JSON::PP->new->canonical->utf8;
our $ADMIN_TOKEN = 'test-admin-token';
our $STRIPE_SECRET = 'whsec_test_' . sprintf('%08x', int(rand(0xffffffff)));

my $ROOT = abs_path(dirname(__FILE__) . '/../..');

sub env_or_die {
    my ($name) = @_;
    my $v = $ENV{$name};
    die "$name is not set: run the suites with `make test`\n"
        unless defined $v && length $v;
    return $v;
}

sub psql {
    my ($db, $sql) = @_;
    my $host = env_or_die('TEST_NGINX_PG_HOST');
    my $port = env_or_die('TEST_NGINX_PG_PORT');
    my $user = env_or_die('TEST_NGINX_PG_USER');
    open(my $fh, '-|', 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
         '-h', $host, '-p', $port, '-U', $user, '-d', $db, '-c', $sql)
        or die "psql: $!";
    local $/;
    my $out = <$fh>;
    close($fh) or die "psql failed on: $sql\n";
    $out =~ s/\s+\z//;
    return $out;
}

# A fresh, empty database named after the test file; the module creates
# the schema itself on its first connection.  An encoding other than the
# cluster's (SQL_ASCII keeps any byte) is made from template0.
sub fresh_database {
    my ($encoding) = @_;
    my $name = 'echelon_' . basename($0, '.t');
    $name =~ s/[^a-z0-9_]/_/gi;
    psql('postgres', "DROP DATABASE IF EXISTS $name WITH (FORCE)");
    psql('postgres', "CREATE DATABASE $name"
                     . ($encoding ? " ENCODING '$encoding' TEMPLATE template0"
                                  : ""));
    $ENV{TEST_NGINX_DB_NAME} = $name;
    $ENV{TEST_NGINX_DB} = sprintf('host=%s port=%s dbname=%s user=%s',
        $ENV{TEST_NGINX_PG_HOST}, $ENV{TEST_NGINX_PG_PORT}, $name,
        $ENV{TEST_NGINX_PG_USER});
    return $name;
}

sub sql {
    my ($sql) = @_;
    return psql(env_or_die('TEST_NGINX_DB_NAME'), $sql);
}

# The module and its directives, as every suite's http_config writes them.
sub http_config {
    my (%o) = @_;
    my $smtp = $ENV{TEST_NGINX_SMTP_PORT} || 2525;
    my $extra = $o{extra} || '';
    my $conf = <<"CONF";
    echelon_database "$ENV{TEST_NGINX_DB}";
    echelon_admin_token "$ADMIN_TOKEN";
    echelon_database_pool 4;
    echelon_database_retry 500ms;
    echelon_scheduler_interval 200ms;
    echelon_retry_backoff 1s;
    echelon_smtp_url smtp://127.0.0.1:$smtp;
    echelon_smtp_from "Echelon Tests <billing\@echelon.test>";
    echelon_smtp_timeout 5s;
    echelon_scheduler_lease 30s;
CONF

    # a directive in extra replaces the default of the same name
    for my $name ($extra =~ /^\s*(\w+)/mg) {
        $conf =~ s/^\s*\Q$name\E\s[^\n]*\n//m;
    }

    return $conf . $extra;
}


sub main_config {
    return "";
}

# An nginx of our own, started before the blocks to set an account up
# through the API, then stopped.
sub with_server {
    my ($code, %o) = @_;
    my $port = ($ENV{TEST_NGINX_SERVER_PORT} || 1984) + 100;
    my $dir = "$ROOT/t/servroot-setup";

    write_conf($dir, $port, http_config(extra => 'echelon_scheduler off;'));

    nginx_run($dir);

    my $base = "http://127.0.0.1:$port";
    my $ok = eval {
        wait_until(sub { my $r = HTTP::Tiny->new(timeout => 1)
                                 ->get("$base/v1/account");
                         $r->{status} == 401 }, 10);
        $code->($base);
        1;
    };
    my $err = $@;

    if (my $pid = nginx_pid($dir)) {
        kill 'QUIT', $pid;
        wait_until(sub { !kill(0, $pid) }, 10);
    }

    die $err unless $ok;
}

# An nginx.conf of our own under $dir: the module, the http{} directives
# given, and the API on 127.0.0.1:$port; master and workers on request,
# main-level directives (env ...) in main.
sub write_conf {
    my ($dir, $port, $http, %o) = @_;
    my $module = env_or_die('TEST_NGINX_MODULE');
    my $master = $o{workers} ? 'on' : 'off';
    my $workers = $o{workers} || 1;
    my $main = $o{main} || '';

    remove_tree($dir);
    make_path("$dir/conf", "$dir/logs", "$dir/tmp");

    open(my $fh, '>', "$dir/conf/nginx.conf") or die $!;
    print $fh <<"CONF";
load_module $module;
$main
daemon on;
master_process $master;
worker_processes $workers;
error_log $dir/logs/error.log info;
pid $dir/logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
$http
    server {
        listen 127.0.0.1:$port;
        location /v1/ { echelon_api; }
        location /webhooks/ { echelon_webhooks; }
    }
}
CONF
    close($fh);
}

# An nginx of a suite's own under $dir (see write_conf): nginx_run starts
# it, or signals it with arguments ("-s", "reload"); nginx_pid is its
# master; nginx_kill ends it, at once if it does not end in a second.
sub nginx_run {
    my ($dir, @args) = @_;
    my $binary = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
    system($binary, '-p', "$dir/", '-c', "$dir/conf/nginx.conf", @args) == 0
        or die "nginx @args failed; see $dir/logs/error.log\n";
}

sub nginx_pid {
    my ($dir) = @_;
    open(my $pf, '<', "$dir/logs/nginx.pid") or return;
    my $pid = <$pf>;
    chomp $pid;
    return $pid;
}

sub nginx_kill {
    my ($dir) = @_;
    my $pid = nginx_pid($dir) or return;
    kill 'QUIT', $pid;
    sleep 1;
    kill 'KILL', $pid;
}

# Every block of a suite gets these http{} directives and server{}
# locations unless it says otherwise.  A block that reads (GET) first waits
# for the scheduler to settle, so that it checks an outcome, not a race.
sub default_blocks {
    my ($http, $config) = @_;
    main::add_block_preprocessor(sub {
        my $block = shift;
        $block->set_value('http_config', $http)
            unless defined $block->http_config;
        $block->set_value('config', $config)
            unless defined $block->config;
        my $req = $block->request;
        if (defined $req && !ref $req && $req =~ /^GET /) {
            my $init = eval { $block->init } // '';
            $block->set_value('init', "Echelon::wait_settled();\n$init");
        }
    });
}

# Nothing in flight and nothing overdue for an enabled employee: what the
# scheduler had to do by now, it has done (or gives up waiting after 30 s).
sub wait_settled {
    wait_for_sql("SELECT count(*) FROM deliveries d "
                 . "JOIN employees e ON e.id = d.employee_id "
                 . "WHERE e.enabled AND (d.status = 'sending' "
                 . "OR (d.status = 'scheduled' AND d.due_at <= now()))",
                 0, 30);
}

# Wait (at most $seconds) until a query answers $want: for blocks whose
# outcome comes from the scheduler, a condition rather than a fixed sleep.
sub wait_for_sql {
    my ($sql, $want, $seconds) = @_;
    my $got;
    eval {
        wait_until(sub { $got = sql($sql); $got eq $want }, $seconds || 30);
    };
    return $got;
}

sub wait_until {
    my ($cond, $seconds) = @_;
    my $end = time + $seconds;
    while (time < $end) {
        return 1 if $cond->();
        sleep 0.1;
    }
    die "timed out after ${seconds}s\n";
}

sub api {
    my ($base, $method, $path, $key, $body) = @_;
    my %h = (Authorization => "Bearer $key");
    my %args = (headers => \%h);
    if (defined $body) {
        $h{'Content-Type'} = 'application/json';
        $args{content} = $JSON->encode($body);
    }
    my $r = HTTP::Tiny->new(timeout => 10)->request($method, "$base$path",
                                                    \%args);
    die "$method $path: $r->{status} $r->{content}\n"
        unless $r->{status} =~ /^2/;
    return $JSON->decode($r->{content});
}

# An account on the given plan with email connected, a Stripe secret, a
# billing employee and the given triggers.  Exported to the blocks as
# $TEST_NGINX_ACCOUNT, $TEST_NGINX_API_KEY, $TEST_NGINX_EMPLOYEE and
# $TEST_NGINX_TRIGGER_<n>.  encoding => 'SQL_ASCII' gives a database that
# stores any byte, for text that is not UTF-8.
sub setup_account {
    my (%o) = @_;
    my $triggers = $o{triggers} || [];

    fresh_database($o{encoding});

    with_server(sub {
        my ($base) = @_;
        my $acct = api($base, 'POST', '/v1/accounts', $ADMIN_TOKEN,
                       { name => $o{name} || 'Acme Studio',
                         plan => $o{plan} || 'starter' });
        my $key = $acct->{api_key};

        api($base, 'PUT', '/v1/channels/email', $key,
            { from => 'Acme Billing <billing@acme.test>' });
        api($base, 'PUT', '/v1/integrations/stripe', $key,
            { signing_secret => $STRIPE_SECRET });
        my $emp = api($base, 'POST', '/v1/employees', $key,
                      { name => 'Billing — Accounts Receivable',
                        role => 'billing', channels => ['email'],
                        tone => $o{tone} || 'friendly' });

        my $n = 0;
        for my $t (@$triggers) {
            my $trg = api($base, 'POST', "/v1/employees/$emp->{id}/triggers",
                          $key, $t);
            $ENV{'TEST_NGINX_TRIGGER_' . $n++} = $trg->{id};
        }

        $ENV{TEST_NGINX_ACCOUNT} = $acct->{id};
        $ENV{TEST_NGINX_API_KEY} = $key;
        $ENV{TEST_NGINX_EMPLOYEE} = $emp->{id};

        # more set-up through the API: sub { my ($call) = @_; ... }
        $o{more}->(sub { api($base, $_[0], $_[1], $key, $_[2]) })
            if $o{more};
    });
}

# A Stripe event envelope around an object, as JSON text.
sub stripe_event {
    my ($type, $object, %o) = @_;
    my $event = {
        id => $o{id} || 'evt_' . random_id(),
        object => 'event',
        api_version => '2024-06-20',
        created => $o{created} || time_int(),
        type => $type,
        livemode => JSON::PP::false,
        pending_webhooks => 1,
        request => { id => undef, idempotency_key => undef },
        data => { object => $object },
    };
    return $JSON->encode($event);
}

# A Stripe-shaped invoice: the fields Echelon reads, and some it ignores.
sub stripe_invoice {
    my (%o) = @_;
    my $id = $o{id} || 'in_' . random_id();
    my %invoice = (
        id => $id,
        object => 'invoice',
        customer => $o{customer} || 'cus_' . random_id(),
        customer_email => exists $o{email} ? $o{email} : 'jenny@example.com',
        customer_name => exists $o{name} ? $o{name} : 'Jenny Rosen',
        number => $o{number} || 'ACME-0001',
        amount_due => exists $o{amount} ? $o{amount} : 125000,
        amount_paid => 0,
        currency => $o{currency} || 'usd',
        due_date => exists $o{due_date} ? $o{due_date}
                                        : time_int() + 14 * 86400,
        hosted_invoice_url => "https://invoice.stripe.com/i/acct_test/$id",
        status => 'open',
        collection_method => 'send_invoice',
        lines => { object => 'list', data => [], has_more => JSON::PP::false },
    );
    return \%invoice;
}

# The Stripe-Signature header for a body: "t=<time>,v1=<hmac>".
sub stripe_signature {
    my ($body, %o) = @_;
    my $t = time_int() + ($o{offset} || 0);
    my $secret = $o{secret} || $STRIPE_SECRET;
    my $sig = hmac_sha256_hex("$t.$body", $secret);
    my @v1 = ($sig);
    unshift @v1, $o{extra} if $o{extra};
    return "t=$t," . join(',', map { "v1=$_" } @v1);
}

# A webhook request for Test::Nginx's `--- request eval`.
sub stripe_request {
    my ($body) = @_;
    return "POST /webhooks/stripe/$ENV{TEST_NGINX_ACCOUNT}\n$body";
}

sub stripe_headers {
    my ($body, %o) = @_;
    return "Content-Type: application/json; charset=utf-8\n"
         . "Stripe-Signature: " . stripe_signature($body, %o) . "\n";
}

# RFC 3339 for a Unix time, as the API writes it.
sub rfc3339 {
    return POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0]));
}

# The newest message in the Maildir for a recipient (and subject), as a
# mail client shows it: its headers, and its quoted-printable body decoded.
# Written where the blocks' nginx serves it (location /t/mail).
sub link_mail {
    my ($rcpt, $subject) = @_;
    my $dir = env_or_die('TEST_NGINX_MAIL_DIR');
    my ($newest, $mtime, $text);
    for my $f (glob("$dir/new/* $dir/cur/*")) {
        open(my $fh, '<', $f) or next;
        local $/;
        my $t = <$fh>;
        next unless $t =~ /^To:.*\Q$rcpt\E/mi;
        next if defined $subject && $t !~ /^Subject: \Q$subject\E\r?$/m;
        my $m = (stat($f))[9];
        ($newest, $mtime, $text) = ($f, $m, $t)
            if !defined $mtime || $m >= $mtime;
    }
    unlink("$dir/latest");
    return unless defined $text;
    my ($head, $body) = split /\r?\n\r?\n/, $text, 2;
    $body = MIME::QuotedPrint::decode_qp($body)
        if $head =~ /^Content-Transfer-Encoding: quoted-printable/mi;
    open(my $out, '>', "$dir/latest") or die "$dir/latest: $!";
    print $out "$head\n\n$body";
    close($out);
}


# A pattern that matches a text holding exactly $n matches of $re.
sub exactly {
    my ($n, $re) = @_;
    return qr/\A(?:(?!$re).)*(?:$re(?:(?!$re).)*){$n}\z/s;
}

sub random_id {
    return join '', map { ('a'..'z', 'A'..'Z', 0..9)[rand 62] } 1..14;
}

sub time_int {
    return int(time);
}

1;
