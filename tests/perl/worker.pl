#!/usr/bin/perl
# A Perl Gearman::Worker (Debian libgearman-client-perl 2.004.015) for the interop tests
# (tests/gearman/test_perl_interop.py).
#
# Usage: perl worker.pl HOST:PORT PREFIX [NAMESPACE]
#
# With NAMESPACE the worker uses Perl's prefix option: every name it registers is
# "NAMESPACE\tPREFIX.NAME" (Gearman::Objects joins them with a tab).
# Prints "ready" once every function is registered, then one JSON line {"ran": FUNCTION,
# "handle": HANDLE, "arg": ARG} as each job starts (ASCII: bytes above 127 as \u00XX), and
# serves until killed. Functions (all named PREFIX.NAME):
#   reverse     the argument reversed
#   zero, empty return "0" / "": Perl sends WORK_COMPLETE with the handle alone for both
#               ($v ? join("\0", $handle, $v) : $handle in Gearman::Worker::_job_request)
#   progress    $job->set_status(1, 2), send_work_data "chunk", send_work_warning "careful",
#               then "done"
#   data_zero   send_work_data "0" (the handle alone again), then "after"
#   status_api  $worker->send_work_status($job, 1, 2): Perl drops the denominator and sends
#               WORK_STATUS HANDLE\01 (two arguments of three), then "after"
#   slow        sleeps 0.3 s, then the argument (keeps a job running for coalescing)
#   die         die "boom": Perl sends WORK_EXCEPTION (Storable::nfreeze of the message)
#               and then WORK_FAIL for the same job
#   timeout     registered with a timeout of 1 s (CAN_DO_TIMEOUT); sleeps 2 s, then "late"
#   add         the JSON envelope {"args": [...], "kwargs": {...}, "meta": {...}}: the sum of
#               the numeric args times kwargs.scale (default 1), as JSON; a bad workload or a
#               non-number is answered with send_work_exception({"type", "message"} as JSON);
#               kwargs.bare: the sum alone (kwargs.newline: followed by "\n")
use strict;
use warnings;
use Gearman::Worker;
use JSON::PP ();
use Scalar::Util qw(looks_like_number);
use Time::HiRes qw(sleep);

@ARGV == 2 || @ARGV == 3 or die "usage: perl worker.pl HOST:PORT PREFIX [NAMESPACE]\n";
my ($server, $prefix, $namespace) = @ARGV;
$| = 1;
my $json = JSON::PP->new->canonical->utf8->allow_nonref;
my $log = JSON::PP->new->canonical->ascii;

sub started {
    my ($job) = @_;
    print $log->encode({ ran => $job->{func}, handle => $job->handle, arg => $job->arg }), "\n";
}
my $worker = Gearman::Worker->new(job_servers => [$server], prefix => $namespace);

sub add_numbers {
    my ($job) = @_;
    my $envelope = eval { $json->decode($job->arg) };
    my $error;
    if (ref $envelope ne "HASH") {
        $error = { type => "EnvelopeError", message => "the workload is not a JSON object" };
    } else {
        my $total = 0;
        my @args = @{ $envelope->{args} || [] };
        for my $i (0 .. $#args) {
            my $value = $args[$i];
            if (ref $value || !defined $value || !looks_like_number($value)) {
                $error = {
                    type    => "InvalidArgument",
                    message => "argument $i is not a number: " . $json->encode($value),
                };
                last;
            }
            $total += $value;
        }
        my $scale = ($envelope->{kwargs} || {})->{scale};
        unless ($error) {
            my $meta = $envelope->{meta} || {};
            my $sum = $total * (defined $scale ? $scale : 1);
            my $kwargs = $envelope->{kwargs} || {};
            # bare: the sum alone, as a remote_task returns a number; newline: with "\n"
            # after the JSON, so that a sum of 0 ("0", false in Perl) still reaches the wire.
            return $json->encode($sum) . ($kwargs->{newline} ? "\n" : "") if $kwargs->{bare};
            my $result = { sum => $sum, meta => [sort keys %$meta] };
            return $json->encode($result);
        }
    }
    $worker->send_work_exception($job, $json->encode($error));
    return undef;  # the exception ended the job: work() sends nothing more for it
}

my %functions = (
    reverse  => sub { scalar reverse $_[0]->arg },
    zero     => sub { "0" },
    empty    => sub { "" },
    progress => sub {
        my $job = shift;
        $job->set_status(1, 2);
        $worker->send_work_data($job, "chunk");
        $worker->send_work_warning($job, "careful");
        return "done";
    },
    data_zero => sub {
        my $job = shift;
        $worker->send_work_data($job, "0");
        return "after";
    },
    status_api => sub {
        my $job = shift;
        $worker->send_work_status($job, 1, 2);
        return "after";
    },
    slow => sub { sleep 0.3; $_[0]->arg },
    die  => sub { die "boom\n" },
    add  => \&add_numbers,
);

for my $name (sort keys %functions) {
    my $code = $functions{$name};
    $worker->register_function("$prefix.$name" => sub {
        my $job = shift;
        started($job);
        return $code->($job);
    });
}
$worker->register_function("$prefix.timeout" => 1 => sub {
    my $job = shift;
    started($job);
    sleep 2;
    return "late";
});
print "ready\n";
$worker->work while 1;
