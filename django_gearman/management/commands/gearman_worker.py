"""``manage.py gearman_worker``: run the jobs of the registered tasks, runserver-style.

The command only parses and wires up: it picks the Gearman functions to offer (every
``@gearman_task`` of the alias that is not a ``remote_task``, plus the Django Tasks backend's
queues), builds one :class:`~django_gearman.worker.Worker` per unit of concurrency, and runs them:

- ``--pool processes`` (the default) forks ``--concurrency`` children, each with its own Worker,
  and supervises them: a child that exits unexpectedly is started again (with backoff if it keeps
  crashing), and so is one that finished its ``--max-jobs`` (unless ``--burst``). The first
  SIGTERM/SIGINT is forwarded to the children as SIGTERM (warm shutdown: each finishes its job in
  hand); a second one SIGKILLs them (cold shutdown).
- ``--pool threads`` runs the Workers in threads of this process (a Worker is not thread-safe,
  so each thread has its own). The first signal asks every Worker to stop after its job in hand;
  a second one exits at once.

See docs/worker-command.md for the options and the shutdown semantics.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import autoreload

from django_gearman import conf
from django_gearman.runner import job_callback
from django_gearman.tasks import registry
from django_gearman.worker import Job, Worker

logger = logging.getLogger("django_gearman.worker")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: A child that ran for less than this many seconds before crashing counts as crash-looping.
CRASH_WINDOW = 10.0
MAX_RESTART_DELAY = 30.0


@dataclass(frozen=True)
class Offered:
    """One Gearman function the worker offers, with the callback that runs its jobs."""

    name: str
    callback: Callable[[Job], bytes | str | None]
    timeout: float | None = None


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

    def build(self, slot: int, *, threaded: bool = False) -> Worker:
        """A fresh Worker for pool slot ``slot`` (1-based), with every function registered."""
        client_id = self.client_id_for(slot, threaded=threaded)
        worker = Worker(list(self.servers), client_id=client_id, prefetch=self.prefetch)
        for function in self.functions:
            worker.register(function.name, function.callback, timeout=function.timeout)
        return worker

    def client_id_for(self, slot: int, *, threaded: bool = False) -> str:
        """``--client-id`` (default hostname-pid of the running process), with ``-slot`` appended
        when several Workers would otherwise share it (threads, or one given id)."""
        base = self.client_id or f"{socket.gethostname()}-{os.getpid()}"
        if self.concurrency > 1 and (self.client_id or threaded):
            return f"{base}-{slot}"
        return base


# -- choosing the functions ---------------------------------------------------------------------


def select_functions(alias: str, task_names: Sequence[str] = (), queues: Sequence[str] = ()) -> list[Offered]:
    """The functions to offer on ``alias``'s servers: all of them, or those named by ``--task``
    plus those in a ``--queue``. Remote tasks are never offered (another worker runs them)."""
    ours = {name: task for name, task in registry.items() if not task.remote and task.options.alias == alias}
    for name in task_names:
        if name in ours:
            continue
        task = registry.get(name)
        if task is not None and task.remote:
            raise CommandError(f"{name} is a remote task: another language's worker runs it, not gearman_worker.")
        if task is not None:
            raise CommandError(f"{name} runs on the Gearman alias {task.options.alias!r}: use --alias {task.options.alias}.")
        known = "\n  ".join(sorted(ours)) or "(none)"
        raise CommandError(f"Unknown task {name!r}. Tasks of alias {alias!r}:\n  {known}")
    everything = not task_names and not queues
    chosen = [
        task for name, task in sorted(ours.items())
        if everything or name in task_names or task.options.queue in queues
    ]  # fmt: skip
    offered = [Offered(task.function_name, job_callback(task), task.options.timeout) for task in chosen]
    backend_queues = _backend_functions(alias)
    offered += [Offered(name, callback) for name, (queue, callback) in sorted(backend_queues.items()) if everything or queue in queues]
    known_queues = {task.options.queue for task in ours.values()} | {queue for queue, _ in backend_queues.values()}
    unknown = [queue for queue in queues if queue not in known_queues]
    if unknown:
        raise CommandError(f"No task in queue(s) {', '.join(map(repr, unknown))}. Queues: {', '.join(sorted(known_queues)) or '(none)'}")
    if not offered:
        raise CommandError(f"No tasks to run on alias {alias!r}: decorate functions with @gearman_task in an installed app's tasks.py.")
    return offered


def _backend_functions(alias: str) -> dict[str, tuple[str, Callable[[Job], bytes]]]:
    """Gearman function -> (queue, callback) of the Django Tasks GearmanBackends on ``alias``."""
    try:
        from django_gearman.backends import GearmanBackend, run_job, task_backends  # noqa: PLC0415
    except ImportError:  # neither django.tasks nor the django-tasks backport is installed
        return {}
    functions: dict[str, tuple[str, Callable[[Job], bytes]]] = {}
    try:
        for name in task_backends:
            backend = task_backends[name]
            if isinstance(backend, GearmanBackend) and backend.gearman_alias == alias:
                for queue in backend.queues:
                    functions[backend.function_name(queue)] = (queue, run_job)
    except ImproperlyConfigured as error:
        raise CommandError(f"TASKS is misconfigured: {error}") from error
    return functions


# -- pools ----------------------------------------------------------------------------------------


class ThreadPool:
    """``concurrency`` Workers in threads of this process; signals are taken by the main thread."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.workers: list[Worker] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> int:
        """Run until every thread's Worker stopped; 0. A second signal raises SystemExit(128+signal)."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        threads = [
            threading.Thread(target=self._thread_main, args=(slot,), name=f"gearman-worker-{slot}", daemon=True)
            for slot in range(1, self.spec.concurrency + 1)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)  # a timeout, so signal handlers run promptly
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _thread_main(self, slot: int) -> None:
        crashes = 0
        while not self._stopping.is_set():
            worker = self.spec.build(slot, threaded=True)
            with self._lock:
                self.workers.append(worker)
            if self._stopping.is_set():  # a stop requested while building
                return
            started = time.monotonic()
            try:
                worker.work(burst=self.spec.burst, max_jobs=self.spec.max_jobs, install_signals=False)
                return
            except Exception:
                crashes = crashes + 1 if time.monotonic() - started < CRASH_WINDOW else 1
                delay = _restart_delay(crashes)
                logger.exception("worker thread %d crashed; restarting it in %.1f s", slot, delay)
                self._stopping.wait(delay)
            finally:
                with self._lock:
                    self.workers.remove(worker)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self._stopping.is_set():
            logger.warning("%s received: warm shutdown (finishing the jobs in hand); send it again for a cold shutdown", name)
            self._stopping.set()
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
    """Forks ``concurrency`` children, each running its own Worker, and supervises them."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.children = [_Child(slot) for slot in range(1, spec.concurrency + 1)]
        self._pid = os.getpid()
        self._signals: list[int] = []
        self._stopping = False
        self._status = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def run(self) -> int:
        """Supervise until the children are done; the exit status (0, or 128+signal if cold)."""
        in_main = threading.current_thread() is threading.main_thread()
        previous: dict[int, Any] = {}
        old_wakeup = -1
        if in_main:  # under --reload this runs in a thread, and the reloader owns the signals
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
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
        """Reap, act on signals, restart what is due; False once there is nothing left to wait for."""
        self._reap()
        while self._signals:
            self._handle_signal(self._signals.pop(0))
        now = time.monotonic()
        if not self._stopping:
            for child in self.children:
                if child.pid is None and child.restart_at is not None and child.restart_at <= now:
                    self._start(child)
        return any(child.pid is not None or (child.restart_at is not None and not self._stopping) for child in self.children)

    def _wait(self, *, in_main: bool) -> None:
        due = [child.restart_at for child in self.children if child.pid is None and child.restart_at is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        if not in_main:  # no SIGCHLD to wake us: poll
            timeout = 0.2 if timeout is None else min(timeout, 0.2)
        select.select([self._wake_r], [], [], timeout)
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # acted on by the loop (the wakeup fd wakes it)

    def _handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._stopping:
            self._stopping = True
            logger.warning("%s received: warm shutdown (workers finish the jobs in hand); send it again for a cold shutdown", name)
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
        if self._stopping:
            logger.info("worker %d (pid %s) stopped (%s)", child.slot, pid, how)
            return
        if code == 0:
            if self.spec.burst:
                logger.info("worker %d (pid %s) finished", child.slot, pid)
                return
            logger.info("worker %d (pid %s) exited after %s job(s); starting a fresh one", child.slot, pid, self.spec.max_jobs or "its")
            child.crashes = 0
            child.restart_at = time.monotonic()
            return
        child.crashes = child.crashes + 1 if lived < CRASH_WINDOW else 1
        delay = _restart_delay(child.crashes)
        logger.warning("worker %d (pid %s) exited unexpectedly (%s); restarting it in %.1f s", child.slot, pid, how, delay)
        child.restart_at = time.monotonic() + delay

    def _start(self, child: _Child) -> None:
        from django.db import connections  # noqa: PLC0415

        connections.close_all()  # a child must not share the parent's database sockets
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
    return min(MAX_RESTART_DELAY, 0.5 * 2 ** max(0, crashes - 1))


# -- the command ------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


class Command(BaseCommand):
    help = "Runs Gearman workers for the registered @gearman_task functions (and the Django Tasks backend's queues)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--alias", default=conf.DEFAULT_ALIAS, help="the GEARMAN alias whose servers to work for (default: default)")
        parser.add_argument("--task", action="append", default=[], metavar="NAME", help="offer only this task (repeatable)")
        parser.add_argument("--queue", action="append", default=[], metavar="NAME", help="offer the tasks of this queue (repeatable)")
        parser.add_argument("--concurrency", type=_positive, default=1, metavar="N", help="how many jobs run at once (default 1)")
        parser.add_argument("--pool", choices=["processes", "threads"], default="processes", help="run the workers in child processes (default) or threads")
        parser.add_argument("--burst", action="store_true", help="exit once no job is left")
        parser.add_argument("--max-jobs", type=_positive, default=None, metavar="N", help="a worker stops after N jobs (a child process is then replaced, unless --burst)")
        parser.add_argument("--client-id", default=None, help="the id the servers show for this worker (default hostname-pid)")
        parser.add_argument("--prefetch", type=_positive, default=1, metavar="N", help="jobs requested ahead per server (default 1)")
        reload = parser.add_mutually_exclusive_group()
        reload.add_argument("--reload", action="store_true", dest="use_reloader", default=None, help="restart on code changes (default when DEBUG is true)")
        reload.add_argument("--noreload", action="store_false", dest="use_reloader", help="do not restart on code changes")
        parser.add_argument("--log-level", choices=LOG_LEVELS, default=None, help="level of the django_gearman.worker logger (default INFO when this command sets up logging)")

    def handle(self, *args: Any, **options: Any) -> None:
        spec = self.make_spec(options)  # validate before any reloader starts
        self.configure_logging(options["log_level"], options["pool"])
        use_reloader = options["use_reloader"]
        if use_reloader is None:
            use_reloader = bool(settings.DEBUG)
        if options["burst"]:
            use_reloader = False
        if use_reloader:
            autoreload.run_with_reloader(self.inner_run, spec=None, **options)
            return
        status = self.inner_run(spec=spec, **options)
        if status:
            sys.exit(status)

    def inner_run(self, *, spec: WorkerSpec | None, **options: Any) -> int:
        """Print the banner and run the pool; the exit status. Under --reload this runs in the
        reloader's thread, once per code change, so the functions are chosen again."""
        if spec is None:
            spec = self.make_spec(options)
        self.banner(spec, options)
        pool = ProcessPool(spec) if options["pool"] == "processes" else ThreadPool(spec)
        return pool.run()

    def make_spec(self, options: dict[str, Any]) -> WorkerSpec:
        """Check the settings and options and choose the functions; CommandError if wrong."""
        alias = options["alias"]
        try:
            alias_settings = conf.get_settings(alias)
            functions = select_functions(alias, options["task"], options["queue"])
        except conf.InvalidGearmanSettings as error:
            raise CommandError(str(error)) from error
        if alias_settings.mode != "gearman":
            raise CommandError(
                f"GEARMAN[{alias!r}] has MODE {alias_settings.mode!r}: its jobs never reach a job server, "
                'so there is nothing for a worker to do (use MODE "gearman").'
            )
        return WorkerSpec(
            servers=tuple(str(address) for address in alias_settings.servers),
            functions=tuple(functions),
            client_id=options["client_id"],
            prefetch=options["prefetch"],
            burst=options["burst"],
            max_jobs=options["max_jobs"],
            concurrency=options["concurrency"],
        )

    def configure_logging(self, level: str | None, pool: str) -> None:
        """A stderr handler on django_gearman.worker unless logging is configured already."""
        if not logger.hasHandlers():
            handler = logging.StreamHandler(getattr(self.stderr, "_out", sys.stderr))
            where = "[%(process)d]" if pool == "processes" else "[%(threadName)s]"
            handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {where} %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(level or "INFO")
        elif level is not None:
            logger.setLevel(level)

    def banner(self, spec: WorkerSpec, options: dict[str, Any]) -> None:
        modes = [f"pool {options['pool']}", f"concurrency {spec.concurrency}"]
        if spec.burst:
            modes.append("burst")
        if spec.max_jobs is not None:
            modes.append(f"max {spec.max_jobs} jobs per worker")
        if spec.prefetch > 1:
            modes.append(f"prefetch {spec.prefetch}")
        lines = [
            f"Gearman worker (pid {os.getpid()}) for alias {options['alias']!r}",
            f"Servers: {', '.join(spec.servers)}",
            f"Running: {', '.join(modes)}",
            f"Functions ({len(spec.functions)}):",
            *(f"  {function.name}" for function in spec.functions),
            "Quit the worker with CONTROL-C.",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
