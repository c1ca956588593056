"""The exceptions of django_gearman's client and worker (standard library only)."""

from __future__ import annotations

from .protocol.admin import AdminError
from .protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = [
    "AdminError",
    "ConnectionLost",
    "GearmanError",
    "JobError",
    "JobException",
    "JobFailed",
    "JobTimeout",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerError",
    "ServerUnavailable",
]


class GearmanError(Exception):
    """Base class for django_gearman errors. Do not raise directly."""


class ServerUnavailable(GearmanError):
    """No job server could be reached; ``errors`` maps each address tried to why it failed."""

    def __init__(self, errors: dict[str, str]) -> None:
        detail = "; ".join(f"{address}: {reason}" for address, reason in errors.items()) or "no servers configured"
        super().__init__(f"no Gearman job server reachable ({detail})")
        self.errors = errors


class ConnectionLost(GearmanError):
    """The server closed the connection after accepting a foreground job: it may still run."""


class ServerError(GearmanError):
    """The server answered with an ERROR packet (e.g. ``QUEUE_ERROR`` when a queue is full)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


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
        super().__init__(f"job raised an exception: {data[:200].decode('utf-8', 'replace')}", handle=handle)
        self.data = data


class JobTimeout(JobError):
    """The job did not finish within the timeout (it may still run on the server)."""
