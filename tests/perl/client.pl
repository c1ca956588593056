#!/usr/bin/perl
# A Perl Gearman::Client (Debian libgearman-client-perl 2.004.015) for the interop tests
# (tests/gearman/test_perl_interop.py).
#
# Usage: perl client.pl HOST:PORT MODE FUNCTION [ARG...] [--OPTION=VALUE...]
#
# Prints exactly one JSON line (ASCII: bytes above 127 as \u00XX, so Python gets them back
# with .encode("latin-1")). Exit 0 when it printed one, 1 when Perl died ({"died": message}).
# Options: --uniq=KEY, --priority=high|normal|low, --timeout=SECONDS (default 20),
# --exceptions=1 (the client sends OPTION_REQ "exceptions"), --prefix=NAMESPACE (Perl's
# prefix option: every function name becomes "NAMESPACE\tFUNCTION").
# Modes:
#   do ARG          do_task: {"result": value or null, "events": [[kind, value], ...]}; the
#                   kinds are status ([numerator, denominator]), data, warning, exception, fail
#   background ARG  dispatch_background: {"handle": "HOST:PORT//H:..." or null}
#   tasks ARG...    one task per ARG in one task set, then wait:
#                   {"results": [value or null, ...], "events": [[index, kind, value], ...]}
#   status HANDLE   get_status (HANDLE as dispatch_background printed it; FUNCTION is unused):
#                   {"known", "running", "progress": [n, d] or null} or {"status": null}
#   call ARGS_JSON [KWARGS_JSON]
#                   do_task with the JSON envelope {"args": ARGS, "kwargs": KWARGS} (JSON::PP,
#                   UTF-8): {"workload", "result" (the decoded JSON) or null, "events"}
use strict;
use warnings;
use Gearman::Client;
use JSON::PP ();

$| = 1;
my $json = JSON::PP->new->canonical->ascii->allow_nonref;
my $utf8_json = JSON::PP->new->canonical->utf8->allow_nonref;  # the envelope: UTF-8 bytes

sub emit { print $json->encode($_[0]), "\n"; exit 0 }

my (@positional, %option);
for (@ARGV) {
    if (/^--(\w+)=(.*)$/s) { $option{$1} = $2 } else { push @positional, $_ }
}
my ($server, $mode, $function, @args) = @positional;
defined $function or die "usage: perl client.pl HOST:PORT MODE FUNCTION [ARG...] [--OPTION=VALUE...]\n";

my $client = Gearman::Client->new(
    job_servers => [$server],
    exceptions  => $option{exceptions} ? 1 : 0,
    prefix      => $option{prefix},
);
my %task_options = (timeout => defined $option{timeout} ? $option{timeout} : 20);
$task_options{uniq}     = $option{uniq}     if defined $option{uniq};
$task_options{priority} = $option{priority} if defined $option{priority};

# Callbacks recording every event of task $index into @$events.
sub callbacks {
    my ($events, @index) = @_;
    return (
        on_status    => sub { push @$events, [@index, "status", [@_]] },
        on_data      => sub { push @$events, [@index, "data", ${ $_[0] }] },
        on_warning   => sub { push @$events, [@index, "warning", ${ $_[0] }] },
        on_exception => sub { push @$events, [@index, "exception", $_[0]] },
        on_fail      => sub { push @$events, [@index, "fail", $_[0]] },
    );
}

eval {
    if ($mode eq "do" || $mode eq "call") {
        my $workload = $args[0];
        if ($mode eq "call") {
            my $call_args   = $utf8_json->decode(defined $args[0] ? $args[0] : "[]");
            my $call_kwargs = $utf8_json->decode(defined $args[1] ? $args[1] : "{}");
            # An empty Perl hash encodes as {}: "kwargs" stays a JSON object.
            $workload = $utf8_json->encode({ args => $call_args, kwargs => $call_kwargs });
        }
        my @events;
        my $result = $client->do_task($function, $workload, { %task_options, callbacks(\@events) });
        my $value = defined $result ? $$result : undef;
        if ($mode eq "call") {
            emit({
                workload => $workload,
                result   => defined $value && length $value ? $utf8_json->decode($value) : undef,
                events   => \@events,
            });
        }
        emit({ result => $value, events => \@events });
    } elsif ($mode eq "background") {
        my $handle = $client->dispatch_background($function, $args[0], \%task_options);
        emit({ handle => $handle });
    } elsif ($mode eq "tasks") {
        my (@results, @events);
        my $taskset = $client->new_task_set;
        for my $index (0 .. $#args) {
            $results[$index] = undef;
            $taskset->add_task($function, $args[$index], {
                %task_options,
                callbacks(\@events, $index),
                on_complete => sub { $results[$index] = ${ $_[0] } },
            });
        }
        $taskset->wait(timeout => $task_options{timeout});
        emit({ results => \@results, events => \@events });
    } elsif ($mode eq "status") {
        my $status = $client->get_status($args[0]);
        emit({ status => undef }) unless $status;
        emit({ known => $status->known + 0, running => $status->running + 0, progress => $status->progress });
    } else {
        die "unknown mode '$mode'\n";
    }
    1;
} or do {
    print $json->encode({ died => "$@" }), "\n";
    exit 1;
};
