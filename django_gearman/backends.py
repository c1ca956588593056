"""A Django Tasks backend on Gearman::

    TASKS = {"default": {"BACKEND": "django_gearman.backends.GearmanBackend"}}


Works with ``django.tasks`` (Django 6.x) and with the ``django-tasks`` backport (Django 5.2).

- ``task.enqueue(...)`` writes a :class:`~django_gearman.models.TaskResultRecord` (READY) and
  queues a background job; ``run_after`` makes it a scheduled job (``SUBMIT_JOB_EPOCH``), and the
  task's priority (-100..100) maps to Gearman's high (> 0), normal (0) and low (< 0).
- Each queue of the backend is one Gearman function, ``django_tasks.<queue>`` (plus the
  ``GEARMAN`` alias's prefix); the envelope's ``meta`` names the task (its module path) and the
  result row. ``manage.py gearman_worker`` offers these functions too (see
  :func:`worker_functions`): the worker finds the task among the Task objects of modules it has
  imported (every installed app's ``tasks`` module; it imports no module a job names), runs it
  only for the READY row ``enqueue()`` wrote, of that task, backend and queue (the job's
  function), and records RUNNING, then SUCCESSFUL with the return value or FAILED with the
  traceback. A job naming anything else fails
  (:class:`~django_gearman.gearman.errors.UsageError`) and touches no row.
- ``get_result(id)`` reads that row, so results are visible from any process.

``OPTIONS``: ``"ALIAS"``: the ``GEARMAN`` alias to submit to (default ``"default"``).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.module_loading import autodiscover_modules, import_string

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
    _discover_task_modules()  # at worker start: the modules its jobs' tasks may come from
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
    as ``@gearman_task`` jobs are logged (:mod:`django_gearman.tasks.outcomes`).

    Only the task and row ``enqueue()`` queued run: a job naming a task no imported module
    holds, or a row that is not its READY one on this queue, fails and changes no row."""
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
    """Check the job against its row, claim the row (RUNNING), run the task, record the end."""
    from .models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

    note = f"result {result_id}"
    try:
        record = _claimable_record(job, call, task_path, result_id)
        task = _task_for(record)
        now = timezone.now()
        worker_ids = [*record.worker_ids, f"{socket.gethostname()}-{os.getpid()}"]
        # Claimed only as read: a second job for this row (a duplicate submit) finds it changed.
        claimed = TaskResultRecord.objects.filter(
            pk=record.pk, status=record.status, last_attempted_at=record.last_attempted_at
        ).update(
            status=TaskResultRecord.Status.RUNNING,
            started_at=record.started_at or now,
            last_attempted_at=now,
            worker_ids=worker_ids,
        )
        if not claimed:
            raise UsageError(
                f"the result row {result_id!r} changed while this job claimed it "
                "(another job for it runs)"
            )
    except Exception as error:
        log_failure(task_path, job, error, started, 1, note)
        raise
    record.status = TaskResultRecord.Status.RUNNING
    record.started_at = record.started_at or now
    record.last_attempted_at = now
    record.worker_ids = worker_ids
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


def _claimable_record(job: Job, call: Call, task_path: str, result_id: str) -> Any:
    """The row ``enqueue()`` wrote for this job, or :class:`UsageError`.

    Anyone who reaches the job server can submit a job, so the envelope only *names* a row: the
    row must exist (a job no ``enqueue()`` queued has none), be READY (or RUNNING: the server
    re-queued the job after its worker died), be this task's, with this job's arguments, and
    belong to a backend and queue whose Gearman function is the one the job arrived on.
    """
    from .models import TaskResultRecord  # noqa: PLC0415 - models need the app registry

    queues = _function_queues(job.function)
    if not queues:
        raise UsageError(
            f"the Gearman function {job.function!r} is no queue of a GearmanBackend in TASKS"
        )
    record = TaskResultRecord.objects.filter(pk=result_id).first()
    if record is None:
        raise UsageError(
            f"no result row {result_id!r}: a Django Tasks job runs only for the READY row its "
            "enqueue() wrote (a job from another client, or a row deleted since)"
        )
    if record.task_path != task_path:
        raise UsageError(
            f"the result row {result_id!r} is the task {record.task_path!r}'s, not {task_path!r}'s"
        )
    if (record.backend, record.queue_name) not in queues:
        raise UsageError(
            f"the result row {result_id!r} is of backend {record.backend!r}, queue "
            f"{record.queue_name!r}, whose jobs do not come on {job.function!r}"
        )
    meta_backend = call.meta.get("backend", record.backend)
    if meta_backend != record.backend:
        raise UsageError(
            f"the job names backend {meta_backend!r}, its result row {result_id!r} "
            f"backend {record.backend!r}"
        )
    if record.status not in (TaskResultRecord.Status.READY, TaskResultRecord.Status.RUNNING):
        raise UsageError(
            f"the result row {result_id!r} is {record.status}, not READY: its task has run"
        )
    if call.args != record.args or call.kwargs != record.kwargs:
        raise UsageError(
            f"the job's arguments are not those its result row {result_id!r} was enqueued with"
        )
    return record


def _function_queues(function: str) -> set[tuple[str, str]]:
    """(backend alias, queue) of every GearmanBackend queue whose Gearman function is
    ``function``: the only rows a job arriving on it may run (read per job, as TASKS is)."""
    queues: set[tuple[str, str]] = set()
    for alias in task_backends:
        backend = task_backends[alias]
        if isinstance(backend, GearmanBackend):
            queues.update(
                (alias, queue)
                for queue in backend.queues
                if backend.function_name(queue) == function
            )
    return queues


def _task_for(record: Any) -> Task:
    """The Task that runs ``record``: found among imported modules (:func:`_imported_task`),
    with the backend, queue and priority it was enqueued with, as ``get_result()`` makes it
    (``task.using(queue_name=...)`` enqueues a copy on another queue)."""
    task = _imported_task(record.task_path)
    return task.using(
        priority=record.priority, queue_name=record.queue_name, backend=record.backend
    )


@functools.cache
def _discover_task_modules() -> None:
    """Import every installed app's ``tasks`` module, once, as the app does at start-up: the
    modules a worker's Django Tasks come from."""
    autodiscover_modules("tasks")


def _imported_task(path: str) -> Task:
    """The Task whose ``module_path`` is ``path``, in a module this process has imported
    already (every installed app's ``tasks`` module, and what those import); UsageError else.

    Nothing is imported: a job names its task, and importing what a job names runs any
    module's import side effects before any check. A Task is a module-level function
    (``validate_task`` says so), so it is the global ``name`` of the module ``path`` names.
    The module's ``__dict__`` is read, not its attributes, so no module ``__getattr__`` runs.
    """
    _discover_task_modules()
    module_name, _, name = path.rpartition(".")
    module = sys.modules.get(module_name) if module_name else None
    # object.__getattribute__: a lazy module's own __getattribute__ would load it.
    task = (
        object.__getattribute__(module, "__dict__").get(name)
        if isinstance(module, types.ModuleType)
        else None
    )
    if not isinstance(task, Task) or task.module_path != path:
        raise UsageError(
            f"{path!r} is not a task of a module this worker imported: a worker imports no "
            "module a job names, so define the task in an installed app's tasks module (or "
            "import its module there)"
            + (f" ({type(task).__name__}, not a Task)" if task is not None else "")
        )
    return task


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
    """The Task at ``path``, imported if need be: for :meth:`GearmanBackend.get_result`, whose
    path is one a row holds (``enqueue()`` wrote it), never for a job's (:func:`_imported_task`)."""
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
