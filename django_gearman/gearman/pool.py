"""The worker pool: many :class:`~.worker.Worker` objects in child processes or threads, supervised.

- :class:`ProcessPool` forks ``concurrency`` children, each with its own Worker, and supervises
  them: a child that exits unexpectedly is started again (with backoff if it keeps crashing),
  and so is one that finished its ``max_jobs`` (unless ``burst``). The first SIGTERM/SIGINT is
  forwarded to the children as SIGTERM (warm shutdown: each finishes its job in hand); a second
  one SIGKILLs them (cold shutdown). Children ask Linux to SIGTERM them if the supervisor dies.
- :class:`ThreadPool` runs the Workers in threads of this process (a Worker is not thread-safe,
  so each thread has its own). The first signal asks every Worker to stop after its job in
  hand; a second one exits at once.

Time limits: a job past its ``time_limit`` is failed by its Worker (TimeLimitExceeded, on the
Worker's own connection); then a child exits with :data:`TIME_LIMIT_EXIT` and the supervisor
starts a fresh one at once (no crash backoff), or a thread is abandoned, still running the
job, and a fresh Worker with a connection of its own takes its slot. ``shutdown_timeout`` bounds
a warm shutdown: once it passed, the shutdown goes cold (children SIGKILLed, threads abandoned
with their connections dropped), the servers re-queue the jobs in hand, and ``run()`` returns
128 + the signal, as after a second one.

A :class:`WorkerSpec` says how to build each Worker, so every process or thread builds its own.
``manage.py gearman_worker`` only parses options into one and runs a pool (rq keeps its pool
beside its worker in the same way).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .errors import TimeLimitExceeded
from .work import Job
from .worker import Worker

__all__ = [
    "CRASH_WINDOW",
    "MAX_RESTART_DELAY",
    "TIME_LIMIT_EXIT",
    "Offered",
    "ProcessPool",
    "ThreadPool",
    "WorkerSpec",
]

logger = logging.getLogger("django_gearman.worker")

#: A child that ran for less than this many seconds before crashing counts as crash-looping.
CRASH_WINDOW = 10.0
MAX_RESTART_DELAY = 30.0
#: The exit status of a child that failed a job at its time limit (as GNU timeout's 124): the
#: supervisor logs "killed at its time limit" and starts a fresh child without backoff.
TIME_LIMIT_EXIT = 124


@dataclass(frozen=True)
class Offered:
    """One Gearman function the worker offers, with the callback that runs its jobs."""

    name: str
    callback: Callable[[Job], bytes | str | None]
    timeout: float | None = None
    soft_time_limit: float | None = None  # seconds: SoftTimeLimitExceeded inside the job
    time_limit: float | None = None  # seconds: the job is failed, its worker replaced
    #: told of a job failed at its time_limit (record it, or queue its retry)
    on_expired: Callable[[Job, TimeLimitExceeded], None] | None = None


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to build and run one Worker, so each process or thread builds its own."""

    servers: tuple[str, ...]
    functions: tuple[Offered, ...]
    client_id: str | None
    prefetch: int
    burst: bool
    max_jobs: int | None
    concurrency: int
    #: Seconds a warm shutdown may wait for the jobs in hand before it turns cold (None: wait).
    shutdown_timeout: float | None = None

    def build(self, slot: int, *, threaded: bool = False) -> Worker:
        """A fresh Worker for pool slot ``slot`` (1-based), with every function registered."""
        client_id = self.client_id_for(slot, threaded=threaded)
        worker = Worker(list(self.servers), client_id=client_id, prefetch=self.prefetch)
        for function in self.functions:
            worker.register(
                function.name,
                function.callback,
                timeout=function.timeout,
                soft_time_limit=function.soft_time_limit,
                time_limit=function.time_limit,
                on_expired=function.on_expired,
            )
        return worker

    def client_id_for(self, slot: int, *, threaded: bool = False) -> str:
        """``--client-id`` (default hostname-pid of the running process), with ``-slot`` appended
        when several Workers would otherwise share it (threads, or one given id)."""
        base = self.client_id or f"{socket.gethostname()}-{os.getpid()}"
        if self.concurrency > 1 and (self.client_id or threaded):
            return f"{base}-{slot}"
        return base


