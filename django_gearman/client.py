"""A blocking Gearman client for Django views, management commands and scripts.

``GearmanClient(servers)`` submits foreground jobs (and waits for the result), background jobs
(and returns the handle), scheduled jobs (``SUBMIT_JOB_EPOCH``) and task sets (many jobs in
parallel over all servers, like PHP's ``addTask`` + ``runTasks``). Connections are opened
lazily, reused, and every blocking call has a timeout.

Which server a job goes to: a job with a unique key goes to the server chosen by rendezvous
hashing of the key, so the same key always meets the same server (and gearmand can coalesce
it); other jobs are spread round-robin. A server that refuses or drops a connection is skipped
and retried after a backoff; when none is reachable, :class:`ServerUnavailable` says why for each.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import select
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime

from .exceptions import ConnectionLost, JobTimeout, ServerError, ServerUnavailable
from .jobs import (
    JobHandle,
    JobStatus,
    Task,
    TaskState,
    WorkComplete,
    WorkData,
    WorkEvent,
    WorkStatus,
    WorkWarning,
)
from .protocol import (
    MAX_UNIQUE_SIZE,
    Packet,
    PacketType,
    Priority,
    RemoteProtocolError,
    Role,
)
from .transport import ServerAddress, Transport, parse_servers, remaining

__all__ = [
    "GearmanClient",
    "JobHandle",
    "JobStatus",
    "Priority",
    "Task",
    "TaskState",
    "WorkComplete",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
]

logger = logging.getLogger("django_gearman.client")

T = PacketType
_FOREGROUND = {Priority.HIGH: T.SUBMIT_JOB_HIGH, Priority.NORMAL: T.SUBMIT_JOB, Priority.LOW: T.SUBMIT_JOB_LOW}
_BACKGROUND = {
    Priority.HIGH: T.SUBMIT_JOB_HIGH_BG,
    Priority.NORMAL: T.SUBMIT_JOB_BG,
    Priority.LOW: T.SUBMIT_JOB_LOW_BG,
}


class _Op:
    """A pending non-job request (OPTION_REQ, GET_STATUS, ECHO_REQ) awaiting its reply."""

    __slots__ = ("error", "reply")

    def __init__(self) -> None:
        self.reply: Packet | None = None
        self.error: Exception | None = None


class _Server:
    """Client-side state of one job server: its transport, replies awaited, jobs running."""

    __slots__ = ("address", "down_until", "expect", "failures", "last_error", "running", "transport")

    def __init__(self, address: ServerAddress, max_packet_size: int) -> None:
        self.address = address
        self.transport = Transport(address, Role.CLIENT, max_packet_size=max_packet_size)
        self.expect: deque[Task | _Op] = deque()  # replies come back in request order
        self.running: dict[bytes, list[Task]] = {}  # handle -> foreground tasks attached
        self.down_until = 0.0
        self.failures = 0
        self.last_error = ""

    def fileno(self) -> int:
        return self.transport.fileno()

    @property
    def busy(self) -> bool:
        return bool(self.expect or self.running)


class GearmanClient:
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
        max_packet_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.servers = parse_servers(servers)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client_id = client_id
        self.exceptions = exceptions
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._servers = [_Server(address, max_packet_size) for address in self.servers]
        self._by_address = {s.address: s for s in self._servers}
        self._round_robin = itertools.count()

    def __repr__(self) -> str:
        return f"<GearmanClient servers={[str(a) for a in self.servers]}>"

    def __enter__(self) -> GearmanClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (the client reconnects on next use)."""
        for server in self._servers:
            self._reset(server)

    # -- public API -------------------------------------------------------------------------

    def submit(
        self,
        function: str,
        data: bytes | str = b"",
        *,
        priority: Priority = Priority.NORMAL,
        unique: str | None = None,
        timeout: float | None = None,
        on_data: Callable[[WorkData], None] | None = None,
        on_warning: Callable[[WorkWarning], None] | None = None,
        on_status: Callable[[WorkStatus], None] | None = None,
    ) -> bytes:
        """Run a foreground job and return its result bytes.

        Raises :class:`JobFailed` on WORK_FAIL, :class:`JobException` on WORK_EXCEPTION,
        :class:`JobTimeout` when it does not finish within ``timeout`` seconds.
        """
        callbacks = {WorkData: on_data, WorkWarning: on_warning, WorkStatus: on_status}
        on_event = None
        if on_data or on_warning or on_status:

            def on_event(event: WorkEvent) -> None:
                callback = callbacks.get(type(event))
                if callback is not None:
                    callback(event)  # type: ignore[arg-type]

        task = Task(function, _bytes(data), Priority(priority), unique, on_event=on_event)
        self.run_tasks([task], timeout=timeout)
        task.raise_for_state()
        assert task.result is not None
        return task.result

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
        task = Task(function, _bytes(data), Priority(priority), unique)
        for event_task, event in self._drive([task], self._deadline(timeout)):
            if event_task is task:
                yield event
        task.raise_for_state()
        assert task.handle is not None and task.result is not None
        yield WorkComplete(task.handle, task.result)

    def submit_background(
        self,
        function: str,
        data: bytes | str = b"",
        *,
        priority: Priority = Priority.NORMAL,
        unique: str | None = None,
        run_at: datetime | float | None = None,
        timeout: float | None = None,
    ) -> JobHandle:
        """Queue a background job and return its handle once the server has accepted it.

        ``run_at`` (an aware datetime or a Unix timestamp) sends ``SUBMIT_JOB_EPOCH``: the job
        runs at that time (gearmand runs such jobs at normal priority). Without ``unique``, a
        random one is sent, as libgearman does, so a persistent queue can store the job.
        """
        task = self.background_task(function, data, priority=priority, unique=unique, run_at=run_at)
        self.run_tasks([task], timeout=timeout)
        task.raise_for_state()
        assert task.handle is not None
        return task.handle

    def submit_background_many(
        self, jobs: Iterable[tuple[str, bytes | str]], *, priority: Priority = Priority.NORMAL, timeout: float | None = None
    ) -> list[JobHandle]:
        """Queue many background jobs, pipelined, and return their handles in order."""
        tasks = [self.background_task(function, data, priority=priority) for function, data in jobs]
        self.run_tasks(tasks, timeout=timeout)
        for task in tasks:
            task.raise_for_state()
        return [task.handle for task in tasks]  # type: ignore[misc]

    @staticmethod
    def background_task(
        function: str,
        data: bytes | str = b"",
        *,
        priority: Priority = Priority.NORMAL,
        unique: str | None = None,
        run_at: datetime | float | None = None,
    ) -> Task:
        """A background :class:`Task` for :meth:`run_tasks`."""
        when = None
        if run_at is not None:
            if Priority(priority) is not Priority.NORMAL:
                raise ValueError("scheduled (run_at) jobs run at normal priority in gearmand; leave priority NORMAL")
            when = run_at.timestamp() if isinstance(run_at, datetime) else float(run_at)
        return Task(function, _bytes(data), Priority(priority), unique, background=True, run_at=when)

    def run_tasks(self, tasks: Sequence[Task], *, timeout: float | None = None) -> Sequence[Task]:
        """Submit every task at once and wait until all are done (or the timeout passes).

        Tasks are pipelined per server and the servers are served in parallel. Each task ends
        with its own state, result and error; nothing is raised for a single task's failure.
        """
        for _ in self._drive(tasks, self._deadline(timeout)):
            pass
        return tasks

    def get_status(self, handle: str, *, timeout: float | None = None) -> JobStatus:
        """Ask the server holding ``handle`` for its status (``GET_STATUS``).

        A :class:`JobHandle` knows its server; for a plain string every server is asked and the
        first that knows the job answers.
        """
        deadline = self._deadline(timeout)
        servers = [self._by_address[handle.server]] if isinstance(handle, JobHandle) and handle.server else self._servers
        status = None
        for server in servers:
            reply = self._call(server, T.GET_STATUS, (handle.encode(),), deadline)
            handle_b, known, running, numerator, denominator = reply.args
            status = JobStatus(handle_b.decode(), known == b"1", running == b"1", int(numerator), int(denominator))
            if status.known:
                break
        assert status is not None
        return status

    def get_status_unique(self, unique: str, *, timeout: float | None = None) -> JobStatus:
        """Status of the job with this unique key (``GET_STATUS_UNIQUE``), asked of its server.

        gearmand puts the unique key, not the handle, in the reply's first field.
        """
        server = self._candidates(unique)[0]
        reply = self._call(server, T.GET_STATUS_UNIQUE, (unique.encode(),), self._deadline(timeout))
        first, known, running, numerator, denominator, waiting = reply.args
        return JobStatus(first.decode(), known == b"1", running == b"1", int(numerator), int(denominator), int(waiting))

    def echo(self, data: bytes = b"ping", *, server: str | None = None, timeout: float | None = None) -> bytes:
        """Send ``ECHO_REQ`` to a server (the first by default) and return the echoed bytes."""
        target = self._by_address[parse_servers(server)[0]] if server else self._servers[0]
        return self._call(target, T.ECHO_REQ, (data,), self._deadline(timeout)).args[0]

    # -- dispatching ------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _candidates(self, unique: str | None) -> list[_Server]:
        """Servers in the order to try: the key's rendezvous order, else round-robin; down last."""
        servers = self._servers
        if len(servers) > 1:
            if unique:
                key = unique.encode()
                servers = sorted(servers, key=lambda s: _weight(key, s.address), reverse=True)
            else:
                start = next(self._round_robin) % len(servers)
                servers = servers[start:] + servers[:start]
            now = time.monotonic()
            if any(s.down_until > now for s in servers):
                servers = [s for s in servers if s.down_until <= now] + [s for s in servers if s.down_until > now]
        return servers

    def _ensure_connected(self, server: _Server, deadline: float) -> None:
        transport = server.transport
        if transport.connected:
            return
        transport.connect(min(self.connect_timeout, remaining(deadline) or 0.001))
        if self.client_id:
            transport.conn.send(T.SET_CLIENT_ID, self.client_id.encode())
        if self.exceptions:
            transport.conn.send(T.OPTION_REQ, b"exceptions")
            server.expect.append(_Op())
        logger.debug("connected to %s", server.address)

    def _encode_task(self, task: Task) -> bytes:
        if task._packet:
            return task._packet
        unique = task.unique
        if unique is None and task.background:
            unique = uuid.uuid4().hex  # as libgearman: a persistent queue keys on it
        unique_b = (unique or "").encode()
        if len(unique_b) > MAX_UNIQUE_SIZE:
            raise ValueError(f"unique key is {len(unique_b)} bytes; Gearman allows at most {MAX_UNIQUE_SIZE}")
        function = task.function.encode()
        if not function or b"\0" in function or b"\0" in unique_b:
            raise ValueError("function names and unique keys must be non-empty text without NUL bytes")
        if task.run_at is not None:
            # Whole seconds on the wire: round up, so a job never runs before its time.
            packet = Packet.request(T.SUBMIT_JOB_EPOCH, function, unique_b, str(math.ceil(task.run_at)).encode(), task.data)
        else:
            table = _BACKGROUND if task.background else _FOREGROUND
            packet = Packet.request(table[task.priority], function, unique_b, task.data)
        task._packet = packet.encode()
        return task._packet

    def _dispatch(self, task: Task, deadline: float, exclude: _Server | None = None) -> _Server | None:
        """Queue ``task`` on a reachable server; on none, end it with ``ServerUnavailable``."""
        try:
            payload = self._encode_task(task)
        except ValueError as error:
            self._finish(task, TaskState.ERROR, error=error)
            return None
        errors: dict[str, str] = {}
        for server in self._candidates(task.unique):
            if server is exclude and len(self._servers) > 1:
                continue
            try:
                self._ensure_connected(server, deadline)
            except OSError as error:
                self._mark_down(server, error)
                errors[str(server.address)] = server.last_error
                continue
            task._attempts += 1
            server.transport.conn._outgoing.append(payload)
            server.expect.append(task)
            return server
        self._finish(task, TaskState.ERROR, error=ServerUnavailable(errors))
        return None

    def _drive(self, tasks: Sequence[Task], deadline: float) -> Iterator[tuple[Task, WorkEvent]]:
        """Submit ``tasks`` and pump replies until every one is done; yields progress events."""
        for task in tasks:
            task.state = TaskState.PENDING
            self._dispatch(task, deadline)
        self._flush_all(deadline)
        while True:
            # Every awaited reply sits in some server's ``expect`` or ``running``; when no
            # server is busy, every task has ended (a client is used by one thread at a time).
            busy = [server for server in self._servers if server.busy]
            if not busy:
                return
            wait = remaining(deadline)
            if not wait:
                self._timeout(tasks)
                return
            ready = busy if len(busy) == 1 else _readable(busy, wait)
            for server in ready:
                try:
                    frames = server.transport.read(wait if len(busy) == 1 else 0)
                    for frame in frames:
                        yield from self._handle(server, frame)
                except TimeoutError:
                    continue
                except (OSError, RemoteProtocolError) as error:
                    self._lost(server, error, deadline)

    def _handle(self, server: _Server, frame: object) -> Iterator[tuple[Task, WorkEvent]]:
        if not isinstance(frame, Packet):
            logger.warning("%s sent an unexpected text line %r", server.address, frame)
            return
        kind = frame.type
        args = frame.args
        if kind is T.WORK_COMPLETE:
            for task in server.running.pop(args[0], ()):
                task.result = args[1]
                self._finish(task, TaskState.COMPLETE)
        elif kind is T.JOB_CREATED:
            item = server.expect.popleft() if server.expect else None
            if not isinstance(item, Task):
                raise_unexpected(server, frame)
                return
            item.handle = JobHandle(args[0].decode(), server.address)
            item.state = TaskState.CREATED
            if server.failures:
                server.failures = 0
            if not item.background:
                server.running.setdefault(args[0], []).append(item)
        elif kind is T.WORK_FAIL:
            # gearmand 1.1.20 sends the WORK_FAIL it makes from a WORK_EXCEPTION (for clients
            # without the exceptions option) with a stray trailing NUL after the handle.
            for task in server.running.pop(args[0].rstrip(b"\0"), ()):
                self._finish(task, TaskState.FAILED)
        elif kind is T.WORK_EXCEPTION:
            for task in server.running.pop(args[0], ()):
                task.exception = args[1]
                self._finish(task, TaskState.EXCEPTION)
        elif kind is T.WORK_DATA or kind is T.WORK_WARNING or kind is T.WORK_STATUS:
            handle = args[0].decode()
            event: WorkEvent
            if kind is T.WORK_STATUS:
                event = WorkStatus(handle, _int(args[1]), _int(args[2]))
            else:
                event = (WorkData if kind is T.WORK_DATA else WorkWarning)(handle, args[1])
            for task in server.running.get(args[0], ()):
                if kind is T.WORK_STATUS:
                    task.status = (event.numerator, event.denominator)  # type: ignore[union-attr]
                else:
                    (task.data_chunks if kind is T.WORK_DATA else task.warnings).append(args[1])
                if task.on_event is not None:
                    task.on_event(event)
                yield task, event
        elif kind is T.ERROR:
            error = ServerError(args[0].decode(errors="replace"), args[1].decode(errors="replace"))
            item = server.expect.popleft() if server.expect else None
            if isinstance(item, Task):
                self._finish(item, TaskState.ERROR, error=error)
            elif item is not None:
                item.error = error
                if error.code == "UNKNOWN_OPTION":
                    logger.warning("%s does not support OPTION_REQ exceptions", server.address)
                    item.error = None
            else:
                logger.error("%s sent an unsolicited error: %s", server.address, error)
        else:  # OPTION_RES, STATUS_RES, STATUS_RES_UNIQUE, ECHO_RES
            item = server.expect.popleft() if server.expect else None
            if not isinstance(item, _Op):
                raise_unexpected(server, frame)
                return
            item.reply = frame

    def _call(self, server: _Server, kind: PacketType, args: tuple[bytes, ...], deadline: float) -> Packet:
        """Send one request and wait for its reply on ``server``."""
        for attempt in range(2):  # a reused connection may have died while idle: retry once
            try:
                self._ensure_connected(server, deadline)
                op = _Op()
                server.transport.conn.send(kind, *args)
                server.expect.append(op)
                server.transport.flush()
                while op.reply is None and op.error is None:
                    wait = remaining(deadline)
                    if not wait:
                        self._reset(server)
                        raise JobTimeout(f"{server.address} did not answer {kind.name} in time")
                    for frame in server.transport.read(wait):
                        for _ in self._handle(server, frame):
                            pass
            except TimeoutError:
                continue
            except (OSError, RemoteProtocolError) as error:
                self._mark_down(server, error)
                self._reset(server)
                if attempt:
                    raise ServerUnavailable({str(server.address): server.last_error}) from error
                continue
            if op.error is not None:
                raise op.error
            assert op.reply is not None
            return op.reply
        raise JobTimeout(f"{server.address} did not answer {kind.name} in time")

    def _flush_all(self, deadline: float) -> None:
        for server in self._servers:
            if server.transport.connected:
                try:
                    server.transport.flush()
                except OSError as error:
                    self._lost(server, error, deadline)

    def _lost(self, server: _Server, error: Exception, deadline: float) -> None:
        """``server`` dropped: resubmit jobs it had not accepted, fail those it was running."""
        logger.warning("lost connection to %s: %s", server.address, error)
        waiting = [item for item in server.expect if isinstance(item, Task)]
        running = [task for tasks in server.running.values() for task in tasks]
        self._mark_down(server, error)
        self._reset(server)
        for task in running:
            self._finish(task, TaskState.ERROR, error=ConnectionLost(f"{server.address} dropped the connection while job {task.handle} was running; it may still run"))
        retry = [task for task in waiting if task._attempts < len(self._servers) + 1]
        for task in waiting:
            if task not in retry:
                self._finish(task, TaskState.ERROR, error=ServerUnavailable({str(server.address): server.last_error}))
        for task in retry:
            self._dispatch(task, deadline, exclude=server)
        self._flush_all(deadline)

    def _mark_down(self, server: _Server, error: Exception) -> None:
        server.failures += 1
        server.last_error = str(error) or type(error).__name__
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** (server.failures - 1))
        server.down_until = time.monotonic() + delay
        logger.info("server %s unavailable (%s); retrying in %.1fs", server.address, server.last_error, delay)

    def _reset(self, server: _Server) -> None:
        server.transport.close()
        server.expect.clear()
        server.running.clear()

    @staticmethod
    def _finish(task: Task, state: TaskState, *, error: Exception | None = None) -> None:
        task.state = state
        task.error = error

    def _timeout(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            if not task.done:
                self._finish(task, TaskState.TIMEOUT)
        for server in self._servers:  # late replies would confuse the next call
            if server.busy:
                self._reset(server)


def _readable(servers: list[_Server], timeout: float) -> list[_Server]:
    """The servers with data to read; poll(), since descriptors may be above select()'s 1024."""
    poller = select.poll()
    by_fd = {}
    for server in servers:
        by_fd[server.fileno()] = server
        poller.register(server.fileno(), select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def raise_unexpected(server: _Server, frame: Packet) -> None:
    raise RemoteProtocolError(f"{server.address} sent {frame.type.name} when no such reply was awaited")


def _weight(key: bytes, address: ServerAddress) -> bytes:
    return hashlib.blake2b(key + b"\0" + str(address).encode(), digest_size=8).digest()


def _bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"job data must be bytes or str, not {type(data).__name__}")
    return data


def _int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
