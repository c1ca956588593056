"""Test doubles as client backends: record jobs (``outbox``) or run them here (``immediate``).

Choose one with an alias's ``BACKEND``, in test settings or with ``override_settings``, the way
Django's test runner swaps in the ``locmem`` mail backend::

    GEARMAN = {"default": {"BACKEND": "outbox"}}       # or "django_gearman.testing.OutboxClient"

    def test_signup_queues_the_mail(client, gearman_outbox):
        client.post("/signup/", {...})
        [sent] = gearman_outbox
        assert sent.task == "accounts.tasks.send_signup_mail" and sent.args == [user.pk]

A double receives exactly what the real client would send: the ``Task`` that ``@gearman_task``
prepared, after every check (JSON arguments, the unique key's size, ``delay`` only on
``.background()``...), so a test fails where production would.

- :class:`OutboxClient` runs nothing: it appends a :class:`Submission` to :data:`outbox` for each
  job (a foreground ``.submit()`` then returns None).
- :class:`ImmediateClient` runs each job at once in the calling thread, with its arguments and
  result passed through JSON as a worker would see them: ``.submit()`` returns the result or
  raises :class:`~django_gearman.tasks.TaskError`; a failing ``.background()`` is logged and kept
  in :data:`errors`, as a worker's failure would be, instead of failing the caller. It runs the
  ``@gearman_task`` functions of this process and the Django Tasks backend's queues; there are no
  retries, and scheduled jobs run at once.

:func:`clear` empties both lists; the ``gearman_outbox`` pytest fixture (registered by this
package's pytest plugin) switches every alias to the outbox and empties it for each test.
"""

from __future__ import annotations

import abc
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .gearman.base import BaseClient
from .gearman.envelope import decode_call, decode_error, encode_result
from .gearman.errors import UsageError
from .gearman.jobs import JobHandle, Task, TaskState, payload
from .gearman.protocol import JobAssigned, Outcome, WorkData, WorkStatus, WorkWarning
from .gearman.work import Job, perform
from .tasks import registry

__all__ = ["ImmediateClient", "OutboxClient", "Submission", "clear", "errors", "outbox"]

logger = logging.getLogger("django_gearman.testing")


@dataclass(frozen=True)
class Submission:
    """One job recorded in :data:`outbox`: the task's name and alias (when the job is a
    ``@gearman_task`` of this process; else the function name and None), the Gearman function,
    the call's JSON arguments, and how it was submitted."""

    task: str
    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    background: bool
    priority: str
    unique: str | None
    run_at: float | None
    alias: str | None


#: Every job recorded by :class:`OutboxClient`, in order.
outbox: list[Submission] = []
#: ``(task name, exception)`` of background jobs that failed under :class:`ImmediateClient`.
errors: list[tuple[str, BaseException]] = []
_handles = itertools.count(1)


def clear() -> None:
    """Empty :data:`outbox` and :data:`errors`."""
    outbox.clear()
    errors.clear()


class _Double(BaseClient):
    """A client backend with no server: each Task is checked and answered here."""

    name = "double"

    def __init__(self, servers: Any = None, **options: Any) -> None:
        self.servers = servers
        self.options = options

    def run_tasks(self, tasks: Sequence[Task], *, timeout: float | None = None) -> Sequence[Task]:
        for task in tasks:
            task.packet()  # what the real client checks before sending
            task.handle = JobHandle(f"{self.name}:{next(_handles)}")
            self.handle(task)
        return tasks

    @abc.abstractmethod
    def handle(self, task: Task) -> None:
        """Answer one checked task: record it, or run it."""


class OutboxClient(_Double):
    """Records every job in :data:`outbox`; runs nothing."""

    name = "outbox"

    def handle(self, task: Task) -> None:
        call = decode_call(task.data)
        found = _task_for(task.function)
        outbox.append(
            Submission(
                task=found.name if found else task.function,
                function=task.function,
                args=call.args,
                kwargs=call.kwargs,
                background=task.background,
                priority=task.priority.label,
                unique=task.unique,
                run_at=task.run_at,
                alias=found.options.alias if found else None,
            )
        )
        if task.background:
            task.state = TaskState.CREATED
        else:
            task.result, task.state = b"", TaskState.COMPLETE


class ImmediateClient(_Double):
    """Runs every job now, in this thread, as a worker of this process would."""

    name = "immediate"

    def handle(self, task: Task) -> None:
        callback, name = _runner_for(task.function)
        if callback is None:
            task.state = TaskState.ERROR
            task.error = UsageError(
                f"no task of this process runs the Gearman function {task.function!r} "
                "(the immediate backend runs only this process's @gearman_task functions and Tasks "
                "queues)"
            )
            return
        job = _LocalJob(task)
        if task.background:
            task.state = TaskState.CREATED
            outcome, data = perform(callback, job)
            if outcome is not Outcome.COMPLETE:
                errors.append((name, job.error or _Failed(name, data)))
            return
        outcome, data = perform(callback, job)
        if outcome is Outcome.COMPLETE:
            task.result, task.state = data, TaskState.COMPLETE
        elif outcome is Outcome.EXCEPTION:
            task.exception, task.state = data, TaskState.EXCEPTION
        else:
            task.state = TaskState.FAILED


class _Failed(Exception):
    """A background job that failed under the immediate backend, as its worker would report it."""

    def __init__(self, task: str, payload: bytes) -> None:
        kind, message = decode_error(payload)
        super().__init__(f"{task} failed: {kind + ': ' if kind else ''}{message}")
        self.type, self.message = kind, message


class _LocalJob(Job):
    """A job run here: progress goes straight to the submitting Task."""

    __slots__ = ("_task", "error")

    def __init__(self, task: Task) -> None:
        assigned = JobAssigned(
            str(task.handle).encode(),
            task.function.encode(),
            (task.unique or "").encode(),
            task.data,
        )
        super().__init__(None, assigned)
        self._task = task
        self.error: BaseException | None = None

    @property
    def server(self) -> Any:
        return None

    def send_data(self, data: bytes | str) -> None:
        self._event(WorkData(self.handle, payload(data)))

    def send_warning(self, data: bytes | str) -> None:
        self._event(WorkWarning(self.handle, payload(data)))

    def send_status(self, numerator: int, denominator: int) -> None:
        self._event(WorkStatus(self.handle, int(numerator), int(denominator)))

    def _event(self, event: WorkData | WorkWarning | WorkStatus) -> None:
        if self._task.on_event is not None:
            self._task.on_event(event)


def _task_for(function: str) -> Any:
    """The ``@gearman_task`` of this process whose Gearman function is ``function``, or None."""
    for task in registry.values():
        if task.function_name == function:
            return task
    return None


def _runner_for(function: str) -> tuple[Callable[[Job], bytes] | None, str]:
    """What a worker of this process would run for ``function``, and its name for messages."""
    task = _task_for(function)
    if task is not None and not task.remote:

        def run(job: Job) -> bytes:  # immediate mode: one attempt, nothing recorded
            call = decode_call(job.data)
            try:
                return encode_result(task.func(*call.args, **call.kwargs))
            except Exception as error:
                if isinstance(job, _LocalJob):
                    job.error = error  # kept in `errors` as raised, not as its JSON
                raise

        return run, task.name
    try:
        from .backends import worker_functions  # noqa: PLC0415 - needs a Tasks framework
    except ImportError:  # no Django Tasks framework installed
        return None, function
    return worker_functions().get(function), function
