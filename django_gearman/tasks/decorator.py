"""``@gearman_task``: a function that runs as a Gearman function, from a view or anywhere.

::

    from django_gearman import gearman_task

    @gearman_task
    def send_signup_mail(user_id: int) -> None: ...

    send_signup_mail.background(user.pk)           # queue it; returns the job handle
    send_signup_mail.submit(user.pk)               # run it on a worker and wait for the result
    send_signup_mail.background_on_commit(user.pk) # queue it once the transaction commits
    send_signup_mail.using(priority="high", unique=str(user.pk)).background(user.pk)
    send_signup_mail(user.pk)                      # an ordinary call, in this process

The Gearman function is named after the task's import path (``myapp.tasks.send_signup_mail``)
plus the alias's ``PREFIX``. Arguments and results travel as JSON
(:mod:`django_gearman.gearman.envelope`). Every call is prepared here, checked, and handed to the
alias's client backend (``clients[alias].run_tasks``): the real client, or a test double that
gets the very same :class:`~django_gearman.gearman.jobs.Task`. Tasks register themselves in
:data:`registry` when their module is imported; the app imports every installed
app's ``tasks.py`` at start-up, so the worker finds them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from django.db import transaction

from .. import conf
from ..clients import clients
from ..gearman.base import BaseClient
from ..gearman.envelope import decode_error, decode_result, encode_call
from ..gearman.errors import JobError, LocalProtocolError, UsageError
from ..gearman.jobs import JobHandle, Task, TaskState, WorkStatus
from ..gearman.protocol import Priority
from ..gearman.work import check_time_limits
from .batching import current_batch
from .registration import TaskRegistry
from .results import new_task_id

__all__ = [
    "GearmanTask",
    "TaskError",
    "TaskOptions",
    "gearman_task",
    "registry",
    "remote_task",
    "run_many",
]

logger = logging.getLogger("django_gearman.tasks")

P = ParamSpec("P")
R = TypeVar("R")

#: ``backoff(exception, result)``: seconds before the next attempt, or None to give up. As in
#: Django's proposed retry API: ``result`` is None when the task raised (always, for now).
Backoff = Callable[[BaseException, Any], float | None]


class TaskError(JobError):
    """A task failed on the worker: ``type`` and ``message`` as the worker reported them."""

    def __init__(self, task: str, type: str, message: str, *, handle: str | None = None) -> None:
        super().__init__(f"{task} failed: {type + ': ' if type else ''}{message}", handle=handle)
        self.task = task
        self.type = type
        self.message = message


@dataclass(frozen=True)
class TaskOptions:
    """How a task is submitted and run. ``.using(...)`` makes a copy with some changed."""

    name: str
    priority: Priority = Priority.NORMAL
    unique: str | Callable[..., str] | None = None
    timeout: float | None = None  # worker side: CAN_DO_TIMEOUT; client side: how long submit waits
    retries: int = 0
    retry_backoff: float = 1.0  # seconds before the first retry; doubles each time
    retry_backoff_max: float = 600.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    #: ``backoff(exception, result) -> seconds | None``: the delay before the next attempt, or
    #: None not to retry; replaces the exponential ``retry_backoff`` delay when given.
    backoff: Backoff | None = None
    alias: str = conf.DEFAULT_ALIAS
    queue: str = "default"  # a group name for `gearman_worker --queue`
    run_at: datetime | float | None = None
    on_status: Callable[[WorkStatus], None] | None = None
    soft_time_limit: float | None = None  # worker side: SoftTimeLimitExceeded in the task
    time_limit: float | None = None  # worker side: the job fails with TimeLimitExceeded

    @property
    def max_attempts(self) -> int:
        """Every attempt a call gets: the first one and its ``retries``."""
        return self.retries + 1


class GearmanTask(Generic[P, R]):
    """A function made into a Gearman function by :func:`gearman_task`."""

    #: True for :func:`remote_task`: another worker runs it, so ours never offer it.
    remote = False

    def __init__(self, func: Callable[P, R], options: TaskOptions) -> None:
        self.func = func
        self.options = options
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"<GearmanTask {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function here, in this process (as if it were not a task)."""
        return self.func(*args, **kwargs)

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def function_name(self) -> str:
        """The Gearman function name: the alias's prefix plus the task name."""
        return conf.get_settings(self.options.alias).function_name(self.options.name)

    def using(
        self,
        *,
        priority: Priority | str | None = None,
        unique: str | Callable[..., str] | None = None,
        timeout: float | None = None,
        alias: str | None = None,
        run_at: datetime | float | None = None,
        delay: float | timedelta | None = None,
        on_status: Callable[[WorkStatus], None] | None = None,
    ) -> GearmanTask[P, R]:
        """A copy submitted differently: another priority, unique key, server alias, a later
        time (``run_at`` or ``delay``), or a progress callback for :meth:`submit`."""
        changes: dict[str, Any] = {}
        if priority is not None:
            changes["priority"] = Priority.parse(priority)
        if unique is not None:
            changes["unique"] = unique
        if timeout is not None:
            changes["timeout"] = timeout
        if alias is not None:
            changes["alias"] = alias
        if delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            changes["run_at"] = time.time() + seconds
        if run_at is not None:
            changes["run_at"] = run_at
        if on_status is not None:
            changes["on_status"] = on_status
        return type(self)(self.func, replace(self.options, **changes))

    # -- submitting -------------------------------------------------------------------------

    def background(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Queue the task on a worker and return its job handle, without waiting for it to run.
        Inside ``with batch():`` the job is sent pipelined with others and its
        :class:`~django_gearman.gearman.jobs.Task` is returned (``.handle`` once the batch was
        sent). With the alias's ``OUTBOX`` on, a call inside ``atomic()`` goes through the
        outbox like :meth:`background_on_commit`, and returns an empty handle: the job is sent
        once the transaction commits."""
        task = self._task(args, kwargs, background=True)
        if self._settings().outbox and transaction.get_connection().in_atomic_block:
            self._to_outbox(task, using=None)
            return JobHandle("")
        pipelined = current_batch()
        if pipelined is not None:  # inside `with batch():` the Task; .handle comes later
            return pipelined.add(self.options.alias, task)  # type: ignore[return-value]
        client = self._client()
        client.run_tasks([task], timeout=self.options.timeout)
        task.raise_for_state()
        if task.handle is None:
            raise UsageError(f"{type(client).__name__} accepted {self.name} but gave no job handle")
        return task.handle

    def background_on_commit(self, *args: Any, using: str | None = None, **kwargs: Any) -> None:
        """Queue the task once the current database transaction commits (at once outside one),
        so a worker never looks for a row that is not committed yet, and nothing is lost when
        no job server answers: the job is a row of the transactional outbox
        (:mod:`django_gearman.outbox`), written in this transaction and sent after it; a
        rolled-back job never leaves. The arguments are checked now: a value JSON cannot carry
        raises here, not after the commit. The test doubles (``outbox``, ``immediate``) get the
        job at the commit, as before."""
        if not self._settings().reaches_servers:
            encode_call(args, kwargs)  # fail now, in the caller
            transaction.on_commit(lambda: self.background(*args, **kwargs), using=using)
            return
        self._to_outbox(self._task(args, kwargs, background=True), using=using)

    def _to_outbox(self, task: Task, *, using: str | None) -> None:
        from .. import outbox  # noqa: PLC0415 - its model needs the app registry

        outbox.write(self.options.alias, self.name, task, using=using)

    def _settings(self) -> conf.AliasSettings:
        return conf.get_settings(self.options.alias)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task on a worker and return its result; :class:`TaskError` if it failed."""
        task = self._task(args, kwargs, background=False)
        self._client().run_tasks([task], timeout=self.options.timeout)
        return self.result_of(task)

    def result_of(self, task: Task) -> R:
        """The result of a finished foreground :class:`Task` of this task, or its error raised."""
        if task.state is TaskState.COMPLETE:
            return decode_result(task.result or b"")  # type: ignore[no-any-return]
        if task.state is TaskState.EXCEPTION:
            kind, message = decode_error(task.exception or b"")
            raise TaskError(self.name, kind, message, handle=task.handle)
        if task.state is TaskState.FAILED:
            raise TaskError(
                self.name, "", "the worker reported failure (WORK_FAIL)", handle=task.handle
            )
        task.raise_for_state()  # timeout, connection errors
        raise AssertionError(f"{task!r} is not finished")  # pragma: no cover

    def _task(self, args: Sequence[Any], kwargs: dict[str, Any], *, background: bool) -> Task:
        """The job for one call, checked as no server would be asked to: every client backend
        gets it exactly so (the test doubles too)."""
        options = self.options
        # A new task id per submission (never the job handle, which a restarted server reuses):
        # results, failures and retries are keyed by it.
        meta: dict[str, Any] = {"id": new_task_id(), "enqueued_at": round(time.time(), 3)}
        if background:
            meta["background"] = True
        data = encode_call(args, kwargs, meta)
        unique = options.unique
        if callable(unique):
            unique = unique(*args, **kwargs)
        if unique is not None:
            unique = str(unique)
        run_at = options.run_at
        when = None
        if run_at is not None:
            if not background:
                raise UsageError(
                    "run_at/delay only apply to .background(): a foreground job runs now"
                )
            when = run_at.timestamp() if isinstance(run_at, datetime) else float(run_at)
        on_event = None
        if options.on_status is not None and not background:
            callback = options.on_status

            def on_event(event: Any) -> None:
                if isinstance(event, WorkStatus):
                    callback(event)

        priority = Priority.NORMAL if when is not None else options.priority
        task = Task(
            self.function_name,
            data,
            priority,
            unique,
            background=background,
            run_at=when,
            on_event=on_event,
        )
        try:
            task.packet()
        except LocalProtocolError as error:
            raise LocalProtocolError(f"{self.name}: {error}") from None
        return task

    def _client(self) -> BaseClient:
        return clients[self.options.alias]  # type: ignore[no-any-return]


def remote_task(name: str, **options: Any) -> GearmanTask[..., Any]:
    """A task that another language's worker runs (e.g. a PHP worker's ``resize_image``):
    ``.background()``/``.submit()`` work as for any task, with the same JSON envelope, but our
    workers do not offer it and calling it in-process raises. ``name`` is the Gearman function
    name (the alias's ``PREFIX`` is still prepended); ``options`` as for :func:`gearman_task`."""

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{name} is a remote task: run it with .submit() or .background()")

    task = GearmanTask(not_here, _options(not_here, {**options, "name": name}))
    task.remote = True
    return task


def run_many(
    calls: Iterable[tuple[GearmanTask[..., Any], Sequence[Any], dict[str, Any]]],
    *,
    timeout: float | None = None,
) -> list[Any]:
    """Run many task calls in parallel on the workers and return their results in order.

    Each call is ``(task, args, kwargs)``. A failed call's slot holds its :class:`TaskError`
    (nothing is raised), so one failure does not hide the other results.
    """
    calls = list(calls)
    by_alias: dict[str, list[tuple[int, GearmanTask[..., Any], Task]]] = {}
    for index, (task, args, kwargs) in enumerate(calls):
        by_alias.setdefault(task.options.alias, []).append(
            (index, task, task._task(args, kwargs, background=False))
        )
    results: list[Any] = [None] * len(calls)
    for alias, items in by_alias.items():
        clients[alias].run_tasks([item[2] for item in items], timeout=timeout)
        for index, task, low in items:
            try:
                results[index] = task.result_of(low)
            except (TaskError, Exception) as error:  # noqa: BLE001 - every failure is a result here
                results[index] = error
    return results


#: Every task of this process, by name (``remote_task`` ones too).
registry: TaskRegistry[GearmanTask[..., Any]] = TaskRegistry()


@overload
def gearman_task(func: Callable[P, R], /) -> GearmanTask[P, R]: ...


@overload
def gearman_task(
    *,
    name: str | None = None,
    priority: Priority | str = Priority.NORMAL,
    unique: str | Callable[..., str] | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
    retry_backoff: float = 1.0,
    retry_backoff_max: float = 600.0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    alias: str = conf.DEFAULT_ALIAS,
    queue: str = "default",
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
) -> Callable[[Callable[P, R]], GearmanTask[P, R]]: ...


def gearman_task(func: Any = None, /, **options: Any) -> Any:
    """Make a function a Gearman task; bare (``@gearman_task``) or with options.

    ``name`` (default: the import path), ``priority`` (``"high"``, ``"normal"``, ``"low"``),
    ``unique`` (a key, or a callable of the task's arguments; equal keys coalesce into one job),
    ``timeout`` (seconds), ``max_attempts`` (every attempt, so retries + 1; ``retries`` is its
    older alias) for exceptions in ``retry_on``, after ``backoff(exception, result)`` seconds
    (None: no retry) or else an exponential ``retry_backoff``, ``alias`` (a ``GEARMAN`` alias)
    and ``queue`` (a group for ``gearman_worker --queue``).
    """

    def decorate(function: Callable[P, R]) -> GearmanTask[P, R]:
        task = GearmanTask(function, _options(function, options))
        registry.add(task)
        return task

    return decorate(func) if func is not None else decorate


def _options(function: Callable[..., Any], options: dict[str, Any]) -> TaskOptions:
    unknown = set(options) - {
        "name",
        "priority",
        "unique",
        "timeout",
        "retries",
        "max_attempts",
        "backoff",
        "retry_backoff",
        "retry_backoff_max",
        "retry_on",
        "alias",
        "queue",
        "soft_time_limit",
        "time_limit",
    }
    if unknown:
        hint = " (the GEARMAN alias is given as alias=)" if "server" in unknown else ""
        raise TypeError(f"gearman_task() got unknown option(s): {', '.join(sorted(unknown))}{hint}")
    name = options.get("name") or f"{function.__module__}.{function.__qualname__}"
    if not isinstance(name, str) or not name or any(c in name for c in "\0\n\r\t "):
        raise UsageError(
            f"task name {name!r} must be non-empty text without spaces or control characters"
        )
    if "<locals>" in name:
        raise UsageError(
            f"{function.__qualname__} is defined inside a function: a worker could not import it; "
            "give it a name= or move it to module level"
        )
    retries = _retries(options.get("retries"), options.get("max_attempts"))
    backoff = options.get("backoff")
    if backoff is not None and not callable(backoff):
        raise UsageError(
            f"backoff must be a callable (exception, result) -> seconds or None, not {backoff!r}"
        )
    retry_on = options.get("retry_on", Exception)
    if not isinstance(retry_on, tuple):
        retry_on = (retry_on,)
    soft_time_limit, time_limit = check_time_limits(
        options.get("soft_time_limit"), options.get("time_limit")
    )
    return TaskOptions(
        name=name,
        priority=Priority.parse(options.get("priority", Priority.NORMAL)),
        unique=options.get("unique"),
        timeout=options.get("timeout"),
        retries=retries,
        backoff=backoff,
        retry_backoff=float(options.get("retry_backoff", 1.0)),
        retry_backoff_max=float(options.get("retry_backoff_max", 600.0)),
        retry_on=retry_on,
        alias=options.get("alias", conf.DEFAULT_ALIAS),
        queue=options.get("queue", "default"),
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
    )


def _retries(retries: Any, max_attempts: Any) -> int:
    """The retries of ``retries=`` or ``max_attempts=`` (every attempt: retries + 1), checked;
    both given must agree."""
    if max_attempts is not None:
        if type(max_attempts) is not int or max_attempts < 1:
            raise UsageError(
                f"max_attempts must be a whole number of 1 or more, not {max_attempts!r}"
            )
        if retries is not None and retries != max_attempts - 1:
            raise UsageError(
                f"max_attempts={max_attempts} and retries={retries} disagree: max_attempts counts "
                f"every attempt (retries + 1); give one of them"
            )
        return max_attempts - 1
    count = int(retries or 0)
    if count < 0:
        raise UsageError("retries must be 0 or more")
    return count
