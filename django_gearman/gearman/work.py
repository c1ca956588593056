"""What a worker function gets and gives: the :class:`Job` it is handed, and :func:`perform`,
which turns what it returns or raises into a job's outcome.

A function receives a :class:`Job` and returns the result (bytes, str or None). Raising
:class:`~.errors.JobFailed` ends the job with WORK_FAIL; any other exception is logged with its
traceback and sent as WORK_EXCEPTION with :func:`exception_payload` (the server turns it into
WORK_FAIL for clients that did not ask for exceptions). While it runs, :func:`current_job` gives
the job, so code deep inside a task can report progress.

Time limits are a :class:`Watchdog`'s: a soft limit raises
:class:`~.errors.SoftTimeLimitExceeded` inside the function (by SIGALRM in the main thread, by
``PyThreadState_SetAsyncExc`` in any other, which takes effect between two bytecodes: a thread
blocked in a C call such as ``time.sleep(60)`` or a socket read sees it only once that call
returns); a hard limit calls back the :class:`~.worker.Worker`, which fails the job.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from .envelope import encode_error
from .errors import JobFailed, SoftTimeLimitExceeded, TimeLimitExceeded, UsageError
from .jobs import payload
from .protocol import JobAssigned, Outcome, WorkerConnection
from .transport import ServerAddress, Transport

__all__ = [
    "Job",
    "Watchdog",
    "check_time_limits",
    "current_job",
    "exception_payload",
    "perform",
    "reported",
]

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
    """A job being run: what the client sent, and a way to report progress back to it.

    ``watchdog`` is the worker's (None for a job run without time limits): progress reports
    take its lock, which its hard limit takes to fail the job on the same connection, and once
    the job is failed (``expired``) they raise :class:`~.errors.TimeLimitExceeded`.
    """

    __slots__ = ("_channel", "_watchdog", "data", "expired", "function", "handle", "unique")

    def __init__(
        self,
        transport: Transport[WorkerConnection] | None,
        assigned: JobAssigned,
        *,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._channel = transport
        self._watchdog = watchdog
        self.handle = assigned.handle.decode()
        self.function = assigned.function.decode()
        self.unique = assigned.unique.decode(errors="surrogateescape")
        self.data = assigned.data
        self.expired = False  # failed at its time limit: nothing more goes out for it

    def __repr__(self) -> str:
        return f"<Job {self.function} {self.handle}>"

    @property
    def server(self) -> ServerAddress | None:
        """The job server this job came from (None for a job run in-process, by a test double)."""
        return self._channel.address if self._channel is not None else None

    def send_data(self, data: bytes | str) -> None:
        """Send a chunk of partial output to the waiting clients (WORK_DATA)."""
        body = payload(data)
        self._send(lambda conn: conn.work_data(self.handle.encode(), body))

    def send_warning(self, data: bytes | str) -> None:
        """Send a warning to the waiting clients (WORK_WARNING)."""
        body = payload(data)
        self._send(lambda conn: conn.work_warning(self.handle.encode(), body))

    def send_status(self, numerator: int, denominator: int) -> None:
        """Report progress, e.g. ``(3, 10)``; clients and GET_STATUS see it (WORK_STATUS)."""
        self._send(lambda conn: conn.work_status(self.handle.encode(), numerator, denominator))

    def _send(self, write: Callable[[WorkerConnection], None]) -> None:
        transport = self._transport()
        watchdog = self._watchdog
        if watchdog is None:
            write(transport.conn)
            transport.flush()
            return
        # No soft-limit signal mid-write (a half-sent packet would break the stream), and none
        # of the watchdog's writes in between.
        with watchdog.critical(), watchdog.lock:
            if self.expired:
                raise TimeLimitExceeded(
                    f"{self!r} ran past its time limit: it was failed, nothing more is sent",
                    handle=self.handle,
                )
            write(transport.conn)
            transport.flush()

    def _transport(self) -> Transport[WorkerConnection]:
        if self._channel is None:
            raise UsageError(f"{self!r} has no server connection to report to")
        return self._channel


def perform(
    callback: Callable[[Job], bytes | str | None],
    job: Job,
    *,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
) -> tuple[Outcome, bytes]:
    """Run ``callback`` for ``job`` as a worker does, and say how it ended: its result, WORK_FAIL
    for :class:`~.errors.JobFailed`, or WORK_EXCEPTION with :func:`exception_payload` for any
    other exception (logged with its traceback). :func:`current_job` gives ``job`` meanwhile.
    The limits (seconds) are armed on the job's :class:`Watchdog` while the callback runs."""
    began = time.perf_counter()
    token = _current.set(job)
    watchdog = job._watchdog if soft_time_limit is not None or time_limit is not None else None
    try:
        if watchdog is not None:
            watchdog.arm(job, soft_time_limit, time_limit)
        try:
            returned = callback(job)
        finally:
            if watchdog is not None:
                watchdog.disarm()
        result = _result_bytes(returned)
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


