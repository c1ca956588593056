"""``GearmanServer``: binds, replays the durable queue, serves, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl as ssl_module
import time
from collections.abc import Mapping
from typing import Any

from ..errors import StartupError, StoreError
from ..protocol.constants import DEFAULT_MAX_PACKET_SIZE, PacketType
from .access import LOOPBACK, AddressList, Network
from .asyncio_protocol import ServerProtocol
from .model import ServerJob, job_created, packet
from .state import ServerState
from .store import JobStore, MemoryStore

__all__ = ["GearmanServer", "raise_file_limit"]

logger = logging.getLogger("django_gearman.server")

QUEUE_ERROR = packet(PacketType.ERROR, b"QUEUE_ERROR", b"Could not store the job")


def _error_text(error: bytes | None) -> str:
    """The code and text of an ERROR packet, for a log line."""
    if not error:
        return "refused"
    return error[12:].replace(b"\0", b": ").decode("utf-8", "replace")


def raise_file_limit(wanted: int = 65536) -> int:
    """Raise the soft open-files limit toward ``wanted`` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            logger.warning(
                "could not raise the open-files limit from %d to %d: %s", soft, target, error
            )
    if soft < 4096:
        logger.warning(
            "open-files limit is %d: the server can hold about that many connections; raise it "
            "with "
            "`ulimit -n` (hard limit %s)",
            soft,
            hard,
        )
    return soft


