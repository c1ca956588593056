"""``GearmanServer``: binds, replays the durable queue, serves, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl as ssl_module
from typing import Any

from ..protocol.constants import DEFAULT_MAX_PACKET_SIZE, PacketType
from .connection import ServerProtocol
from .model import ServerJob, job_created, packet
from .state import ServerState
from .store import JobStore, MemoryStore

__all__ = ["GearmanServer", "raise_file_limit"]

logger = logging.getLogger("django_gearman.server")

QUEUE_ERROR = packet(PacketType.ERROR, b"QUEUE_ERROR", b"Could not store the job")


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
        )
        if replayed:
            logger.info("replayed %d durable job(s)", replayed)

    def _replay(self) -> int:
        count = 0
        for stored in self.store.load():
            job, created, _ = self.state.submit(
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
                continue
            if created:
                job.store_id = stored.id
                job.enqueued = stored.enqueued
                self.state.enqueue(job)
                count += 1
            else:
                self.store.remove(stored.id)  # a duplicate of a coalesced job
        return count

    def _committed(self, last_id: int, error: BaseException | None) -> None:
        """The store committed (or, with ``error``, lost) every job up to ``last_id``: queue
        them, and release the JOB_CREATED replies (turned into ERROR for lost jobs)."""
        pending = self.pending
        if pending and pending[-1].store_id <= last_id:
            done, self.pending = pending, []
        else:
            cut = 0
            while cut < len(pending) and pending[cut].store_id <= last_id:
                cut += 1
            done = pending[:cut]
            del pending[:cut]
        failed: dict[bytes, bytes] = {}
        if error is None:
            enqueue = self.state.enqueue
            for job in done:
                enqueue(job)
        else:
            logger.error("could not store %d job(s): %s", len(done), error)
            for job in done:
                self.state.forget(job)
                failed[job_created(job.handle)] = QUEUE_ERROR
        held = self.held
        self.held = []
        for connection in held:
            if connection.held <= last_id:
                connection.release(failed)
            else:
                self.held.append(connection)
        if self.dirty:
            self.schedule_flush()

    def _tick(self) -> None:
        """Keep ``state.stamp`` at the current second (the jobs' enqueue time)."""
        now = self.state.tick()
        assert self._loop is not None
        self._ticker = self._loop.call_later(1.0 - now % 1.0 + 0.001, self._tick)

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
