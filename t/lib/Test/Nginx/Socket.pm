package Test::Nginx::Socket;

# A small, self-contained re-implementation of the part of upstream
# Test::Nginx::Socket (openresty/test-nginx) that Echelon's tests use.
# The same .t files run under this module (prove -I t/lib) and under
# upstream (prove -I /path/to/test-nginx/lib).  See t/lib/README.md.

use strict;
use warnings;

# Lower-case -base: become a Test::Base subclass, so that
# "use Test::Nginx::Socket 'no_plan'" plans and exports Test::Base's
# functions (plan, is, like, blocks, ...), without Spiffy's "$self"
# source filter that upper-case -Base would apply to this file.
use Test::Base -base;

use File::Path ();
use File::Spec ();
use IO::Socket::INET ();
use List::Util qw(shuffle);
use Time::HiRes qw(sleep);

use Test::Nginx::Lite::Client ();
use Test::Nginx::Lite::Server ();

our $VERSION = '0.01';

# Same export list as upstream's Test::Nginx::Socket.
our @EXPORT = qw(
    env_to_nginx is_str plan run_tests run_test
    repeat_each config_preamble worker_connections
    master_process_enabled
    no_long_string workers master_on master_off
    log_level no_shuffle no_root_location use_hup
    server_name
    server_addr server_root html_dir server_port server_port_for_client
    timeout no_nginx_manager check_accum_error_log
    add_block_preprocessor bail_out add_test_cleanup_handler add_cleanup_handler
    add_response_body_check
);

# ---- settings (same environment variables and defaults as upstream) ----

our $NginxBinary       = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $ServerAddr        = '127.0.0.1';
our $ServerName        = 'localhost';
our $ServerPort        = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $RepeatEach        = 1;
our $NoShuffle         = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoLongString;
our $LogLevel          = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $Workers           = 1;
our $WorkerConnections = 64;
our $Timeout           = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $TestNginxSleep    = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $UseValgrind       = $ENV{TEST_NGINX_USE_VALGRIND};
our $LoadModules       = $ENV{TEST_NGINX_LOAD_MODULES};
our $NoNginxManager    = $ENV{TEST_NGINX_NO_NGINX_MANAGER} || 0;
our $CheckAccumErrLog  = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $WorkerUser        = $ENV{TEST_NGINX_WORKER_USER};
our $Verbose           = $ENV{TEST_NGINX_VERBOSE};
our $Randomize         = $ENV{TEST_NGINX_RANDOMIZE};
our $NoRootLocation    = 0;
our $ConfigPreamble    = '';
our (@EnvToNginx, @BlockPreprocessors, @CleanupHandlers,
     @TestCleanupHandlers, @ResponseBodyChecks);

# Upstream testing modes that this runner does not implement.
for my $var (qw(TEST_NGINX_USE_HUP TEST_NGINX_CHECK_LEAK TEST_NGINX_BENCHMARK
                TEST_NGINX_USE_STAP TEST_NGINX_USE_HTTP2 TEST_NGINX_USE_HTTP3
                TEST_NGINX_USE_RR TEST_NGINX_EVENT_TYPE TEST_NGINX_POSTPONE_OUTPUT)) {
    warn "WARNING: $var is not supported by t/lib/Test/Nginx/Socket.pm; ignored\n" if $ENV{$var};
}

if ($Randomize) {
    $ServerPort = $ServerPortForClient = _free_port({})
        or die "Cannot find an available listening port number.\n";
}

