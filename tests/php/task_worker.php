<?php
/*
 * A PHP (pecl gearman) worker serving a function that django_gearman submits to with
 * remote_task("..."): the worker example of docs/wire-format.md, with argument parsing
 * and a job log for the test suite (tests/test_wire_format.py).
 *
 * Usage: php task_worker.php HOST:PORT FUNCTION [LOG_FILE]
 *
 * FUNCTION is the full Gearman function name (the alias's PREFIX included). Each job:
 *   - decodes the envelope {"args": [...], "kwargs": {...}, "meta": {...}};
 *   - runs add_numbers(args, kwargs): the sum of the numbers in args, times
 *     kwargs["scale"] (default 1); a non-number argument throws InvalidArgumentException;
 *   - answers WORK_COMPLETE with json_encode(result), or, when anything threw, a
 *     WORK_EXCEPTION whose data is {"type": <PHP class>, "message": <message>},
 *     which Python raises as TaskError(type, message);
 *   - with LOG_FILE, appends one JSON line {"handle", "args", "kwargs", "meta", "ok"}
 *     (for the tests, which check background jobs through it).
 *
 * Prints "ready" on stdout once FUNCTION is registered, then serves until killed.
 */

declare(strict_types=1);

/* ---- the example of docs/wire-format.md ------------------------------------------------ */

/** A workload that is not an envelope (django_gearman's worker uses the same type name). */
class EnvelopeError extends UnexpectedValueException
{
}

/** [args, kwargs, meta] from a workload. */
function decode_envelope(string $workload): array
{
    try {
        $envelope = json_decode($workload, true, 512, JSON_THROW_ON_ERROR);
    } catch (JsonException $e) {
        throw new EnvelopeError('the workload is not JSON: ' . $e->getMessage());
    }
    // {} decodes to [] with $associative = true, so tell objects from arrays by the text.
    if (!is_array($envelope) || ltrim($workload)[0] !== '{') {
        throw new EnvelopeError('the workload must be a JSON object like {"args": [...], "kwargs": {...}}');
    }
    $unknown = array_diff(array_keys($envelope), ['args', 'kwargs', 'meta']);
    if ($unknown) {
        throw new EnvelopeError('unknown key(s) in the workload: ' . implode(', ', $unknown));
    }
    $args = $envelope['args'] ?? [];
    $kwargs = $envelope['kwargs'] ?? [];
    $meta = $envelope['meta'] ?? [];  // from Python: enqueued_at, background, attempt
    $isObject = fn ($value) => is_array($value) && ($value === [] || !array_is_list($value));
    if (!is_array($args) || !array_is_list($args) || !$isObject($kwargs) || !$isObject($meta)) {
        throw new EnvelopeError('"args" must be a JSON array, "kwargs" and "meta" JSON objects');
    }
    return [$args, $kwargs, $meta];
}

/** The task itself. */
function add_numbers(array $args, array $kwargs): int|float
{
    foreach ($args as $i => $value) {
        if (!is_int($value) && !is_float($value)) {
            throw new InvalidArgumentException("argument $i is not a number: " . json_encode($value));
        }
    }
    return array_sum($args) * ($kwargs['scale'] ?? 1);
}

/** The worker callback: decode, run, answer with JSON. */
function run_job(GearmanJob $job, ?callable $log = null): string
{
    try {
        [$args, $kwargs, $meta] = decode_envelope($job->workload());
        if ($log !== null) {
            $log($job, $args, $kwargs, $meta);
        }
        $result = add_numbers($args, $kwargs);
    } catch (Throwable $e) {
        // Report the error as {"type", "message"}: WORK_EXCEPTION, nothing sent after it.
        // (Let an exception escape instead and pecl sends the fixed text
        // "Unable to add worker function" as the exception data, without your message.)
        $job->sendException(json_encode(['type' => get_class($e), 'message' => $e->getMessage()]));
        return '';
    }
    // The result as JSON; JSON_PRESERVE_ZERO_FRACTION keeps 5.0 a float for Python.
    return json_encode($result, JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR);
}

/* ---- the test harness ------------------------------------------------------------------ */

$args = array_slice($argv, 1);
if (count($args) < 2 || count($args) > 3) {
    fwrite(STDERR, "usage: php task_worker.php HOST:PORT FUNCTION [LOG_FILE]\n");
    exit(2);
}
[$server, $function] = $args;
$logFile = $args[2] ?? null;

$log = $logFile === null ? null : function (GearmanJob $job, array $args, array $kwargs, array $meta) use ($logFile): void {
    $line = ['handle' => $job->handle(), 'args' => $args, 'kwargs' => (object) $kwargs, 'meta' => (object) $meta];
    file_put_contents($logFile, json_encode($line, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION) . "\n", FILE_APPEND | LOCK_EX);
};

$pos = strrpos($server, ':');
[$host, $port] = $pos === false ? [$server, 4730] : [substr($server, 0, $pos), (int) substr($server, $pos + 1)];
$worker = new GearmanWorker();
try {
    $worker->addServer($host, $port);
} catch (GearmanException $e) {
    fwrite(STDERR, "task_worker.php: addServer($host, $port) failed: " . $e->getMessage() . "\n");
    exit(1);
}
$worker->addFunction($function, fn (GearmanJob $job) => run_job($job, $log));

echo "ready\n";
fflush(STDOUT);

while (true) {
    if (!$worker->work()) {
        // work() is also false after WORK_FAIL/WORK_EXCEPTION: the job was answered anyway.
        $rc = $worker->returnCode();
        if (!in_array($rc, [GEARMAN_IO_WAIT, GEARMAN_NO_JOBS, GEARMAN_TIMEOUT, GEARMAN_WORK_FAIL, GEARMAN_WORK_EXCEPTION], true)) {
            fwrite(STDERR, "task_worker.php: work() failed: rc=$rc " . $worker->error() . "\n");
            exit(1);
        }
    }
}
