"""The results table's writers for ``@gearman_task`` jobs, and the task ids they are keyed by.

Every submission carries a task id in its envelope (``meta["id"]``, :func:`new_task_id`), and a
job that comes without one (a PHP client) gets one at the worker (:func:`task_id_of`). The id,
never the job handle, keys everything a task leaves behind: a handle is only the server's name
for one job, and a restarted server numbers its handles from 1 again. Retries of one call keep
the id and count ``meta["attempt"]`` up; each is queued under a unique key of its own
(:func:`retry_unique`), so it never coalesces onto an earlier, cancelled or finished, job.

A failed background job has no client to receive its error, so its last failure is kept in
:class:`~django_gearman.models.TaskResultRecord` (backend ``"gearman_task"``) under its task id;
a job re-run from the admin carries the same id and writes its new outcome there. A database
problem is logged, never raised: the job's outcome must still reach the job server.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import traceback
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.utils import timezone

from ..gearman.protocol import MAX_UNIQUE_SIZE
from ..gearman.work import Job

if TYPE_CHECKING:
    from .decorator import GearmanTask

__all__ = [
    "GEARMAN_TASK_BACKEND",
    "MAX_TASK_ID_LENGTH",
    "error_record",
    "new_task_id",
    "record_failure",
    "record_success",
    "retry_unique",
    "task_id_of",
]

logger = logging.getLogger("django_gearman.worker")

#: ``TaskResultRecord.backend`` of failed background ``@gearman_task`` jobs.
GEARMAN_TASK_BACKEND = "gearman_task"
#: The longest task id taken from an envelope: under 64 characters, as Django Tasks requires of
#: result ids (and as ``TaskResultRecord.id`` holds).
MAX_TASK_ID_LENGTH = 63


def new_task_id() -> str:
    """A fresh task id: a random UUID as 32 hex digits."""
    return uuid.uuid4().hex


def task_id_of(meta: Mapping[str, Any]) -> str | None:
    """The task id an envelope's meta carries, or None when it has none a results row can hold
    (not text, empty, or 64 characters and more)."""
    value = meta.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_TASK_ID_LENGTH:
        return value
    return None


def retry_unique(task_id: str, attempt: int) -> str:
    """The unique key of a re-submission of task ``task_id`` as ``attempt``:
    ``"<id>:<attempt>:<8 random hex digits>"``, the id's digest in place of an id too long for
    Gearman's 64 bytes. Random so that it is never an earlier job's key: a server keeps a
    cancelled job's key, and a submit under it would join that job and never run."""
    nonce = secrets.token_hex(4)
    key = f"{task_id}:{attempt}:{nonce}"
    if len(key.encode()) > MAX_UNIQUE_SIZE:
        key = f"{hashlib.sha256(task_id.encode()).hexdigest()[:32]}:{attempt}:{nonce}"
    return key


def error_record(error: BaseException) -> dict[str, str]:
    """One entry of a row's ``errors``: the exception's class path and its traceback (the shape
    of Django Tasks' ``TaskError``)."""
    return {
        "exception_class_path": f"{type(error).__module__}.{type(error).__qualname__}",
        "traceback": "".join(traceback.format_exception(error)),
    }


def record_failure(
    task: GearmanTask[..., Any],
    job: Job,
    error: BaseException,
    attempt: int,
    args: list[Any],
    kwargs: dict[str, Any],
    task_id: str,
    first_attempt: int = 1,
) -> None:
    """Keep a failed background job in the results table (admin: Task results) under its task
    id, since no client is there to receive its error. A row of that id already there (the
    task was re-run from the admin) gets this failure added to its history. ``first_attempt``
    to ``attempt`` are the attempts of this run. A database problem is logged, never raised:
    the job's outcome must still reach the server."""
    from ..models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

    now = timezone.now()
    failure = error_record(error)
    attempts = [f"attempt {n}" for n in range(min(first_attempt, attempt), attempt + 1)]
    try:
        record = TaskResultRecord.objects.filter(pk=task_id).first()
        if record is not None:
            record.status = TaskResultRecord.Status.FAILED
            record.errors = [*record.errors, failure]
            record.worker_ids = [*record.worker_ids, *attempts]
            record.job_handle, record.last_attempted_at, record.finished_at = job.handle, now, now
            record.save()
            return
        TaskResultRecord.objects.create(
            id=task_id,
            task_path=task.name,
            backend=GEARMAN_TASK_BACKEND,
            queue_name=task.options.queue,
            status=TaskResultRecord.Status.FAILED,
            args=args,
            kwargs=kwargs,
            errors=[failure],
            worker_ids=attempts,
            job_handle=job.handle,
            last_attempted_at=now,
            finished_at=now,
        )
    except DatabaseError as db_error:
        logger.warning(
            "could not record the failure of %s %s (task %s): %s",
            task.name,
            job.handle,
            task_id,
            db_error,
        )


def record_success(
    result_id: str, job: Job, result: Any, attempt: int = 1, *, first_attempt: int = 1
) -> None:
    """A job re-run from the admin succeeded: its row says so, with this run's attempts
    (``first_attempt`` to ``attempt``) added (a database problem is logged, not raised)."""
    from ..models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

    try:
        record = TaskResultRecord.objects.filter(pk=result_id).first()
        if record is None:
            return
        now = timezone.now()
        record.status = TaskResultRecord.Status.SUCCESSFUL
        record.return_value = result
        attempts = [f"attempt {n}" for n in range(min(first_attempt, attempt), attempt + 1)]
        record.worker_ids = [*record.worker_ids, *attempts]
        record.job_handle, record.last_attempted_at, record.finished_at = job.handle, now, now
        record.save()
    except DatabaseError as db_error:
        logger.warning("could not record the retried %s %s: %s", result_id, job.handle, db_error)
