"""The values a client hands out: job handles, statuses, progress events and task-set tasks."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .exceptions import JobException, JobFailed, JobTimeout
from .protocol import Priority
from .transport import ServerAddress

__all__ = [
    "JobHandle",
    "JobStatus",
    "Task",
    "TaskState",
    "WorkComplete",
    "WorkData",
    "WorkEvent",
    "WorkStatus",
    "WorkWarning",
]


class JobHandle(str):
    """A job handle as the server gave it, remembering which server (``.server``) holds the job.

    Two gearmand instances on one host hand out the same handles (``H:host:1``), so
    :meth:`GearmanClient.get_status` needs to know which one to ask.
    """

    server: ServerAddress | None

    def __new__(cls, handle: str, server: ServerAddress | None = None) -> JobHandle:
        self = super().__new__(cls, handle)
        self.server = server
        return self


class JobStatus(NamedTuple):
    """A job's status as the server reports it (``GET_STATUS`` / ``GET_STATUS_UNIQUE``).

    ``waiting`` is the number of attached clients, which only ``GET_STATUS_UNIQUE`` reports.
    """

    handle: str
    known: bool
    running: bool
    numerator: int
    denominator: int
    waiting: int | None = None


class WorkData(NamedTuple):
    """Data the worker sent while running (``WORK_DATA``)."""

    handle: str
    data: bytes


class WorkWarning(NamedTuple):
    """A warning the worker sent while running (``WORK_WARNING``)."""

    handle: str
    data: bytes


class WorkStatus(NamedTuple):
    """Progress the worker reported (``WORK_STATUS``), e.g. 3 of 10."""

    handle: str
    numerator: int
    denominator: int


class WorkComplete(NamedTuple):
    """The job's result (``WORK_COMPLETE``), the last event of a stream."""

    handle: str
    result: bytes


WorkEvent = WorkData | WorkWarning | WorkStatus | WorkComplete


class TaskState(enum.Enum):
    """Where a task of a task set stands."""

    PENDING = "pending"
    CREATED = "created"  # accepted by a server (final for background tasks)
    COMPLETE = "complete"
    FAILED = "failed"  # WORK_FAIL
    EXCEPTION = "exception"  # WORK_EXCEPTION
    ERROR = "error"  # the server refused it, or it could not be delivered
    TIMEOUT = "timeout"


_FINAL = {TaskState.COMPLETE, TaskState.FAILED, TaskState.EXCEPTION, TaskState.ERROR, TaskState.TIMEOUT}


@dataclass(eq=False, slots=True)
class Task:
    """One job of a task set: what to submit and, after running, what happened.

    Set ``on_event`` to receive :class:`WorkData`, :class:`WorkWarning` and :class:`WorkStatus`
    as they arrive.
    """

    function: str
    data: bytes = b""
    priority: Priority = Priority.NORMAL
    unique: str | None = None
    background: bool = False
    run_at: float | None = None
    on_event: Callable[[WorkEvent], None] | None = None
    state: TaskState = TaskState.PENDING
    handle: JobHandle | None = None
    result: bytes | None = None
    exception: bytes | None = None
    error: Exception | None = None
    status: tuple[int, int] | None = None
    data_chunks: list[bytes] = field(default_factory=list)
    warnings: list[bytes] = field(default_factory=list)
    _packet: bytes = b""
    _attempts: int = 0

    @property
    def done(self) -> bool:
        return self.state in _FINAL or (self.background and self.state is TaskState.CREATED)

    def raise_for_state(self) -> None:
        """Raise the exception matching a failed state (nothing for success)."""
        if self.state is TaskState.FAILED:
            raise JobFailed(f"job {self.handle} failed (WORK_FAIL)", handle=self.handle)
        if self.state is TaskState.EXCEPTION:
            raise JobException(self.exception or b"", handle=self.handle)
        if self.state is TaskState.TIMEOUT:
            raise JobTimeout(f"job {self.handle or '(not yet accepted)'} did not finish in time", handle=self.handle)
        if self.state is TaskState.ERROR:
            assert self.error is not None
            raise self.error
