<?php
/*
 * A PHP (pecl gearman) client used as an interop peer by the test suite.
 *
 * Usage: php client.php HOST:PORT MODE FUNCTION [ARGS...]
 *
 * Prints exactly one JSON object on stdout. Exit 0 when the request reached
 * gearmand (whatever the job did); exit 1 with {"error": ...} when addServer()
 * failed or PHP threw; exit 2 on a usage error.
 * Every object has "return_code" (int), "return_name" (e.g. "GEARMAN_SUCCESS"),
 * "error" (libgearman's error text, or null) and "php_warnings" (E_WARNINGs raised
 * by the extension, which it uses to report job failures).
 *
 * Modes:
 *   normal|high|low WORKLOAD [UNIQUE]
 *       doNormal/doHigh/doLow, called again while returnCode() is WORK_DATA,
 *       WORK_WARNING or WORK_STATUS (the documented pecl loop). Prints
 *       {"result", "events": [[kind, value], ...]}.
 *   background|high_background|low_background WORKLOAD [UNIQUE]
 *       doBackground/doHighBackground/doLowBackground. Prints {"handle"}.
 *   tasks W1 W2 ...
 *       addTask(FUNCTION, Wi, context=i) for each, then runTasks(). Prints
 *       {"results": {"0": {"state": "complete"|"fail"|"exception", "data", "handle"}},
 *        "events": [[i, kind, value], ...], "ok": runTasks() result}.
 *   status HANDLE          jobStatus(HANDLE) -> {"status": [known, running, num, den]}
 *   status_unique UNIQUE   jobStatusByUniqueKey(UNIQUE) -> {"status": [...]}
 *                          (FUNCTION is ignored for both status modes; pass "-")
 *   exception WORKLOAD
 *       doNormal(FUNCTION, WORKLOAD), then the same through addTask + runTasks with
 *       an exception callback. Prints {"result", "events", "task": {...}}.
 *
 * Env: PHP_GEARMAN_TIMEOUT_MS (default 20000) is passed to setTimeout().
 *
 * Verified with PHP 8.2.36 + pecl gearman 2.1.0 + gearmand 1.1.20 (Debian bookworm):
 *   - addServer() connects at once and round-trips OPTION_REQ "exceptions"; an
 *     unreachable server gives {"error": "...", "stage": "addServer"}. runTasks() may
 *     send OPTION_REQ a second time on the same connection.
 *   - Every SUBMIT_JOB* carries a libgearman UUID as unique, foreground jobs too.
 *   - normal/high/low on php_reverse: "olleh", GEARMAN_SUCCESS. error() still says
 *     "GEARMAN_UNKNOWN_STATE" after a success, so "error" is null then.
 *   - normal on php_status: one call, result "chunkdone" (libgearman 1.1 concatenates
 *     WORK_DATA into the result; status and warning are dropped), GEARMAN_SUCCESS.
 *   - normal on php_fail: result "", GEARMAN_WORK_FAIL (no PHP warning).
 *   - normal on php_exception: result "" (the exception text is not returned),
 *     GEARMAN_WORK_EXCEPTION. Calling doNormal again after WORK_EXCEPTION submits a
 *     new job: only WORK_DATA/WARNING/STATUS may be looped on.
 *   - tasks: complete/fail/exception callbacks fire; php_status gives status [1,2],
 *     data "chunk", warning "careful", then complete "done"; php_exception fires only
 *     the exception callback, data "Unable to add worker function" (no fail after it).
 *     Tasks are submitted last-added-first (task 1 gets the lower handle).
 *   - background: handle "H:<hostname>:<n>". status_unique on a queued unique:
 *     [true, false, 0, 0]; status of an unknown handle: [false, false, 0, 0].
 *   - normal on a function nobody serves: GEARMAN_TIMEOUT after setTimeout(), and the
 *     job stays queued in gearmand after the client has gone.
 */

declare(strict_types=1);

function return_names(): array
{
    static $names = null;
    if ($names === null) {
        $names = [];
        $skip = '/^GEARMAN_(WORKER_|CLIENT_|COMMAND_|JOB_PRIORITY|CON_|MAX_|DEFAULT|VERBOSE|TASK_'
            . '|ARGS|PACKET|JOB_HANDLE|OPTION|UNIQUE|FUNCTION_NAME|SEND_BUFFER|RECV_BUFFER|ID_SIZE'
            . '|MAGIC_|NON_BLOCKING)/';
        foreach (get_defined_constants(true)['gearman'] ?? [] as $name => $value) {
            if (is_int($value) && !preg_match($skip, $name) && !isset($names[$value])) {
                $names[$value] = $name;
            }
        }
    }
    return $names;
}

$phpWarnings = [];
set_error_handler(function (int $no, string $msg) use (&$phpWarnings): bool {
    $phpWarnings[] = $msg;
    return true;
});

function emit(array $out, int $exit = 0): never
{
    global $phpWarnings;
    $out['php_warnings'] = $phpWarnings;
    echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
    exit($exit);
}

function rc_fields(GearmanClient $client): array
{
    $rc = $client->returnCode();
    $error = $client->error();
    return [
        'return_code' => $rc,
        'return_name' => return_names()[$rc] ?? null,
        // error() keeps stale text (e.g. "GEARMAN_UNKNOWN_STATE") after a success.
        'error' => ($rc === GEARMAN_SUCCESS || $error === '' || $error === false) ? null : $error,
    ];
}

function parse_server(string $server): array
{
    $pos = strrpos($server, ':');
    if ($pos === false) {
        return [$server, 4730];
    }
    return [substr($server, 0, $pos), (int) substr($server, $pos + 1)];
}