class GearmanServer:
    """An embedded Gearman job server on an asyncio loop.

    ``port=0`` binds a free port (see :attr:`port` after :meth:`start`). ``store`` makes
    background jobs durable (default: memory only). ``job_retries`` caps how often a job whose
    worker vanished is retried (0 = forever, as gearmand's ``-j 0``); ``worker_wakeup`` caps how
    many sleeping workers one new job wakes (0 = all).

    Limits (0 = none): ``max_connections``; ``idle_timeout`` seconds after which a connection
    that is neither a worker nor waiting for a job is closed; ``stall_timeout`` seconds after
    which one stopped mid-packet, or one that has read none of its output (it does not read), is
    closed, idle or not; ``max_buffer_bytes`` of
    unfinished packets over all connections (past it, the connection that adds more is cut
    off) and ``max_output_bytes`` of output waiting for one client that does not read;
    ``max_jobs`` and ``max_job_bytes`` over all functions; ``max_queue`` per priority for every
    function and ``limits`` per function (``maxqueue`` changes are kept in a durable store).
    Access: ``allow`` networks may connect, ``admin_allow`` ones may change the server (both
    loopback by default).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4730,
        *,
        store: JobStore | None = None,
        job_retries: int = 0,
        worker_wakeup: int = 0,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        verbose: str = "WARNING",
        backlog: int = 1024,
        ssl: ssl_module.SSLContext | None = None,
        max_connections: int = 0,
        idle_timeout: float = 0,
        stall_timeout: float = 60,
        max_buffer_bytes: int = 128 * 1024 * 1024,
        max_output_bytes: int = 64 * 1024 * 1024,
        max_jobs: int = 0,
        max_job_bytes: int = 0,
        max_queue: int = 0,
        limits: dict[bytes, tuple[int, int, int]] | None = None,
        allow: tuple[Network, ...] = LOOPBACK,
        admin_allow: tuple[Network, ...] = LOOPBACK,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.store: Any = store if store is not None else MemoryStore()
        self.max_packet_size = max_packet_size
        self.verbose = verbose
        self.backlog = backlog
        self.ssl = ssl  # TLS on every connection when set (see ..tls)
        self.job_retries = job_retries
        self.worker_wakeup = worker_wakeup
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.stall_timeout = stall_timeout
        self.max_buffer_bytes = max_buffer_bytes
        self.max_output_bytes = max_output_bytes
        self.max_jobs = max_jobs
        self.max_job_bytes = max_job_bytes
        self.max_queue = max_queue
        self.limits = dict(limits or {})
        self.allow = AddressList(allow)
        self.admin_allow = AddressList(admin_allow)
        self.buffered = 0  # bytes of unfinished packets held by all connections
        self.refused = 0  # connections refused since the last warning about it
        self._refused_logged = 0.0
        self.connections: set[ServerProtocol] = set()
        self.dirty: list[ServerProtocol] = []
        # Durable submits waiting for their commit, in store-id order, and the connections
        # whose output is held until then.
        self.pending: list[ServerJob] = []
        self.held: list[ServerProtocol] = []
        self._flush_scheduled = False
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: asyncio.Event | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.state: ServerState = None  # type: ignore[assignment]  # built in start()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Replay the durable queue, then bind and start accepting connections."""
        loop = self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self.state = ServerState(
            call_later=self._call_later,
            store=self.store,
            job_retries=self.job_retries,
            worker_wakeup=self.worker_wakeup,
            handle_prefix=b"H:" + socket.gethostname().encode(),
            max_jobs=self.max_jobs,
            max_job_bytes=self.max_job_bytes,
            max_queue=(self.max_queue,) * 3,
            limits={**self.limits, **self._stored_limits()},
        )
        self._tick()
        replayed = self._replay()
        if self.store.durable:
            self.store.on_commit(loop, self._committed)
        self._server = await loop.create_server(
            lambda: ServerProtocol(self),
            self.host,
            self.requested_port,
            backlog=self.backlog,
            reuse_address=True,
            ssl=self.ssl,
            # A peer that never finishes its TLS handshake holds a socket only this long.
            ssl_handshake_timeout=10.0 if self.ssl is not None else None,
        )
        if replayed:
            logger.info("replayed %d durable job(s)", replayed)

    def _replay(self) -> int:
        count = 0
        try:
            kept = self.store.load()
        except StoreError as error:  # not an OSError of binding, which start() reports so
            raise StartupError(f"cannot replay the job store: {error}") from error
        for stored in kept:
            job, created, refusal = self.state.submit(
                None,
                stored.function,
                stored.unique,
                stored.data,
                stored.priority,
                background=True,
                when=stored.when,
                reducer=stored.reducer,
            )
            if job is None:
                logger.warning(
                    "stored job %d (function %r) was not replayed (%s); it stays in the store",
                    stored.id,
                    stored.function[:80],
                    _error_text(refusal),
                )
                continue
            if created:
                job.store_id = stored.id
                job.enqueued = stored.enqueued
                self.state.enqueue(job)
                count += 1
            else:
                self.store.remove(stored.id)  # a duplicate of a coalesced job
        return count

    def _committed(self, last_id: int, failed: Mapping[int, BaseException]) -> None:
        """The store committed every job up to ``last_id`` but those in ``failed``: queue
        them, and release the held JOB_CREATED replies. A lost job is forgotten, and every
        client that submitted it or merged onto it gets ERROR in place of its JOB_CREATED."""
        pending = self.pending
        if pending and pending[-1].pending_id <= last_id:
            done, self.pending = pending, []
        else:
            cut = 0
            while cut < len(pending) and pending[cut].pending_id <= last_id:
                cut += 1
            done = pending[:cut]
            del pending[:cut]
        state = self.state
        replies: dict[bytes, bytes] = {}
        if not failed:  # the path of every commit
            enqueue = state.enqueue
            for job in done:
                job.pending_id = 0
                enqueue(job)
        else:
            for job in done:
                lost = job.pending_id in failed
                job.pending_id = 0
                if lost:
                    replies[job_created(job.handle)] = QUEUE_ERROR
                    state.forget(job)  # gone from status; its clients are told below
                else:
                    state.enqueue(job)
        held = self.held
        self.held = []
        for connection in held:
            if connection.held <= last_id:
                connection.release(replies)
            else:
                if replies:  # a failed reply may sit before a later job's in the output
                    connection.release(replies, last_id)
                self.held.append(connection)
        if self.dirty:
            self.schedule_flush()

    def _stored_limits(self) -> dict[bytes, tuple[int, int, int]]:
        """Queue limits set by ``maxqueue`` before a restart (they win over ``limits``)."""
        load = getattr(self.store, "load_limits", None)
        return dict(load()) if load is not None else {}

    def _tick(self) -> None:
        """Keep ``state.stamp`` at the current second (the jobs' enqueue time); close
        connections idle or stalled mid-packet for too long."""
        now = self.state.tick()
        assert self._loop is not None
        self._ticker = self._loop.call_later(1.0 - now % 1.0 + 0.001, self._tick)
        if self.connections and int(now) % 2 == 0:
            self._close_idle(int(now))

    def _close_idle(self, now: int) -> None:
        """Abort connections idle past ``idle_timeout`` (clients only), stopped mid-packet past
        ``stall_timeout``, or that have not taken a byte of their output for ``stall_timeout``
        (they do not read: their requests wait unread, so ``last_seen`` alone cannot tell)."""
        idle = self.idle_timeout
        stall = self.stall_timeout
        for connection in list(self.connections):
            quiet = now - connection.last_seen
            blocked = connection.write_blocked_since
            if blocked and connection.transport is not None:
                size = connection.transport.get_write_buffer_size()
                if size < connection.blocked_size:  # it read some: still a (slow) reader
                    blocked = connection.write_blocked_since = now
                connection.blocked_size = size
            peer = connection.peer
            if stall and blocked and now - blocked >= stall:
                why = (
                    f"it has read none of its output for {now - blocked:g} s (it does not read; "
                    f"--stall-timeout {stall:g})"
                )
            elif connection.reading_paused:
                continue  # the server stopped reading it (backlog), so its silence is ours
            elif stall and connection.buffered and quiet >= stall:
                why = f"stalled mid-packet for {quiet} s (--stall-timeout {stall:g})"
            elif idle and quiet >= idle and not (peer.abilities or peer.waiting_on or peer.jobs):
                why = f"idle for {quiet} s (--idle-timeout {idle:g})"
            else:
                continue
            logger.info("closing %s: %s", peer.host, why)
            if connection.transport is not None:
                connection.transport.abort()

    def admit(self, host: str, count: int) -> str | None:
        """Why a new connection from ``host`` is refused (None: it is welcome)."""
        why = None
        if host not in self.allow:
            why = f"{host} is not in --allow {self.allow}"
        elif self.max_connections and count >= self.max_connections:
            why = f"{count} connections open (--max-connections {self.max_connections})"
        if why is not None:
            self.refused += 1
            now = time.monotonic()
            if now - self._refused_logged >= 10:  # one line per 10 s, however many come
                logger.warning("refused %d connection(s), the last because %s", self.refused, why)
                self.refused = 0
                self._refused_logged = now
        return why

    def is_admin(self, host: str) -> bool:
        """Whether ``host`` may send state-changing admin commands (``--admin-allow``)."""
        return host in self.admin_allow

    def shutdown(self, graceful: bool) -> None:  # noqa: FBT001 - the admin command's shape
        """The ``shutdown [graceful]`` admin command: close after this loop turn's replies."""
        logger.info("shutdown requested by an admin%s", " (graceful)" if graceful else "")
        assert self._loop is not None
        self._loop.call_soon(lambda: asyncio.ensure_future(self.close(graceful=graceful)))

    def _call_later(self, delay: float, callback: Any) -> asyncio.TimerHandle:
        assert self._loop is not None
        return self._loop.call_later(delay, callback)

    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for connection in dirty:
            try:
                connection.flush()
            except Exception:  # one broken connection must not stop the others' output
                logger.exception("could not write to %s; closing it", connection.peer.host)
                if connection.transport is not None:
                    connection.transport.abort()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called."""
        assert self._closed is not None, "start() the server first"
        await self._closed.wait()

    async def close(self, *, graceful: bool = False) -> None:
        """Stop accepting; with ``graceful``, wait until no job is running (gearmand's SIGUSR1);
        then persist what is pending and close every connection."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        if graceful:
            while self.state is not None and any(f.running for f in self.state.functions.values()):
                await asyncio.sleep(0.05)
        await self.store.flush()
        for connection in list(self.connections):
            connection.flush()
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.store.close()
        if self._closed is not None:
            self._closed.set()
