package FakeProvider;

# A provider's HTTP API on loopback, for the suites: it records every
# request exactly as it came (method, path, headers, body) and answers
# according to the message's recipient, so that each failure kind can be
# driven from the test data:
#
#   ...0429  429 with Retry-After: 1        ...0500  503
#   ...0400  400 with the provider's error  ...0000  no answer (hang)
#   ...7xxx  the usual answer, 300 ms late
#   ...0104  the connection reset (RST) once the request is read
#   ...0256  accepted, with a message id of 20 KB
#   anything else: 201 (Twilio) or 200 (Meta) with a message id

use strict;
use warnings;

use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_LINGER);
use JSON::PP;
use POSIX ();

my $JSON = JSON::PP->new->canonical;

sub start {
    my ($port, $log) = @_;

    unlink $log;

    my $server = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => $port, Listen => 64,
                                       ReuseAddr => 1, Proto => 'tcp')
        or die "fake provider on 127.0.0.1:$port: $!\n";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid) {
        close $server;
        return $pid;
    }

    $SIG{CHLD} = 'IGNORE';
    $SIG{TERM} = sub { POSIX::_exit(0) };

    # the whole provider stops by itself after ten minutes at most
    alarm 600;

    while (my $client = $server->accept) {
        my $child = fork();
        if (defined $child && $child == 0) {
            close $server;
            alarm 60;
            serve($client, $log);
            POSIX::_exit(0);
        }
        close $client;
    }

    POSIX::_exit(0);
}

sub stop {
    my ($pid) = @_;
    kill 'TERM', $pid if $pid;
    waitpid($pid, 0) if $pid;
}

# keep-alive: one request after another on the same connection
sub serve {
    my ($c, $log) = @_;
    $c->autoflush(1);

    while (1) {
        my $line = <$c>;
        return unless defined $line;
        $line =~ s/\r?\n\z//;
        my ($method, $path) = split / /, $line;

        my %h;
        my @order;
        while (my $hl = <$c>) {
            $hl =~ s/\r?\n\z//;
            last if $hl eq '';
            my ($k, $v) = split /:\s*/, $hl, 2;
            push @order, [$k, $v];
            $h{lc $k} = $v;
        }

        my $body = '';
        if (my $len = $h{'content-length'}) {
            read($c, $body, $len);
        }

        record($log, { method => $method, path => $path,
                       headers => \@order, body => $body });

        my $to = $body =~ /(?:^|&)To=([^&]*)/ ? unescape($1)
               : $body =~ /"to":"([^"]*)"/ ? $1 : '';

        if ($to =~ /0000$/) {
            sleep 20;
            return;
        }

        if ($to =~ /0104$/) {
            setsockopt($c, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
            close $c;
            return;
        }

        select(undef, undef, undef, 0.3) if $to =~ /7\d{3}$/;

        my ($status, $extra, $answer);
        if ($to =~ /0429$/) {
            ($status, $extra) = ('429 Too Many Requests', "Retry-After: 1\r\n");
            $answer = { code => 20429, message => 'Too Many Requests' };
        } elsif ($to =~ /0500$/) {
            ($status, $extra) = ('503 Service Unavailable', '');
            $answer = { message => 'Service Unavailable' };
        } elsif ($to =~ /0400$/) {
            ($status, $extra) = ('400 Bad Request', '');
            $answer = $path =~ m{/messages$}
                ? { error => { code => 100, message => 'Invalid parameter' } }
                : { code => 21211,
                    message => "The 'To' number is not a valid phone number." };
        } elsif ($to =~ /0256$/) {
            ($status, $extra) = ('201 Created', '');
            $answer = { sid => 'SM' . ('x' x 20000), status => 'queued' };
        } elsif ($path =~ m{/messages$}) {
            ($status, $extra) = ('200 OK', '');
            $answer = { messaging_product => 'whatsapp',
                        messages => [ { id => 'wamid.' . id_for($to) } ] };
        } else {
            ($status, $extra) = ('201 Created', '');
            $answer = { sid => 'SM' . id_for($to), status => 'queued' };
        }

        my $text = $JSON->encode($answer);
        print $c "HTTP/1.1 $status\r\nContent-Type: application/json\r\n"
               . "Content-Length: " . length($text) . "\r\n$extra\r\n$text";
    }
}

# the message id follows from the recipient ("whatsapp:+1555..." gives
# "w1555..."), so that a suite knows it in advance; a retry gets the
# same id, as a provider honouring our idempotency key would answer
sub id_for {
    my ($to) = @_;
    my $id = $to =~ /^whatsapp:/ ? 'w' : '';
    (my $digits = $to) =~ s/\D//g;
    return $id . $digits;
}

sub escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub unescape {
    my ($s) = @_;
    $s =~ tr/+/ /;
    $s =~ s/%([0-9A-Fa-f]{2})/chr(hex $1)/ge;
    return $s;
}

sub record {
    my ($log, $req) = @_;
    open(my $fh, '>>', $log) or die "$log: $!";
    flock($fh, 2);
    print $fh $JSON->encode($req), "\n";
    close $fh;
}

# every request recorded so far
sub requests {
    my ($log) = @_;
    open(my $fh, '<', $log) or return ();
    return map { $JSON->decode($_) } <$fh>;
}

1;
