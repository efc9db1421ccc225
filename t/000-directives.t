# The module's directives as `nginx -t` sees them: a good configuration
# passes, and each bad value is refused with the file and the line.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use File::Path qw(make_path remove_tree);
use Test::More;

my $binary = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $module = Echelon::env_or_die('TEST_NGINX_MODULE');
my $dir = "$FindBin::Bin/servroot-directives";

sub nginx_t {
    my ($http, $location) = @_;
    $location //= 'location /v1/ { echelon_api; }';

    remove_tree($dir);
    make_path("$dir/conf", "$dir/logs");

    open(my $fh, '>', "$dir/conf/nginx.conf") or die $!;
    print $fh <<"CONF";
load_module $module;
error_log $dir/logs/error.log;
pid $dir/logs/nginx.pid;
events { worker_connections 16; }
http {
    access_log off;
    client_body_temp_path $dir/logs;
$http
    server {
        listen 127.0.0.1:1;
        $location
    }
}
CONF
    close($fh);

    my $out = `$binary -t -p $dir/ -c $dir/conf/nginx.conf 2>&1`;
    return ($? == 0, $out);
}

my $conf = "$dir/conf/nginx.conf";

my ($ok, $out) = nginx_t(<<'HTTP');
    echelon_database "host=127.0.0.1 dbname=x";
    echelon_database_pool 4;
    echelon_database_connect_timeout 2s;
    echelon_database_query_timeout 5s;
    echelon_database_queue_timeout 1s;
    echelon_admin_token "t0ken";
    echelon_scheduler on;
    echelon_scheduler_worker 0;
    echelon_scheduler_interval 500ms;
    echelon_scheduler_batch 20;
    echelon_scheduler_lease 2m;
    echelon_max_attempts 4;
    echelon_retry_backoff 10s;
    echelon_smtp_url smtp://127.0.0.1:2525;
    echelon_smtp_from "Billing <billing@example.com>";
    echelon_smtp_timeout 20s;
    echelon_smtp_keepalive 4;
    echelon_smtp_keepalive_timeout 10s;
    echelon_smtp_keepalive_requests 50;
    echelon_max_body_size 1m;
HTTP
ok($ok, 'every directive with a good value passes nginx -t') or diag($out);

my @bad = (
    [ 'echelon_database_pool 0;', qr/value must be between 1 and 512/ ],
    [ 'echelon_database_pool many;',
      qr/"echelon_database_pool" directive invalid number/ ],
    [ 'echelon_scheduler_interval soon;',
      qr/"echelon_scheduler_interval" directive invalid value/ ],
    [ 'echelon_scheduler maybe;', qr/invalid value "maybe"/ ],
    [ 'echelon_scheduler_batch 0;', qr/value must be between 1 and 10000/ ],
    [ 'echelon_smtp_url http://127.0.0.1;',
      qr/invalid SMTP URL "http:\/\/127.0.0.1"/ ],
    [ 'echelon_admin_token "";', qr/must not be empty/ ],
    [ 'echelon_admin_token env:ECHELON_SURELY_UNSET_VARIABLE;',
      qr/environment variable "ECHELON_SURELY_UNSET_VARIABLE" is not set/ ],
    [ "echelon_smtp_timeout 40s;\n    echelon_scheduler_lease 60s;",
      qr/"echelon_scheduler_lease" must be at least twice/ ],
    [ 'echelon_max_attempts 1000;', qr/value must be between 1 and 100/ ],
    [ 'echelon_smtp_keepalive 65;', qr/value must be between 0 and 64/ ],
    [ 'echelon_smtp_keepalive_timeout later;',
      qr/"echelon_smtp_keepalive_timeout" directive invalid value/ ],
    [ 'echelon_smtp_keepalive_requests 0;',
      qr/value must be between 1 and 100000/ ],
);

for my $case (@bad) {
    my ($directive, $message) = @$case;
    my ($passed, $text) = nginx_t("    $directive\n");
    ok(!$passed, "nginx -t refuses: $directive");
    like($text, $message, "... and says why");
    like($text, qr/in \Q$conf\E:\d+/, "... with the file and line");
}

my ($dup, $text) = nginx_t('', 'location /v1/ { echelon_api; echelon_api; }');
ok(!$dup, 'a duplicate echelon_api is refused');
like($text, qr/"echelon_api" directive is duplicate in \Q$conf\E:\d+/,
     '... with the file and line');

$ENV{ECHELON_TEST_TOKEN} = 'from-the-environment';
my ($env_ok, $env_out) = nginx_t(
    "    echelon_admin_token env:ECHELON_TEST_TOKEN;\n");
ok($env_ok, 'a secret can come from the environment') or diag($env_out);

remove_tree($dir);
done_testing();
