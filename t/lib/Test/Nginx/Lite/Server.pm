package Test::Nginx::Lite::Server;

# The nginx side of our Test::Nginx::Socket subset: the server root
# directory, nginx.conf, and starting/stopping one nginx instance.

use strict;
use warnings;

use File::Path qw(make_path remove_tree);
use IO::Socket::INET ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

sub new {
    my ($class, %opt) = @_;
    my $root = $opt{root};
    return bless {
        root       => $root,
        conf_dir   => "$root/conf",
        conf_file  => "$root/conf/nginx.conf",
        log_dir    => "$root/logs",
        error_log  => "$root/logs/error.log",
        access_log => "$root/logs/access.log",
        pid_file   => "$root/logs/nginx.pid",
        html_dir   => "$root/html",
        child      => undef,    # pid, when nginx runs in the foreground
    }, $class;
}

sub root       { $_[0]{root} }
sub html_dir   { $_[0]{html_dir} }
sub error_log  { $_[0]{error_log} }
sub log_dir    { $_[0]{log_dir} }

# Give every test block a fresh server root.  Like upstream we only
# remove what we create ourselves, never the root directory itself, so a
# mistaken TEST_NGINX_SERVROOT cannot wipe unrelated files.
sub reset_root {
    my ($self) = @_;
    my $root = $self->{root};

    if (opendir my $dh, $root) {
        my @ours = grep { /^(?:conf|logs|html|cache|\w+_temp|\w+_cache)$/ } readdir $dh;
        closedir $dh;
        remove_tree(map { "$root/$_" } @ours);
    }

    for my $dir ($root, @$self{qw(log_dir html_dir conf_dir)}) {
        next if -d $dir;
        make_path($dir, { error => \my $err });
        return "cannot create $dir" if @$err;
    }

    open my $fh, '>', "$self->{html_dir}/index.html"
        or return "cannot write index.html: $!";
    print $fh '<html><head><title>It works!</title></head><body>It works!</body></html>';
    close $fh;
    return undef;
}

