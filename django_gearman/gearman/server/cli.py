"""The command line shared by ``python -m django_gearman.server`` and ``manage.py gearmand``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import gc
import logging
import re
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..errors import StartupError, UsageError
from ..protocol.constants import DEFAULT_MAX_PACKET_SIZE, DEFAULT_PORT
from ..tls import add_server_arguments as add_tls_arguments
from ..tls import server_context as tls_server_context
from .access import LOOPBACK, is_loopback_bind, parse_networks
from .app import GearmanServer, raise_file_limit
from .model import valid_name
from .store import open_store

__all__ = ["add_arguments", "banner", "main", "parse_addrport", "run"]

logger = logging.getLogger("django_gearman.server")

DEFAULT_ADDR = "127.0.0.1"

_ADDRPORT = re.compile(
    r"^(?:(?P<addr>\[[0-9a-fA-F:.]+\]|[\w.-]+):)?(?P<port>\d+)$|^(?P<host>\[[0-9a-fA-F:.]+\]|[\w.-]+)$"
)

ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}


def parse_addrport(value: str) -> tuple[str, int]:
    """``"[addr:]port"`` (or just an address) as runserver takes it."""
    match = _ADDRPORT.match(value.strip())
    if not match:
        raise UsageError(f'"{value}" is not a valid port number or address:port pair.')
    host = match.group("addr") or match.group("host") or DEFAULT_ADDR
    port = int(match.group("port") or DEFAULT_PORT)
    if not 0 <= port < 65536:
        raise UsageError(f"port {port} is out of range (0-65535)")
    return host.strip("[]"), port


def add_arguments(
    parser: argparse.ArgumentParser,
    *,
    default_queue: str = "memory",
    default_addrport: str | None = f"{DEFAULT_ADDR}:{DEFAULT_PORT}",
    addrport_help: str = "default 127.0.0.1:4730",
) -> None:
    """The options of both front ends. ``manage.py gearmand`` passes ``default_addrport=None``
    (it then listens where the GEARMAN alias points) and says so in ``addrport_help``."""
    parser.add_argument(
        "addrport",
        nargs="?",
        default=default_addrport,
        help=f"[addr:]port to listen on ({addrport_help}; port 0 picks a free one)",
    )
    parser.add_argument(
        "--queue",
        default=default_queue,
        help=(
            "durable store for background jobs: a SQLite file path, or 'memory' (default: "
            f"{default_queue})"
        ),
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help=(
            "fsync every commit of the durable store before JOB_CREATED (power-loss durable; "
            "default: the write reaches the OS, which survives a crash of the server)"
        ),
    )
    parser.add_argument(
        "--job-retries",
        type=_non_negative,
        default=0,
        help=(
            "give up on a job after its worker vanished this many times (0 = never, as gearmand "
            "-j 0)"
        ),
    )
    parser.add_argument(
        "--worker-wakeup",
        type=_non_negative,
        default=0,
        help="sleeping workers to wake per new job (0 = all)",
    )
    parser.add_argument(
        "--max-packet-size",
        type=_positive,
        default=DEFAULT_MAX_PACKET_SIZE,
        help="largest packet body accepted, in bytes",
    )
    parser.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="event loop: uvloop if installed (auto), or force one",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the django_gearman.server logger",
    )
    limits = parser.add_argument_group("limits (0 = none)")
    limits.add_argument(
        "--max-connections",
        type=_non_negative,
        default=None,
        help="connections held at once; more are closed at once (default: the open-files "
        "limit less 64)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=_non_negative,
        default=0,
        help="close a connection silent this many seconds, unless it is a worker or waits for "
        "a job (default 0: never, as gearmand)",
    )
    limits.add_argument(
        "--stall-timeout",
        type=_non_negative,
        default=60,
        help="close a connection stopped mid-packet, or one that has read none of its replies "
        "(it does not read), for this many seconds (default 60)",
    )
    limits.add_argument(
        "--max-buffer-bytes",
        type=_non_negative,
        default=128 * 1024 * 1024,
        help="unfinished packets held over all connections; the connection that adds more is "
        "cut off (default 128 MiB)",
    )
    limits.add_argument(
        "--max-output-bytes",
        type=_non_negative,
        default=64 * 1024 * 1024,
        help="output waiting for one client that does not read; past it the client is dropped "
        "(default 64 MiB)",
    )
    limits.add_argument(
        "--max-jobs", type=_non_negative, default=0, help="live jobs over all functions"
    )
    limits.add_argument(
        "--max-job-bytes",
        type=_non_negative,
        default=0,
        help="bytes of job data over all live jobs",
    )
    limits.add_argument(
        "--max-queue",
        action="append",
        default=[],
        metavar="[FUNCTION=]N[,N,N]",
        help="jobs (queued and running) per function: N for every function, FUNCTION=N for "
        "one, N,N,N per priority (high, normal, low); repeatable; the admin 'maxqueue' "
        "command changes them at run time (kept in a durable --queue)",
    )
    access = parser.add_argument_group("access (see docs/server.md, Trust model)")
    access.add_argument(
        "--allow",
        metavar="CIDR[,CIDR...]",
        default=None,
        help="networks that may connect (default: loopback only; binding a non-loopback "
        "address without --allow warns and still accepts loopback only)",
    )
    access.add_argument(
        "--admin-allow",
        metavar="CIDR[,CIDR...]",
        default=None,
        help="networks that may send cancel job, drop function, maxqueue, create function and "
        "shutdown (default: loopback only)",
    )
    add_tls_arguments(parser)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def parse_max_queue(
    values: Sequence[str],
) -> tuple[int, dict[bytes, tuple[int, int, int]]]:
    """``--max-queue`` values: the default for every function and the per-function limits."""
    default = 0
    limits: dict[bytes, tuple[int, int, int]] = {}
    for value in values:
        name, sep, sizes = value.rpartition("=")
        parts = sizes.split(",")
        if len(parts) not in (1, 3) or not all(part.strip().isdigit() for part in parts):
            raise UsageError(
                f"--max-queue {value!r}: use N, FUNCTION=N or FUNCTION=HIGH,NORMAL,LOW with "
                "numbers 0 or more"
            )
        numbers = [int(part) for part in parts]
        triple = (numbers[0],) * 3 if len(numbers) == 1 else (numbers[0], numbers[1], numbers[2])
        if not sep:
            if len(set(triple)) != 1:
                raise UsageError(f"--max-queue {value!r}: the default is one number")
            default = triple[0]
        elif not valid_name(name.encode()):
            raise UsageError(f"--max-queue {value!r}: {name!r} is not a valid function name")
        else:
            limits[name.encode()] = triple
    return default, limits


def access_options(
    options: argparse.Namespace, host: str
) -> tuple[tuple[Any, ...], tuple[Any, ...], list[str]]:
    """``--allow`` and ``--admin-allow`` as networks, and the warnings to print at start."""
    notes = []
    allow_text = getattr(options, "allow", None)
    admin_text = getattr(options, "admin_allow", None)
    allow = parse_networks(allow_text, option="--allow") if allow_text else LOOPBACK
    admin = parse_networks(admin_text, option="--admin-allow") if admin_text else LOOPBACK
    if not allow_text and not is_loopback_bind(host):
        notes.append(
            f"Warning: listening on {host} without --allow: only loopback clients are accepted. "
            "Pass --allow with the networks of your clients and workers (e.g. --allow "
            "10.0.0.0/8); anyone who can connect may run any task."
        )
    return allow, admin, notes


def _loop_factory(
    choice: str = "auto",
) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The event loop to run: uvloop's when asked (``uvloop``) or installed (``auto``)."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError as error:
        if choice == "uvloop":
            raise StartupError(
                "--loop uvloop: uvloop is not installed "
                "(pip install 'django-gearman-tasks[uvloop]')"
            ) from error
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def _run_loop(
    main: Coroutine[Any, Any, None], factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    if factory is None:
        asyncio.run(main)
    elif sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
    else:  # pragma: no cover - Python 3.10
        import uvloop  # noqa: PLC0415 - optional

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(main)


def tune_gc() -> None:
    """Collect garbage in larger batches: a server holding a million queued jobs otherwise
    spends a third of its time in CPython's generation-0 collections (every 700 allocations).

    The server's objects are freed by reference counting; the cycle collector only has to catch
    the odd cycle (a closed connection), so fewer, larger young collections lose nothing.
    Process-wide, so only the server's own entry points call it.
    """
    gc.freeze()  # startup objects (modules, classes) never need scanning again
    gc.set_threshold(100_000, 20, 10)


def run(
    options: argparse.Namespace, *, on_bind: Callable[[GearmanServer, str], None] | None = None
) -> None:
    """Run the server until SIGINT/SIGTERM (persist and stop) or SIGUSR1 (stop when idle)."""
    host, port = parse_addrport(options.addrport)
    loop_name, loop_factory = _loop_factory(getattr(options, "loop", "auto"))
    files = raise_file_limit()
    max_queue, limits = parse_max_queue(getattr(options, "max_queue", []))
    allow, admin_allow, notes = access_options(options, host)
    for note in notes:
        logger.warning("%s", note)
    max_connections = getattr(options, "max_connections", None)
    if max_connections is None:
        max_connections = max(files - 64, 64)
    tune_gc()
    try:
        store = open_store(options.queue, fsync=getattr(options, "fsync", False))
    except (OSError, ValueError) as error:
        raise StartupError(f"cannot open the job store {options.queue!r}: {error}") from error
    server = GearmanServer(
        host,
        port,
        store=store,
        job_retries=options.job_retries,
        worker_wakeup=options.worker_wakeup,
        max_packet_size=options.max_packet_size,
        ssl=tls_server_context(options),
        max_connections=max_connections,
        idle_timeout=getattr(options, "idle_timeout", 0),
        stall_timeout=getattr(options, "stall_timeout", 60),
        max_buffer_bytes=getattr(options, "max_buffer_bytes", 128 * 1024 * 1024),
        max_output_bytes=getattr(options, "max_output_bytes", 64 * 1024 * 1024),
        max_jobs=getattr(options, "max_jobs", 0),
        max_job_bytes=getattr(options, "max_job_bytes", 0),
        max_queue=max_queue,
        limits=limits,
        allow=allow,
        admin_allow=admin_allow,
    )

    async def main() -> None:
        try:
            await server.start()
        except OSError as error:
            store.close()
            reason = ERRORS.get(error.errno or 0, error.strerror or str(error))
            raise StartupError(f"Error: {reason} ({host}:{port})") from error
        loop = asyncio.get_running_loop()
        for sig, graceful in (
            (signal.SIGINT, False),
            (signal.SIGTERM, False),
            (signal.SIGUSR1, True),
        ):
            loop.add_signal_handler(sig, functools.partial(_stop, server, sig, graceful=graceful))
        if on_bind is not None:
            on_bind(server, loop_name)
        await server.serve_forever()

    _run_loop(main(), loop_factory)


def _stop(server: GearmanServer, sig: int, *, graceful: bool) -> None:
    logger.info(
        "%s: %s",
        signal.Signals(sig).name,
        "stopping when no job is running" if graceful else "stopping",
    )
    asyncio.ensure_future(server.close(graceful=graceful))


def banner(
    server: GearmanServer, loop_name: str, *, source: str = "", notes: Sequence[str] = ()
) -> str:
    """What the server prints once it listens (``python -m`` and ``manage.py gearmand``).

    ``source`` says where the address came from (``"from GEARMAN_URL"``); ``notes`` are extra
    lines (warnings) printed before the last one.
    """
    queue = getattr(server.store, "path", None) or "memory (background jobs are lost on exit)"
    where = f" ({source})" if source else ""
    if server.ssl is not None:
        certificates = (
            "client certificates required"
            if server.ssl.verify_mode == ssl.CERT_REQUIRED
            else "client certificates optional"
            if server.ssl.verify_mode == ssl.CERT_OPTIONAL
            else "no client certificates"
        )
        notes = [f"TLS: on ({certificates})", *notes]
    return "\n".join(
        [
            f"Gearman job server listening on {server.host}:{server.port}{where} ({loop_name})",
            f"Queue: {queue}",
            *notes,
            "Quit the server with CONTROL-C.",
        ]
    )


def _print_banner(server: GearmanServer, loop_name: str) -> None:
    print(banner(server, loop_name), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m django_gearman.server", description="An embedded Gearman job server."
    )
    add_arguments(parser)
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run(options, on_bind=_print_banner)
    except StartupError as error:
        print(error, file=sys.stderr)
        return 1
    except UsageError as error:
        parser.error(str(error))
    return 0
