"""A client for the text admin protocol: ``status``, ``workers``, ``show jobs`` ... as typed rows.

Works against gearmand and our embedded server alike (the same port serves binary and text).
"""

from __future__ import annotations

import time

from .errors import RemoteProtocolError, ServerTimeout, ServerUnavailable, UsageError
from .protocol import (
    AdminConnection,
    AdminReply,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    QueuedJob,
    WorkerInfo,
)
from .protocol import text as fmt
from .protocol.text import AdminRows
from .transport import ServerAddress, Transport, parse_server, remaining

__all__ = ["GearmanAdminClient"]


class GearmanAdminClient:
    """Admin commands against one job server; the connection is opened lazily and reused.

    The list commands take ``strict``: True (the default) raises
    :class:`~.errors.RemoteProtocolError` at the first row that does not parse; False skips
    such rows and lists them in the result's ``unreadable`` (an :class:`~.protocol.text.AdminRows`),
    so that one odd name sent by any client or worker cannot hide the rest of the reply.

    Raises :class:`~.errors.AdminError` when the server answers ``ERR``,
    :class:`~.errors.ServerUnavailable` when it cannot be reached (a ``ConnectionError``), and
    :class:`~.errors.ServerTimeout` when it does not answer in time (a ``TimeoutError``).
    """

    def __init__(
        self, server: str | ServerAddress = "127.0.0.1:4730", *, timeout: float = 5.0
    ) -> None:
        self.address = parse_server(server)
        self.timeout = timeout
        self._transport = Transport(self.address, AdminConnection)

    def __enter__(self) -> GearmanAdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    # -- commands ---------------------------------------------------------------------------

    def status(self, *, strict: bool = True) -> AdminRows[FunctionStatus]:
        """Per function: jobs queued+running, running, and available workers."""
        return fmt.parse_status(self.command("status"), strict=strict)

    def priority_status(self, *, strict: bool = True) -> AdminRows[PriorityStatus]:
        """Per function: queued jobs by priority, and workers (gearmand 1.1.15+)."""
        return fmt.parse_priority_status(self.command("prioritystatus"), strict=strict)

    def workers(self, *, strict: bool = True) -> AdminRows[WorkerInfo]:
        """Every connection with its client id and the functions it offers."""
        return fmt.parse_workers(self.command("workers"), strict=strict)

    def show_jobs(self, *, strict: bool = True) -> AdminRows[JobInfo]:
        return fmt.parse_jobs(self.command("show jobs"), strict=strict)

    def show_unique_jobs(self) -> list[str]:
        return fmt.parse_unique_jobs(self.command("show unique jobs"))

    def show_queue(self, limit: int = 1000, *, strict: bool = True) -> AdminRows[QueuedJob]:
        """Jobs with function, priority, state and times: our server's ``show queue`` (gearmand
        answers ``ERR``, raised as ``AdminError``)."""
        return fmt.parse_queue(self.command("show queue", str(int(limit))), strict=strict)

    def cancel_job(self, handle: str) -> None:
        """Cancel a queued job (``ERR UNKNOWN_JOB`` raises ``AdminError``)."""
        fmt.parse_ok(self.command("cancel job", handle))

    def maxqueue(self, function: str, *sizes: int) -> None:
        """Limit a function's queue: one size for all priorities, or three (high, normal, low)."""
        if len(sizes) not in (0, 1, 3):
            raise UsageError("maxqueue takes no size, one size, or three (high, normal, low)")
        fmt.parse_ok(self.command("maxqueue", function, *(str(int(size)) for size in sizes)))

    def create_function(self, function: str) -> None:
        fmt.parse_ok(self.command("create function", function))

    def drop_function(self, function: str) -> None:
        fmt.parse_ok(self.command("drop function", function))

    def getpid(self) -> int:
        return int(fmt.parse_value(self.command("getpid")))

    def verbose(self) -> str:
        return fmt.parse_value(self.command("verbose"))

    def version(self) -> str:
        return fmt.parse_value(self.command("version"))

    # -- plumbing ---------------------------------------------------------------------------

    def command(self, command: str, *args: str) -> list[bytes]:
        """Send any admin command and return its reply lines (``ERR`` raises ``AdminError``)."""
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            reused = self._transport.connected
            try:
                if not reused:
                    self._transport.connect(self.timeout)
                self._transport.conn.command(command, *args)
                self._transport.flush()
                reply = self._read_reply(deadline)
                break
            except (ServerTimeout, RemoteProtocolError):
                self.close()
                raise
            except OSError as error:  # refused, reset, closed: a reused one may have gone stale
                self.close()
                stale = reused and isinstance(error, (ConnectionError, BrokenPipeError))
                if not stale or attempt == 2:
                    reason = str(error) or type(error).__name__
                    raise ServerUnavailable({str(self.address): reason}) from error
        reply.raise_for_error()
        return reply.lines

    def _read_reply(self, deadline: float) -> AdminReply:
        while True:
            wait = remaining(deadline)
            if not wait:
                self.close()
                raise ServerTimeout(f"{self.address} did not finish its admin reply in time")
            replies: list[AdminReply] = self._transport.read(wait)
            if replies:
                return replies[0]  # one command in flight at a time