# Render nginx.conf in the same layout as upstream Test::Nginx.
sub render_config {
    my ($self, %c) = @_;
    my $root = $self->{root};

    my $env = join '', map { /\s/ ? "env '$_';\n" : "env $_;\n" } @{ $c{env} || [] };

    # Debian's nginx defaults its temp paths to /var/lib/nginx; keep them
    # inside the server root.  Like upstream, proxy_temp_path and
    # client_body_temp_path are left out when http_config sets them.
    my @temp;
    push @temp, "client_body_temp_path $root/client_body_temp;"
        unless $c{http_config} =~ /\bclient_body_temp_path\b/;
    push @temp, "proxy_temp_path $root/proxy_temp;"
        unless $c{http_config} =~ /\bproxy_temp_path\b/;
    for my $m (qw(fastcgi scgi uwsgi)) {
        push @temp, "${m}_temp_path $root/${m}_temp;"
            unless $c{nginx_V} =~ /--without-http_${m}_module/;
    }
    my $temp = join ' ', @temp;

    my $root_location = $c{root_location} ? <<"EOC" : '';
        location / {
            root $self->{html_dir};
            index index.html index.htm;
        }
EOC

    (my $server_name = $c{server_name}) =~ s/(['\\])/\\$1/g;
    my $user = defined $c{user} ? "user $c{user};\n" : '';

    return <<"EOC";
worker_processes  $c{workers};
daemon $c{daemon};
master_process $c{master};
error_log $self->{error_log} $c{log_level};
pid       $self->{pid_file};
env LD_PRELOAD;
env LD_LIBRARY_PATH;
env ASAN_OPTIONS;
$env
$c{main_config}

http {
    access_log $self->{access_log}; $temp

    default_type text/plain;
    keepalive_timeout  68000ms;

$c{http_config}
    server {
        listen          $c{addr}:$c{port};
        server_name     '$server_name';
        client_max_body_size 30M;

        # Begin preamble config...
$c{preamble}
        # End preamble config...

        # Begin test case config...
$c{config}
        # End test case config.

$root_location    }
}

$c{post_main_config}

events {
    accept_mutex off;
    worker_connections  $c{worker_connections};
}
$user
EOC
}

sub write_config {
    my ($self, $text) = @_;
    open my $fh, '>', $self->{conf_file} or return "cannot write nginx.conf: $!";
    print $fh $text;
    close $fh or return "cannot write nginx.conf: $!";
    return undef;
}

# Start nginx.  %a: binary, version (canonical number), addr, port,
# valgrind (arrayref of valgrind argv words, or undef).  Returns undef
# on success, or a text explaining the failure (stderr + error.log tail).
sub start {
    my ($self, %a) = @_;
    my @cmd = ($a{binary});
    push @cmd, '-e', $self->{error_log} if $a{version} >= 1.019005;   # -e: nginx >= 1.19.5
    push @cmd, '-p', "$self->{root}/", '-c', $self->{conf_file};

    my $stderr = "$self->{log_dir}/nginx.stderr";

    if ($a{valgrind}) {
        # Foreground (daemon off): we are the parent of valgrind+nginx.
        my $pid = _spawn([@{ $a{valgrind} }, @cmd], $stderr, 1)
            or return "fork failed: $!";
        $self->{child} = $pid;
        my $deadline = time + 60;
        while (time < $deadline) {
            if (waitpid($pid, WNOHANG) == $pid) {
                undef $self->{child};
                return $self->_failure("nginx (under valgrind) exited with status " . ($? >> 8), $stderr);
            }
            return undef if -s $self->{pid_file} && _listening($a{addr}, $a{port});
            sleep 0.1;
        }
        $self->stop(timeout => 5);
        return $self->_failure("nginx (under valgrind) did not start listening within 60s", $stderr);
    }

    # Daemon mode: the launcher exits once nginx has bound its sockets.
    # nginx itself retries bind() for ~2.5s; retry once more after that.
    my $deadline = time + 1;
    while (1) {
        my $pid = _spawn(\@cmd, $stderr, 0) or return "fork failed: $!";
        waitpid($pid, 0);
        my $status = $?;
        last if $status == 0;
        my $err = _slurp($stderr);
        if ($err =~ /Address already in use/ && time < $deadline) {
            sleep 0.25;
            next;
        }
        return $self->_failure("nginx exited with status " . ($status >> 8), $stderr);
    }

    # The daemonised process writes the pid file just after forking.
    $deadline = time + 5;
    until (-s $self->{pid_file} && _listening($a{addr}, $a{port})) {
        return $self->_failure("nginx did not write its pid file / listen on "
                               . "$a{addr}:$a{port} within 5s", $stderr)
            if time > $deadline;
        sleep 0.02;
    }
    return undef;
}

sub _failure {
    my ($self, $what, $stderr) = @_;
    my $text = "$what\n";
    my $err = _slurp($stderr);
    $text .= "--- nginx stderr:\n$err" if length $err;
    my @log = split /^/, _slurp($self->{error_log});
    @log = grep { !/\[debug\]/ } @log;
    splice @log, 0, @log - 20 if @log > 20;
    $text .= "--- tail of $self->{error_log}:\n" . join('', @log) if @log;
    return $text;
}

sub pid {
    my ($self) = @_;
    return $self->{child} if $self->{child};
    my $pid = _slurp($self->{pid_file});
    return $pid =~ /^\s*(\d+)/ ? $1 : undef;
}

# Stop the nginx recorded in the pid file (or our foreground child):
# QUIT (TERM if $a{fast}), wait up to $a{timeout} seconds, then KILL.
sub stop {
    my ($self, %a) = @_;
    my $pid = $self->pid;
    my $child = $self->{child};
    undef $self->{child};

    if ($pid && ($child || _looks_like_nginx($pid))) {
        kill($a{fast} ? 'TERM' : 'QUIT', $pid);
        my $deadline = time + ($a{timeout} || 3);
        while (_alive($pid, $child) && time < $deadline) {
            sleep 0.02;
        }
        if (_alive($pid, $child)) {
            warn "WARNING: nginx $pid did not exit in time; killing it\n";
            kill 'KILL', ($child ? -$pid : $pid);
            waitpid($pid, 0) if $child;
        }
    }
    unlink $self->{pid_file};
}

# Error log lines from byte offset $pos on; returns (\@lines, $new_pos).
sub read_error_log {
    my ($self, $pos) = @_;
    open my $fh, '<', $self->{error_log} or return ([], $pos);
    seek $fh, $pos, 0 if $pos;
    my @lines = <$fh>;
    my $end = tell $fh;
    close $fh;
    return (\@lines, $end);
}

# Contents of valgrind's per-process log files, as [file, text] pairs.
sub valgrind_reports {
    my ($self) = @_;
    opendir my $dh, $self->{log_dir} or return;
    my @files = sort grep { /^valgrind\.\d+\.log$/ } readdir $dh;
    closedir $dh;
    return map { ["$self->{log_dir}/$_", _slurp("$self->{log_dir}/$_")] } @files;
}

# Is something listening on addr:port?  Read /proc/net/tcp rather than
# connecting: a probe connection would show up in nginx's error log.
sub _listening {
    my ($addr, $port) = @_;
    my $hex = sprintf ':%04X', $port;
    my $seen_proc;
    for my $file ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $file or next;
        $seen_proc = 1;
        while (<$fh>) {
            my @f = split;
            return 1 if @f > 3 && substr($f[1], -5) eq $hex && $f[3] eq '0A';
        }
    }
    return 0 if $seen_proc;
    return IO::Socket::INET->new(PeerAddr => $addr, PeerPort => $port,
                                 Proto => 'tcp', Timeout => 0.5) ? 1 : 0;
}

sub _alive {
    my ($pid, $is_child) = @_;
    if ($is_child) {
        return waitpid($pid, WNOHANG) == 0;
    }
    return 0 unless kill 0, $pid;
    # A daemon we cannot reap may linger as a zombie; that counts as gone.
    my $stat = _slurp("/proc/$pid/stat");
    return !($stat =~ /^\d+ \(.*\) Z/s);
}

# Guard against stale pid files pointing at a recycled pid.
sub _looks_like_nginx {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    return 1 unless -d "/proc/$pid";
    my $cmd = _slurp("/proc/$pid/cmdline");
    return $cmd =~ /nginx|valgrind|memcheck/;
}

sub _spawn {
    my ($cmd, $stderr_file, $own_group) = @_;
    my $pid = fork;
    return undef unless defined $pid;
    return $pid if $pid;

    # child: never return into the test script (no END blocks here)
    setpgrp(0, 0) if $own_group;
    open STDIN,  '<', '/dev/null';
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', $stderr_file;
    { exec { $cmd->[0] } @$cmd }
    print STDERR "exec $cmd->[0] failed: $!\n";
    POSIX::_exit(127);
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    my $text = <$fh>;
    return $text // '';
}

1;