class ThreadPool:
    """``concurrency`` Workers in threads of this process; signals are taken by the main thread."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.workers: list[Worker] = []
        # Reentrant: the main thread's signal handler takes it, and so does the main thread.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads: dict[int, threading.Thread] = {}  # slot -> the thread serving it now
        self._abandoned: list[threading.Thread] = []  # left running a job past its limit
        self._cold_at: float | None = None  # when a warm shutdown turns cold
        self._signum = 0  # the signal that began the shutdown
        self._status = 0

    def run(self) -> int:
        """Run until every thread's Worker stopped; return 0, or 128 + the signal when the
        ``shutdown_timeout`` made the shutdown cold. A second signal raises
        SystemExit(128 + signal)."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = (
            {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            if in_main
            else {}
        )
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            for slot in range(1, self.spec.concurrency + 1):
                self._start_thread(slot, f"gearman-worker-{slot}")
            while True:
                with self._lock:
                    live = [thread for thread in self._threads.values() if thread.is_alive()]
                if not live:
                    break
                wait = 0.5  # a timeout, so signal handlers run promptly
                if self._cold_at is not None:
                    wait = min(wait, self._cold_at - time.monotonic())
                    if wait <= 0:
                        self._go_cold(len(live))
                        break
                live[0].join(wait)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._status

    def _start_thread(self, slot: int, name: str) -> None:
        thread = threading.Thread(target=self._thread_main, args=(slot,), name=name, daemon=True)
        with self._lock:
            self._threads[slot] = thread
        thread.start()

    def _go_cold(self, busy: int) -> None:
        logger.warning(
            "shutdown timeout of %g s passed with %d worker thread(s) still running a job: cold "
            "shutdown (their connections are dropped, so the servers re-queue the jobs; the "
            "threads are abandoned)",
            self.spec.shutdown_timeout,
            busy,
        )
        with self._lock:
            workers = list(self.workers)
        for worker in workers:
            worker.abandon()
        self._status = 128 + self._signum

    def _replace(self, slot: int, worker: Worker, job: Job) -> None:
        """``worker``'s job ran past its time limit and was failed: abandon its thread, which
        still runs the job, and give the slot a fresh Worker (a connection of its own)."""
        worker.request_stop()  # should the job ever return, the old Worker ends there
        with self._lock:
            stuck = self._threads.pop(slot, None)  # run() waits for it no more
            if stuck is not None:
                self._abandoned.append(stuck)
            if worker in self.workers:
                self.workers.remove(worker)
            fresh = not self._stopping.is_set()
        logger.warning(
            "abandoning thread %s, still running %s past its time limit (whatever it returns is "
            "discarded)%s",
            stuck.name if stuck is not None else "?",
            job,
            "; a fresh Worker takes its place" if fresh else "",
        )
        if fresh:
            self._start_thread(slot, f"gearman-worker-{slot}.{len(self._abandoned)}")

    def _thread_main(self, slot: int) -> None:
        crashes = 0
        while not self._stopping.is_set():
            worker = self.spec.build(slot, threaded=True)
            worker.on_time_limit = functools.partial(self._replace, slot, worker)
            with self._lock:
                self.workers.append(worker)
            if self._stopping.is_set():  # a stop requested while building
                return
            started = time.monotonic()
            try:
                worker.work(
                    burst=self.spec.burst, max_jobs=self.spec.max_jobs, install_signals=False
                )
                return
            except Exception:
                if self._threads.get(slot) is not threading.current_thread():
                    return  # abandoned at a time limit: the slot has a fresh thread
                crashes = crashes + 1 if time.monotonic() - started < CRASH_WINDOW else 1
                delay = _restart_delay(crashes)
                logger.exception("worker thread %d crashed; restarting it in %.1f s", slot, delay)
                self._stopping.wait(delay)
            finally:
                with self._lock:
                    if worker in self.workers:
                        self.workers.remove(worker)

    def request_shutdown(self, signum: int) -> None:
        """Act as if this process got ``signum`` (SIGINT or SIGTERM): the first call is a warm
        shutdown, a second a cold one. For a caller that owns the process's signals (the
        worker command's autoreloader runs the pool in a thread, where it installs none)."""
        self._on_signal(signum, None)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self._stopping.is_set():
            logger.warning(
                "%s received: warm shutdown (finishing the jobs in hand); send it again for a cold "
                "shutdown",
                name,
            )
            self._stopping.set()
            self._signum = signum
            if self.spec.shutdown_timeout is not None:
                self._cold_at = time.monotonic() + self.spec.shutdown_timeout
            with self._lock:
                workers = list(self.workers)
            for worker in workers:
                worker.request_stop()
            return
        logger.warning("%s received again: cold shutdown", name)
        raise SystemExit(128 + signum)


