"""A blocking Gearman client for views, management commands and scripts.

``GearmanClient(servers)`` submits foreground jobs (and waits for the result), background jobs
(and returns the handle), scheduled jobs (``SUBMIT_JOB_EPOCH``) and task sets (many jobs in
parallel over all servers, like PHP's ``addTask`` + ``runTasks``). Connections are opened
lazily, reused, and every blocking call has a timeout. Which reply answers which request is the
protocol layer's business (:class:`~.protocol.ClientConnection`); this module routes jobs to
servers, fails over, and waits on sockets.

Which server a job goes to, and which are up, is :mod:`.routing`'s; when none is reachable,
:class:`ServerUnavailable` says why for each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .admin_client import GearmanAdminClient
from .base import BaseClient
from .errors import (
    ConnectionLost,
    GearmanError,
    JobTimeout,
    LocalProtocolError,
    RemoteProtocolError,
    ServerError,
    ServerTimeout,
    ServerUnavailable,
)
from .jobs import (
    JobHandle,
    JobStatus,
    Task,
    TaskState,
    WorkComplete,
    WorkData,
    WorkEvent,
    WorkStatus,
    payload,
)
from .protocol import (
    DEFAULT_MAX_PACKET_SIZE,
    ClientConnection,
    EchoReply,
    ErrorReceived,
    FunctionStatus,
    JobCreated,
    JobEnded,
    JobUpdate,
    Outcome,
    Priority,
    RequestRefused,
    StatusReply,
)
from .routing import Server, Servers, readable
from .transport import ServerAddress, parse_servers, remaining

__all__ = ["GearmanClient"]

logger = logging.getLogger("django_gearman.client")

#: At most this many seconds are spent asking a server's admin ``status`` after a foreground
#: job timed out, to say whether any worker offers its function.
DIAGNOSIS_TIMEOUT = 2.0

_ENDED = {
    Outcome.COMPLETE: TaskState.COMPLETE,
    Outcome.FAIL: TaskState.FAILED,
    Outcome.EXCEPTION: TaskState.EXCEPTION,
}


class _Op:
    """A request other than a submit (OPTION_REQ, GET_STATUS, ECHO_REQ) awaiting its answer."""

    __slots__ = ("done", "error", "reply")

    def __init__(self) -> None:
        self.done = False
        self.reply: Any = None
        self.error: Exception | None = None


class GearmanClient(BaseClient):
    """Submits jobs to one or more Gearman job servers.

    ``servers`` are ``"host:port"`` strings (port 4730 by default), or one comma-separated
    string. ``timeout`` bounds every blocking call unless the call gives its own.
    ``exceptions`` sends ``OPTION_REQ exceptions`` so WORK_EXCEPTION reaches us (otherwise the
    server turns it into WORK_FAIL).
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "127.0.0.1:4730",
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        client_id: str | None = None,
        exceptions: bool = True,
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        self.servers = parse_servers(servers)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client_id = client_id
        self.exceptions = exceptions
        self._route = Servers(
            self.servers,
            max_packet_size=max_packet_size,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
        )
        self._servers = self._route.all

    def __repr__(self) -> str:
        return f"<GearmanClient servers={[str(a) for a in self.servers]}>"

    def close(self) -> None:
        """Close every connection (the client reconnects on next use)."""
        for server in self._servers:
            self._reset(server)

    def sockets_closer(self) -> Callable[[], None]:
        """A function that closes this client's sockets without keeping the client alive (for
        ``weakref.finalize``: a thread's client may go without anyone calling :meth:`close`)."""
        transports = [server.transport for server in self._servers]

        def close() -> None:
            for transport in transports:
                transport.close()

        return close

    # -- public API -----------------------------------------------------------------------------

    def stream(
        self,
        function: str,
        data: bytes | str = b"",
        *,
        priority: Priority = Priority.NORMAL,
        unique: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[WorkEvent]:
        """Run a foreground job, yielding its WORK_DATA/WARNING/STATUS events as they arrive.

        The last event is :class:`WorkComplete`; failures raise as in :meth:`submit`.
        """
        task = Task(function, payload(data), Priority.parse(priority), unique)
        for event_task, event in self._drive([task], self._deadline(timeout)):
            if event_task is task:
                yield event
        task.raise_for_state()
        assert task.handle is not None and task.result is not None
        yield WorkComplete(task.handle, task.result)

    def run_tasks(self, tasks: Sequence[Task], *, timeout: float | None = None) -> Sequence[Task]:
        """Submit every task at once and wait until all are done (or the timeout passes).

        Tasks are pipelined per server and the servers are served in parallel. Each task ends
        with its own state, result and error; nothing is raised for a single task's failure.
        """
        for _ in self._drive(tasks, self._deadline(timeout)):
            pass
        return tasks

    def get_status(self, handle: str, *, timeout: float | None = None) -> JobStatus:
        """Status of a job by handle (``GET_STATUS``). A :class:`JobHandle` from this client
        is asked of the server that gave it; a plain string of every server until one knows it.
        """
        deadline = self._deadline(timeout)
        servers = self._servers
        if isinstance(handle, JobHandle) and handle.server is not None:
            servers = [self._route.by_address[handle.server]]
        status = None
        for server in servers:
            reply: StatusReply = self._call(
                server, lambda conn, op: conn.get_status(handle.encode(), op), deadline
            )
            status = reply.status
            if status.known:
                break
        assert status is not None
        return status

    def get_status_unique(self, unique: str, *, timeout: float | None = None) -> JobStatus:
        """Status of the job with this unique key (``GET_STATUS_UNIQUE``), asked of its server.

        gearmand puts the unique key, not the handle, in the reply's first field.
        """
        server = self._route.candidates(unique)[0]
        reply: StatusReply = self._call(
            server,
            lambda conn, op: conn.get_status_unique(unique.encode(), op),
            self._deadline(timeout),
        )
        return reply.status

    def echo(
        self, data: bytes = b"ping", *, server: str | None = None, timeout: float | None = None
    ) -> bytes:
        """Send ``ECHO_REQ`` to a server (the first by default) and return the echoed bytes."""
        target = self._route.by_address[parse_servers(server)[0]] if server else self._servers[0]
        reply: EchoReply = self._call(
            target, lambda conn, op: conn.echo(data, op), self._deadline(timeout)
        )
        return reply.data

    # -- dispatching ----------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _ensure_connected(self, server: Server, deadline: float) -> None:
        transport = server.transport
        if transport.connected:
            return
        transport.connect(min(self.connect_timeout, remaining(deadline) or 0.001))
        if self.client_id:
            transport.conn.set_client_id(self.client_id.encode())
        if self.exceptions:
            transport.conn.option(b"exceptions", _Op())
        logger.debug("connected to %s", server.address)

    def _dispatch(self, task: Task, deadline: float, exclude: Server | None = None) -> None:
        """Queue ``task`` on a reachable server; on none, end it with ``ServerUnavailable``."""
        try:
            packet = task.packet()
        except LocalProtocolError as error:
            _finish(task, TaskState.ERROR, error)
            return
        errors: dict[str, str] = {}
        for server in self._route.candidates(task.unique):
            if server is exclude and len(self._servers) > 1:
                continue
            try:
                self._ensure_connected(server, deadline)
            except OSError as error:
                self._route.mark_down(server, error)
                errors[str(server.address)] = server.last_error
                continue
            task.attempts += 1
            server.transport.conn.submit(packet, task)
            return
        _finish(task, TaskState.ERROR, ServerUnavailable(errors))

    def _drive(self, tasks: Sequence[Task], deadline: float) -> Iterator[tuple[Task, WorkEvent]]:
        """Submit ``tasks`` and pump replies until every one is done; yields progress events."""
        begun = time.monotonic()
        for task in tasks:
            task.state = TaskState.PENDING
            self._dispatch(task, deadline)
        self._flush_all(deadline)
        while True:
            # Every awaited reply is owed by some server's conversation; when no server is
            # busy, every task has ended (a client is used by one thread at a time).
            busy = [server for server in self._servers if server.busy]
            if not busy:
                return
            wait = remaining(deadline)
            if not wait:
                self._timeout(tasks, deadline - begun)
                return
            ready = busy if len(busy) == 1 else readable(busy, wait)
            for server in ready:
                try:
                    events = server.transport.read(wait if len(busy) == 1 else 0)
                except TimeoutError:
                    continue
                except (OSError, RemoteProtocolError) as error:
                    self._lost(server, error, deadline)
                    continue
                progress = self._apply(server, events)
                if progress:
                    yield from progress

    def _apply(self, server: Server, events: list[Any]) -> list[tuple[Task, WorkEvent]]:
        """Bring the conversation's events home to the tasks and requests they answer; return
        the progress events, by task (a plain list, not a generator: most reads bring none)."""
        progress: list[tuple[Task, WorkEvent]] = []
        for event in events:
            kind = type(event)
            if kind is JobCreated:
                task = event.token
                task.handle = JobHandle(event.handle.decode(), server.address)
                task.state = TaskState.CREATED
                if server.failures:
                    server.failures = 0
            elif kind is JobEnded:
                state = _ENDED[event.outcome]
                for task in event.tokens:
                    if state is TaskState.COMPLETE:
                        task.result = event.data
                    elif state is TaskState.EXCEPTION:
                        task.exception = event.data
                    _finish(task, state)
            elif kind is JobUpdate:
                update = event.event
                for task in event.tokens:
                    if type(update) is WorkStatus:
                        task.status = (update.numerator, update.denominator)
                    else:
                        (task.data_chunks if type(update) is WorkData else task.warnings).append(
                            update.data
                        )
                    if task.on_event is not None:
                        task.on_event(update)
                    progress.append((task, update))
            elif kind is RequestRefused:
                self._refused(server, event)
            elif kind is ErrorReceived:
                logger.error(
                    "%s sent an unsolicited error: %s: %s", server.address, event.code, event.text
                )
            else:  # StatusReply, EchoReply, OptionAccepted
                op = event.token
                op.reply, op.done = event, True
        return progress

    def _refused(self, server: Server, event: RequestRefused) -> None:
        error = ServerError(event.code, event.text)
        token = event.token
        if isinstance(token, Task):
            _finish(token, TaskState.ERROR, error)
            return
        token.done = True
        if event.code == "UNKNOWN_OPTION":  # OPTION_REQ exceptions on an old server: go on
            logger.warning("%s does not support OPTION_REQ exceptions", server.address)
        else:
            token.error = error

    def _call(
        self, server: Server, request: Callable[[ClientConnection, _Op], None], deadline: float
    ) -> Any:
        """Send one request and wait for its answer on ``server``."""
        for attempt in range(2):  # a reused connection may have died while idle: retry once
            op = _Op()
            try:
                self._ensure_connected(server, deadline)
                request(server.transport.conn, op)
                server.transport.flush()
                while not op.done:
                    wait = remaining(deadline)
                    if not wait:
                        break
                    self._apply(server, server.transport.read(wait))
            except TimeoutError:
                pass
            except (OSError, RemoteProtocolError) as error:
                self._route.mark_down(server, error)
                self._reset(server)
                if attempt:
                    raise ServerUnavailable({str(server.address): server.last_error}) from error
                continue
            if not op.done:
                self._reset(server)  # a late answer would confuse the next request
                raise ServerTimeout(f"{server.address} did not answer in time")
            if op.error is not None:
                raise op.error
            return op.reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _flush_all(self, deadline: float) -> None:
        for server in self._servers:
            if server.transport.connected:
                try:
                    server.transport.flush()
                except OSError as error:
                    self._lost(server, error, deadline)

    def _lost(self, server: Server, error: Exception, deadline: float) -> None:
        """``server`` dropped: resubmit jobs it had not accepted, fail those it was running."""
        logger.warning("lost connection to %s: %s", server.address, error)
        conn = server.transport.conn
        waiting = [token for token in conn.waiting() if isinstance(token, Task)]
        running = conn.running()
        self._route.mark_down(server, error)
        self._reset(server)
        for task in running:
            _finish(
                task,
                TaskState.ERROR,
                ConnectionLost(
                    f"{server.address} dropped the connection while job {task.handle} was running; "
                    "it may still run"
                ),
            )
        for task in waiting:
            if task.attempts < len(self._servers) + 1:
                self._dispatch(task, deadline, exclude=server)
            else:
                _finish(
                    task,
                    TaskState.ERROR,
                    ServerUnavailable({str(server.address): server.last_error}),
                )
        self._flush_all(deadline)

    def _reset(self, server: Server) -> None:
        """Close the connection and forget what it owed (a new one starts from nothing)."""
        transport = server.transport
        transport.close()
        transport.conn = transport.new_conversation()

    def _timeout(self, tasks: Sequence[Task], waited: float) -> None:
        """End the unfinished ``tasks`` with a :class:`JobTimeout` that says why they may not
        have finished: for a foreground job, whether any worker had registered its function on
        its server (one admin ``status`` per server, bounded by ``DIAGNOSIS_TIMEOUT``)."""
        late = [task for task in tasks if not task.done]
        for server in self._servers:  # late replies would confuse the next call
            if server.busy:
                self._reset(server)
        statuses: dict[ServerAddress, list[FunctionStatus] | str] = {}
        seconds = f"{round(waited, 1):g}"
        for task in late:
            if task.handle is None:
                message = f"the server did not accept a job of {task.function!r} within {seconds} s"
                error = JobTimeout(message, function=task.function)
            else:
                address = task.handle.server
                status: list[FunctionStatus] | str = "no server known for its handle"
                if address is not None:
                    if address not in statuses:
                        statuses[address] = self._status_of(address)
                    status = statuses[address]
                error = _timed_out(task, seconds, address, status)
            _finish(task, TaskState.TIMEOUT, error)

    def _status_of(self, address: ServerAddress) -> list[FunctionStatus] | str:
        """The admin ``status`` of ``address``, or why it could not be had."""
        timeout = min(DIAGNOSIS_TIMEOUT, self.connect_timeout)
        try:
            with GearmanAdminClient(address, timeout=timeout) as admin:
                return admin.status(strict=False)  # a hostile row must not hide the rest
        except GearmanError as error:  # unreachable, too slow, or no admin protocol
            return str(error) or type(error).__name__


def _timed_out(
    task: Task, seconds: str, address: ServerAddress | None, status: list[FunctionStatus] | str
) -> JobTimeout:
    function = task.function
    head = f"job {task.handle} of {function!r} did not finish within {seconds} s: "
    if isinstance(status, str):
        return JobTimeout(
            f"{head}could not ask {address} whether a worker offers it ({status})",
            handle=task.handle,
            function=function,
        )
    row = next((row for row in status if row.function == function), None)
    workers = row.available_workers if row is not None else 0
    if not workers:
        why = f"no worker has registered {function!r} on {address} (the job waits until one does)"
    else:
        assert row is not None
        why = (
            f"{workers} worker{'s' if workers > 1 else ''} offer{'' if workers > 1 else 's'} "
            f"{function!r} on {address}, with {row.total} job{'s' if row.total != 1 else ''} "
            f"there ({row.running} running): the workers are busy, or the job is slow"
        )
    return JobTimeout(head + why, handle=task.handle, function=function, workers=workers)


def _finish(task: Task, state: TaskState, error: Exception | None = None) -> None:
    task.state = state
    task.error = error
