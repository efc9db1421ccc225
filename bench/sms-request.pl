#!/usr/bin/perl
# The form body Echelon POSTs to Twilio for one SMS, rebuilt from a sent
# delivery (its address, rendered body and id, as psql prints them,
# separated by \x1f) and the account's number, with the module's escaping
# (every byte but A-Z a-z 0-9 - _ . ~ as %XX). Item 3's anchor sends it
# with wrk (bench/sink-post.lua). Prints the delivery id (the idempotency
# token header), then the body.
#
#   psql -A -t -F $'\x1f' -c "SELECT address, body, id ..." \
#       | bench/sms-request.pl +15550000000 > request.txt

use strict;
use warnings;

my $from = shift or die "usage: sms-request.pl FROM < delivery\n";
my $line = <STDIN>;
die "no delivery on stdin\n" unless defined $line;
chomp $line;
my ($to, $body, $id) = split /\x1f/, $line, 3;

sub escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

print "$id\n", 'To=', escape($to), '&From=', escape($from),
      '&Body=', escape($body), "\n";