/* doNormal/doHigh/doLow, looping over intermediate WORK_* steps. */
function do_foreground(GearmanClient $client, string $method, string $fn, string $workload, ?string $unique): array
{
    $events = [];
    for ($i = 0; $i < 100; $i++) {
        $result = $unique === null
            ? $client->$method($fn, $workload)
            : $client->$method($fn, $workload, $unique);
        $rc = $client->returnCode();
        switch ($rc) {
            case GEARMAN_WORK_DATA:
                $events[] = ['data', $result];
                continue 2;
            case GEARMAN_WORK_WARNING:
                $events[] = ['warning', $result];
                continue 2;
            case GEARMAN_WORK_STATUS:
                [$num, $den] = $client->doStatus();
                $events[] = ['status', [$num, $den]];
                continue 2;
        }
        break;
    }
    return ['result' => $result, 'events' => $events] + rc_fields($client);
}

function run_tasks(GearmanClient $client, string $fn, array $workloads): array
{
    $results = [];
    $events = [];
    $client->setCreatedCallback(function (GearmanTask $t, $i) use (&$results) {
        $results[$i]['handle'] = $t->jobHandle();
    });
    $client->setCompleteCallback(function (GearmanTask $t, $i) use (&$results) {
        $results[$i]['state'] = 'complete';
        $results[$i]['data'] = $t->data();
    });
    $client->setFailCallback(function (GearmanTask $t, $i) use (&$results, &$events) {
        $events[] = [$i, 'fail', null];
        $results[$i]['state'] ??= 'fail';
        if (($results[$i]['state'] ?? null) === 'exception') {
            $results[$i]['then_fail'] = true;
        }
    });
    $client->setExceptionCallback(function (GearmanTask $t, $i) use (&$results, &$events) {
        $events[] = [$i, 'exception', $t->data()];
        $results[$i]['state'] = 'exception';
        $results[$i]['data'] = $t->data();
    });
    $client->setDataCallback(function (GearmanTask $t, $i) use (&$events) {
        $events[] = [$i, 'data', $t->data()];
    });
    $client->setWarningCallback(function (GearmanTask $t, $i) use (&$events) {
        $events[] = [$i, 'warning', $t->data()];
    });
    $client->setStatusCallback(function (GearmanTask $t, $i) use (&$events) {
        $events[] = [$i, 'status', [$t->taskNumerator(), $t->taskDenominator()]];
    });
    foreach (array_values($workloads) as $i => $w) {
        $results[(string) $i] = ['state' => null, 'data' => null, 'handle' => null];
        $client->addTask($fn, $w, (string) $i);
    }
    $ok = $client->runTasks();
    return ['results' => (object) $results, 'events' => $events, 'ok' => $ok] + rc_fields($client);
}

function main(array $argv): void
{
    $usage = "usage: php client.php HOST:PORT MODE FUNCTION [ARGS...]\n";
    if (count($argv) < 4) {
        fwrite(STDERR, $usage);
        exit(2);
    }
    [, $server, $mode, $fn] = $argv;
    $args = array_slice($argv, 4);
    [$host, $port] = parse_server($server);
    $modes = ['normal', 'high', 'low', 'background', 'high_background', 'low_background',
              'tasks', 'status', 'status_unique', 'exception'];
    if (!in_array($mode, $modes, true)) {
        fwrite(STDERR, "client.php: unknown mode '$mode'\n" . $usage);
        exit(2);
    }

    $client = new GearmanClient();
    $client->setTimeout((int) (getenv('PHP_GEARMAN_TIMEOUT_MS') ?: 20000));
    try {
        $client->addServer($host, $port);
    } catch (GearmanException $e) {
        emit([
            'error' => $e->getMessage(),
            'stage' => 'addServer',
            'return_code' => null,
            'return_name' => null,
        ], 1);
    }

    $foreground = ['normal' => 'doNormal', 'high' => 'doHigh', 'low' => 'doLow'];
    $background = [
        'background' => 'doBackground',
        'high_background' => 'doHighBackground',
        'low_background' => 'doLowBackground',
    ];

    if (isset($foreground[$mode])) {
        emit(do_foreground($client, $foreground[$mode], $fn, $args[0] ?? '', $args[1] ?? null));
    } elseif (isset($background[$mode])) {
        $method = $background[$mode];
        $handle = isset($args[1])
            ? $client->$method($fn, $args[0] ?? '', $args[1])
            : $client->$method($fn, $args[0] ?? '');
        emit(['handle' => $handle === '' ? null : $handle] + rc_fields($client));
    } elseif ($mode === 'tasks') {
        emit(run_tasks($client, $fn, $args));
    } elseif ($mode === 'status') {
        $status = $client->jobStatus($args[0] ?? '');
        emit(['status' => $status] + rc_fields($client));
    } elseif ($mode === 'status_unique') {
        $status = $client->jobStatusByUniqueKey($args[0] ?? '');
        emit(['status' => $status] + rc_fields($client));
    } elseif ($mode === 'exception') {
        $out = do_foreground($client, 'doNormal', $fn, $args[0] ?? '', null);
        $task = new GearmanClient();
        $task->setTimeout((int) (getenv('PHP_GEARMAN_TIMEOUT_MS') ?: 20000));
        $task->addServer($host, $port);
        $out['task'] = run_tasks($task, $fn, [$args[0] ?? '']);
        emit($out);
    } else {
        fwrite(STDERR, "client.php: unknown mode '$mode'\n" . $usage);
        exit(2);
    }
}

try {
    main($argv);
} catch (Throwable $e) {
    emit(['error' => get_class($e) . ': ' . $e->getMessage(), 'return_code' => null], 1);
}