# -- time limits --------------------------------------------------------------------------------


def check_time_limits(
    soft_time_limit: object = None, time_limit: object = None
) -> tuple[float | None, float | None]:
    """``(soft_time_limit, time_limit)`` as floats, each None or a positive finite number of
    seconds, the soft one below the hard one; :class:`~.errors.UsageError` otherwise."""
    limits: list[float | None] = []
    for name, value in (("soft_time_limit", soft_time_limit), ("time_limit", time_limit)):
        if value is None:
            limits.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{name} must be a number of seconds, not {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"{name} must be a positive finite number of seconds, not {value!r}")
        limits.append(float(value))
    soft, hard = limits
    if soft is not None and hard is not None and soft >= hard:
        raise UsageError(
            f"soft_time_limit ({soft:g} s) must be less than time_limit ({hard:g} s): the soft "
            "one lets the job clean up before the hard one ends it"
        )
    return soft, hard


#: What the hard limit calls (in the watchdog's thread): the job, its limit, and a check that
#: says whether the job is still running (call it holding :attr:`Watchdog.lock`).
HardLimit = Callable[[Job, float, Callable[[], bool]], None]


def _async_raise(thread_id: int, error: type[BaseException] | None) -> None:
    """Raise ``error`` in the thread ``thread_id`` at its next bytecode (None: drop one that is
    pending). CPython's ``PyThreadState_SetAsyncExc``, as ``threading`` has no API for it."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(error) if error is not None else None
    )


class Watchdog:
    """Fires the time limits of the job a worker runs: one per :class:`~.worker.Worker`.

    A soft limit in the main thread is a SIGALRM (``setitimer``) whose handler raises
    :class:`~.errors.SoftTimeLimitExceeded`, so it interrupts a blocking sleep or read; in any
    other thread the watchdog's daemon thread raises it there asynchronously (between
    bytecodes). The hard limit always comes from the watchdog's thread, which calls
    ``on_hard``: the job's own thread may be stuck anywhere. ``lock`` guards the worker's
    connection, so that the job's progress reports, its result and the hard limit's failure
    never interleave on the wire.
    """

    def __init__(self, on_hard: HardLimit) -> None:
        self.lock = threading.Lock()
        self._on_hard = on_hard
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None  # the watching thread; None once closed
        self._generation = 0  # bumped by arm/disarm: a limit fires only for its own job
        self._job: Job | None = None
        self._thread_id = 0
        self._soft: float | None = None
        self._hard: float | None = None
        self._soft_at: float | None = None  # when to raise in a thread (not the main one)
        self._hard_at: float | None = None
        self._raised = False  # an asynchronous exception was set for this job
        self._alarm = False  # the SIGALRM handler may raise
        self._previous_alarm: Any = None
        self._depth = 0  # critical() sections under way in the main thread
        self._deferred = False  # the alarm came inside one

    def arm(self, job: Job, soft: float | None, hard: float | None) -> None:
        """Start the limits of ``job``, run by the calling thread."""
        in_main = threading.current_thread() is threading.main_thread()
        now = time.monotonic()
        with self._cond:
            self._generation += 1
            self._job, self._thread_id = job, threading.get_ident()
            self._soft, self._hard = soft, hard
            self._soft_at = now + soft if soft is not None and not in_main else None
            self._hard_at = now + hard if hard is not None else None
            self._raised = False
            if (self._soft_at is not None or self._hard_at is not None) and self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch,
                    name=f"{threading.current_thread().name}-watchdog",
                    daemon=True,
                )
                self._thread.start()
            self._cond.notify()
        if soft is not None and in_main:
            self._deferred = False
            self._previous_alarm = signal.signal(signal.SIGALRM, self._on_alarm)
            self._alarm = True
            signal.setitimer(signal.ITIMER_REAL, soft)

    def disarm(self) -> None:
        """End the limits, in the job's thread, as soon as its callback returned. A soft limit
        raised here, in the instant between, is dropped: the job is over."""
        while True:
            try:
                self._disarm()
                return
            except SoftTimeLimitExceeded:
                continue

    def _disarm(self) -> None:
        if self._alarm or self._previous_alarm is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._alarm = False
            previous, self._previous_alarm = self._previous_alarm, None
            if previous is not None:
                signal.signal(signal.SIGALRM, previous)
        with self._cond:
            self._generation += 1
            self._job = None
            self._soft_at = self._hard_at = None
            raised, self._raised = self._raised, False
            if raised:
                _async_raise(self._thread_id, None)
            self._cond.notify()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A stretch the SIGALRM soft limit must not cut (a write to the server): an alarm that
        comes meanwhile raises at its end."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._deferred:
                self._deferred = False
                raise SoftTimeLimitExceeded(self._soft_message())

    def close(self) -> None:
        """Stop the watchdog's thread (a daemon: nothing waits for it); the next :meth:`arm`
        with a limit starts another."""
        with self._cond:
            self._thread = None
            self._generation += 1
            self._soft_at = self._hard_at = None
            self._cond.notify_all()

    def _current(self, generation: int) -> bool:
        with self._cond:
            return self._generation == generation

    def _soft_message(self) -> str:
        return f"{self._job!r} ran past its soft time limit of {self._soft:g} s"

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if not self._alarm:
            return
        self._alarm = False
        logger.warning(
            "job %s passed its soft time limit of %g s: SoftTimeLimitExceeded raised in it",
            self._job,
            self._soft,
        )
        if self._depth:
            self._deferred = True
            return
        raise SoftTimeLimitExceeded(self._soft_message())

    def _watch(self) -> None:
        with self._cond:
            while self._thread is threading.current_thread():
                pending = [at for at in (self._soft_at, self._hard_at) if at is not None]
                now = time.monotonic()
                if not pending or min(pending) > now:
                    self._cond.wait(min(pending) - now if pending else None)
                    continue
                job = self._job
                assert job is not None
                if self._soft_at is not None and self._soft_at <= now:
                    self._soft_at = None
                    self._raised = True
                    _async_raise(self._thread_id, SoftTimeLimitExceeded)
                    logger.warning(
                        "job %s passed its soft time limit of %g s: SoftTimeLimitExceeded raised "
                        "in its thread",
                        job,
                        self._soft,
                    )
                if self._hard_at is not None and self._hard_at <= now:
                    self._hard_at = None
                    generation, limit = self._generation, self._hard
                    assert limit is not None
                    self._cond.release()  # on_hard takes `lock`, which the job thread may hold
                    try:
                        self._on_hard(job, limit, functools.partial(self._current, generation))
                    except Exception:
                        logger.exception("the time limit of %s could not be enforced", job)
                    finally:
                        self._cond.acquire()
