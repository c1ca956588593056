"""Running task jobs on a worker: decode the envelope, call the task, retry, log, encode.

:func:`job_callback` turns a :class:`~.decorator.GearmanTask` into the callback a
:class:`~django_gearman.gearman.worker.Worker` runs for each job of its Gearman function. Around
every call it closes stale database connections (as Django does around a request), and it logs
one line per job with its outcome and duration on the ``django_gearman.worker`` logger.

Retries: a task that raises one of its ``retry_on`` exceptions with attempts left (of its
``max_attempts``) is run again after ``backoff(exception, None)`` seconds when it has a
``backoff`` (None: no retry), else after ``retry_backoff * 2 ** (attempt - 1)`` seconds (capped
at ``retry_backoff_max``). A background job is re-submitted as a scheduled job
(``SUBMIT_JOB_EPOCH``) with the same task id (``meta["id"]``), the next attempt number and a
unique key of its own, so the worker is free meanwhile; a foreground job is retried in place,
because its client is waiting on this very job (it gets a WORK_WARNING per failed attempt).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections
from django.dispatch import Signal

from ..gearman.client import GearmanClient
from ..gearman.envelope import decode_call, encode_call, encode_result
from ..gearman.errors import EnvelopeError, UsageError
from ..gearman.pool import Offered
from ..gearman.work import Job, reported
from .decorator import registry
from .outcomes import log_failure, log_success
from .results import new_task_id, record_failure, record_success, retry_unique, task_id_of

if TYPE_CHECKING:
    from .decorator import GearmanTask

__all__ = ["job_callback", "offered_functions", "task_failed", "task_succeeded"]

logger = logging.getLogger("django_gearman.worker")

#: Sent after a task's last attempt failed (a background job's failure is also kept in the
#: results table, TaskResultRecord with backend "gearman_task"): ``sender`` is the task, with
#: ``job``, ``error``, ``attempt`` and ``args``/``kwargs``.
task_failed = Signal()
#: Sent after a task succeeded: ``sender`` is the task, with ``job``, ``result``, ``attempt``.
task_succeeded = Signal()


def job_callback(task: GearmanTask[..., Any]) -> Callable[[Job], bytes]:
    """The worker callback that runs ``task`` for each of its jobs."""

    def run(job: Job) -> bytes:
        return execute(task, job)

    run.__name__ = f"run_{task.name}"
    return run


def execute(task: GearmanTask[..., Any], job: Job) -> bytes:
    """Run one job of ``task`` and return its JSON result; raise to fail it (WORK_EXCEPTION)."""
    started = time.perf_counter()
    try:
        call = decode_call(job.data)
    except EnvelopeError as error:
        logger.error("%s %s: bad workload from the client: %s", task.name, job.handle, error)
        raise reported(error) from None
    meta = call.meta
    if task_id_of(meta) is None:  # a client that sends no id (PHP): one for the job and retries
        meta = {**meta, "id": new_task_id()}
    attempt = _attempt(meta)
    first = _first_attempt(meta, attempt)
    options = task.options
    close_old_connections()
    try:
        while True:
            try:
                result = task.func(*call.args, **call.kwargs)
                data = encode_result(result)
            except options.retry_on as error:
                # A result JSON cannot carry (EnvelopeError) would fail the same way again.
                delay = None
                if not isinstance(error, EnvelopeError):
                    delay = _retry_delay(task, job, error, attempt - first + 1)
                if delay is None:
                    _failed(task, job, error, attempt, started, call.args, call.kwargs, meta)
                    raise
                if meta.get("background"):
                    _resubmit(task, job, call.args, call.kwargs, meta, attempt + 1, delay)
                    logger.warning(
                        "%s %s (task %s) attempt %d failed (%s: %s); retry %d of %d in %.1f s",
                        task.name,
                        job.handle,
                        meta["id"],
                        attempt,
                        type(error).__name__,
                        error,
                        attempt - first + 1,
                        options.retries,
                        delay,
                    )
                    return b""
                logger.warning(
                    "%s %s attempt %d failed (%s: %s); retrying in %.1f s",
                    task.name,
                    job.handle,
                    attempt,
                    type(error).__name__,
                    error,
                    delay,
                )
                job.send_warning(
                    f"attempt {attempt} failed ({type(error).__name__}: {error}); retrying in "
                    f"{delay:.1f} s"
                )
                time.sleep(delay)
                attempt += 1
                close_old_connections()
                continue
            except BaseException as error:
                _failed(task, job, error, attempt, started, call.args, call.kwargs, meta)
                raise
            log_success(task.name, job, started, attempt)
            if task_succeeded.receivers:
                task_succeeded.send(sender=task, job=job, result=result, attempt=attempt)
            if isinstance(meta.get("result_id"), str):  # a re-run from the admin: its row
                record_success(meta["result_id"], job, result, attempt, first_attempt=first)
            return data
    finally:
        close_old_connections()


def expired(task: GearmanTask[..., Any], job: Job, error: BaseException) -> None:
    """A job of ``task`` failed at its ``time_limit`` (the worker's watchdog thread calls this,
    the job's own thread being stuck): what a raised exception gets. A background job with
    attempts left under its retry policy is queued again; otherwise the failure is logged,
    signalled and, for a background job, kept in the results table."""
    started = time.perf_counter() - float(getattr(error, "limit", 0) or 0)
    try:
        call = decode_call(job.data)
    except EnvelopeError:
        return  # a bad workload never ran: nothing to record
    meta = call.meta
    if task_id_of(meta) is None:
        meta = {**meta, "id": new_task_id()}
    attempt = _attempt(meta)
    first = _first_attempt(meta, attempt)
    try:
        delay = None
        if isinstance(error, task.options.retry_on) and meta.get("background"):
            delay = _retry_delay(task, job, error, attempt - first + 1)
        if delay is not None:
            _resubmit(task, job, call.args, call.kwargs, meta, attempt + 1, delay)
            logger.warning(
                "%s %s (task %s) attempt %d ran past its time limit; retry %d of %d in %.1f s",
                task.name,
                job.handle,
                meta["id"],
                attempt,
                attempt - first + 1,
                task.options.retries,
                delay,
            )
            return
        _failed(task, job, error, attempt, started, call.args, call.kwargs, meta)
    finally:
        connections.close_all()  # this thread's: the watchdog's, which runs no other job


def _attempt(meta: dict[str, Any]) -> int:
    """This job's attempt number: ``meta["attempt"]``, counted over every run of the task id."""
    value = meta.get("attempt", 1)
    return value if type(value) is int and value >= 1 else 1


def _first_attempt(meta: dict[str, Any], attempt: int) -> int:
    """The attempt this run began with: an admin re-run starts a new set of ``max_attempts``
    at a later attempt number (``meta["first_attempt"]``); otherwise 1."""
    value = meta.get("first_attempt", 1)
    return value if type(value) is int and 1 <= value <= attempt else 1


def _retry_delay(
    task: GearmanTask[..., Any], job: Job, error: BaseException, run_attempt: int
) -> float | None:
    """Seconds before the next attempt after ``run_attempt`` (counted in this run) failed with
    ``error``, or None to give up: no attempts left, or ``backoff`` said None. ``backoff``
    replaces the exponential delay; an answer that is no delay, or a backoff that raises, gives
    up with the task's own error (logged, so the typo is found)."""
    options = task.options
    if run_attempt >= options.max_attempts:
        return None
    if options.backoff is None:
        return float(min(options.retry_backoff * 2 ** (run_attempt - 1), options.retry_backoff_max))
    try:
        delay = options.backoff(error, None)  # result: None for a raised exception
    except Exception as backoff_error:  # noqa: BLE001 - the task's own error is what to report
        logger.error(
            "%s %s: its backoff raised %s: %s; not retrying",
            task.name,
            job.handle,
            type(backoff_error).__name__,
            backoff_error,
        )
        return None
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay < math.inf:
        logger.error(
            "%s %s: its backoff returned %r, not a number of seconds (0 or more); not retrying",
            task.name,
            job.handle,
            delay,
        )
        return None
    return float(delay)


def _failed(
    task: GearmanTask[..., Any],
    job: Job,
    error: BaseException,
    attempt: int,
    started: float,
    args: list[Any],
    kwargs: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    log_failure(task.name, job, error, started, attempt)  # the worker adds no second line
    if task_failed.receivers:
        task_failed.send(
            sender=task, job=job, error=error, attempt=attempt, args=args, kwargs=kwargs
        )
    if meta.get("background"):
        # An admin re-run of an older row (``result_id``, keyed by server/handle before task
        # ids) writes into that row; every other failure is kept under its task id.
        result_id = meta.get("result_id")
        record_failure(
            task,
            job,
            error,
            attempt,
            args,
            kwargs,
            result_id if isinstance(result_id, str) and result_id else meta["id"],
            _first_attempt(meta, attempt),
        )


def _resubmit(
    task: GearmanTask[..., Any],
    job: Job,
    args: list[Any],
    kwargs: dict[str, Any],
    meta: dict[str, Any],
    attempt: int,
    delay: float,
) -> None:
    """Queue the next attempt of a background job on the server this one came from: the same
    task id, the next attempt number."""
    data = encode_call(args, kwargs, {**meta, "attempt": attempt})
    # A unique key of its own (retry_unique): the old one still belongs to this job until it
    # completes, and an earlier attempt's may belong to a cancelled job the server still holds;
    # a job submitted under either would coalesce into it and be lost. A connection of its own
    # (retries are rare): the worker's connection is in the middle of this job.
    with GearmanClient([str(job.server)]) as client:
        client.submit_background(
            job.function,
            data,
            unique=retry_unique(meta["id"], attempt),
            run_at=time.time() + delay,
        )


# -- which functions a worker offers ---------------------------------------------------------


def offered_functions(
    alias: str, task_names: Sequence[str] = (), queues: Sequence[str] = ()
) -> list[Offered]:
    """The functions to offer on ``alias``'s servers: all of them, or those named by ``--task``
    plus those in a ``--queue``. Remote tasks are never offered (another worker runs them)."""
    ours = {
        name: task
        for name, task in registry.items()
        if not task.remote and task.options.alias == alias
    }
    for name in task_names:
        if name in ours:
            continue
        task = registry.get(name)
        if task is not None and task.remote:
            raise UsageError(
                f"{name} is a remote task: another language's worker runs it, not gearman_worker."
            )
        if task is not None:
            raise UsageError(
                f"{name} runs on the Gearman alias {task.options.alias!r}: use --alias "
                f"{task.options.alias}."
            )
        known = "\n  ".join(sorted(ours)) or "(none)"
        raise UsageError(f"Unknown task {name!r}. Tasks of alias {alias!r}:\n  {known}")
    everything = not task_names and not queues
    chosen = [
        task
        for name, task in sorted(ours.items())
        if everything or name in task_names or task.options.queue in queues
    ]
    offered = [
        Offered(
            task.function_name,
            job_callback(task),
            task.options.timeout,
            soft_time_limit=task.options.soft_time_limit,
            time_limit=task.options.time_limit,
            on_expired=functools.partial(expired, task) if task.options.time_limit else None,
        )
        for task in chosen
    ]
    backend_queues = _backend_queues(alias)
    offered += [
        Offered(name, callback)
        for name, (queue, callback) in sorted(backend_queues.items())
        if everything or queue in queues
    ]
    known_queues = {task.options.queue for task in ours.values()} | {
        queue for queue, _ in backend_queues.values()
    }
    unknown = [queue for queue in queues if queue not in known_queues]
    if unknown:
        raise UsageError(
            f"No task in queue(s) {', '.join(map(repr, unknown))}. Queues: "
            f"{', '.join(sorted(known_queues)) or '(none)'}"
        )
    if not offered:
        raise UsageError(
            f"No tasks to run on alias {alias!r}: decorate functions with @gearman_task in an "
            "installed app's tasks.py."
        )
    return offered


def _backend_queues(alias: str) -> dict[str, tuple[str, Callable[[Job], bytes]]]:
    """Gearman function -> (queue, callback) of the Django Tasks GearmanBackends on ``alias``."""
    try:
        from ..backends import quiet_framework_logs, worker_queues  # noqa: PLC0415 - needs a Tasks framework installed
    except ImportError:  # neither django.tasks nor the django-tasks backport is installed
        return {}
    try:
        queues = worker_queues(alias)
    except ImproperlyConfigured as error:
        raise UsageError(f"TASKS is misconfigured: {error}") from error
    if queues:
        quiet_framework_logs()  # the worker logs each outcome itself, once
    return queues
