"""The values a client hands out: job handles, statuses, progress events and task-set tasks.

:class:`Task` is one job as the client submits it (libgearman's and PHP's "task"): what to
send, and afterwards what happened. Its wire bytes come from :meth:`Task.packet`, with every
check a submit gets, so the client and the test doubles of the Django layer see the same errors.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import JobException, JobFailed, JobTimeout
from .protocol import (
    JobStatus,
    Priority,
    WorkComplete,
    WorkData,
    WorkEvent,
    WorkStatus,
    WorkWarning,
    encode_submit,
)
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
    "payload",
]


def payload(data: bytes | str) -> bytes:
    """Job data as bytes: ``str`` is sent as UTF-8; ``TypeError`` for anything else."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"job data must be bytes or str, not {type(data).__name__}")


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


class TaskState(enum.Enum):
    """Where a task of a task set stands."""

    PENDING = "pending"
    CREATED = "created"  # accepted by a server (final for background tasks)
    COMPLETE = "complete"
    FAILED = "failed"  # WORK_FAIL
    EXCEPTION = "exception"  # WORK_EXCEPTION
    ERROR = "error"  # the server refused it, or it could not be delivered
    TIMEOUT = "timeout"


_FINAL = {
    TaskState.COMPLETE,
    TaskState.FAILED,
    TaskState.EXCEPTION,
    TaskState.ERROR,
    TaskState.TIMEOUT,
}


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
    attempts: int = 0  # servers this task was sent to (failover counts them)

    def packet(self) -> bytes:
        """The submit's wire bytes, checked and made once (a resend to another server reuses
        them, unique key included). A background job without a unique key gets a random one,
        as libgearman gives it: a durable queue keys jobs on it. Scheduled jobs (``run_at``)
        go out as SUBMIT_JOB_EPOCH, rounded up to the second so they never run early.

        Raises :class:`~.errors.LocalProtocolError` for what no server would take.
        """
        if not self._packet:
            unique = self.unique
            if unique is None and self.background:
                unique = uuid.uuid4().hex
            epoch = None if self.run_at is None else math.ceil(self.run_at)
            self._packet = encode_submit(
                self.function.encode(),
                self.data,
                unique=(unique or "").encode(),
                priority=self.priority,
                background=self.background,
                epoch=epoch,
            )
        return self._packet

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
            if isinstance(self.error, JobTimeout):  # the client's, saying why it may be
                raise self.error
            raise JobTimeout(
                f"job {self.handle or '(not yet accepted)'} did not finish in time",
                handle=self.handle,
            )
        if self.state is TaskState.ERROR:
            assert self.error is not None
            raise self.error
