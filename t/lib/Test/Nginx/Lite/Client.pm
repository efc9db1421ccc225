package Test::Nginx::Lite::Client;

# The HTTP side of our Test::Nginx::Socket subset: turning a "--- request"
# section into raw HTTP/1.1 bytes, exchanging them with nginx over one
# loopback TCP connection, and parsing the raw response.
#
# The request-building rules deliberately repeat upstream Test::Nginx's
# quirks (see t/lib/README.md), so a .t file behaves the same under both.

use strict;
use warnings;

use Errno ();
use IO::Select ();
use IO::Socket::INET ();
use Time::HiRes qw(sleep);

# "Name: value" lines (upstream: split on newlines, "#" lines skipped,
# no trimming of leading blanks) -> ("Name: value\r\n..." , $is_chunked).
sub parse_more_headers {
    my ($text) = @_;
    my ($out, $chunked) = ('', 0);
    for my $line (split /\n+/, $text // '') {
        next if $line =~ /^\s*#/;
        my ($key, $val) = split /:\s*/, $line, 2;
        $val //= '';
        $chunked = 1 if lc($key) eq 'transfer-encoding' && $val eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $chunked);
}

# Build one raw request from a "METHOD [URI [VERSION]]\n<body>" string.
# Returns { raw => $bytes, head => $is_head_request }; dies on a bad
# request line.
sub build_request {
    my ($text, $more_headers, $host) = @_;

    utf8::encode($text) if utf8::is_utf8($text);
    my ($line, $body) = split /\n/, $text, 2;
    $line //= '';
    $body //= '';

    $line =~ m{^\s*(\S+)[ ]*(?:(\S+)[ ]*)?(?:(\S+)[ ]*)?\s*$}
        or die "Request line is not valid. Should be 'meth [url [version]]' "
             . "but got \"$line\".\n";
    my ($method, $uri, $version) = ($1, $2 // '/', $3 // 'HTTP/1.1');

    my ($headers, $chunked) = parse_more_headers($more_headers);

    # Upstream quirk: unless the test sets Content-Length itself (checked
    # case-sensitively) or sends chunked, the body is stripped of leading
    # and trailing whitespace before its length is taken.
    my $length = '';
    if (!$chunked && $body ne '' && $headers !~ /(?:^|\n)Content-Length:/) {
        $body =~ s/^\s+|\s+$//gs;
        $length = 'Content-Length: ' . length($body) . "\r\n";
    }

    my $prefix = '';
    $prefix .= "Host: $host\r\n"       if $headers !~ /(?:^|\n)Host:/i;
    $prefix .= "Connection: close\r\n" if $headers !~ /(?:^|\n)Connection/i;

    return {
        raw  => "$method $uri $version\r\n$prefix$headers$length\r\n$body",
        head => ($method eq 'HEAD' ? 1 : 0),
    };
}

# Send $raw and read until the server closes the connection.  As upstream
# does, $timeout is an idle timeout: it restarts whenever data moves.
# Returns { resp => $bytes, timed_out => 0|1, error => $msg|undef }.
sub exchange {
    my (%a) = @_;
    my ($addr, $port, $raw, $timeout) = @a{qw(addr port raw timeout)};

    my $sock;
    for my $try (1 .. ($a{connect_tries} || 10)) {
        $sock = IO::Socket::INET->new(
            PeerAddr => $addr, PeerPort => $port,
            Proto    => 'tcp', Timeout  => $timeout,
        );
        last if $sock;
        sleep(0.05 * $try);
    }
    return { resp => '', error => "Can't connect to $addr:$port: $!" }
        unless $sock;

    $sock->blocking(0);
    local $SIG{PIPE} = 'IGNORE';

    my ($resp, $written, $timed_out, $error) = ('', 0, 0, undef);
    my $readers = IO::Select->new($sock);
    my $writers = IO::Select->new($sock);

    while (1) {
        my ($r, $w) = IO::Select->select($readers,
            ($written < length $raw ? $writers : undef), undef, $timeout);
        if (!$r && !$w) {
            next if $!{EINTR};
            $timed_out = 1;
            last;
        }

        if ($w && @$w) {
            my $n = syswrite($sock, $raw, length($raw) - $written, $written);
            if (defined $n) {
                $written += $n;
            } elsif (!$!{EAGAIN} && !$!{EWOULDBLOCK}) {
                # nginx may answer (e.g. 413) and close before we finish.
                $error = "write failed: $!";
                $written = length $raw;
            }
        }

        if ($r && @$r) {
            my $n = sysread($sock, my $buf, 16384);
            if ($n) {
                $resp .= $buf;
            } elsif (defined $n) {
                last;                       # EOF: Connection: close done
            } elsif (!$!{EAGAIN} && !$!{EWOULDBLOCK}) {
                $error = "read failed: $!";
                last;
            }
        }
    }

    close $sock;
    return { resp => $resp, timed_out => $timed_out, error => $error };
}

# Parse a raw HTTP response.  Returns a hashref:
#   code, headers ([name, value] pairs), raw_headers (status line and
#   header lines, like upstream's), body, left (bytes after the message),
#   warning and error (strings or undef).
sub parse_response {
    my ($raw, $is_head) = @_;

    my %res = (code => undef, headers => [], raw_headers => '', body => '');
    $res{raw_headers} = $1 if $raw =~ /\A(.*?\r\n)\r\n/s;

    my ($head, $body) = $raw =~ /\A(.*?)\r?\n\r?\n(.*)\z/s;
    ($head, $body) = ($raw, '') unless defined $head;

    my ($status, @lines) = split /\r?\n/, $head;
    $res{code} = $1 if defined $status && $status =~ m{^HTTP/\d+(?:\.\d+)?\s+(\d+)};

    for my $line (@lines) {
        if ($line =~ /^[ \t]+(.*)/ && @{ $res{headers} }) {
            $res{headers}[-1][1] .= " $1";          # folded header line
        } elsif ($line =~ /^([^:]+?)\s*:\s*(.*?)\s*$/) {
            push @{ $res{headers} }, [$1, $2];
        }
    }
    $res{body} = $body;

    my $code = $res{code} // 0;
    return \%res if $code == 304 || $code == 101;

    my $te  = header(\%res, 'Transfer-Encoding');
    my $len = header(\%res, 'Content-Length');

    if (defined $te && $te eq 'chunked') {
        my ($decoded, $left, $err) = decode_chunked($body);
        if (defined $err) {
            $res{error} = $err;
        } else {
            $res{body} = $decoded;
            $res{left} = $left;
        }
    } elsif (defined $len && $len =~ /^\d+$/) {
        if (length $body > $len) {
            $res{left} = substr $body, $len;
            $res{body} = substr $body, 0, $len;
        } elsif (length $body < $len && !$is_head) {
            $res{warning} = "response body truncated: $len expected, but got "
                          . length($body);
        }
    }

    return \%res;
}

# Decode a chunked body; returns ($decoded, $extra_bytes, $error).
sub decode_chunked {
    my ($raw) = @_;
    my ($out, $pos) = ('', 0);

    while (1) {
        pos($raw) = $pos;
        if ($raw !~ /\G[ \t]*([0-9A-Fa-f]+)[ \t]*(?:;[^\r\n]*)?\r\n/gc) {
            return (undef, undef, $pos < length $raw
                ? 'invalid chunked body received: ' . substr($raw, $pos, 40)
                : 'no last chunk found');
        }
        my $size = hex $1;
        $pos = pos $raw;

        if ($size == 0) {
            # trailer fields (if any), then the final empty line
            pos($raw) = $pos;
            $raw =~ /\G(?:[^\r\n]+\r\n)*\r\n/gc
                or return (undef, undef, 'invalid chunked data received (expected CRLF)');
            my $left = substr $raw, pos $raw;
            return ($out, (length $left ? $left : undef), undef);
        }

        return (undef, undef, 'invalid chunked data received '
                              . '(not enough octets for the data section)')
            if length($raw) - $pos < $size + 2;

        $out .= substr $raw, $pos, $size;
        $pos += $size;
        return (undef, undef, 'invalid chunked data received (expected CRLF)')
            if substr($raw, $pos, 2) ne "\r\n";
        $pos += 2;
    }
}

# Value of a response header, case-insensitive; repeated headers are
# joined with ", " (what HTTP::Response->header returns upstream).
sub header {
    my ($res, $name) = @_;
    my @vals = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $res->{headers} };
    return @vals ? join(', ', @vals) : undef;
}

1;
