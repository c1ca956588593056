#!/usr/bin/perl
# Perl's Gearman::Worker over TLS (IO::Socket::SSL, verifying the server against a CA file and
# sending a client certificate), for tests/test_tls.py.
#
#   perl tls_worker.pl HOST PORT CA CERT KEY JOBS
#
# Registers perl_tls_upper (the workload in upper case), prints "ready" once the server has it
# (or "error <why>" and exits 1), then does JOBS jobs and exits 0.
use strict;
use warnings;
use Gearman::Worker;
use IO::Socket::SSL;

my ($host, $port, $ca, $cert, $key, $jobs) = @ARGV;
die "usage: $0 HOST PORT CA CERT KEY JOBS\n" unless defined $jobs;

$SIG{PIPE} = "IGNORE";
$| = 1;
my $worker = Gearman::Worker->new(
    job_servers => [{
        host      => $host,
        port      => $port,
        use_ssl   => 1,
        ca_file   => $ca,
        cert_file => $cert,
        key_file  => $key,
    }],
);
my $done = 0;
my $registered = $worker->register_function(
    perl_tls_upper => sub {
        $done++;
        return uc $_[0]->arg;
    }
);
unless ($registered) {
    print "error ", ($IO::Socket::SSL::SSL_ERROR || "could not register"), "\n";
    exit 1;
}
print "ready\n";
$worker->work(stop_if => sub { $done >= $jobs });
print "done $done\n";
