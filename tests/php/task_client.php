<?php
/*
 * A PHP (pecl gearman) client calling django_gearman tasks through the JSON envelope:
 * the client example of docs/wire-format.md, with argument parsing and JSON output
 * for the test suite (tests/test_wire_format.py).
 *
 * Usage: php task_client.php HOST:PORT MODE FUNCTION [ARGS_JSON [KWARGS_JSON]]
 *        php task_client.php HOST:PORT MODE FUNCTION --workload TEXT
 *
 * ARGS_JSON is a JSON array (default []), KWARGS_JSON a JSON object (default {});
 * they become the workload {"args": ARGS, "kwargs": KWARGS}. --workload sends TEXT
 * as it is instead (to test what a worker does with a workload that is no envelope).
 *
 * Modes:
 *   normal      doNormal(): {"ok", "result" (decoded JSON), "error", "workload",
 *               "return_code", "return_name"}. doNormal() gives no details for
 *               WORK_EXCEPTION, so "error" is {"type": "", "message": "..."} then.
 *   task        addTask() + runTasks() with complete/exception/fail callbacks: the
 *               same fields, and "error" has the worker's {"type", "message"}.
 *   background  doBackground(): {"handle", "workload", "return_code", "return_name"}.
 *
 * Prints exactly one JSON line. Exit 0 when the request reached the server (whatever
 * the task did), 1 when PHP threw (addServer() failed...), 2 on a usage error.
 * Env: PHP_GEARMAN_TIMEOUT_MS (default 20000) is passed to setTimeout().
 */

declare(strict_types=1);

/* ---- the example of docs/wire-format.md ------------------------------------------------ */

/** The workload of a call: {"args": [...], "kwargs": {...}}. */
function envelope(array $args = [], array $kwargs = []): string
{
    // (object): an empty PHP array would encode as [] and "kwargs" must be a JSON object.
    return json_encode(['args' => array_values($args), 'kwargs' => (object) $kwargs], JSON_THROW_ON_ERROR);
}

/** Run a task and wait: ["ok" => true, "result" => ...] or ["ok" => false, "error" => [...]]. */
function call_task(GearmanClient $client, string $function, string $workload): array
{
    $result = $client->doNormal($function, $workload);
    switch ($client->returnCode()) {
        case GEARMAN_SUCCESS:
            // The task's return value as JSON; an empty result means null.
            return ['ok' => true, 'result' => $result === '' ? null : json_decode($result, true, 512, JSON_THROW_ON_ERROR)];
        case GEARMAN_WORK_EXCEPTION:
            // The task raised. doNormal() drops the exception data; see call_task_with_error().
            return ['ok' => false, 'error' => ['type' => '', 'message' => 'the task raised an exception (WORK_EXCEPTION)']];
        case GEARMAN_WORK_FAIL:
            return ['ok' => false, 'error' => ['type' => '', 'message' => 'the worker reported failure (WORK_FAIL)']];
        default:
            return ['ok' => false, 'error' => ['type' => '', 'message' => $client->error()]];
    }
}

/** The same through addTask()/runTasks(), whose exception callback sees {"type", "message"}. */
function call_task_with_error(GearmanClient $client, string $function, string $workload): array
{
    $outcome = null;
    $client->setCompleteCallback(function (GearmanTask $task) use (&$outcome) {
        $data = $task->data();
        $outcome = ['ok' => true, 'result' => $data === '' ? null : json_decode($data, true, 512, JSON_THROW_ON_ERROR)];
    });
    $client->setExceptionCallback(function (GearmanTask $task) use (&$outcome) {
        $error = json_decode($task->data(), true);  // {"type": "ValueError", "message": "..."}
        $outcome = ['ok' => false, 'error' => is_array($error) ? $error : ['type' => '', 'message' => $task->data()]];
    });
    $client->setFailCallback(function (GearmanTask $task) use (&$outcome) {
        $outcome ??= ['ok' => false, 'error' => ['type' => '', 'message' => 'the worker reported failure (WORK_FAIL)']];
    });
    $client->addTask($function, $workload);
    $ran = $client->runTasks();
    return $outcome ?? ['ok' => false, 'error' => ['type' => '', 'message' => $ran ? 'no answer' : $client->error()]];
}

/** Queue a task without waiting: the job handle. */
function queue_task(GearmanClient $client, string $function, string $workload): string
{
    $handle = $client->doBackground($function, $workload);
    if ($client->returnCode() !== GEARMAN_SUCCESS) {
        throw new RuntimeException("doBackground($function) failed: " . $client->error());
    }
    return $handle;
}

/* ---- the test harness ------------------------------------------------------------------ */

function emit(array $out, int $exit = 0): never
{
    echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
    exit($exit);
}

function usage(string $message): never
{
    fwrite(STDERR, "task_client.php: $message\n"
        . "usage: php task_client.php HOST:PORT normal|task|background FUNCTION [ARGS_JSON [KWARGS_JSON] | --workload TEXT]\n");
    exit(2);
}

function return_name(int $rc): ?string
{
    foreach (['GEARMAN_SUCCESS', 'GEARMAN_WORK_EXCEPTION', 'GEARMAN_WORK_FAIL', 'GEARMAN_TIMEOUT',
              'GEARMAN_COULD_NOT_CONNECT', 'GEARMAN_LOST_CONNECTION'] as $name) {
        if (constant($name) === $rc) {
            return $name;
        }
    }
    return null;
}

function main(array $argv): void
{
    if (count($argv) < 4) {
        usage('missing arguments');
    }
    [, $server, $mode, $function] = $argv;
    $rest = array_slice($argv, 4);
    if (!in_array($mode, ['normal', 'task', 'background'], true)) {
        usage("unknown mode '$mode'");
    }
    if (($rest[0] ?? null) === '--workload') {
        if (count($rest) !== 2) {
            usage('--workload takes one TEXT');
        }
        $workload = $rest[1];
    } else {
        $args = json_decode($rest[0] ?? '[]', true, 512, JSON_THROW_ON_ERROR);
        $kwargs = json_decode($rest[1] ?? '{}', true, 512, JSON_THROW_ON_ERROR);
        if (!is_array($args) || !is_array($kwargs)) {
            usage('ARGS_JSON must be a JSON array and KWARGS_JSON a JSON object');
        }
        $workload = envelope($args, $kwargs);
    }

    $pos = strrpos($server, ':');
    [$host, $port] = $pos === false ? [$server, 4730] : [substr($server, 0, $pos), (int) substr($server, $pos + 1)];
    $client = new GearmanClient();
    $client->setTimeout((int) (getenv('PHP_GEARMAN_TIMEOUT_MS') ?: 20000));
    $client->addServer($host, $port);  // connects, and sends OPTION_REQ "exceptions"

    if ($mode === 'background') {
        $out = ['handle' => queue_task($client, $function, $workload)];
    } elseif ($mode === 'normal') {
        $out = call_task($client, $function, $workload);
    } else {
        $out = call_task_with_error($client, $function, $workload);
    }
    if ($mode !== 'background') {
        $out += ['result' => null, 'error' => null];
    }
    $rc = $client->returnCode();
    emit($out + ['workload' => $workload, 'return_code' => $rc, 'return_name' => return_name($rc)]);
}

try {
    main($argv);
} catch (Throwable $e) {
    emit(['error' => get_class($e) . ': ' . $e->getMessage()], 1);
}
