"""A Django Tasks backend on Gearman::

    TASKS = {"default": {"BACKEND": "django_gearman.backends.GearmanBackend"}}


Works with ``django.tasks`` (Django 6.x) and with the ``django-tasks`` backport (Django 5.2).

- ``task.enqueue(...)`` writes a :class:`~django_gearman.models.TaskResultRecord` (READY) and
  queues a background job; ``run_after`` makes it a scheduled job (``SUBMIT_JOB_EPOCH``), and the
  task's priority (-100..100) maps to Gearman's high (> 0), normal (0) and low (< 0).
- Each queue of the backend is one Gearman function, ``django_tasks.<queue>`` (plus the
  ``GEARMAN`` alias's prefix); the envelope's ``meta`` names the task (its module path) and the
  result row. ``manage.py gearman_worker`` offers these functions too (see
  :func:`worker_functions`): the worker imports the task, checks that it is a Task, runs it,
  and records RUNNING, then SUCCESSFUL with the return value or FAILED with the traceback.
- ``get_result(id)`` reads that row, so results are visible from any process.

``OPTIONS``: ``"ALIAS"``: the ``GEARMAN`` alias to submit to (default ``"default"``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.module_loading import import_string

from . import conf
from .clients import clients
from .gearman.envelope import Call, decode_call, encode_call, encode_result
from .gearman.errors import UsageError
from .gearman.protocol import Priority
from .gearman.work import Job
from .tasks.outcomes import log_failure, log_success
from .tasks.results import error_record

try:  # Django 6.x
    from django.tasks import TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2 with the django-tasks backport
    try:
        from django_tasks import TaskResultStatus, task_backends  # type: ignore[no-redef]
    except ImportError as error:  # neither: say what to install, not "No module named ..."
        raise ModuleNotFoundError(
            "django_gearman.backends runs on Django's Tasks framework: django.tasks (Django 6) "
            "or the django-tasks backport, and neither can be imported. "
            + conf.TASKS_FRAMEWORK_HINT,
            name=error.name,
        ) from error
    from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef]
    from django_tasks.base import Task, TaskContext, TaskError, TaskResult  # type: ignore[no-redef]
    from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef]
    from django_tasks.signals import task_enqueued, task_finished, task_started  # type: ignore[no-redef]
    from django_tasks.utils import normalize_json  # type: ignore[no-redef]

__all__ = [
    "FUNCTION_PREFIX",
    "GearmanBackend",
    "quiet_framework_logs",
    "tasks_priority",
    "worker_functions",
    "worker_queues",
]

logger = logging.getLogger("django_gearman.backends")

FUNCTION_PREFIX = "django_tasks."


class GearmanBackend(BaseTaskBackend):
    """Runs Django Tasks on Gearman workers, with results in the database."""

    supports_defer = True
    supports_priority = True
    supports_get_result = True
    supports_async_task = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.gearman_alias: str = self.options.get("ALIAS", conf.DEFAULT_ALIAS)

    def function_name(self, queue_name: str) -> str:
        """The Gearman function that carries this backend's tasks of ``queue_name``."""
        return conf.get_settings(self.gearman_alias).function_name(FUNCTION_PREFIX + queue_name)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        from .models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        result_id = get_random_string(32)
        now = timezone.now()
        record = TaskResultRecord.objects.create(
            id=result_id,
            task_path=task.module_path,
            backend=self.alias,
            queue_name=task.queue_name,
            priority=task.priority,
            args=args,
            kwargs=kwargs,
            enqueued_at=now,
            run_after=task.run_after,
        )
        meta = {
            "task": task.module_path,
            "result_id": result_id,
            "backend": self.alias,
            "background": True,
        }
        data = encode_call(args, kwargs, meta)
        client = clients[self.gearman_alias]
        function = self.function_name(task.queue_name)
        if task.run_after is not None:
            handle = client.submit_background(
                function, data, unique=result_id, run_at=task.run_after
            )
        else:
            handle = client.submit_background(
                function, data, unique=result_id, priority=tasks_priority(task.priority)
            )
        TaskResultRecord.objects.filter(pk=record.pk).update(job_handle=str(handle))
        result = _to_result(task, record)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        from .models import TaskResultRecord  # noqa: PLC0415

        try:
            record = TaskResultRecord.objects.get(pk=result_id, backend=self.alias)
        except TaskResultRecord.DoesNotExist:
            raise TaskResultDoesNotExist(result_id) from None
        task = _import_task(record.task_path)
        return _to_result(
            task.using(priority=record.priority, queue_name=record.queue_name, backend=self.alias),
            record,
        )


def worker_queues(
    gearman_alias: str | None = None,
) -> dict[str, tuple[str, Callable[[Job], bytes]]]:
    """Gearman function -> (queue, worker callback) for every queue of every GearmanBackend in
    TASKS (those submitting to the ``GEARMAN`` alias ``gearman_alias``, or all)."""
    functions: dict[str, tuple[str, Callable[[Job], bytes]]] = {}
    for alias in task_backends:
        backend = task_backends[alias]
        if isinstance(backend, GearmanBackend):
            if gearman_alias is None or backend.gearman_alias == gearman_alias:
                for queue in sorted(backend.queues):
                    functions[backend.function_name(queue)] = (queue, run_job)
    return functions


