"""A Gearman worker: registers functions on every server and runs the jobs they hand out.

One process, one job at a time, any number of servers: the worker keeps a connection to each,
asks each for work with ``GRAB_JOB_UNIQ``, sleeps with ``PRE_SLEEP`` until a ``NOOP`` wakes it,
reconnects with backoff when a server goes away (registering its functions again), and stops
warm on the first SIGINT/SIGTERM (the job in hand finishes) and cold on the second.

Time limits (``register(..., soft_time_limit=, time_limit=)``): the soft one raises
SoftTimeLimitExceeded inside the job; past the hard one the worker's watchdog fails the job with
TimeLimitExceeded on its own connection, disconnects, and calls :attr:`Worker.on_time_limit`
(the pools kill the child or replace the thread there).

What a function gets, and how its return value or exception becomes the job's outcome, is
:mod:`.work`'s.
"""

from __future__ import annotations

import logging
import random
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError, TimeLimitExceeded, UsageError
from .protocol import (
    DEFAULT_MAX_PACKET_SIZE,
    ErrorReceived,
    JobAssigned,
    Outcome,
    WentToSleep,
    Woken,
    WorkerConnection,
    WorkerState,
)
from .transport import ServerAddress, Transport, parse_servers
from .work import Job, Watchdog, check_time_limits, exception_payload, perform

__all__ = ["Worker", "server_timeout"]

logger = logging.getLogger("django_gearman.worker")

#: How long the hard limit waits for the connection (held by the job sending progress) before
#: it gives up failing the job itself: the server then takes the job back on the disconnect.
LOCK_WAIT = 5.0


def server_timeout(timeout: float | None, time_limit: float | None) -> float | None:
    """The CAN_DO_TIMEOUT to announce, in seconds: ``timeout`` if given; else, for a
    ``time_limit``, a margin above it (a tenth, at least a second), so that the worker's own
    failure of the job arrives first and the server takes the job back (gearmand re-queues it
    for the next worker) only when the worker could not report, e.g. it hangs whole."""
    if timeout is not None:
        return timeout
    if time_limit is not None:
        return time_limit + max(1.0, time_limit / 10)
    return None


class _Link:
    """The worker's connection to one server: its transport (whose conversation runs the
    grab/sleep cycle), and when to reconnect or ask again."""

    __slots__ = ("address", "failures", "retry_at", "slept_at", "transport")

    def __init__(self, address: ServerAddress, max_packet_size: int) -> None:
        self.address = address
        self.transport = Transport(
            address, lambda: WorkerConnection(max_packet_size=max_packet_size)
        )
        self.retry_at = 0.0
        self.failures = 0
        self.slept_at = 0.0  # when the last PRE_SLEEP went out

    @property
    def connected(self) -> bool:
        return self.transport.connected

    @property
    def sleeping(self) -> bool:
        return self.transport.conn.worker_state is WorkerState.SLEEPING

    def fileno(self) -> int:
        return self.transport.fileno()


_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True, slots=True)
class _Function:
    callback: Callable[[Job], bytes | str | None]
    timeout: float | None  # what CAN_DO_TIMEOUT announces (server_timeout())
    soft_time_limit: float | None = None
    time_limit: float | None = None
    on_expired: Callable[[Job, TimeLimitExceeded], None] | None = None


