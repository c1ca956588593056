"""``manage.py gearman_relay``: send what waits in the transactional outbox, on its own.

``manage.py gearman_worker`` runs the same relay in a thread; this command is for sites that
want it apart (web hosts without workers, or one relay per database). Several may run at once:
each row is claimed by one relay at a time. Ctrl-C (or SIGTERM) stops it after its current pass.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_gearman.outbox import Relay, backlog


class Command(BaseCommand):
    help = "Sends the background jobs that wait in the transactional outbox to the job servers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--poll", type=float, default=1.0, help="seconds between passes (default 1)"
        )
        parser.add_argument(
            "--batch", type=int, default=1000, help="rows sent per round trip (default 1000)"
        )
        parser.add_argument(
            "--once", action="store_true", help="one pass, then exit (e.g. from cron)"
        )
        parser.add_argument("--database", default=None, help="the outbox's database alias")

    def handle(self, *args: Any, **options: Any) -> None:
        logger = logging.getLogger("django_gearman.outbox")
        if not logging.getLogger().handlers and not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        relay = Relay(options["database"], poll=options["poll"], batch=options["batch"])
        if options["once"]:
            sent, failed = relay.run_once()
            self.stdout.write(
                f"sent {sent}, failed {failed}, waiting {backlog(options['database']).waiting}"
            )
            if failed:
                sys.exit(1)
            return
        waiting = backlog(options["database"])
        self.stdout.write(
            f"Gearman outbox relay (every {options['poll']:g} s): {waiting.waiting} job(s) wait\n"
            "Quit the relay with CONTROL-C."
        )
        self.stdout.flush()

        def stop(signum: int, frame: FrameType | None) -> None:
            relay.stop(timeout=0)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        relay.run()
        logger.info("relay stopped")