our $ServRoot = $Randomize
    ? File::Spec->rel2abs("t/servroot_$ServerPort")
    : ($ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot'));
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;

our $Server = Test::Nginx::Lite::Server->new(root => $ServRoot);

# per-run state
our ($NginxVersion, $NginxV, $PrevConfig, $ErrLogPos, $RanTests, $Stopping);
our %RandPorts;

# ---- exported configuration functions ----

sub repeat_each            { $RepeatEach = shift if @_; $RepeatEach }
sub no_shuffle ()          { $NoShuffle = 1 }
sub no_long_string ()      { $NoLongString = 1 }
sub no_root_location ()    { $NoRootLocation = 1 }
sub no_nginx_manager ()    { $NoNginxManager = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub log_level              { $LogLevel = shift if @_; $LogLevel }
sub workers                { $Workers = shift if @_; $Workers }
sub worker_connections     { $WorkerConnections = shift if @_; $WorkerConnections }
sub master_on ()           { $MasterProcessEnabled = 'on' }
sub master_off ()          { $MasterProcessEnabled = 'off' }
sub master_process_enabled { $MasterProcessEnabled = (shift() ? 'on' : 'off') if @_; $MasterProcessEnabled }
sub timeout                { $Timeout = shift if @_; $Timeout }
sub server_addr            { $ServerAddr = shift if @_; $ServerAddr }
sub server_name            { $ServerName = shift if @_; $ServerName }
sub server_port            { $ServerPort = shift if @_; $ServerPort }
sub server_port_for_client { $ServerPortForClient = shift if @_; $ServerPortForClient }
sub config_preamble ($)    { $ConfigPreamble = shift }
sub server_root ()         { $ServRoot }
sub html_dir ()            { $Server->html_dir }
sub add_cleanup_handler ($)      { unshift @CleanupHandlers, shift }
sub add_test_cleanup_handler ($) { unshift @TestCleanupHandlers, shift }
sub add_response_body_check ($)  { push @ResponseBodyChecks, shift }

# Upstream runs the most recently added preprocessor first.
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }

sub use_hup () {
    warn "use_hup() is not supported by this runner; nginx is restarted for every block instead\n";
}

sub env_to_nginx (@) {
    croak "env_to_nginx: no arguments specified" unless @_;
    for my $v (@_) {
        croak "env_to_nginx: bad argument value: $v\n" if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

sub bail_out (@) {
    _run_cleanup_handlers();
    Test::More::BAIL_OUT(join '', @_);
}

# is() for strings, like() for qr//; is_string() (Test::LongString)
# unless no_long_string() was called -- as upstream.
sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return Test::More::like($got, $expected, $desc) if ref $expected eq 'Regexp';
    if (!$NoLongString && eval { require Test::LongString; 1 }) {
        return Test::LongString::is_string($got, $expected, $desc);
    }
    return Test::Base::is($got, $expected, $desc);
}

# ---- running the blocks ----

sub run_tests () {
    ($NginxV = `$NginxBinary -V 2>&1`) && $? == 0
        or bail_out("Cannot run the nginx binary \"$NginxBinary\" (TEST_NGINX_BINARY)");
    $NginxVersion = $NginxV =~ m{/(\d+)\.(\d+)\.(\d+)} ? sprintf('%d.%03d%03d', $1, $2, $3) : 0;
    $ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;

    $RanTests = 1;
    $SIG{INT} = $SIG{TERM} = \&_on_signal;

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;   # upstream shuffles by default

    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_test($block);
        $_->($block) for @TestCleanupHandlers;
    }
    _run_cleanup_handlers();
}

sub run_test ($) {
    my ($block) = @_;
    return if defined $block->SKIP;

    my $name = $block->name;
    _warn_unsupported($block);
    %RandPorts = ();
    local $LogLevel = $block->log_level || $LogLevel;

    # Per-block context shared by all checks of this block.
    my $ctx = { block => $block, name => $name };

    my ($skip_count, $skip_reason) = _skip_spec($block);
    if ($skip_count) {
        for (1 .. $RepeatEach) {
            Test::More->builder->skip("$name - $skip_reason") for 1 .. $skip_count;
        }
        return;
    }

    my $config = _expand_env(scalar $block->config, $name);
    if ($NoNginxManager) {
        # the user runs nginx; --- config sections are ignored
    } elsif (defined $config) {
        # Upstream restarts nginx for every block that has a config.
        if (my $err = _restart_nginx($block, $config)) {
            @$ctx{qw(dry pending_fail)} = ('nginx failed to start', "$name - nginx failed to start:\n$err");
        }
        $PrevConfig = $config;
    } elsif (!defined $PrevConfig) {
        bail_out("$name - No '--- config' section specified and could not get previous one.");
    }
    # else: upstream quirk -- a block without --- config reuses the running
    # nginx, and (reading from offset 0) also sees the previous block's log.

    if (!$ctx->{dry} && $block->init) {
        eval "package main;\n" . $block->init . "\n;1" or bail_out("$name - init failed: $@");
    }

    $ErrLogPos = 0;
    for my $rep (0 .. $RepeatEach - 1) {
        _run_requests($ctx, $rep);
    }

    if (defined(my $err = delete $ctx->{pending_fail})) {   # no check consumed it
        Test::More::fail("$name - nginx failed to start");
        Test::More::diag($err);
    }

    _append_total_error_log($name) if $ENV{TEST_NGINX_ERROR_LOG};

    # Under valgrind nginx is stopped after every block (as upstream) so
    # that its leak report belongs to this block.
    _stop_under_valgrind($ctx) if $UseValgrind && !$NoNginxManager && !$ctx->{dry};
}

sub _restart_nginx {
    my ($block, $config) = @_;
    my $name = $block->name;

    $Server->stop(timeout => $Timeout, fast => $ENV{TEST_NGINX_FAST_SHUTDOWN});
    if (my $err = $Server->reset_root) {
        bail_out("$name - $err");
    }

    my $main_config = $block->main_config // '';
    if ($LoadModules) {
        # upstream prepends the load_module lines to main_config
        $main_config = join ' ', (map { "load_module $_;" } grep { length } split /\s+/, $LoadModules),
                                 $main_config;
    }

    my $daemon = $UseValgrind ? 'off' : 'on';
    my $user = defined $WorkerUser ? $WorkerUser : ($> == 0 ? 'root' : undef);  # upstream: user root when root

    my $text = $Server->render_config(
        workers            => $Workers,
        daemon             => $daemon,
        master             => $MasterProcessEnabled,
        log_level          => $LogLevel,
        env                => \@EnvToNginx,
        main_config        => _expand_env($main_config, $name),
        post_main_config   => _expand_env(scalar $block->post_main_config // '', $name),
        http_config        => _expand_env(scalar $block->http_config // '', $name),
        config             => $config,
        preamble           => $ConfigPreamble,
        addr               => $ServerAddr,
        port               => $ServerPort,
        server_name        => $ServerName,
        root_location      => !$NoRootLocation,
        worker_connections => $WorkerConnections,
        user               => $user,
        nginx_V            => $NginxV,
    );
    if (my $err = $Server->write_config($text)) {
        bail_out("$name - $err");
    }

    warn "$name\n" if $UseValgrind;
    return $Server->start(
        binary   => $NginxBinary,
        version  => $NginxVersion,
        addr     => $ServerAddr,
        port     => $ServerPort,
        valgrind => ($UseValgrind ? _valgrind_argv() : undef),
    );
}

sub _valgrind_argv {
    my @argv = ('valgrind', '-q', '--num-callers=100',
                '--log-file=' . $Server->log_dir . '/valgrind.%p.log');
    if ($UseValgrind =~ /^\d+$/) {
        push @argv, qw(--tool=memcheck --leak-check=full --keep-debuginfo=yes
                       --show-possibly-lost=no --gen-suppressions=all);
        push @argv, '--suppressions=valgrind.suppress' if -f 'valgrind.suppress';
    } else {
        push @argv, split ' ', $UseValgrind;   # custom valgrind options
    }
    return \@argv;
}

# Upstream only prints valgrind's output; we also fail the block when
# it reports definite leaks or memory errors.
sub _stop_under_valgrind {
    my ($ctx) = @_;
    $Server->stop(timeout => 60);
    for my $report ($Server->valgrind_reports) {
        my ($file, $text) = @$report;
        next unless $text =~ /\S/;
        Test::More::diag("valgrind ($file):\n$text");
        if ($text =~ /definitely lost|Invalid (?:read|write|free)|uninitialised|Mismatched free|Syscall param/) {
            _extra_failure("$ctx->{name} - valgrind reported leaks or memory errors");
        }
    }
}

# One pass over the block's request(s): send each, check the response,
# then check the error log (after every request, as upstream does).
sub _run_requests {
    my ($ctx, $rep) = @_;
    my $block = $ctx->{block};

    my $reqs = _requests_from_block($block);
    my $need_array = @$reqs > 1;
    my $timeout = _parse_time(scalar $block->timeout) // $Timeout;
    my $wait = _parse_time(scalar $block->wait);

    for my $i (0 .. $#$reqs) {
        my $res = $ctx->{dry} ? undef : _exchange($ctx, $reqs->[$i], $timeout);

        if (!defined $block->ignore_response) {
            _check_status($ctx, $res, $i, $need_array);
            _check_raw_headers($ctx, $res, $i, $need_array);
            _check_headers($ctx, $res, $i, $need_array);
            _check_body($ctx, $res, $i, $rep, $need_array);
            for my $check (@ResponseBodyChecks) {
                $check->($block, $res ? $res->{body} : undef, $i, $rep, $ctx->{dry});
            }
        }

        if ($i < $#$reqs) {
            sleep $wait if $wait;
            _check_error_log($ctx, $rep);
        }
    }

    sleep $wait if $wait;
    _check_error_log($ctx, $rep);
}

# --- request / more_headers  ->  list of { raw, head }
sub _requests_from_block {
    my ($block) = @_;
    my $name = $block->name;

    my $request = $block->request;
    bail_out("$name - request empty") unless defined $request;
    if (!ref $request) {
        # upstream drops leading blank space and "#" comment lines
        1 while $request =~ s/^\s*\#[^\n]+\s+|^\s+//gs;
    }
    bail_out("$name - invalid --- request: MUST be string or array of requests")
        if ref $request && ref $request ne 'ARRAY';

    my $more = $block->more_headers // '';
    my @list = ref $request ? @$request : ($request);
    bail_out("$name - request empty") unless @list;

    my @reqs;
    for my $i (0 .. $#list) {
        my $hdr = $more;
        if (ref $more eq 'ARRAY') {
            $hdr = $more->[$i];
            bail_out("$name - --- more_headers lacks data for the ${i}th request") unless defined $hdr;
        }
        bail_out("$name - requests split into packets (array of arrays) are not supported by this runner")
            if ref $list[$i];
        my $req = eval { Test::Nginx::Lite::Client::build_request($list[$i], $hdr, $ServerName) }
            or bail_out("$name - $@");
        push @reqs, $req;
    }
    return \@reqs;
}

sub _exchange {
    my ($ctx, $req, $timeout) = @_;
    my ($block, $name) = @$ctx{qw(block name)};

    my $r = Test::Nginx::Lite::Client::exchange(
        addr => $ServerAddr, port => $ServerPortForClient,
        raw  => $req->{raw}, timeout => $timeout,
    );
    warn "!!! resp: [$r->{resp}]\n" if $Verbose;

    if (!length $r->{resp} && $r->{error} && $r->{error} =~ /^Can't connect/) {
        _extra_failure("$name - $r->{error} (aborted)");
        return undef;
    }
    warn "WARNING: $name - $r->{error}\n" if $r->{error};

    _extra_failure("ERROR: client socket timed out - $name")
        if $r->{timed_out} && !defined $block->abort;

    my $res = Test::Nginx::Lite::Client::parse_response($r->{resp}, $req->{head});
    if ($res->{error}) {
        _extra_failure("$name - $res->{error}");
        return undef;
    }
    warn "WARNING: $name - $res->{warning}\n" if $res->{warning};
    if (defined $res->{left}) {
        (my $left = $res->{left}) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
        warn "WARNING: $name - unexpected extra bytes after the response: \"$left\"\n";
    }
    return $res;
}

# ---- checks; each one is a single TAP test, as upstream ----

# A failure outside the planned checks (timeout, bad response, valgrind).
# Upstream then turns off Test::Builder's end-of-run plan check; we do
# that only for numeric plans, since under no_plan it would also drop
# the trailing "1..N" line.
sub _extra_failure {
    my ($desc) = @_;
    my $tb = Test::More->builder;
    $tb->no_ending(1) if ($tb->has_plan // '') =~ /^\d+$/;
    Test::More::fail($desc);
}

# Run one check, or -- when nginx could not be started -- fail the first
# check of the block with the reason and skip the rest, so the number
# of tests stays what the plan expects.
sub _check {
    my ($ctx, $what, $code) = @_;
    return $code->() unless $ctx->{dry};
    if (defined(my $err = delete $ctx->{pending_fail})) {
        Test::More::fail("$ctx->{name} - nginx failed to start");
        Test::More::diag($err);
        return;
    }
    Test::More->builder->skip("$ctx->{name} - $what - tests skipped due to $ctx->{dry}");
}

# Pick element $idx of an array-valued section (several requests).
sub _indexed {
    my ($ctx, $value, $idx, $need_array) = @_;
    if (ref $value eq 'ARRAY') {
        return $value->[$idx];
    }
    bail_out("$ctx->{name} - You asked for many requests, the expected results should be arrays as well.")
        if $need_array;
    return $value;
}

sub _check_status {
    my ($ctx, $res, $idx, $need_array) = @_;
    my ($block, $name) = @$ctx{qw(block name)};
    my $code = ($res && $res->{code}) || '';

    _check($ctx, 'status code', sub {
        if (defined $block->error_code_like) {
            my $pat = _indexed($ctx, scalar $block->error_code_like, $idx, $need_array);
            Test::More::like($code, qr/$pat/sm, "$name - status code ok");
        } elsif (defined $block->error_code) {
            Test::More::is($code, _indexed($ctx, scalar $block->error_code, $idx, $need_array),
                           "$name - status code ok");
        } else {
            Test::More::is($code, 200, "$name - status code ok");   # default expectation
        }
    });
}

sub _check_raw_headers {
    my ($ctx, $res, $idx, $need_array) = @_;
    my ($block, $name) = @$ctx{qw(block name)};
    my $raw = $res ? $res->{raw_headers} : '';

    if (defined $block->raw_response_headers_like) {
        my $pat = _indexed($ctx, scalar $block->raw_response_headers_like, $idx, $need_array);
        _check($ctx, 'raw_response_headers_like',
               sub { Test::More::like($raw, qr/$pat/s, "$name - raw resp headers like") });
    }
    if (defined $block->raw_response_headers_unlike) {
        my $pat = _indexed($ctx, scalar $block->raw_response_headers_unlike, $idx, $need_array);
        _check($ctx, 'raw_response_headers_unlike',
               sub { Test::More::unlike($raw, qr/$pat/s, "$name - raw resp headers unlike") });
    }
}

# "Name: value" lines; "!Name" means "must be absent".  Returns ordered
# [name, value-or-undef] pairs; a repeated name keeps its last value
# (upstream stores them in a hash, so each name is tested once).
sub _parse_header_spec {
    my ($text) = @_;
    my (%value, @order);
    for my $line (split /\n/, $text // '') {
        $line =~ s/^\s+|\s+$//g;
        next unless length $line;
        my ($key, $val);
        if ($line =~ s/^!\s*//) {
            $key = $line;
        } else {
            ($key, $val) = split /\s*:\s*/, $line, 2;
        }
        push @order, $key unless exists $value{$key};
        $value{$key} = $val;
    }
    return map { [$_, $value{$_}] } @order;
}

sub _check_headers {
    my ($ctx, $res, $idx, $need_array) = @_;
    my ($block, $name) = @$ctx{qw(block name)};

    if (defined $block->response_headers) {
        my $spec = _indexed($ctx, scalar $block->response_headers, $idx, $need_array);
        for my $h (_parse_header_spec($spec)) {
            my ($key, $val) = @$h;
            if (!defined $val) {
                # Upstream matches the raw headers case-sensitively; we
                # ignore case (HTTP header names are case-insensitive).
                my $raw = $res ? $res->{raw_headers} : '';
                _check($ctx, 'response_headers', sub {
                    Test::More::unlike($raw, qr/^\s*\Q$key\E\s*:/msi,
                                       "$name - header $key not present in the raw headers");
                });
                next;
            }
            $val =~ s/\$ServerPort\b/$ServerPort/g;
            $val =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
            my $got = ($res && Test::Nginx::Lite::Client::header($res, $key)) // '';
            _check($ctx, 'response_headers',
                   sub { Test::Base::is($got, $val, "$name - header $key ok") });
        }

    } elsif (defined $block->response_headers_like) {
        my $spec = _indexed($ctx, scalar $block->response_headers_like, $idx, $need_array);
        for my $h (_parse_header_spec($spec)) {
            my ($key, $val) = ($h->[0], $h->[1] // '');
            my $got = ($res && Test::Nginx::Lite::Client::header($res, $key)) // '';
            _check($ctx, 'response_headers_like',
                   sub { Test::More::like($got, qr/^$val$/, "$name - header $key like ok") });
        }
    }
}

sub _check_body {
    my ($ctx, $res, $idx, $rep, $need_array) = @_;
    my ($block, $name) = @$ctx{qw(block name)};
    my $body = $res ? $res->{body} : undef;

    if (defined $block->response_body) {
        my $expected = _indexed($ctx, scalar $block->response_body, $idx, $need_array);
        if (defined $expected && !ref $expected) {
            $expected =~ s/\$ServerPort\b/$ServerPort/g;
            $expected =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
            $expected = _expand_env($expected, $name);
        }
        _check($ctx, 'response_body', sub {
            if (ref $expected) {
                Test::More::like($body, $expected, "$name - response_body - like (repeated req $rep, req $idx)");
            } else {
                is_str($body, $expected,
                       "$name - response_body - response is expected (repeated req $rep, req $idx)");
            }
        });

    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my $type = defined $block->response_body_like ? 'like' : 'unlike';
        my $section = "response_body_$type";
        my $pat = _indexed($ctx, scalar $block->$section, $idx, $need_array);
        $pat =~ s/\$ServerPort\b/$ServerPort/g;
        $pat =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
        my $summary = _summary($body);
        my $desc = "$name - response_body_$type - response is expected ($summary)";
        _check($ctx, "response_body_$type", sub {
            $type eq 'like' ? Test::More::like($body, qr/$pat/s, $desc)
                            : Test::More::unlike($body, qr/$pat/s, $desc);
        });
    }
}

# The response body squeezed onto one line, for test names.
sub _summary {
    my ($s) = @_;
    return '' unless defined $s;
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\s+/ /g;
    $s = substr($s, 0, 200) . '...' if length $s > 200;
    return $s;
}

# Patterns of an error_log / no_error_log section: one per line for a
# plain section, or (eval) a qr// or an arrayref of strings and qr//s.
sub _log_patterns {
    my ($pats) = @_;
    return [$pats] if ref $pats eq 'Regexp';
    return [@$pats] if ref $pats eq 'ARRAY';
    chomp $pats;
    return [split /\n+/, $pats];
}

sub _line_matches {
    my ($line, $pat) = @_;
    return ref $pat eq 'Regexp' ? $line =~ $pat : index($line, $pat) >= 0;
}

sub _note_severities {
    my ($seen, $pat) = @_;
    my $text = "$pat";
    $seen->{$1} = 1 while $text =~ /\[(alert|crit|emerg)/g;
}

sub _fmt {
    my ($s) = @_;
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

# New error log lines since the last read (all lines with
# check_accum_error_log).  Like upstream, wait a moment first for
# log-phase messages written after the response.
sub _error_log_lines {
    sleep $TestNginxSleep * 3;
    my ($lines, $pos) = $Server->read_error_log($CheckAccumErrLog ? 0 : $ErrLogPos);
    $ErrLogPos = $pos unless $CheckAccumErrLog;
    return $lines;
}

sub _check_error_log {
    my ($ctx, $rep) = @_;
    my ($block, $name) = @$ctx{qw(block name)};
    my $lines = $ctx->{dry} ? [] : _error_log_lines();
    my %mentioned;   # severities the test looks for itself

    if (defined $block->error_log) {
        my $pats = _log_patterns(scalar $block->error_log);
        for my $pat (@$pats) {
            next unless defined $pat;
            _note_severities(\%mentioned, $pat);
            _check($ctx, 'error_log', sub {
                if (grep { _line_matches($_, $pat) } @$lines) {
                    Test::More::pass("$name - pattern \"$pat\" matches a line in error.log (req $rep)");
                } else {
                    Test::More::fail("$name - pattern \"$pat\" should match a line in error.log (req $rep)");
                }
            });
        }
    }

    if (defined $block->no_error_log) {
        my $pats = _log_patterns(scalar $block->no_error_log);
        for my $pat (@$pats) {
            next unless defined $pat;
            _note_severities(\%mentioned, $pat);
            my $p = _fmt("$pat");
            _check($ctx, 'no_error_log', sub {
                # Upstream fails once per matching line; we fail once per
                # pattern (same count as a pass) and list the matches.
                my @hits = grep { _line_matches($_, $pat) } @$lines;
                if (!@hits) {
                    Test::More::pass("$name - pattern \"$p\" does not match a line in error.log (req $rep)");
                    return;
                }
                my $ln = _fmt($hits[0]);
                Test::More::fail("$name - pattern \"$p\" should not match any line in error.log "
                                 . "but matches line \"$ln\" (req $rep)");
                Test::More::diag(join '', 'matching lines (', scalar(@hits), "):\n",
                                 @hits[0 .. ($#hits < 9 ? $#hits : 9)]);
            });
        }
    }

    for my $line (@$lines) {
        # upstream warns about these unless the test mentions them ...
        if ($line =~ /\[(alert|crit|emerg)\]/ && !$mentioned{$1}) {
            warn "WARNING: $name - " . _fmt($line) . "\n";
        }
        # ... and fails on failed assertions
        _extra_failure("$name - " . _fmt($line)) if $line =~ /\bAssertion .*?failed\b/;
    }
}

# ---- helpers ----

# Replace $TEST_NGINX_* by %ENV values (and $TEST_NGINX_RAND_PORT_N by a
# free port per block).  Upstream does this only for config, http_config,
# main_config, post_main_config and plain response_body sections, and
# bails out on an unset variable; so do we.
sub _expand_env {
    my ($text, $name) = @_;
    return $text if !defined $text || ref $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{_env_value($1, $name)}ge;
    return $text;
}

sub _env_value {
    my ($var, $name) = @_;
    if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
        return $RandPorts{$var} if defined $RandPorts{$var};
        my $port = _free_port({ $ServerPort => 1, map { $_ => 1 } values %RandPorts })
            // bail_out("$name - Cannot find an available listening port number for $var.\n");
        return $RandPorts{$var} = $port;
    }
    bail_out("$name - No environment $var defined.\n") unless defined $ENV{$var};
    return $ENV{$var};
}

# A random loopback TCP port nobody listens on.
sub _free_port {
    my ($taken) = @_;
    for (1 .. 1000) {
        my $port = 10000 + int rand 50000;
        next if $taken->{$port};
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                      Proto => 'tcp', ReuseAddr => 1, Listen => 1);
        next unless $s;
        close $s;
        return $port;
    }
    return undef;
}

# "5", "5s", "200ms" -> seconds
sub _parse_time {
    my ($t) = @_;
    return undef unless defined $t;
    $t =~ s/^\s+|\s+$//g;
    return $1 / 1000 if $t =~ /^([\d.]+)ms$/;
    return $1 if $t =~ /^([\d.]+)s$/;
    return $t;
}

# skip_eval ("N: perl-expr") and skip_nginx ("N: < 1.21.0") sections.
sub _skip_spec {
    my ($block) = @_;
    my $name = $block->name;

    if (defined(my $spec = $block->skip_eval)) {
        $spec =~ /^\s*(\d+)\s*:\s*(.*)/s
            or bail_out("$name - Invalid --- skip_eval spec: $spec");
        my ($n, $code) = ($1, $2);
        my $skip = eval "package main;\n$code";
        bail_out("$name - skip_eval - failed to eval the Perl code \"$code\": $@") if $@;
        return ($n, 'skip_eval') if $skip;
    }

    if (defined(my $spec = $block->skip_nginx)) {
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)(?:\s*:\s*(.*?))?\s*$/
            or bail_out("$name - Invalid --- skip_nginx spec: $spec");
        my ($n, $op, $reason) = ($1, $2, $6);
        my $want = sprintf '%d.%03d%03d', $3, $4, $5;
        my %cmp = ('<' => sub { $_[0] < $_[1] }, '<=' => sub { $_[0] <= $_[1] },
                   '>' => sub { $_[0] > $_[1] }, '>=' => sub { $_[0] >= $_[1] });
        return ($n, $reason || "nginx version $op $3.$4.$5")
            if $cmp{$op}->($NginxVersion, $want);
    }
    return;
}

# Upstream sections this runner does not implement: say so, instead of
# silently passing a test that upstream would check.
my @Unsupported = qw(
    raw_request pipelined_requests raw_request_middle_delay request_eval
    response_body_eval response_body_filters response_body_json_sort
    user_files post_setup_server_root error_log_file server_name
    server_addr_for_client access_log no_access_log grep_error_log
    grep_error_log_out shutdown_error_log no_shutdown_error_log must_die
    tcp_listen tcp_reply tcp_query tcp_query_len udp_listen udp_reply
    udp_query stap stap_out stap_out_like stap_out_unlike http2 http3 curl
    skip_nginx2 skip_openssl skip_slave todo todo_nginx shutdown http09
    charset write_resp_body_file suppress_stderr reload_fails
);

sub _warn_unsupported {
    my ($block) = @_;
    for my $s (@Unsupported) {
        warn "WARNING: ${\ $block->name} - section '--- $s' is not supported by "
           . "t/lib/Test/Nginx/Socket.pm and is ignored\n"
            if defined $block->$s;
    }
    # Upstream does not expand $TEST_NGINX_* here either; point it out.
    for my $s (qw(request more_headers response_body_like response_headers error_log no_error_log)) {
        my $v = $block->$s;
        warn "NOTE: ${\ $block->name} - \$TEST_NGINX_* is not expanded in '--- $s' "
           . "(neither by upstream); use an eval section with \$ENV{...}\n"
            if defined $v && !ref $v && $v =~ /\$TEST_NGINX_\w/;
    }
}

sub _append_total_error_log {
    my ($name) = @_;
    my ($lines) = $Server->read_error_log(0);
    return unless @$lines;
    open my $out, '>>', $ENV{TEST_NGINX_ERROR_LOG} or return;
    print $out "\n=== $0 $name\n", @$lines;
    close $out;
}

# Upstream quirk: cleanup handlers run at the end of run_tests() and
# again at exit (END), so they should be idempotent.
sub _run_cleanup_handlers {
    $_->() for @CleanupHandlers;
}

sub _stop_nginx {
    return if $NoNginxManager || !$RanTests;
    $Server->stop(timeout => ($UseValgrind ? 60 : $Timeout), fast => $ENV{TEST_NGINX_FAST_SHUTDOWN});
}

sub _on_signal {
    my ($sig) = @_;
    return if $Stopping++;
    warn "caught SIG$sig; stopping nginx\n";
    _stop_nginx();
    exit 1;
}

END {
    local $?;   # do not disturb Test::Builder's exit status
    _run_cleanup_handlers();
    _stop_nginx() if !$ENV{TEST_NGINX_NO_CLEAN} || $UseValgrind;
    if ($Randomize && $RanTests && $ServRoot =~ m{/t/servroot_\d+$}) {
        File::Path::remove_tree($ServRoot);
    }
}

1;
