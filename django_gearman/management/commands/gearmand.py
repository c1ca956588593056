"""``manage.py gearmand [addr:]port``: run the embedded Gearman job server, runserver-style.

Without an address it listens where the ``GEARMAN`` alias (``--alias``, default ``default``)
points, so the address is written once, in the settings (or ``GEARMAN_URL``). The durable queue
defaults to a private file under ``$XDG_STATE_HOME/django-gearman/``, outside the source tree.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_gearman import conf
from django_gearman.gearman.errors import StartupError, UsageError
from django_gearman.gearman.protocol.constants import DEFAULT_PORT
from django_gearman.gearman.server.cli import (
    DEFAULT_ADDR,
    add_arguments,
    banner,
    parse_addrport,
    run,
)

logger = logging.getLogger("django_gearman.server")

FALLBACK_ADDRPORT = f"{DEFAULT_ADDR}:{DEFAULT_PORT}"
#: Hosts this machine can listen on, whatever its name (the host's own names are added).
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})
#: The queue file of versions before the XDG state folder: in the project, easy to commit.
LEGACY_QUEUE_NAME = "gearman-queue.sqlite3"


# -- where to listen ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listen:
    """Where the server listens and why: ``source`` for the banner's first line ("" for the
    built-in default), ``warning`` a banner line when the alias points at other machines."""

    addrport: str
    source: str = ""
    warning: str | None = None


def is_local(host: str) -> bool:
    """Can this machine listen on ``host``: a loopback or wildcard address, or its own name?"""
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    return host.lower() in LOCAL_HOSTS | names


def listen_address(alias: str = conf.DEFAULT_ALIAS) -> Listen:
    """Where ``alias``'s clients and workers look for a job server, if that is this machine.

    ``settings.GEARMAN`` wins over ``GEARMAN_URL`` (conf reads the URL only without GEARMAN);
    with neither, the alias is the built-in 127.0.0.1:4730. Of several servers the first local
    one is used; with none local, 127.0.0.1:4730 and a warning. InvalidGearmanSettings if the
    settings are wrong or the alias unknown.
    """
    alias_settings = conf.get_settings(alias)
    if getattr(settings, "GEARMAN", None) is not None:
        where = f"GEARMAN[{alias!r}]"
    elif os.environ.get("GEARMAN_URL"):
        where = "GEARMAN_URL"
    else:
        return Listen(FALLBACK_ADDRPORT)
    servers = alias_settings.servers
    local = [address for address in servers if is_local(address.host)]
    if not local:
        elsewhere = ", ".join(str(address) for address in servers)
        return Listen(
            FALLBACK_ADDRPORT,
            warning=(
                f"Warning: {where} points elsewhere ({elsewhere}), so its clients and workers do "
                f"not use this server; listening on {FALLBACK_ADDRPORT} instead (give an address "
                "to choose: manage.py gearmand ADDR:PORT)."
            ),
        )
    source = f"from {where}"
    if len(servers) > 1:
        source += f": the first local one of its {len(servers)} servers"
    return Listen(str(local[0]._replace(tls=None)), source)  # host:port, no gearmans://


# -- where to keep the queue ----------------------------------------------------------------------


def state_dir() -> Path:
    """``$XDG_STATE_HOME/django-gearman`` (XDG_STATE_HOME defaults to ``~/.local/state``; a
    relative value is ignored, as the XDG Base Directory spec says)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "django-gearman"


def state_queue(base_dir: str | os.PathLike[str]) -> Path:
    """The queue file of the project in ``base_dir``: named after its folder, plus a short hash
    of its absolute path, so two projects (or two checkouts) never share a queue."""
    project = Path(base_dir).resolve()
    digest = hashlib.sha256(str(project).encode()).hexdigest()[:12]
    return state_dir() / f"{project.name or 'project'}-{digest}.sqlite3"


