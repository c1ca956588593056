"""``manage.py gearmand [addr:]port``: run the embedded Gearman job server, runserver-style."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_gearman.gearman.errors import StartupError, UsageError
from django_gearman.gearman.server.cli import add_arguments, banner, parse_addrport, run


def default_queue() -> str:
    """``GEARMAN_SERVER["QUEUE"]`` if set, else ``BASE_DIR/gearman-queue.sqlite3``, else memory."""
    configured = getattr(settings, "GEARMAN_SERVER", {}).get("QUEUE")
    if configured:
        return str(configured)
    base_dir = getattr(settings, "BASE_DIR", None)
    return str(Path(base_dir) / "gearman-queue.sqlite3") if base_dir else "memory"


class Command(BaseCommand):
    help = "Runs the embedded Gearman job server (gearmand's protocol, durable background jobs)."
    requires_system_checks: list = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser, default_queue=default_queue())

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            parse_addrport(options["addrport"])
        except UsageError as error:
            raise CommandError(str(error)) from error
        logger = logging.getLogger("django_gearman.server")
        if not logger.handlers:
            handler = logging.StreamHandler(getattr(self.stderr, "_out", sys.stderr))
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(handler)
        logger.setLevel(options["log_level"])

        def on_bind(server: Any, loop_name: str) -> None:
            self.stdout.write(banner(server, loop_name))
            self.stdout.flush()

        try:
            run(argparse.Namespace(**options), on_bind=on_bind)
        except StartupError as error:
            raise CommandError(str(error)) from error
