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
import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.utils import autoreload

from django_gearman import conf
from django_gearman.gearman.errors import UsageError
from django_gearman.gearman.pool import ProcessPool, ThreadPool, WorkerSpec
from django_gearman.tasks.runner import offered_functions

logger = logging.getLogger("django_gearman.worker")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# -- the command -------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
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
        pool: ProcessPool | ThreadPool
        if options["pool"] == "processes":
            pool = ProcessPool(spec, before_fork=connections.close_all)  # no child shares a DB
        else:
            pool = ThreadPool(spec)
        return pool.run()

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
