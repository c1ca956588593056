#!/usr/bin/perl
# A Perl Gearman::Worker (Debian libgearman-client-perl) for the interop tests.
# Usage: worker_peer.pl HOST:PORT PREFIX
# Functions: PREFIX.reverse (the argument reversed), PREFIX.zero ("0"), PREFIX.empty (""),
# PREFIX.progress (WORK_STATUS 1/2 then the argument).
use strict;
use warnings;
use Gearman::Worker;

my ($server, $prefix) = @ARGV;
$| = 1;
my $worker = Gearman::Worker->new(job_servers => [$server]);
$worker->register_function("$prefix.reverse" => sub { scalar reverse $_[0]->arg });
$worker->register_function("$prefix.zero" => sub { "0" });
$worker->register_function("$prefix.empty" => sub { "" });
$worker->register_function("$prefix.progress" => sub {
    my $job = shift;
    $job->set_status(1, 2);
    return $job->arg;
});
print "ready\n";
$worker->work while 1;
