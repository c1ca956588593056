"""What the conversations hand back: job progress values and conversation events.

Two kinds of values live here:

- **Job values** a caller sees: :class:`WorkData`, :class:`WorkWarning`, :class:`WorkStatus`,
  :class:`WorkComplete` (progress and the result of a foreground job) and :class:`JobStatus`
  (the answer to GET_STATUS). The client passes them on unchanged.
- **Conversation events**, returned by ``receive_data()`` of a
  :class:`~.client.ClientConnection` or :class:`~.worker.WorkerConnection`: each says which
  request it answers through the opaque ``token`` the caller gave with the request.

All are ``NamedTuple``\\ s: immutable, and the cheapest value to build on the paths every job
takes. Do not subclass them.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

__all__ = [
    "EchoReply",
    "ErrorReceived",
    "JobAssigned",
    "JobCreated",
    "JobEnded",
    "JobStatus",
    "JobUpdate",
    "OptionAccepted",
    "Outcome",
    "RequestRefused",
    "StatusReply",
    "WentToSleep",
    "Woken",
    "WorkComplete",
    "WorkData",
    "WorkEvent",
    "WorkStatus",
    "WorkWarning",
]

# -- job values ----------------------------------------------------------------------------------


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


class JobStatus(NamedTuple):
    """A job's status as the server reports it (``GET_STATUS`` / ``GET_STATUS_UNIQUE``).

    ``waiting`` is the number of attached clients, which only ``GET_STATUS_UNIQUE`` reports.
    gearmand puts the unique key, not the handle, in the first field of that reply.
    """

    handle: str
    known: bool
    running: bool
    numerator: int
    denominator: int
    waiting: int | None = None


# -- client conversation events ------------------------------------------------------------------


class Outcome(enum.Enum):
    """How a foreground job ended."""

    COMPLETE = "complete"  # WORK_COMPLETE: ``data`` is the result
    FAIL = "fail"  # WORK_FAIL
    EXCEPTION = "exception"  # WORK_EXCEPTION: ``data`` is the worker's exception payload


class JobCreated(NamedTuple):
    """The server accepted the submit made with ``token`` (JOB_CREATED)."""

    token: Any
    handle: bytes


class RequestRefused(NamedTuple):
    """The server answered the request made with ``token`` with an ERROR packet."""

    token: Any
    code: str
    text: str


class JobUpdate(NamedTuple):
    """Progress of a running foreground job, for every submit attached to it (``tokens``)."""

    tokens: tuple[Any, ...]
    event: WorkData | WorkWarning | WorkStatus


class JobEnded(NamedTuple):
    """A foreground job finished; every submit attached to it (``tokens``) is answered."""

    tokens: tuple[Any, ...]
    handle: bytes
    outcome: Outcome
    data: bytes


class StatusReply(NamedTuple):
    """The answer to GET_STATUS or GET_STATUS_UNIQUE made with ``token``."""

    token: Any
    status: JobStatus


class EchoReply(NamedTuple):
    """The answer to ECHO_REQ made with ``token``."""

    token: Any
    data: bytes


class OptionAccepted(NamedTuple):
    """The server accepted the OPTION_REQ made with ``token``."""

    token: Any
    option: bytes


class ErrorReceived(NamedTuple):
    """An ERROR packet that answers nothing we asked (logged by the caller)."""

    code: str
    text: str


# -- worker conversation events ------------------------------------------------------------------


class JobAssigned(NamedTuple):
    """A job to run (JOB_ASSIGN, JOB_ASSIGN_UNIQ or JOB_ASSIGN_ALL). ``unique`` is empty for
    JOB_ASSIGN; the reducer of JOB_ASSIGN_ALL is not passed on (no reducer runs here)."""

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes


class WentToSleep(NamedTuple):
    """Every grab was answered NO_JOB: the connection sent PRE_SLEEP and waits for a NOOP."""


class Woken(NamedTuple):
    """A NOOP woke the sleeping connection: there may be work; grab again."""
