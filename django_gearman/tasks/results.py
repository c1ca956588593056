"""The results table's writers for ``@gearman_task`` jobs: failures and admin retries.

A failed background job has no client to receive its error, so its last failure is kept in
:class:`~django_gearman.models.TaskResultRecord` (backend ``"gearman_task"``); a job re-run from
the admin carries its row's id and writes its new outcome there. A database problem is logged,
never raised: the job's outcome must still reach the job server.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.utils import timezone

from ..gearman.work import Job

if TYPE_CHECKING:
    from .decorator import GearmanTask

__all__ = ["GEARMAN_TASK_BACKEND", "error_record", "record_failure", "record_success"]

logger = logging.getLogger("django_gearman.worker")

#: ``TaskResultRecord.backend`` of failed background ``@gearman_task`` jobs.
GEARMAN_TASK_BACKEND = "gearman_task"


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
    result_id: str | None,
) -> None:
    """Keep a failed background job in the results table (admin: Task results), since no
    client is there to receive its error; a retry from the admin (``result_id``) adds to its
    row. A database problem is logged, never raised: the job's outcome must still reach the
    server."""
    from ..models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

    now = timezone.now()
    failure = error_record(error)
    attempts = [f"attempt {n}" for n in range(1, attempt + 1)]
    try:
        record = TaskResultRecord.objects.filter(pk=result_id).first() if result_id else None
        if record is not None:
            record.status = TaskResultRecord.Status.FAILED
            record.errors = [*record.errors, failure]
            record.worker_ids = [*record.worker_ids, *(f"retry {n}" for n in range(1, attempt + 1))]
            record.job_handle, record.last_attempted_at, record.finished_at = job.handle, now, now
            record.save()
            return
        TaskResultRecord.objects.create(
            id=f"{job.server}/{job.handle}"[:64],
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
        logger.warning("could not record the failure of %s %s: %s", task.name, job.handle, db_error)


def record_success(result_id: str, job: Job, result: Any) -> None:
    """A retried job succeeded: its row says so (a database problem is logged, not raised)."""
    from ..models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

    try:
        record = TaskResultRecord.objects.filter(pk=result_id).first()
        if record is None:
            return
        now = timezone.now()
        record.status = TaskResultRecord.Status.SUCCESSFUL
        record.return_value = result
        record.worker_ids = [*record.worker_ids, "retry"]
        record.job_handle, record.last_attempted_at, record.finished_at = job.handle, now, now
        record.save()
    except DatabaseError as db_error:
        logger.warning("could not record the retried %s %s: %s", result_id, job.handle, db_error)
