"""The worker's log line for a job's outcome, one format for every kind of task.

``@gearman_task`` jobs (:mod:`.runner`) and Django Tasks jobs (:mod:`django_gearman.backends`)
log through here on ``django_gearman.worker``: one line per outcome, and for a failure one
traceback, on that line::

    myapp.tasks.send_mail H:host:7 succeeded in 3.4 ms (attempt 1)
    myapp.tasks.report H:host:8 failed in 1.2 ms (attempt 1, result 5f0c...): ValueError: boom

A failure is then marked :func:`~django_gearman.gearman.work.reported`, so the worker loop
logs it no second time.
"""

from __future__ import annotations

import logging
import time

from ..gearman.envelope import EnvelopeError
from ..gearman.work import Job, reported

__all__ = ["log_failure", "log_success", "logger"]

logger = logging.getLogger("django_gearman.worker")


def log_success(name: str, job: Job, started: float, attempt: int, note: str = "") -> None:
    """``name handle succeeded in N ms (attempt A[, note])``; ``started`` is a perf_counter()."""
    logger.info(
        "%s %s succeeded in %.1f ms (attempt %d%s)",
        name,
        job.handle,
        (time.perf_counter() - started) * 1000,
        attempt,
        f", {note}" if note else "",
    )


def log_failure(
    name: str, job: Job, error: BaseException, started: float, attempt: int, note: str = ""
) -> None:
    """``name handle failed in N ms (attempt A[, note]): Type: message``, with the traceback
    (none for a workload that is not an envelope: the message says all)."""
    logger.error(
        "%s %s failed in %.1f ms (attempt %d%s): %s: %s",
        name,
        job.handle,
        (time.perf_counter() - started) * 1000,
        attempt,
        f", {note}" if note else "",
        type(error).__name__,
        error,
        exc_info=error if not isinstance(error, EnvelopeError) else None,
    )
    reported(error)
