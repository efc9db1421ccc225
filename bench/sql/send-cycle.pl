#!/usr/bin/perl
# Prints bench_send_cycle(n), a procedure that does in the database alone
# what the scheduler asks of it for n deliveries: the module's own claim
# statement (one transaction), then its own statement writing n results
# "sent" (another), both taken from src/ngx_echelon_sql.c.  Item 3c runs it
# with pgbench, with Echelon's scheduler switched off: the limit the
# database sets on sending, whatever the transport.
#
#   bench/sql/send-cycle.pl SQL_SOURCE

use strict;
use warnings;
use FindBin;

my ($source) = @ARGV;
die "usage: send-cycle.pl SQL_SOURCE\n" unless $source;

sub statement {
    my ($name) = @_;
    my $text = `$^X $FindBin::Bin/statement.pl $source $name`;
    die "statement $name not found\n" if $?;
    $text =~ s/^PREPARE \w+ AS //;
    $text =~ s/;\s*\z//;
    return $text;
}

my $claim = statement('echelon_claim');
my $finish = statement('echelon_finish');

print <<"SQL";
CREATE OR REPLACE PROCEDURE bench_send_cycle(n integer)
LANGUAGE plpgsql AS \$proc\$
DECLARE
    c record;
    results jsonb := '[]';
BEGIN
    FOR c IN EXECUTE \$claim\$ $claim \$claim\$ USING n, 60 LOOP
        results := results || jsonb_build_object(
            'id', c.id, 'token', c.claim_token, 'status', 'sent',
            'reason', NULL, 'address', c.phone, 'subject', NULL,
            'body', 'Invoice ' || coalesce(c.number, '') || ': paid, thank you',
            'retry_in', NULL, 'outcome', 'sent',
            'provider_id', 'SM' || md5(c.id));
    END LOOP;
    COMMIT;

    IF jsonb_array_length(results) > 0 THEN
        EXECUTE \$finish\$ $finish \$finish\$ USING results::json;
    END IF;
    COMMIT;
END
\$proc\$;
SQL