@dataclass
class _Child:
    slot: int
    pid: int | None = None
    started: float = 0.0
    crashes: int = 0
    restart_at: float | None = None  # when a stopped slot is due to start again


class ProcessPool:
    """Forks ``concurrency`` children, each running its own Worker, and supervises them.

    ``before_fork`` runs in the parent before each fork: the Django command closes the database
    connections there, so that no child shares the parent's sockets.
    """

    def __init__(self, spec: WorkerSpec, *, before_fork: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.before_fork = before_fork
        self.children = [_Child(slot) for slot in range(1, spec.concurrency + 1)]
        self._pid = os.getpid()
        self._signals: list[int] = []
        self._stopping = False
        self._status = 0
        self._cold_at: float | None = None  # when a warm shutdown turns cold
        self._signum = 0  # the signal that began the shutdown
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)  # noqa: FBT003 - socket's own API
        self._wake_w.setblocking(False)  # noqa: FBT003 - socket's own API

    def run(self) -> int:
        """Supervise until the children are done; the exit status (0, or 128+signal if cold)."""
        in_main = threading.current_thread() is threading.main_thread()
        previous: dict[int, Any] = {}
        old_wakeup = -1
        if in_main:  # under --reload this runs in a thread, and the reloader owns the signals
            previous = {
                sig: signal.getsignal(sig)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
            }
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # just wake the loop up
            old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        try:
            for child in self.children:
                self._start(child)
            while self._step():
                self._wait(in_main=in_main)
        finally:
            if in_main:
                signal.set_wakeup_fd(old_wakeup)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            self._kill_all(signal.SIGKILL)  # only if we leave by an exception
            self._wake_r.close()
            self._wake_w.close()
        return self._status

    def _step(self) -> bool:
        """Reap, act on signals, restart what is due; False once nothing is left to wait for."""
        self._reap()
        while self._signals:
            self._handle_signal(self._signals.pop(0))
        now = time.monotonic()
        if self._cold_at is not None and now >= self._cold_at and not self._status:
            busy = [child for child in self.children if child.pid is not None]
            if busy:
                logger.warning(
                    "shutdown timeout of %g s passed with %d worker(s) still running a job: cold "
                    "shutdown (killing them; the servers re-queue their jobs)",
                    self.spec.shutdown_timeout,
                    len(busy),
                )
                self._status = 128 + self._signum
                self._kill_all(signal.SIGKILL)
        if not self._stopping:
            for child in self.children:
                if child.pid is None and child.restart_at is not None and child.restart_at <= now:
                    self._start(child)
        return any(
            child.pid is not None or (child.restart_at is not None and not self._stopping)
            for child in self.children
        )

    def _wait(self, *, in_main: bool) -> None:
        due = [
            child.restart_at
            for child in self.children
            if child.pid is None and child.restart_at is not None
        ]
        if self._cold_at is not None and not self._status:
            due.append(self._cold_at)
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        if not in_main:  # no SIGCHLD to wake us: poll
            timeout = 0.2 if timeout is None else min(timeout, 0.2)
        select.select([self._wake_r], [], [], timeout)
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def request_shutdown(self, signum: int) -> None:
        """Act as if this process got ``signum`` (SIGINT or SIGTERM): the first call is a warm
        shutdown, a second a cold one. For a caller that owns the process's signals (the
        worker command's autoreloader runs the pool in a thread, where it installs none)."""
        self._on_signal(signum, None)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # acted on by the loop (the wakeup fd wakes it)

    def _handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._stopping:
            self._stopping = True
            self._signum = signum
            if self.spec.shutdown_timeout is not None:
                self._cold_at = time.monotonic() + self.spec.shutdown_timeout
            logger.warning(
                "%s received: warm shutdown (workers finish the jobs in hand); send it again for a "
                "cold shutdown",
                name,
            )
            self._kill_all(signal.SIGTERM)
        elif not self._status:
            logger.warning("%s received again: cold shutdown (killing the workers)", name)
            self._status = 128 + signum
            self._kill_all(signal.SIGKILL)

    def _kill_all(self, signum: int) -> None:
        for child in self.children:
            if child.pid is not None:
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass
        if signum == signal.SIGKILL:
            for child in self.children:
                if child.pid is not None:
                    try:
                        os.waitpid(child.pid, 0)
                    except ChildProcessError:
                        pass
                    child.pid = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is not None:
                self._exited(child, os.waitstatus_to_exitcode(status))

    def _exited(self, child: _Child, code: int) -> None:
        """Decide what follows a child's exit: nothing, a fresh child now, or one after a delay."""
        pid, child.pid = child.pid, None
        lived = time.monotonic() - child.started
        how = f"status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if code == TIME_LIMIT_EXIT:
            how = f"killed at its time limit, status {code}"
        if self._stopping:
            logger.info("worker %d (pid %s) stopped (%s)", child.slot, pid, how)
            return
        if code == TIME_LIMIT_EXIT:  # no crash: the job was failed, the child did its part
            logger.warning("worker %d (pid %s) %s; starting a fresh one", child.slot, pid, how)
            child.crashes = 0
            child.restart_at = time.monotonic()
            return
        if code == 0:
            if self.spec.burst:
                logger.info("worker %d (pid %s) finished", child.slot, pid)
                return
            logger.info(
                "worker %d (pid %s) exited after %s job(s); starting a fresh one",
                child.slot,
                pid,
                self.spec.max_jobs or "its",
            )
            child.crashes = 0
            child.restart_at = time.monotonic()
            return
        child.crashes = child.crashes + 1 if lived < CRASH_WINDOW else 1
        delay = _restart_delay(child.crashes)
        logger.warning(
            "worker %d (pid %s) exited unexpectedly (%s); restarting it in %.1f s",
            child.slot,
            pid,
            how,
            delay,
        )
        child.restart_at = time.monotonic() + delay

    def _start(self, child: _Child) -> None:
        if self.before_fork is not None:
            self.before_fork()  # e.g. close database connections a child must not share
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # no handler runs mid-fork
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(self._child_main(child.slot, mask))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.pid, child.started, child.restart_at = pid, time.monotonic(), None
        logger.debug("worker %d started (pid %d)", child.slot, pid)

    def _child_main(self, slot: int, mask: Any) -> int:
        """The child: own signal handling, then one Worker until it stops. Never returns into
        Django (the caller ``os._exit``\\ s with the status)."""
        code = 1
        try:
            if threading.current_thread() is threading.main_thread():
                signal.set_wakeup_fd(-1)
            self._wake_r.close()
            self._wake_w.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Ctrl-C reaches the whole process group: the parent forwards it as SIGTERM.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _die_with_parent(signal.SIGTERM)
            worker = self.spec.build(slot)
            worker.on_time_limit = _exit_at_time_limit
            signal.signal(signal.SIGTERM, _ChildStop(worker))
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if os.getppid() != self._pid:  # the parent died before we could ask to follow it
                return 0
            worker.work(burst=self.spec.burst, max_jobs=self.spec.max_jobs, install_signals=False)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            logger.exception("worker %d crashed", slot)
        finally:
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
        return code