def _configured_queue() -> str | None:
    configured = (getattr(settings, "GEARMAN_SERVER", None) or {}).get("QUEUE")
    return str(configured) if configured else None


def legacy_queue() -> Path | None:
    """``BASE_DIR/gearman-queue.sqlite3`` when it exists and no ``GEARMAN_SERVER["QUEUE"]`` is
    set: the server keeps using it, so the jobs queued in it are not lost."""
    base_dir = getattr(settings, "BASE_DIR", None)
    if _configured_queue() or not base_dir:
        return None
    legacy = Path(base_dir) / LEGACY_QUEUE_NAME
    return legacy if legacy.exists() else None


def default_queue() -> str:
    """``GEARMAN_SERVER["QUEUE"]`` if set; else a legacy ``BASE_DIR/gearman-queue.sqlite3``
    that exists; else the project's file in the XDG state folder; without BASE_DIR, memory."""
    configured = _configured_queue()
    if configured:
        return configured
    legacy = legacy_queue()
    if legacy is not None:
        return str(legacy)
    base_dir = getattr(settings, "BASE_DIR", None)
    return str(state_queue(base_dir)) if base_dir else "memory"


def legacy_warning(legacy: Path) -> str:
    """The banner line for a legacy queue file: where new projects keep it, and how to move."""
    new = state_queue(legacy.parent)
    try:
        shared = bool(legacy.stat().st_mode & 0o044)
    except OSError:
        shared = False
    why = "easy to commit, and readable by other users" if shared else "easy to commit"
    return (
        f"Warning: the queue is {legacy}, in the project folder ({why}); new projects keep "
        f"it in {new}. To move it, stop the server, move the file "
        f'and set GEARMAN_SERVER["QUEUE"] to its new path (setting it to this path silences '
        "this warning)."
    )


def prepare_queue(queue: str) -> None:
    """Create the XDG state folder (0700: only its owner may list or read the queues) when the
    queue goes in it; SqliteStore creates the file itself 0600. Other folders must exist."""
    if queue.strip().lower() == "memory":
        return
    folder = state_dir()
    if Path(queue).parent == folder:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"cannot create the queue folder {folder}: {error}") from error


# -- the command ----------------------------------------------------------------------------------


class Command(BaseCommand):
    help = "Runs the embedded Gearman job server (gearmand's protocol, durable background jobs)."
    requires_system_checks: list = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(
            parser,
            default_queue=default_queue(),
            default_addrport=None,
            addrport_help=(
                "default: where the GEARMAN alias points if that is this machine, else "
                "127.0.0.1:4730"
            ),
        )
        parser.add_argument(
            "--alias",
            default=conf.DEFAULT_ALIAS,
            help="without addrport: listen where this GEARMAN alias points (default: default)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        notes: list[str] = []
        source = ""
        if options["addrport"] is None:
            try:
                listen = listen_address(options["alias"])
            except conf.InvalidGearmanSettings as error:
                raise CommandError(
                    f"{error} (or give the address to listen on: manage.py gearmand ADDR:PORT)"
                ) from error
            options["addrport"], source = listen.addrport, listen.source
            if listen.warning:
                notes.append(listen.warning)
        try:
            parse_addrport(options["addrport"])
        except UsageError as error:
            raise CommandError(str(error)) from error
        legacy = legacy_queue()
        if legacy is not None and options["queue"] == str(legacy):
            notes.append(legacy_warning(legacy))
        prepare_queue(options["queue"])
        if not logger.handlers:
            handler = logging.StreamHandler(getattr(self.stderr, "_out", sys.stderr))
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(handler)
        logger.setLevel(options["log_level"])

        def on_bind(server: Any, loop_name: str) -> None:
            self.stdout.write(banner(server, loop_name, source=source, notes=notes))
            self.stdout.flush()

        try:
            run(argparse.Namespace(**options), on_bind=on_bind)
        except StartupError as error:
            raise CommandError(str(error)) from error
