#!/usr/bin/perl
# Prints the bench's table from a results folder: for each measure the
# median of its rounds for Echelon and for the anchor, their ratio, the
# goal and whether it is met; then the machine and every command.
#
#   bench/table.pl bench/results/<date>
#
# Reads results.tsv (measure, side, round, value, unit, command ids, one
# line per figure, written by bench/lib.sh's record), machine.txt and
# commands.txt.

use strict;
use warnings;

my $dir = shift or die "usage: table.pl RESULTS_DIR\n";

my (%values, %cmds, %units);
open(my $fh, '<', "$dir/results.tsv") or die "$dir/results.tsv: $!\n";
while (<$fh>) {
    chomp;
    my ($measure, $side, $round, $value, $unit, $cmd) = split /\t/;
    push @{ $values{$measure}{$side} }, $value;
    push @{ $cmds{$measure}{$side} }, $cmd if $cmd && $cmd ne '-';
    $units{$measure}{$side} = $unit;
}
close($fh);

sub median {
    my @v = sort { $a <=> $b } grep { /^-?[0-9.]+$/ } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

# The median of a measure's side, or its text when it is not a number
# (n/a, not run), or undef when there is nothing.
sub figure {
    my ($measure, $side) = @_;
    my $v = $values{$measure}{$side} or return undef;
    my $m = median(@$v);
    return defined $m ? $m : $v->[0];
}

sub num { defined $_[0] && $_[0] =~ /^-?[0-9.]+$/ }

sub fmt {
    my ($v, $unit) = @_;
    return '—' unless defined $v;
    return $v unless num($v);
    my $s = $v >= 100 ? sprintf('%.0f', $v) : sprintf('%.1f', $v);
    return $unit ? "$s $unit" : $s;
}

sub rounds {
    my ($measure, $side) = @_;
    my $v = $values{$measure}{$side} or return 0;
    return scalar grep { num($_) } @$v;
}

my @rows;

# ratio Echelon / anchor, goal "ratio >= x"
sub ratio_row {
    my ($label, $measure, $anchor_side, $min, $anchor_label) = @_;
    my $e = figure($measure, 'echelon');
    my $a = figure($measure, $anchor_side);
    my $ratio = num($e) && num($a) && $a > 0 ? $e / $a : undef;
    my $met = !defined $min ? '—'
            : defined $ratio ? ($ratio >= $min ? 'yes' : 'NO') : 'n/a';
    push @rows, [ $label, fmt($e, $units{$measure}{echelon}),
                  fmt($a, $units{$measure}{$anchor_side})
                  . ($anchor_label ? " ($anchor_label)" : ''),
                  defined $ratio ? sprintf('%.2f', $ratio) : '—',
                  defined $min ? "≥ $min" : '—', $met,
                  rounds($measure, 'echelon') . '/'
                  . rounds($measure, $anchor_side),
                  join(' ', @{ $cmds{$measure}{echelon} || [] },
                       @{ $cmds{$measure}{$anchor_side} || [] }) ];
}

# an absolute figure against a bound
sub bound_row {
    my ($label, $measure, $max, $goal) = @_;
    my $e = figure($measure, 'echelon');
    my $met = !defined $max ? '—' : num($e) ? ($e <= $max ? 'yes' : 'NO')
            : 'n/a';
    push @rows, [ $label, fmt($e, $units{$measure}{echelon}), '—', '—',
                  $goal // '—', $met, rounds($measure, 'echelon'),
                  join(' ', @{ $cmds{$measure}{echelon} || [] }) ];
}

ratio_row('1. Webhook ingest, signed invoice.finalized, 64 conn.',
          'webhook', 'anchor', 0.8, 'pgbench, same transaction');
ratio_row('2. API read: activity feed, 50 items, 1M deliveries',
          'feed', 'anchor', 0.8, 'pgbench, the same statement');
ratio_row('3a. Sending, scheduler → SMTP sink',
          'smtp', 'anchor', undef, "the sink's own limit");
ratio_row('3b. Sending, scheduler → HTTP sink',
          'http', 'anchor', 0.7, 'wrk at the sink');
ratio_row('3c. Sending by HTTP, against the database alone (context)',
          'httpdb', 'anchor', undef,
          "pgbench: the scheduler's claim and result statements, no transport");

my $tick = 1000;    # echelon_scheduler_interval in bench/echelon.conf.in
my $burst = $ENV{BENCH_BURST} || 10000;
for my $big ([ '1m', '1M' ], [ '10m', '10M' ]) {
    my ($k, $n) = @$big;
    next unless $values{"lag_p99_$k"};
    if (!num(figure("lag_p99_$k", 'echelon'))) {
        bound_row("4. Lag p99, $n ahead, 1,000 due/s", "lag_p99_$k", undef);
        next;
    }
    bound_row("4. Lag p50, $n ahead, 1,000 due/s (email)", "lag_p50_$k",
              undef);
    bound_row("4. Lag p99, $n ahead, 1,000 due/s (email)", "lag_p99_$k",
              $tick + 50, '≤ ' . ($tick + 50) . ' ms (tick + 50 ms)');
    if ($values{"lagsms_p99_$k"}) {
        bound_row("4b. Lag p50, $n ahead, 1,000 due/s, by SMS (context)",
                  "lagsms_p50_$k", undef);
        bound_row("4b. Lag p99, $n ahead, 1,000 due/s, by SMS (context)",
                  "lagsms_p99_$k", $tick + 50,
                  '≤ ' . ($tick + 50) . ' ms (tick + 50 ms)');
    }

    # the burst: its drain, and its rate against item 3's (SMTP)
    my $drain = figure("burst_$k", 'echelon');
    if (defined $drain) {
        my $rate = figure("burstrate_$k", 'echelon');
        my $rate3 = figure('smtp', 'echelon');
        my $ratio = num($rate) && num($rate3) && $rate3 > 0
                  ? $rate / $rate3 : undef;
        push @rows, [ "4. Burst of $burst due at once, $n ahead: drain (rate)",
                      fmt($drain, 's') . (num($rate)
                          ? sprintf(' (%.0f/s)', $rate) : ''),
                      num($rate3) ? sprintf('%.0f/s (item 3a)', $rate3) : '—',
                      defined $ratio ? sprintf('%.2f', $ratio) : '—',
                      'rate ≥ 0.9 of item 3a',
                      defined $ratio ? ($ratio >= 0.9 ? 'yes' : 'NO') : 'n/a',
                      rounds("burst_$k", 'echelon'),
                      join(' ', @{ $cmds{"burst_$k"}{echelon} || [] }) ];
    }
    bound_row("4. Claim with nothing due, $n ahead (EXPLAIN ANALYZE)",
              "claim_$k", undef);
    my $pages = figure("claimbuf_$k", 'echelon');
    $rows[-1][1] .= sprintf(' (%.0f pages read)', $pages) if num($pages);
}

ratio_row('5. Never blocked: p99 GET /v1/account, a query held 2 s',
          'blocked', 'anchor', undef, 'p99 without it');
# goal is a maximum: rewrite the last row's goal and met
{
    my $r = $rows[-1];
    my $e = figure('blocked', 'echelon');
    my $a = figure('blocked', 'anchor');
    $r->[4] = '≤ 2';
    $r->[5] = num($e) && num($a) && $a > 0 ? ($e / $a <= 2 ? 'yes' : 'NO')
            : 'n/a';
}
if ($values{blocked}{floor}) {
    my $f = figure('blocked', 'floor');
    push @rows, [ '5b. the same wrk at plain nginx (the HTTP sink): noise floor',
                  fmt($f, 'ms'), '—', '—', '—', '—',
                  rounds('blocked', 'floor'),
                  join(' ', @{ $cmds{blocked}{floor} || [] }) ];
}
bound_row('6. Memory: worker RSS growth over 1M requests', 'memory',
          2047, '< 2048 kB');
if (my $d = $values{memory}{detail}) {
    $rows[-1][1] .= " (VmRSS of each worker: $d->[0])";
}

my @head = ('measure', 'Echelon', 'anchor', 'ratio', 'goal', 'met',
            'rounds', 'commands');
print '| ', join(' | ', @head), " |\n";
print '|', join('|', map { '---' } @head), "|\n";
print '| ', join(' | ', @$_), " |\n" for @rows;

print "\nMedians of the rounds (Echelon and anchor alternate in each round).\n";
print "\n## Machine\n\n";
if (open(my $m, '<', "$dir/machine.txt")) {
    print "    $_" while <$m>;
}
print "\n## Commands\n\n";
if (open(my $c, '<', "$dir/commands.txt")) {
    print "    $_" while <$c>;
}
