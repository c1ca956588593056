#!/usr/bin/perl
# Perl's Gearman::Client over TLS (IO::Socket::SSL, verifying the server against a CA file and
# sending a client certificate), for tests/test_tls.py.
#
#   perl tls_client.pl HOST PORT CA CERT KEY FUNCTION WORKLOAD
#
# Prints one line per result: "result <value>" for the foreground job, then "background <handle>"
# for a background job, then "status <known> <running>" for that handle; "error <why>" if the
# foreground job failed (IO::Socket::SSL's own error text included, so a refusal says why).
use strict;
use warnings;
use Gearman::Client;
use IO::Socket::SSL;

my ($host, $port, $ca, $cert, $key, $function, $workload) = @ARGV;
die "usage: $0 HOST PORT CA CERT KEY FUNCTION WORKLOAD\n" unless defined $workload;

my %server = (host => $host, port => $port, use_ssl => 1, ca_file => $ca);
if ($cert ne "-") {
    $server{cert_file} = $cert;
    $server{key_file}  = $key;
}
$SIG{PIPE} = "IGNORE";    # a refused connection is an error to print, not a signal to die of
my $client = Gearman::Client->new(job_servers => [\%server], debug => 1);
$| = 1;

# Gearman::Client dies when the server hangs up mid-reply (a refused client certificate).
my $result = eval { $client->do_task($function, $workload, {timeout => 15}) };
unless (defined $result) {
    my $why = $@ || $IO::Socket::SSL::SSL_ERROR || "no result";
    $why =~ s/\s+/ /g;
    print "error $why\n";
    exit 1;
}
print "result ${$result}\n";

my $handle = $client->dispatch_background($function, "bg-$workload");
print "background ", (defined $handle ? $handle : "-"), "\n";
if (defined $handle) {
    my $status = $client->get_status($handle);
    printf "status %d %d\n", ($status ? $status->known : -1), ($status ? $status->running : -1);
}
