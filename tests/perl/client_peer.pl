#!/usr/bin/perl
# A Perl Gearman::Client for the interop tests: runs one job and prints its result.
# Usage: client_peer.pl HOST:PORT do|background FUNCTION ARG [UNIQUE]
# "do" prints "result:<value>" (or "failed"); "background" prints "handle:<handle>".
use strict;
use warnings;
use Gearman::Client;

my ($server, $mode, $function, $arg, $unique) = @ARGV;
$| = 1;
my $client = Gearman::Client->new(job_servers => [$server]);
my %options = (timeout => 20);
$options{uniq} = $unique if defined $unique;
if ($mode eq "do") {
    my $result = $client->do_task($function, $arg, \%options);
    print defined $result ? "result:" . $$result . "\n" : "failed\n";
} else {
    my $handle = $client->dispatch_background($function, $arg, \%options);
    print defined $handle ? "handle:$handle\n" : "failed\n";
}
