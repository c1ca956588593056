"""``manage.py gearman_worker``: run the jobs of the registered tasks, runserver-style.

The command only parses and wires up: it picks the Gearman functions to offer (every
``@gearman_task`` of the alias that is not a ``remote_task``, plus the Django Tasks backend's
queues), describes the Workers to build in a :class:`~django_gearman.gearman.pool.WorkerSpec`,
prints a banner, and runs a :class:`~django_gearman.gearman.pool.ProcessPool` (``--pool
processes``, the default) or :class:`~django_gearman.gearman.pool.ThreadPool`. The pools'
supervision and the warm/cold shutdown are theirs.

See docs/worker-command.md for the options and the shutdown semantics.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, router
from django.utils import autoreload

from django_gearman import conf
from django_gearman.gearman.errors import UsageError
from django_gearman.gearman.pool import ProcessPool, ThreadPool, WorkerSpec
from django_gearman.models import OutboxJob
from django_gearman.outbox import Relay
from django_gearman.tasks.runner import offered_functions

logger = logging.getLogger("django_gearman.worker")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: The exit status with which Django's reloader ends a child whose code changed.
RELOAD_STATUS = 3

Pool = ProcessPool | ThreadPool


# -- the command -------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


class Command(BaseCommand):
    help = (
        "Runs Gearman workers for the registered @gearman_task functions (and the Django Tasks "
        "backend's queues)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--alias",
            default=conf.DEFAULT_ALIAS,
            help="the GEARMAN alias whose servers to work for (default: default)",
        )
        parser.add_argument(
            "--task",
            action="append",
            default=[],
            metavar="NAME",
            help="offer only this task (repeatable)",
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="offer the tasks of this queue (repeatable)",
        )
        parser.add_argument(
            "--concurrency",
            type=_positive,
            default=1,
            metavar="N",
            help="how many jobs run at once (default 1)",
        )
        parser.add_argument(
            "--pool",
            choices=["processes", "threads"],
            default="processes",
            help="run the workers in child processes (default) or threads",
        )
        parser.add_argument("--burst", action="store_true", help="exit once no job is left")
        parser.add_argument(
            "--max-jobs",
            type=_positive,
            default=None,
            metavar="N",
            help="a worker stops after N jobs (a child process is then replaced, unless --burst)",
        )
        parser.add_argument(
            "--client-id",
            default=None,
            help="the id the servers show for this worker (default hostname-pid)",
        )
        parser.add_argument(
            "--prefetch",
            type=_positive,
            default=1,
            metavar="N",
            help="jobs requested ahead per server (default 1)",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=_seconds,
            default=None,
            metavar="SECONDS",
            help=(
                "after a first SIGTERM/SIGINT, wait at most this long for the jobs in hand, then "
                "shut down cold (the servers re-queue them); default: wait as long as they run"
            ),
        )
        reload = parser.add_mutually_exclusive_group()
        reload.add_argument(
            "--reload",
            action="store_true",
            dest="use_reloader",
            default=None,
            help="restart on code changes (default when DEBUG is true)",
        )
        reload.add_argument(
            "--noreload",
            action="store_false",
            dest="use_reloader",
            help="do not restart on code changes",
        )
        parser.add_argument(
            "--no-relay",
            action="store_false",
            dest="relay",
            help=(
                "do not send what waits in the transactional outbox (by default a thread of "
                "this command does; manage.py gearman_relay runs one on its own)"
            ),
        )
        parser.add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default=None,
            help=(
                "level of the django_gearman.worker logger (default INFO when this command sets "
                "up logging)"
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        spec = self.make_spec(options)  # validate before any reloader starts
        self.configure_logging(options["log_level"], options["pool"])
        use_reloader = options["use_reloader"]
        reason = "--reload"
        if use_reloader is None:
            use_reloader = bool(settings.DEBUG)
            reason = "DEBUG is True"
        if options["burst"]:
            use_reloader = False
        options["reload_reason"] = reason if use_reloader else None
        if not use_reloader:
            status = self.inner_run(spec=spec, **options)
        elif os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true":
            status = _ReloadedRun(self, options).run()
        else:
            status = _supervise_reloads()
        if status:
            sys.exit(status)

    def inner_run(
        self,
        *,
        spec: WorkerSpec | None,
        on_pool: Callable[[Pool], None] | None = None,
        **options: Any,
    ) -> int:
        """Print the banner, run the pool and log the stop line; the exit status. Under
        autoreload this runs in a thread of the reloader's child, once per code change, so the
        functions are chosen again; ``on_pool`` is then told the pool, to stop it on signals."""
        if spec is None:
            spec = self.make_spec(options)
        relay = self.make_relay(options)
        self.banner(spec, options)
        pool: Pool
        if options["pool"] == "processes":
            pool = ProcessPool(spec, before_fork=connections.close_all)  # no child shares a DB
        else:
            pool = ThreadPool(spec)
        if on_pool is not None:
            on_pool(pool)
        if relay is not None:
            relay.start()
        try:
            status = pool.run()
        except SystemExit as stop:  # the ThreadPool's cold shutdown (a second signal)
            log_stopped(stop.code)
            raise
        finally:
            if relay is not None:
                relay.stop()
        log_stopped(status)
        return status

    def make_relay(self, options: dict[str, Any]) -> Relay | None:
        """The outbox relay (:mod:`django_gearman.outbox`), unless ``--no-relay`` or the
        database has no outbox table yet (``migrate`` makes it); the banner says which."""
        if not options.get("relay", True):
            options["relay_line"] = "Outbox relay: off (--no-relay)"
            return None
        database = router.db_for_write(OutboxJob)
        if OutboxJob._meta.db_table not in connections[database].introspection.table_names():
            options["relay_line"] = "Outbox relay: off (no outbox table: run manage.py migrate)"
            return None
        options["relay_line"] = "Outbox relay: on (sends the jobs background_on_commit() left)"
        return Relay(database)

    def make_spec(self, options: dict[str, Any]) -> WorkerSpec:
        """Check the settings and options and choose the functions; CommandError if wrong."""
        alias = options["alias"]
        try:
            alias_settings = conf.get_settings(alias)
            functions = offered_functions(alias, options["task"], options["queue"])
        except (conf.InvalidGearmanSettings, UsageError) as error:
            raise CommandError(str(error)) from error
        if not alias_settings.reaches_servers:
            raise CommandError(
                f"GEARMAN[{alias!r}] has BACKEND {alias_settings.backend!r}: its jobs never reach "
                'a job server, so there is nothing for a worker to do (use BACKEND "gearman").'
            )
        return WorkerSpec(
            servers=tuple(str(address) for address in alias_settings.servers),
            functions=tuple(functions),
            client_id=options["client_id"],
            prefetch=options["prefetch"],
            burst=options["burst"],
            max_jobs=options["max_jobs"],
            concurrency=options["concurrency"],
            shutdown_timeout=options.get("shutdown_timeout"),
        )

    def configure_logging(self, level: str | None, pool: str) -> None:
        """A stderr handler on django_gearman.worker unless logging is configured already."""
        if not logger.hasHandlers():
            handler = logging.StreamHandler(getattr(self.stderr, "_out", sys.stderr))
            where = "[%(process)d]" if pool == "processes" else "[%(threadName)s]"
            handler.setFormatter(
                logging.Formatter(f"%(asctime)s %(levelname)s {where} %(name)s: %(message)s")
            )
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
        if spec.shutdown_timeout is not None:
            modes.append(f"shutdown timeout {spec.shutdown_timeout:g} s")
        lines = [
            f"Gearman worker (pid {os.getpid()}) for alias {options['alias']!r}",
            f"Servers: {', '.join(spec.servers)}",
            f"Running: {', '.join(modes)}",
            f"Functions ({len(spec.functions)}):",
            *(f"  {function.name}" for function in spec.functions),
        ]
        if options.get("relay_line"):
            lines.append(options["relay_line"])
        reason = options.get("reload_reason")
        if reason == "DEBUG is True":
            lines.append(
                "Autoreload: on because DEBUG is True: the worker restarts when code changes "
                "(--noreload turns it off)."
            )
        elif reason:
            lines.append(f"Autoreload: on ({reason}): the worker restarts when code changes.")
        lines.append("Quit the worker with CONTROL-C.")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()


# -- stopping, and autoreload ------------------------------------------------------------------


def log_stopped(status: object) -> None:
    """The last line a worker logs, in both modes: warm (every job it took finished) or cold."""
    if not status:
        logger.info("worker stopped (warm): every job it took has finished")
    else:
        logger.warning(
            "worker stopped (cold, exit status %s): the jobs in hand were cut short", status
        )


def _supervise_reloads() -> int:
    """The reloader's parent process: run this command again in a child (with Django's
    DJANGO_AUTORELOAD_ENV set), and again whenever it exits with 3 (its code changed).

    Django's own parent (``autoreload.run_with_reloader``) kills the child a quarter second
    after Ctrl-C, cutting the running job short. This one forwards each SIGINT or SIGTERM to
    the child as SIGTERM, so the first is a warm shutdown and a second a cold one, and exits
    with the child's status. (The child ignores SIGINT: Ctrl-C reaches the whole process group,
    and counting it twice would make the first Ctrl-C a cold shutdown.)
    """
    env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
    if "-u" in getattr(sys, "orig_argv", ())[1:]:  # as Django 6's reloader: keep python -u
        env.setdefault("PYTHONUNBUFFERED", "1")
    args = autoreload.get_child_arguments()
    received: list[int] = []  # appended by the handler, forwarded by the loop
    previous = {
        sig: signal.signal(sig, lambda signum, frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while True:
            child = subprocess.Popen(args, env=env, close_fds=False)
            while True:
                while received:
                    received.pop()
                    child.send_signal(signal.SIGTERM)
                try:
                    code = child.wait(0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if code != RELOAD_STATUS:
                return code if code >= 0 else 128 - code
            if received:  # stopped while it restarted
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _ReloadedRun:
    """The reloader's child process: the pool in a thread, Django's file watcher in the main
    thread (which takes the signals), as ``autoreload.run_with_reloader`` does, but with a warm
    shutdown: SIGTERM (Ctrl-C, forwarded by the parent) asks the pool to stop after the jobs in
    hand, as it does outside autoreload; a second SIGTERM is a cold shutdown. The process exits
    once the pool stopped, or with 3 when code changed (the parent then starts a fresh one)."""

    def __init__(self, command: Command, options: dict[str, Any]) -> None:
        self.command = command
        self.options = options
        self.reloader = autoreload.get_reloader()
        self.pool: Pool | None = None
        self.signals = 0  # received before the pool existed
        self.status = 0

    def run(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards Ctrl-C as SIGTERM
        signal.signal(signal.SIGTERM, self.on_signal)
        logger.debug("watching for file changes with %s", type(self.reloader).__name__)
        thread = threading.Thread(target=self.work, name="django-main-thread", daemon=True)
        thread.start()
        try:
            while not self.reloader.should_stop:
                self.reloader.run(thread)
        except SystemExit as stop:
            if stop.code != RELOAD_STATUS:
                log_stopped(stop.code)  # the ThreadPool's cold shutdown, raised in this thread
            raise
        return self.status

    def work(self) -> None:
        """The pool's thread; stops the watcher when the pool stopped. A crash (an error in
        code being edited) leaves the watcher running, so that fixing the code restarts it."""
        try:
            if self.signals:
                return
            self.status = self.command.inner_run(spec=None, on_pool=self.set_pool, **self.options)
        except BaseException:
            logger.exception("the worker failed; it restarts when code changes")
            return
        self.reloader.stop()

    def set_pool(self, pool: Pool) -> None:
        self.pool = pool
        for _ in range(self.signals):
            self.on_signal(signal.SIGTERM, None)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Pass the signal to the pool as if it had its handlers installed (it has not, in a
        thread): the first asks for a warm shutdown, a second a cold one."""
        if self.pool is None:
            self.signals += 1
            if self.signals > 1:
                raise SystemExit(128 + signum)
            return
        self.pool.request_shutdown(signum)
