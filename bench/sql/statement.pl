#!/usr/bin/perl
# Prints one of the module's prepared statements as a PREPARE, taken from
# src/ngx_echelon_sql.c, so that the pgbench anchors run the very text the
# module prepares (and follow it when it changes).
#
#   bench/sql/statement.pl SQL_SOURCE NAME
#
# The module prepares without parameter types (PQsendPrepare with NULL
# types); PREPARE without types infers them the same way.

use strict;
use warnings;

my ($source, $name) = @ARGV;
die "usage: statement.pl SQL_SOURCE NAME\n" unless $name;

open(my $fh, '<', $source) or die "$source: $!\n";
my $c = do { local $/; <$fh> };
close($fh);

# { "name", "literal" "literal" ..., nparams },
$c =~ /\{\s*"\Q$name\E",\s*((?:"(?:[^"\\]|\\.)*"\s*)+),\s*\d+\s*\}/s
    or die "statement $name not found in $source\n";
my $literals = $1;

my $sql = '';
while ($literals =~ /"((?:[^"\\]|\\.)*)"/g) {
    my $s = $1;
    $s =~ s/\\(["\\])/$1/g;
    $s =~ s/\\n/\n/g;
    $sql .= $s;
}

print "PREPARE $name AS $sql;\n";