class Worker:
    """Runs registered functions for jobs from one or more Gearman job servers.

    ``reconnect_delay`` is the first wait before reconnecting to a lost server; it doubles on
    each failure up to ``max_reconnect_delay`` (with jitter, so workers don't return in a herd).

    ``prefetch`` is how many ``GRAB_JOB_UNIQ`` requests stay outstanding per server: with 1 (the
    default) the worker asks for the next job only after finishing one, a full round trip per
    job; with 2 or more the next job is already on its way while one runs, which for short jobs
    multiplies throughput, at the price that jobs assigned to this worker but not yet started
    count as running and cannot go to an idle worker (they return to the queue if we disconnect).
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "127.0.0.1:4730",
        *,
        client_id: str | None = None,
        connect_timeout: float = 5.0,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        prefetch: int = 1,
        idle_poll: float | None = 2.0,
    ) -> None:
        if prefetch < 1:
            raise UsageError("prefetch must be at least 1")
        if idle_poll is not None and idle_poll <= 0:
            raise UsageError("idle_poll must be more than 0 seconds, or None")
        self.idle_poll = idle_poll
        self.servers = parse_servers(servers)
        self.prefetch = prefetch
        self.client_id = client_id
        self.connect_timeout = connect_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.functions: dict[str, _Function] = {}
        self.jobs_done = 0
        self._limit: int | None = None  # jobs_done at which work() returns (max_jobs)
        self._links = [_Link(address, max_packet_size) for address in self.servers]
        self._stop = False
        self._wake_r: socket.socket | None = None  # a socketpair while work() runs, so a
        self._wake_w: socket.socket | None = None  # stop request or signal wakes select()
        self._watchdog = Watchdog(self._time_limit_passed)
        self._abandoned = False  # abandon()ed: nothing more is sent
        #: Called (in the watchdog's thread, holding the connection's lock) once a job that ran
        #: past its time limit was failed and this worker disconnected: the process pool's
        #: child exits there, the thread pool replaces the Worker. None: this Worker connects
        #: again once the job's callback returns (its result is discarded).
        self.on_time_limit: Callable[[Job], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<Worker servers={[str(a) for a in self.servers]} functions={sorted(self.functions)}>"
        )

    # -- configuration ----------------------------------------------------------------------

    def register(
        self,
        function: str,
        callback: Callable[[Job], bytes | str | None],
        *,
        timeout: float | None = None,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        on_expired: Callable[[Job, TimeLimitExceeded], None] | None = None,
    ) -> None:
        """Offer ``function``; ``timeout`` (seconds) sends CAN_DO_TIMEOUT, after which the
        server takes the job back (gearmand requeues it, counting a retry).

        ``soft_time_limit`` (seconds) raises :class:`~.errors.SoftTimeLimitExceeded` inside a
        job that runs longer; ``time_limit`` fails it with :class:`~.errors.TimeLimitExceeded`
        (on this worker's connection, which then closes) and calls :attr:`on_time_limit`.
        Without a ``timeout``, a ``time_limit`` announces CAN_DO_TIMEOUT a little above itself
        (:func:`server_timeout`). ``on_expired(job, error)`` is told of a job failed at its
        ``time_limit`` (from the watchdog's thread, before the worker is replaced): the task
        layer records the failure there, or queues the retry its policy asks for."""
        if not function or "\0" in function:
            raise UsageError("function names must be non-empty text without NUL bytes")
        soft, hard = check_time_limits(soft_time_limit, time_limit)
        if timeout is not None and hard is not None and timeout <= hard:
            logger.warning(
                "%s: timeout %g s <= time_limit %g s: the server takes jobs back before the "
                "worker fails them",
                function,
                timeout,
                hard,
            )
        self.functions[function] = _Function(
            callback, server_timeout(timeout, hard), soft, hard, on_expired
        )
        for link in self._links:
            if link.connected:
                self._send_can_do(link, function)
                self._flush(link)

    def unregister(self, function: str) -> None:
        """Stop offering ``function`` (CANT_DO)."""
        self.functions.pop(function)
        for link in self._links:
            if link.connected:
                link.transport.conn.cant_do(function.encode())
                self._flush(link)

    def _send_can_do(self, link: _Link, name: str) -> None:
        timeout = self.functions[name].timeout
        link.transport.conn.can_do(
            name.encode(), None if timeout is None else max(1, round(timeout * 1000))
        )

    # -- running ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the job in hand (warm shutdown); safe from any thread or signal handler."""
        self._stop = True
        wake = self._wake_w
        if wake is not None:
            try:
                wake.send(b"!")
            except OSError:
                pass

    def work(
        self, *, burst: bool = False, max_jobs: int | None = None, install_signals: bool = True
    ) -> int:
        """Run jobs until stopped; return the number of jobs run in this call.

        ``burst`` returns once every reachable server has no job for us (or none is reachable);
        ``max_jobs`` returns after that many jobs. Signals are handled only in the main thread.
        """
        if not self.functions:
            raise UsageError("register at least one function before calling work()")
        start = self.jobs_done
        self._limit = None if max_jobs is None else start + max_jobs
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)  # noqa: FBT003 - socket's own API
        self._wake_w.setblocking(False)  # noqa: FBT003 - socket's own API
        handlers = self._install_signals() if install_signals else None
        try:
            while not self._stop:
                if max_jobs is not None and self.jobs_done - start >= max_jobs:
                    break
                self._connect_due()
                if burst and self._idle():
                    logger.info("burst: no jobs left, stopping")
                    break
                self._wait_and_process()
        finally:
            self.close()
            self._watchdog.close()
            if handlers is not None:
                self._restore_signals(handlers)
            wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, None, None
            wake_r.close()
            wake_w.close()
            self._stop = False  # reset here, not at the start: a stop requested early still counts
        return self.jobs_done - start

    def close(self) -> None:
        """Close every server connection; jobs assigned but not started go back to the queue."""
        for link in self._links:
            link.transport.close()
            link.retry_at = 0.0

    def _idle(self) -> bool:
        links = self._links
        connected = [link for link in links if link.connected]
        if not connected:
            return all(link.failures for link in links)
        return all(link.sleeping for link in connected)

    def _connect_due(self) -> None:
        now = time.monotonic()
        for link in self._links:
            if not link.connected and link.retry_at <= now:
                self._connect(link)

    def _connect(self, link: _Link) -> None:
        try:
            link.transport.connect(self.connect_timeout)
        except OSError as error:
            self._lost(link, error)
            return
        if self.client_id:
            link.transport.conn.set_client_id(self.client_id.encode())
        for name in self.functions:
            self._send_can_do(link, name)
        self._grab(link)
        if self._flush(link):
            if link.failures:
                logger.info("reconnected to %s", link.address)
            link.failures = 0
            logger.debug("registered %d function(s) on %s", len(self.functions), link.address)

    def _flush(self, link: _Link) -> bool:
        if self._abandoned or not link.connected:  # e.g. closed at a time limit meanwhile
            return False
        try:
            link.transport.flush()
        except OSError as error:
            self._lost(link, error)
            return False
        return True

    def _lost(self, link: _Link, error: BaseException) -> None:
        link.transport.close()
        delay = min(self.max_reconnect_delay, self.reconnect_delay * 2**link.failures)
        delay *= random.uniform(0.5, 1.0)
        link.failures += 1
        link.retry_at = time.monotonic() + delay
        log = logger.warning if link.failures == 1 else logger.debug
        log(
            "lost %s (%s); reconnecting in %.2fs",
            link.address,
            error or type(error).__name__,
            delay,
        )

    def _grab(self, link: _Link) -> None:
        """Ask for jobs up to ``prefetch`` in hand, and never for more than ``max_jobs`` leaves."""
        wanted = self.prefetch
        if self._limit is not None:  # don't take jobs we won't run
            wanted = min(wanted, self._limit - self.jobs_done)
        if not self._stop:
            link.transport.conn.grab(wanted - link.transport.conn.outstanding)

    def _wait_and_process(self) -> None:
        connected = [link for link in self._links if link.connected]
        timeout = None
        pending = [link.retry_at for link in self._links if not link.connected]
        if self.idle_poll is not None:
            pending += [link.slept_at + self.idle_poll for link in connected if link.sleeping]
        if pending:
            timeout = max(0.0, min(pending) - time.monotonic())
        # poll(), not select(): a process may hold file descriptors above 1024.
        poller = select.poll()
        by_fd = {}
        for link in connected:
            by_fd[link.fileno()] = link
            poller.register(link.fileno(), select.POLLIN)
        assert self._wake_r is not None
        poller.register(self._wake_r.fileno(), select.POLLIN)
        events = poller.poll(None if timeout is None else timeout * 1000)
        if self.idle_poll is not None:
            # Asleep too long: ask again, as if a NOOP had come. gearmand 1.1 never wakes
            # sleeping workers for scheduled (epoch) jobs (its issue #101), and a NOOP lost in
            # a network hiccup would otherwise idle this worker for good.
            now = time.monotonic()
            for link in connected:
                if link.sleeping and now - link.slept_at >= self.idle_poll:
                    self._grab(link)
                    self._flush(link)
        for fd, _ in events:
            ready = by_fd.get(fd)
            if ready is None:
                self._drain_wakeups()
                continue
            link = ready
            try:
                received = link.transport.read(0)
            except TimeoutError:
                continue
            except (OSError, RemoteProtocolError) as error:
                self._lost(link, error)
                continue
            for event in received:
                if self._stop or not link.connected:
                    break
                self._handle(link, event)

    def _handle(self, link: _Link, event: object) -> None:
        if isinstance(event, JobAssigned):
            self._run(link, Job(link.transport, event, watchdog=self._watchdog))
            if link.connected:  # not closed at the job's time limit
                self._grab(link)
                self._flush(link)
        elif isinstance(event, WentToSleep):
            link.slept_at = time.monotonic()
            self._flush(link)  # the PRE_SLEEP
        elif isinstance(event, Woken):
            self._grab(link)
            self._flush(link)
        elif isinstance(event, ErrorReceived):
            logger.error("%s sent ERROR %s: %s", link.address, event.code, event.text)

    def _run(self, link: _Link, job: Job) -> None:
        """Run one job and queue its WORK_COMPLETE / WORK_FAIL / WORK_EXCEPTION."""
        conn = link.transport.conn
        handle = job.handle.encode()
        function = self.functions.get(job.function)
        if function is None:
            logger.error("%s assigned %s, which this worker does not offer", link.address, job)
            conn.work_fail(handle)
            return
        try:
            outcome, data = perform(
                function.callback,
                job,
                soft_time_limit=function.soft_time_limit,
                time_limit=function.time_limit,
            )
        finally:
            self.jobs_done += 1
        with self._watchdog.lock:
            if job.expired or self._abandoned:
                logger.info(
                    "job %s returned after it was failed or given up: result discarded", job
                )
                return
            if outcome is Outcome.COMPLETE:
                conn.work_complete(handle, data)
            elif outcome is Outcome.EXCEPTION:
                conn.work_exception(handle, data)
            else:
                conn.work_fail(handle)

    # -- time limits and abandonment ----------------------------------------------------------

    def _time_limit_passed(self, job: Job, limit: float, current: Callable[[], bool]) -> None:
        """The watchdog's hard limit: fail ``job`` with TimeLimitExceeded on the connection it
        came from (gearmand takes a result only from there), disconnect, and call
        :attr:`on_time_limit`. Runs in the watchdog's thread while the job's may be stuck."""
        error = TimeLimitExceeded(
            f"{job.function} ran past its time limit of {limit:g} s (job {job.handle})",
            handle=job.handle,
            limit=limit,
        )
        lock = self._watchdog.lock
        held = lock.acquire(timeout=LOCK_WAIT)
        try:
            if not current():
                return  # it finished in the meantime
            job.expired = True
            sent = held and self._send_failure(job, error)
            if sent:
                logger.error(
                    "job %s ran past its time limit of %g s: failed it (TimeLimitExceeded)",
                    job,
                    limit,
                )
            else:
                logger.error(
                    "job %s ran past its time limit of %g s and could not be failed on its "
                    "connection: the server takes it back when this worker disconnects",
                    job,
                    limit,
                )
            self._disconnect(closing=held)
            registered = self.functions.get(job.function)
            if registered is not None and registered.on_expired is not None:
                try:
                    registered.on_expired(job, error)
                except Exception:
                    logger.exception("the on_expired hook of %s failed", job.function)
            hook = self.on_time_limit
            if hook is not None:
                hook(job)
            else:
                logger.warning(
                    "worker disconnected; it connects again once %s's callback returns", job
                )
        finally:
            if held:
                lock.release()

    def _send_failure(self, job: Job, error: TimeLimitExceeded) -> bool:
        link = next((link for link in self._links if link.transport is job._channel), None)
        if link is None or not link.connected:
            return False
        try:
            link.transport.conn.work_exception(job.handle.encode(), exception_payload(error))
            link.transport.flush()
        except (OSError, LocalProtocolError) as failure:
            logger.warning("could not send %s's failure to %s: %s", job, link.address, failure)
            return False
        return True

    def _disconnect(self, *, closing: bool) -> None:
        """Drop every connection: the servers re-queue the jobs assigned here and not finished
        (prefetched ones too) and forget this worker. Without the lock (``closing`` False) the
        sockets are only shut down: another thread may be writing to them."""
        for link in self._links:
            sock = link.transport.sock
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if closing:
                link.transport.close()
                link.retry_at = 0.0

    def abandon(self) -> None:
        """Give this worker up from another thread, while a job may still run in its own (a
        thread pool's cold shutdown): stop, send nothing more, drop the connections, so the
        servers re-queue the jobs in hand for other workers. The job's callback runs on; what
        it returns is discarded."""
        self._abandoned = True
        self.request_stop()
        lock = self._watchdog.lock
        held = lock.acquire(timeout=LOCK_WAIT)
        try:
            self._disconnect(closing=held)
        finally:
            if held:
                lock.release()

    # -- signals ----------------------------------------------------------------------------

    def _install_signals(self) -> tuple[dict[signal.Signals, _Handler], int] | None:
        """Take SIGINT/SIGTERM (main thread only); return what to restore."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._warm_signal)
        assert self._wake_w is not None
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        return previous, previous_fd

    def _restore_signals(self, previous: tuple[dict[signal.Signals, _Handler], int]) -> None:
        handlers, wakeup_fd = previous
        signal.set_wakeup_fd(wakeup_fd)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    def _warm_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.warning(
            "%s received: warm shutdown (finishing the job in hand); send it again for a cold "
            "shutdown",
            signal.Signals(signum).name,
        )
        self.request_stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._cold_signal)

    def _cold_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.warning("%s received again: cold shutdown", signal.Signals(signum).name)
        raise SystemExit(128 + signum)

    def _drain_wakeups(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
