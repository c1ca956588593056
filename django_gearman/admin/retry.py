"""Run a failed task again from its row in the results table (the admin's retry action).

Two kinds of rows are retried, both by queueing a new background job that carries the row's id
as its task id (``id`` and ``result_id`` in the envelope's meta) and the next attempt number
(``attempt``, also ``first_attempt``: the re-run gets its task's ``max_attempts`` afresh), so
the worker writes the new outcome into the same row:

- a Django Tasks task (``backend`` is a :class:`~django_gearman.backends.GearmanBackend` alias):
  the row goes back to READY and its job is queued on the backend's queue function, exactly as
  ``enqueue()`` does;
- a failed background ``@gearman_task`` job (``backend`` is ``"gearman_task"``): the task is
  looked up in the registry by name and queued again with the row's arguments.

A row keeps its errors and attempts from before, so its history shows every failed run.

Each re-run is queued under a unique key of its own (``<id>:<attempt>:<random>``), never the
row's id alone: a job server keeps a cancelled job's unique key, and a re-run submitted under it
would join the cancelled job and never run. Two clicks on one page are told apart in the
database instead: only a click that turns the row from FAILED to READY queues a job; the other
answers with that job's handle.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.utils import timezone

from ..clients import clients
from ..gearman.envelope import encode_call
from ..gearman.errors import GearmanError
from ..models import TaskResultRecord
from ..tasks import registry
from ..tasks.results import GEARMAN_TASK_BACKEND, retry_unique

__all__ = ["RetryError", "retry_result"]

logger = logging.getLogger("django_gearman.retry")


class RetryError(GearmanError):
    """A row cannot be retried here: not failed, or its task or backend is unknown."""


def retry_result(record: TaskResultRecord) -> str:
    """Queue ``record``'s task again and return the new job handle; :class:`RetryError` if not
    possible. Only FAILED rows are retried (a READY or RUNNING one is still on its way)."""
    if record.status != TaskResultRecord.Status.FAILED:
        raise RetryError(f"{record.task_path} {record.id} is {record.status}, not FAILED")
    attempt = record.attempts + 1
    meta: dict[str, Any] = {
        "id": record.id,
        "enqueued_at": round(time.time(), 3),
        "background": True,
        "result_id": record.id,
        "attempt": attempt,
        "first_attempt": attempt,
    }
    if record.backend == GEARMAN_TASK_BACKEND:
        client, function, priority = _gearman_task_target(record)
    else:
        client, function, priority = _tasks_backend_target(record, meta)
    data = encode_call(record.args, record.kwargs, meta)
    row = TaskResultRecord.objects.filter(pk=record.pk)
    # READY before the job exists (a fast worker's outcome must not be overwritten by it), and
    # only from FAILED: a second click on the same page joins the first one's job.
    claimed = row.filter(status=TaskResultRecord.Status.FAILED).update(
        status=TaskResultRecord.Status.READY,
        finished_at=None,
        return_value=None,
        enqueued_at=timezone.now(),
    )
    if not claimed:
        return _already_retried(record)
    try:
        unique = retry_unique(record.id, attempt)
        handle = str(client.submit_background(function, data, priority=priority, unique=unique))
    except BaseException:
        row.update(
            status=record.status, finished_at=record.finished_at, enqueued_at=record.enqueued_at
        )
        raise
    row.update(job_handle=handle)
    logger.info("retrying %s %s as job %s", record.task_path, record.id, handle)
    return handle


def _already_retried(record: TaskResultRecord) -> str:
    """The handle of the job another request queued for ``record`` since it was loaded."""
    current = TaskResultRecord.objects.filter(pk=record.pk).first()
    if current is None:
        raise RetryError(f"{record.task_path} {record.id} was deleted")
    if current.job_handle and current.job_handle != record.job_handle:
        return current.job_handle
    raise RetryError(f"{record.task_path} {record.id} is being retried already")


def _gearman_task_target(record: TaskResultRecord) -> tuple[Any, str, Any]:
    task = registry.get(record.task_path)
    if task is None or task.remote:
        raise RetryError(
            f"no @gearman_task named {record.task_path!r} is registered in this process"
        )
    return clients[task.options.alias], task.function_name, task.options.priority


def _tasks_backend_target(record: TaskResultRecord, meta: dict[str, Any]) -> tuple[Any, str, Any]:
    from ..backends import GearmanBackend, task_backends, tasks_priority  # noqa: PLC0415 - needs a Tasks framework

    try:
        backend = task_backends[record.backend]
    except Exception:  # noqa: BLE001 - InvalidTaskBackend and friends: say which
        raise RetryError(f"no Tasks backend {record.backend!r} in TASKS") from None
    if not isinstance(backend, GearmanBackend):
        raise RetryError(f"the Tasks backend {record.backend!r} is not a GearmanBackend")
    if record.queue_name not in backend.queues:
        raise RetryError(
            f"the queue {record.queue_name!r} is not in the {record.backend!r} backend's QUEUES"
        )
    meta.update(task=record.task_path, backend=record.backend)
    return (
        clients[backend.gearman_alias],
        backend.function_name(record.queue_name),
        tasks_priority(record.priority),
    )