class _ChildStop:
    """A child's SIGTERM: warm shutdown the first time, cold (SystemExit) the second."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            raise SystemExit(128 + signum)
        self.received = True
        logger.debug("pid %d: warm shutdown", os.getpid())
        self.worker.request_stop()


def _exit_at_time_limit(job: Job) -> None:
    """A child's :attr:`~.worker.Worker.on_time_limit`: its job is failed and its connections
    closed, but its main thread is stuck in the job; exit at once (from the watchdog's thread)
    with :data:`TIME_LIMIT_EXIT`, and the supervisor starts a fresh child."""
    handlers = {
        handler
        for each in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        if isinstance(each, logging.Logger)
        for handler in each.handlers
    }
    for handler in handlers:  # what was logged reaches the log; never wait on a stuck writer
        lock = handler.lock
        if lock is not None and lock.acquire(timeout=1.0):
            try:
                handler.flush()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
            finally:
                lock.release()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(TIME_LIMIT_EXIT)


def _die_with_parent(signum: int) -> None:
    """Ask Linux to send ``signum`` when the parent dies (prctl PR_SET_PDEATHSIG), so children of
    a SIGKILLed supervisor stop instead of running on; elsewhere nothing happens."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _restart_delay(crashes: int) -> float:
    return min(MAX_RESTART_DELAY, 0.5 * 2.0 ** max(0, crashes - 1))
