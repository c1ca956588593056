"""What a worker function gets and gives: the :class:`Job` it is handed, and :func:`perform`,
which turns what it returns or raises into a job's outcome.

A function receives a :class:`Job` and returns the result (bytes, str or None). Raising
:class:`~.errors.JobFailed` ends the job with WORK_FAIL; any other exception is logged with its
traceback and sent as WORK_EXCEPTION with :func:`exception_payload` (the server turns it into
WORK_FAIL for clients that did not ask for exceptions). While it runs, :func:`current_job` gives
the job, so code deep inside a task can report progress.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable

from .envelope import encode_error
from .errors import JobFailed, UsageError
from .jobs import payload
from .protocol import JobAssigned, Outcome, WorkerConnection
from .transport import ServerAddress, Transport

__all__ = ["Job", "current_job", "exception_payload", "perform", "reported"]

logger = logging.getLogger("django_gearman.worker")

_current: contextvars.ContextVar[Job | None] = contextvars.ContextVar(
    "django_gearman_job", default=None
)


def current_job() -> Job | None:
    """The job this thread's worker is running, to report progress with ``send_status`` from
    deep inside a task; None outside a job run by a :class:`Worker`."""
    return _current.get()


#: The attribute that marks an exception whose failure a callback logged itself.
_REPORTED = "_django_gearman_reported"


def reported(error: BaseException) -> BaseException:
    """Say that ``error``'s failure is logged, with its traceback, by the callback that raises it
    (a task runner logs the task's own line): :func:`perform` then logs it no second time."""
    try:
        setattr(error, _REPORTED, True)
    except AttributeError:  # an exception that takes no attributes is logged twice, no worse
        pass
    return error


def exception_payload(error: BaseException) -> bytes:
    """The WORK_EXCEPTION payload: a JSON object with the exception's type and message
    (:func:`~.envelope.encode_error`)."""
    return encode_error(error)


class Job:
    """A job being run: what the client sent, and a way to report progress back to it."""

    __slots__ = ("_channel", "data", "function", "handle", "unique")

    def __init__(
        self, transport: Transport[WorkerConnection] | None, assigned: JobAssigned
    ) -> None:
        self._channel = transport
        self.handle = assigned.handle.decode()
        self.function = assigned.function.decode()
        self.unique = assigned.unique.decode(errors="surrogateescape")
        self.data = assigned.data

    def __repr__(self) -> str:
        return f"<Job {self.function} {self.handle}>"

    @property
    def server(self) -> ServerAddress | None:
        """The job server this job came from (None for a job run in-process, by a test double)."""
        return self._channel.address if self._channel is not None else None

    def send_data(self, data: bytes | str) -> None:
        """Send a chunk of partial output to the waiting clients (WORK_DATA)."""
        transport = self._transport()
        transport.conn.work_data(self.handle.encode(), payload(data))
        transport.flush()

    def send_warning(self, data: bytes | str) -> None:
        """Send a warning to the waiting clients (WORK_WARNING)."""
        transport = self._transport()
        transport.conn.work_warning(self.handle.encode(), payload(data))
        transport.flush()

    def send_status(self, numerator: int, denominator: int) -> None:
        """Report progress, e.g. ``(3, 10)``; clients and GET_STATUS see it (WORK_STATUS)."""
        transport = self._transport()
        transport.conn.work_status(self.handle.encode(), numerator, denominator)
        transport.flush()

    def _transport(self) -> Transport[WorkerConnection]:
        if self._channel is None:
            raise UsageError(f"{self!r} has no server connection to report to")
        return self._channel


def perform(callback: Callable[[Job], bytes | str | None], job: Job) -> tuple[Outcome, bytes]:
    """Run ``callback`` for ``job`` as a worker does, and say how it ended: its result, WORK_FAIL
    for :class:`~.errors.JobFailed`, or WORK_EXCEPTION with :func:`exception_payload` for any
    other exception (logged with its traceback). :func:`current_job` gives ``job`` meanwhile."""
    began = time.perf_counter()
    token = _current.set(job)
    try:
        result = _result_bytes(callback(job))
    except JobFailed:
        logger.info("job %s failed (WORK_FAIL)", job)
        return Outcome.FAIL, b""
    except Exception as error:
        if not getattr(error, _REPORTED, False):  # else its line and traceback are logged
            logger.exception("job %s raised %s", job, type(error).__name__)
        return Outcome.EXCEPTION, exception_payload(error)
    finally:
        _current.reset(token)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("job %s done in %.2f ms", job, (time.perf_counter() - began) * 1000)
    return Outcome.COMPLETE, result


def _result_bytes(result: object) -> bytes:
    if result is None:
        return b""
    try:
        return payload(result)  # type: ignore[arg-type]  # checked there
    except TypeError:
        kind = type(result).__name__
        raise TypeError(f"a worker function must return bytes, str or None, not {kind}") from None
