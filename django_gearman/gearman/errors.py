"""Every error django_gearman raises, under one root: :class:`GearmanError`.

The tree, by kind (catch the branch you mean; ``except GearmanError`` catches them all)::

    GearmanError
    ├── ProtocolError                 abstract: whose fault is said by the subclass
    │   ├── LocalProtocolError        we asked for what the protocol forbids (also a ValueError)
    │   └── RemoteProtocolError       the peer sent bytes that break the protocol
    │       └── PacketTooLarge
    ├── ServerUnavailable             no job server could be reached (also a ConnectionError)
    ├── ServerTimeout                 a server did not answer in time (also a TimeoutError)
    ├── ConnectionLost                a server dropped us while it ran our foreground job
    ├── ServerError                   a server answered a request with an ERROR packet
    ├── AdminError                    a server answered an admin command with ERR
    ├── JobError                      a job did not complete
    │   ├── JobFailed                 WORK_FAIL
    │   ├── JobException              WORK_EXCEPTION
    │   ├── JobTimeout                no result in time
    │   ├── TimeLimitExceeded         the worker failed a job that ran past its time_limit
    │   └── TaskError                 a @gearman_task failed on its worker (django_gearman.tasks)
    ├── SoftTimeLimitExceeded         raised inside a job that ran past its soft_time_limit
    ├── EnvelopeError                 a value the JSON wire format cannot carry (also a ValueError)
    ├── StoreError                    the server's durable queue cannot be used (also an OSError)
    │   └── StoreClosed
    ├── StartupError                  the job server could not start (the message says what to fix)
    └── UsageError                    an argument this API cannot take (also a ValueError)

The Django layer adds ``InvalidGearmanSettings`` (also Django's ``ImproperlyConfigured``),
``BatchError`` and ``RetryError``, on the same root. Where an error is also a builtin
exception, code that caught the builtin before keeps working. Errors of Python's own protocols
stay builtins, as in the standard library: ``TypeError`` for a value of the wrong type,
``KeyError`` for a missing key.

Standard library only: the protocol layer raises these too.
"""

from __future__ import annotations

__all__ = [
    "AdminError",
    "ConnectionLost",
    "EnvelopeError",
    "GearmanError",
    "JobError",
    "JobException",
    "JobFailed",
    "JobTimeout",
    "LocalProtocolError",
    "PacketTooLarge",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerError",
    "ServerTimeout",
    "ServerUnavailable",
    "SoftTimeLimitExceeded",
    "StartupError",
    "StoreClosed",
    "StoreError",
    "TimeLimitExceeded",
    "UsageError",
]


class GearmanError(Exception):
    """The root of every django_gearman error. Do not raise directly."""


# -- the protocol ------------------------------------------------------------------------------


class ProtocolError(GearmanError):
    """Base class of protocol errors; abstract, raise a subclass (after h11's Local/Remote split).

    ``code`` is the gearmand-style error code (e.g. ``INVALID_MAGIC``) that a server puts in
    the ERROR packet it sends before closing the connection.
    """

    def __init__(self, message: str, code: str = "INVALID_PACKET") -> None:
        if type(self) is ProtocolError:
            raise TypeError(
                "ProtocolError is abstract: raise LocalProtocolError or RemoteProtocolError"
            )
        super().__init__(message)
        self.message = message
        self.code = code


class LocalProtocolError(ProtocolError, ValueError):
    """The caller asked for something the protocol forbids; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; the connection cannot continue."""


class PacketTooLarge(RemoteProtocolError):
    """A packet announced a body larger than the configured maximum."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"packet of {size} bytes exceeds the maximum of {limit} bytes", "ARGUMENT_TOO_LARGE"
        )
        self.size = size
        self.limit = limit


# -- servers -----------------------------------------------------------------------------------


class ServerUnavailable(GearmanError, ConnectionError):
    """No job server could be reached; ``errors`` maps each address tried to why it failed."""

    def __init__(self, errors: dict[str, str]) -> None:
        detail = (
            "; ".join(f"{address}: {reason}" for address, reason in errors.items())
            or "no servers configured"
        )
        super().__init__(f"no Gearman job server reachable ({detail})")
        self.errors = errors


class ServerTimeout(GearmanError, TimeoutError):
    """A job server did not answer a request (an admin command, a status request) in time."""


class ConnectionLost(GearmanError):
    """The server closed the connection after accepting a foreground job: it may still run."""


class ServerError(GearmanError):
    """The server answered with an ERROR packet (e.g. ``QUEUE_ERROR`` when a queue is full)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class AdminError(GearmanError):
    """The server answered an admin command with ``ERR <code> <message>``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"ERR {code} {message}" if message else f"ERR {code}")
        self.code = code
        self.message = message


# -- jobs --------------------------------------------------------------------------------------


class JobError(GearmanError):
    """A job did not complete. Do not raise directly."""

    def __init__(self, message: str, *, handle: str | None = None) -> None:
        super().__init__(message)
        self.handle = handle


class JobFailed(JobError):
    """The worker sent WORK_FAIL (or the server gave up on the job)."""


class JobException(JobError):
    """The worker sent WORK_EXCEPTION; ``data`` holds the exception payload it sent."""

    def __init__(self, data: bytes, *, handle: str | None = None) -> None:
        super().__init__(
            f"job raised an exception: {data[:200].decode('utf-8', 'replace')}", handle=handle
        )
        self.data = data


class JobTimeout(JobError):
    """The job did not finish within the timeout (it may still run on the server).

    ``function`` is the job's Gearman function; ``workers`` how many workers had registered it
    on the job's server when the time ran out (from the admin ``status``), or None when the
    server could not say. The message says which, so "no worker offers it" is not taken for a
    hang.
    """

    def __init__(
        self,
        message: str,
        *,
        handle: str | None = None,
        function: str | None = None,
        workers: int | None = None,
    ) -> None:
        super().__init__(message, handle=handle)
        self.function = function
        self.workers = workers


class TimeLimitExceeded(JobError):
    """A job ran past its ``time_limit``: the worker failed it (WORK_EXCEPTION with this type)
    and its process was killed or its thread abandoned. A client sees it as the job's
    exception (a ``@gearman_task``'s ``.submit()`` as a TaskError of this type)."""

    def __init__(
        self,
        message: str = "the job ran past its time limit",
        *,
        handle: str | None = None,
        limit: float | None = None,
    ) -> None:
        super().__init__(message, handle=handle)
        self.limit = limit


class SoftTimeLimitExceeded(GearmanError):
    """Raised inside a job that ran past its ``soft_time_limit``, so it can clean up (catch it)
    before its ``time_limit`` ends it. Not a JobError: code that waits on other jobs and catches
    JobError does not swallow it. Raised without arguments in a thread (``PyThreadState_
    SetAsyncExc`` takes a class), hence the default message."""

    def __init__(self, message: str = "the job ran past its soft time limit") -> None:
        super().__init__(message)


# -- payloads, the store, start-up, arguments ----------------------------------------------------


class EnvelopeError(GearmanError, ValueError):
    """A value that the JSON wire format cannot carry, or a workload that is not an envelope."""


class StoreError(GearmanError, OSError):
    """The job store's file cannot be opened or used (missing directory, locked, not a store)."""


class StoreClosed(StoreError):
    """A job was added to a store after ``close()``."""


class StartupError(GearmanError):
    """The job server could not start; the message says what to fix."""


class UsageError(GearmanError, ValueError):
    """An argument this API cannot take: an unparsable server address, a bad option value."""
