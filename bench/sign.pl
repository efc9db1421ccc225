#!/usr/bin/perl
# Pre-signs Stripe invoice.finalized events for wrk (bench/webhook.lua):
# one line per request, "<Stripe-Signature>\t<body>", each event with its
# own event id, invoice id and customer (so each one commits an event, an
# invoice, a contact and the fan-out). Signed as Stripe signs and as
# t/inc/Echelon.pm does: HMAC-SHA256 of "<t>.<body>", valid for 300 s, so
# run it right before the round.
#
#   bench/sign.pl SECRET PREFIX COUNT > requests.tsv
#
# The body is bench/sql/event.json with @N@ (PREFIX and the request's
# number), @T@ (now) and @DUE@ (two weeks ahead) filled in; the pgbench
# anchor (bench/sql/webhook.pgbench.in) fills in the same template.

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use File::Basename qw(dirname);

my ($secret, $prefix, $count) = @ARGV;
die "usage: sign.pl SECRET PREFIX COUNT\n" unless $count;

open(my $fh, '<', dirname(__FILE__) . '/sql/event.json') or die $!;
my $template = do { local $/; <$fh> };
close($fh);
$template =~ s/\s+\z//;

my $t = time;
my $due = $t + 14 * 86400;
$template =~ s/\@T\@/$t/g;
$template =~ s/\@DUE\@/$due/g;
my ($head, @rest) = split /\@N\@/, $template, -1;

for my $i (1 .. $count) {
    my $n = "$prefix$i";
    my $body = join($n, $head, @rest);
    printf "t=%d,v1=%s\t%s\n", $t, hmac_sha256_hex("$t.$body", $secret), $body;
}