def worker_functions() -> dict[str, Callable[[Job], bytes]]:
    """Gearman function -> worker callback for every queue of every GearmanBackend in TASKS."""
    return {function: callback for function, (_, callback) in worker_queues().items()}


def run_job(job: Job) -> bytes:
    """Run one Django Tasks job on a worker, record its outcome in its result row, and log it
    as ``@gearman_task`` jobs are logged (:mod:`django_gearman.tasks.outcomes`)."""
    from django.db import close_old_connections  # noqa: PLC0415

    started = time.perf_counter()
    call = decode_call(job.data)
    result_id = call.meta.get("result_id")
    task_path = call.meta.get("task")
    if not isinstance(result_id, str) or not isinstance(task_path, str):
        error = UsageError('a Django Tasks job needs "task" and "result_id" in its envelope meta')
        log_failure(job.function, job, error, started, 1)
        raise error
    close_old_connections()
    try:
        return _run_recorded(job, call, task_path, result_id, started)
    finally:
        close_old_connections()


def _run_recorded(job: Job, call: Call, task_path: str, result_id: str, started: float) -> bytes:
    from .models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

    note = f"result {result_id}"
    try:
        record = TaskResultRecord.objects.filter(pk=result_id).first()
        task = _import_task(task_path)
    except Exception as error:
        log_failure(task_path, job, error, started, 1, note)
        raise
    now = timezone.now()
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    if record is None:  # enqueued by another client, or its row was deleted: make one
        record = TaskResultRecord(
            id=result_id,
            task_path=task_path,
            backend=str(call.meta.get("backend", "default")),
            queue_name=task.queue_name,
            args=call.args,
            kwargs=call.kwargs,
        )
    record.status = TaskResultRecord.Status.RUNNING
    record.started_at = record.started_at or now
    record.last_attempted_at = now
    record.worker_ids = [*record.worker_ids, worker_id]
    record.save()
    attempt = len(record.worker_ids)
    result = _to_result(task, record)
    task_started.send(sender=GearmanBackend, task_result=result)
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *call.args, **call.kwargs)
        else:
            value = task.call(*call.args, **call.kwargs)
        value = normalize_json(value)
        data = encode_result(value)
    except Exception as error:
        log_failure(task_path, job, error, started, attempt, note)
        record.status = TaskResultRecord.Status.FAILED
        record.finished_at = timezone.now()
        record.errors = [*record.errors, error_record(error)]
        record.save(update_fields=["status", "finished_at", "errors"])
        task_finished.send(sender=GearmanBackend, task_result=_to_result(task, record))
        raise
    record.status = TaskResultRecord.Status.SUCCESSFUL
    record.finished_at = timezone.now()
    record.return_value = value
    record.save(update_fields=["status", "finished_at", "return_value"])
    task_finished.send(sender=GearmanBackend, task_result=_to_result(task, record))
    log_success(task_path, job, started, attempt, note)
    return data


def quiet_framework_logs() -> None:
    """Turn off the Tasks framework's own ``Task id=... state=...`` log lines in this process.

    A worker logs every job's outcome itself, with its traceback (``run_job()``); the
    framework's receivers would log each a second time, a failure with a second traceback.
    ``manage.py gearman_worker`` calls this when it offers the backend's queues.
    """
    module = sys.modules[Task.__module__.rpartition(".")[0] + ".signals"]  # ours: imported
    for signal, name in ((task_started, "log_task_started"), (task_finished, "log_task_finished")):
        receiver = getattr(module, name, None)
        if receiver is not None:
            signal.disconnect(receiver)


def _import_task(path: str) -> Task:
    try:
        task = import_string(path)
    except ImportError as error:
        raise UsageError(f"cannot import the task {path!r}: {error}") from None
    if not isinstance(task, Task):
        raise UsageError(f"{path!r} is not a Task (decorate it with @task)")
    return task


def tasks_priority(priority: int) -> Priority:
    """Gearman's priority for a Django Tasks priority (-100..100): high above 0, low below."""
    return Priority.HIGH if priority > 0 else Priority.LOW if priority < 0 else Priority.NORMAL


def _to_result(task: Task, record: Any) -> TaskResult:
    result: TaskResult = TaskResult(
        task=task,
        id=record.id,
        status=TaskResultStatus(record.status),
        enqueued_at=record.enqueued_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        last_attempted_at=record.last_attempted_at,
        args=record.args,
        kwargs=record.kwargs,
        backend=record.backend,
        errors=[
            TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"])
            for e in record.errors
        ],
        worker_ids=list(record.worker_ids),
    )
    object.__setattr__(result, "_return_value", record.return_value)
    return result
