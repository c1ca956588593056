"""What the admin's queue pages show: a snapshot of every configured job server.

One :func:`snapshot` per server asks it, over the text admin protocol, for its version, pid,
per-function counts by priority, workers and jobs. A server that is down or answers garbage
gives a snapshot with ``up=False`` and the error, never an exception: a page must show the
other servers and say what is wrong with this one. Rows are read one by one: a row that does
not parse (gearmand escapes nothing, so any client or worker can send a name or client id with
a tab or a line break) is left out and kept in ``unreadable``, and the rest of the server
shows. gearmand's admin protocol and ours give the same rows
(``tests/server/test_gearadmin.py``), so nothing here depends on which one answers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import conf
from ..gearman.admin_client import GearmanAdminClient
from ..gearman.errors import AdminError
from ..gearman.protocol import JobInfo, QueuedJob, WorkerInfo
from ..gearman.protocol.text import UnreadableRow

__all__ = ["FunctionRow", "ServerSnapshot", "configured_servers", "snapshot", "snapshot_all"]

#: Rows of ``show queue`` asked for by default: a page, not the whole queue.
QUEUE_LIMIT = 500


@dataclass(frozen=True)
class FunctionRow:
    """One function on one server: queued jobs by priority, running jobs, available workers."""

    name: str
    high: int
    normal: int
    low: int
    running: int
    workers: int

    @property
    def queued(self) -> int:
        return self.high + self.normal + self.low

    @property
    def total(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class ServerSnapshot:
    """A server as seen at one moment, or why it could not be seen (``up`` False, ``error``)."""

    address: str
    aliases: tuple[str, ...]
    up: bool
    error: str = ""
    version: str = ""
    pid: int | None = None
    functions: tuple[FunctionRow, ...] = ()
    workers: tuple[WorkerInfo, ...] = ()
    jobs: tuple[JobInfo, ...] = ()
    unique_keys: tuple[str, ...] = field(default=())
    #: Jobs with function, priority and times (``show queue``, our server only); None when not
    #: asked for or when the server does not have the command (see ``queue_error``).
    queue: tuple[QueuedJob, ...] | None = None
    queue_error: str = ""
    #: Reply lines that did not parse, left out of the rows above (see :class:`UnreadableRow`).
    unreadable: tuple[UnreadableRow, ...] = ()

    @property
    def embedded(self) -> bool:
        """True for our own server (its version says so); gearmand's admin protocol is smaller."""
        return "django-gearman" in self.version

    @property
    def queued(self) -> int:
        return sum(f.queued for f in self.functions)

    @property
    def running(self) -> int:
        return sum(f.running for f in self.functions)


def snapshot(
    address: str,
    *,
    aliases: tuple[str, ...] = (),
    timeout: float = 2.0,
    with_queue: bool = False,
    with_jobs: bool = True,
    queue_limit: int = QUEUE_LIMIT,
) -> ServerSnapshot:
    """Ask one server everything the pages show; a failure is reported in the snapshot.

    ``with_queue`` asks for the job list with functions, priorities and times, which only our
    server gives (gearmand answers it with an error, kept in ``queue_error``). ``with_jobs``
    asks for ``show jobs`` and ``show unique jobs`` (one line per job, so left out by pages
    that only count), unless ``show queue`` answered.
    """
    queue: tuple[QueuedJob, ...] | None = None
    queue_error = ""
    unreadable: list[UnreadableRow] = []
    try:
        with GearmanAdminClient(address, timeout=timeout) as admin:
            version = admin.version()
            pid = admin.getpid()
            status = admin.status(strict=False)
            per_priority = admin.priority_status(strict=False)
            connections = admin.workers(strict=False)
            unreadable += (*status.unreadable, *per_priority.unreadable, *connections.unreadable)
            totals = {row.function: row for row in status}
            priorities = {row.function: row for row in per_priority}
            workers = tuple(w for w in connections if w.functions)  # leave out clients
            if with_queue:
                try:
                    queued = admin.show_queue(queue_limit, strict=False)
                except AdminError as error:  # gearmand: no such command
                    queue_error = f"this server does not list queued jobs ({error})"
                else:
                    queue = tuple(queued)
                    unreadable += queued.unreadable
            # One line per job: only when asked, and not when ``show queue`` gave them already.
            fetch_jobs = with_jobs and queue is None
            jobs: tuple[JobInfo, ...] = ()
            uniques: tuple[str, ...] = ()
            if fetch_jobs:
                listed = admin.show_jobs(strict=False)
                jobs, uniques = tuple(listed), tuple(admin.show_unique_jobs())
                unreadable += listed.unreadable
    except Exception as error:  # noqa: BLE001 - any failure is shown, not raised
        return ServerSnapshot(address, aliases, up=False, error=f"{type(error).__name__}: {error}")
    rows = []
    for name in sorted(totals.keys() | priorities.keys()):
        total = totals.get(name)
        by_priority = priorities.get(name)
        high = by_priority.high if by_priority else 0
        normal = by_priority.normal if by_priority else (total.queued if total else 0)
        low = by_priority.low if by_priority else 0
        running = total.running if total else 0
        available = (
            total.available_workers if total else (by_priority.workers if by_priority else 0)
        )
        rows.append(FunctionRow(name, high, normal, low, running, available))
    return ServerSnapshot(
        address,
        aliases,
        up=True,
        version=version,
        pid=pid,
        functions=tuple(rows),
        workers=workers,
        jobs=jobs,
        unique_keys=uniques,
        queue=queue,
        queue_error=queue_error,
        unreadable=tuple(unreadable),
    )


def configured_servers() -> dict[str, tuple[str, ...]]:
    """Every server of every ``GEARMAN`` alias, once, with the aliases that use it."""
    by_address: dict[str, list[str]] = {}
    for alias in conf.aliases():
        for address in conf.get_settings(alias).servers:
            by_address.setdefault(str(address), []).append(alias)
    return {address: tuple(names) for address, names in by_address.items()}


def snapshot_all(
    *, timeout: float = 2.0, with_queue: bool = False, with_jobs: bool = True
) -> list[ServerSnapshot]:
    """A snapshot of every configured server (see :func:`snapshot`).

    Servers are asked in parallel, so a page waits at most about ``timeout`` however many of
    them are down.
    """
    servers = configured_servers()
    if len(servers) <= 1:
        return [
            snapshot(a, aliases=n, timeout=timeout, with_queue=with_queue, with_jobs=with_jobs)
            for a, n in servers.items()
        ]
    with ThreadPoolExecutor(
        max_workers=min(len(servers), 16), thread_name_prefix="gearman-monitor"
    ) as pool:
        futures = [
            pool.submit(
                snapshot,
                address,
                aliases=aliases,
                timeout=timeout,
                with_queue=with_queue,
                with_jobs=with_jobs,
            )
            for address, aliases in servers.items()
        ]
        return [future.result() for future in futures]
