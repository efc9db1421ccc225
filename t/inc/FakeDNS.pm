package FakeDNS;

# A DNS server on loopback UDP for the suites, so that nginx's resolver has
# something to ask: A records come from a map file ("name address" lines)
# read again for every query, so that a suite changes an answer by
# rewriting the file.  A name not in the map is NXDOMAIN; other record
# types get an empty answer.  Every question is logged, one name a line.

use strict;
use warnings;

use IO::Socket::INET;
use POSIX ();

sub start {
    my ($port, $map, $log) = @_;

    unlink $log;

    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                     LocalPort => $port, Proto => 'udp')
        or die "fake DNS on 127.0.0.1:$port: $!\n";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid) {
        close $sock;
        return $pid;
    }

    $SIG{TERM} = sub { POSIX::_exit(0) };
    alarm 600;

    while (1) {
        my $peer = $sock->recv(my $query, 512);
        next unless defined $peer && length($query) > 12;
        my $answer = answer($query, $map, $log);
        $sock->send($answer, 0, $peer) if defined $answer;
    }
}

sub stop {
    my ($pid) = @_;
    kill 'TERM', $pid if $pid;
    waitpid($pid, 0) if $pid;
}

sub set {
    my ($map, %names) = @_;
    open(my $fh, '>', "$map.new") or die "$map: $!";
    print $fh map { "$_ $names{$_}\n" } sort keys %names;
    close $fh;
    rename("$map.new", $map) or die "$map: $!";
}

sub answer {
    my ($query, $map, $log) = @_;

    my ($id, $flags, $qd) = unpack('n n n', $query);
    return undef if $flags & 0x8000 or $qd != 1;

    # the question: labels, then type and class
    my ($pos, @labels) = (12);
    while (1) {
        my $len = ord substr($query, $pos, 1);
        $pos++;
        last if $len == 0;
        return undef if $len > 63 or $pos + $len > length $query;
        push @labels, substr($query, $pos, $len);
        $pos += $len;
    }
    my ($type) = unpack('n', substr($query, $pos, 2));
    my $question = substr($query, 12, $pos + 4 - 12);
    my $name = lc join('.', @labels);

    if (open(my $l, '>>', $log)) { print $l "$name $type\n"; close $l }

    my %known;
    if (open(my $fh, '<', $map)) {
        while (<$fh>) {
            my ($n, $a) = split;
            push @{ $known{lc $n} }, $a if defined $a;
        }
    }

    my $rd = $flags & 0x0100;
    if (!$known{$name}) {
        return pack('n n n n n n', $id, 0x8083 | $rd, 1, 0, 0, 0) . $question;
    }

    my @an = $type == 1 ? @{ $known{$name} } : ();
    my $records = join '', map {
        pack('n n n N n', 0xc00c, 1, 1, 1, 4) . pack('C4', split /\./)
    } @an;

    return pack('n n n n n n', $id, 0x8080 | $rd, 1, scalar @an, 0, 0)
           . $question . $records;
}

1;
