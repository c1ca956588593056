<?php
/*
 * A PHP (pecl gearman) worker used as an interop peer by the test suite.
 *
 * Usage: php worker.php HOST:PORT [--max-jobs N] [--id ID]
 *
 * Prints "ready" on stdout once its functions are registered, then serves
 * jobs until N jobs were handled (exit 0) or it is killed.
 *
 * Functions:
 *   php_reverse    strrev(workload)
 *   php_echo       workload
 *   php_upper      strtoupper(workload)
 *   php_status     WORK_STATUS 1/2, WORK_DATA "chunk", WORK_WARNING "careful",
 *                  then WORK_COMPLETE "done"
 *   php_fail       WORK_FAIL, via $job->setReturn(GEARMAN_WORK_FAIL) and returning
 *   php_exception  throws; pecl sends WORK_EXCEPTION with the fixed text
 *                  "Unable to add worker function" (never the message) and nothing
 *                  after it. The PHP exception is then rethrown out of
 *                  $worker->work(), so the loop below catches it.
 *   php_json       json_encode(["got" => json_decode(workload, true), "lang" => "php"])
 *
 * Verified with PHP 8.2.36 + pecl gearman 2.1.0 + gearmand 1.1.20 (Debian bookworm):
 *   - packets, in order: SET_CLIENT_ID (if --id), OPTION_REQ "exceptions" (inside
 *     addServer(), which throws GearmanException if no server answers), CAN_DO per
 *     function (last registered first), GRAB_JOB_ALL, PRE_SLEEP. gearmand 1.1.20
 *     answers GRAB_JOB_ALL with JOB_ASSIGN_UNIQ.
 *   - work() returns false for WORK_FAIL and WORK_EXCEPTION too (not only for errors),
 *     so a bare `while ($worker->work())` loop would stop at the first failed job;
 *     the loop below checks returnCode() instead. After a failed job, the next one or
 *     two work() calls return true without running a job, so jobs are counted in
 *     the callbacks, not per work() call.
 */

declare(strict_types=1);

function usage(string $msg): never
{
    fwrite(STDERR, "worker.php: $msg\nusage: php worker.php HOST:PORT [--max-jobs N] [--id ID]\n");
    exit(2);
}

function parse_server(string $server): array
{
    $pos = strrpos($server, ':');
    if ($pos === false) {
        return [$server, 4730];
    }
    return [substr($server, 0, $pos), (int) substr($server, $pos + 1)];
}

$args = array_slice($argv, 1);
if (count($args) < 1) {
    usage('missing SERVER');
}
$server = array_shift($args);
$maxJobs = 0;
$id = null;
while ($args) {
    $opt = array_shift($args);
    if ($opt === '--max-jobs' && $args) {
        $maxJobs = (int) array_shift($args);
    } elseif ($opt === '--id' && $args) {
        $id = array_shift($args);
    } else {
        usage("bad argument: $opt");
    }
}

[$host, $port] = parse_server($server);

$worker = new GearmanWorker();
if ($id !== null) {
    $worker->setId($id);
}
try {
    $worker->addServer($host, $port);
} catch (GearmanException $e) {
    fwrite(STDERR, "worker.php: addServer($host, $port) failed: " . $e->getMessage() . "\n");
    exit(1);
}

$done = 0; // jobs handled, counted in the callbacks (see the loop below)
$functions = [
    'php_reverse' => fn (GearmanJob $job) => strrev($job->workload()),
    'php_echo' => fn (GearmanJob $job) => $job->workload(),
    'php_upper' => fn (GearmanJob $job) => strtoupper($job->workload()),
    'php_status' => function (GearmanJob $job): string {
        $job->sendStatus(1, 2);
        $job->sendData('chunk');
        $job->sendWarning('careful');
        return 'done';
    },
    'php_fail' => function (GearmanJob $job): string {
        $job->setReturn(GEARMAN_WORK_FAIL);
        return '';
    },
    'php_exception' => function (GearmanJob $job): string {
        throw new RuntimeException('boom: ' . $job->workload());
    },
    'php_json' => function (GearmanJob $job): string {
        return json_encode(['got' => json_decode($job->workload(), true), 'lang' => 'php']);
    },
];
foreach ($functions as $name => $callback) {
    $worker->addFunction($name, function (GearmanJob $job) use ($callback) {
        global $done;
        $done++;
        return $callback($job);
    });
}

echo "ready\n";
fflush(STDOUT);

while (true) {
    try {
        $ok = $worker->work();
    } catch (Throwable $e) {
        // An exception thrown by a callback surfaces here, after the job was answered.
        fwrite(STDERR, 'worker.php: job raised ' . get_class($e) . ': ' . $e->getMessage() . "\n");
        $ok = true;
    }
    if (!$ok) {
        // work() is false for WORK_FAIL/WORK_EXCEPTION too: the job was still answered.
        $rc = $worker->returnCode();
        if ($rc === GEARMAN_IO_WAIT || $rc === GEARMAN_NO_JOBS || $rc === GEARMAN_TIMEOUT) {
            continue;
        }
        if ($rc !== GEARMAN_WORK_FAIL && $rc !== GEARMAN_WORK_EXCEPTION) {
            fwrite(STDERR, "worker.php: work() failed: rc=$rc " . $worker->error() . "\n");
            exit(1);
        }
    }
    if ($maxJobs > 0 && $done >= $maxJobs) {
        exit(0);
    }
}
