"""The transactional outbox: background jobs written in the caller's transaction, sent after it.

A view that queues a job with ``.background()`` while a job server is down, or inside a
transaction that is then rolled back, loses the job or runs it for a row that does not exist.
Here the job is an :class:`~django_gearman.models.OutboxJob` row, inserted in the same
transaction as the data it is about:

- rolled back: the row never existed, nothing is sent;
- committed: an ``on_commit`` hook sends the transaction's rows at once (one pipelined round
  trip) and deletes those a job server acknowledged (JOB_CREATED);
- no server reachable: the view still succeeds, the rows wait, and the relay sends them when a
  server is back. The relay runs in ``manage.py gearman_worker`` (a thread) and as
  ``manage.py gearman_relay``; it wakes at once after a commit in its own process and polls
  otherwise.

Delivery is at least once: a process killed between JOB_CREATED and the DELETE leaves a row that
is sent again. Every row carries a unique key (the task's, or a fresh one), so a re-sent job
coalesces with the first while that one is queued or running. Several relays may run at once:
each claims rows with a lease (one conditional UPDATE: ``claimed_until``/``claimed_by``), so a
row is sent by one relay at a time on every database, SQLite included.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.db.models import Q
from django.utils import timezone

from .clients import clients
from .gearman.jobs import Task, TaskState
from .gearman.protocol import Priority
from .models import OutboxJob

__all__ = ["Backlog", "Relay", "backlog", "flush_deletes", "send_waiting", "wake", "write"]

logger = logging.getLogger("django_gearman.outbox")

#: Seconds a claim holds its rows: longer than any send takes (the client's timeouts are 30 s).
LEASE = 60.0
#: The longest wait before a row whose send failed is tried again.
MAX_RETRY_DELAY = 10.0
#: Seconds a new row is left to the thread that committed it (which sends it at once) before
#: relays take it: no claim (one UPDATE less per job), and a relay still sends it if that
#: process died before it could.
FRESH = 10.0
#: Seconds between the batched DELETEs of rows sent at commits.
DELETE_EVERY = 0.2
#: After a failed send at a commit, commits leave their rows to the relay for this long, so
#: views do not each wait on a job server that is down.
PAUSE_AFTER_FAILURE = 2.0

_PRIORITIES = {Priority.HIGH: "high", Priority.NORMAL: "normal", Priority.LOW: "low"}
_BY_NAME = {name: priority for priority, name in _PRIORITIES.items()}

_wake = threading.Event()
_paused_until = 0.0  # time.monotonic() before which commits do not send
_sent: dict[str, set[tuple[int, str]]] = {}  # database -> (id, unique) sent at commits
_sent_lock = threading.Lock()
_deleter: threading.Thread | None = None
_pending = threading.local()  # row ids written by this thread, by database, not yet sent
# A relay pass holds this while it has a database connection open, so a fork (the process
# pool's) never copies a connection the relay thread is using into a child.
_pass_lock = threading.RLock()


def wake() -> None:
    """Wake the relays of this process (after a commit wrote rows)."""
    _wake.set()


def write(alias: str, task_name: str, task: Task, *, using: str | None = None) -> int:
    """Insert ``task`` (a background :class:`Task`) into the outbox in the current transaction
    of database ``using`` and send it once that commits (at once outside a transaction).

    One INSERT here; the send happens after the commit, outside the caller's transaction.
    Returns the row's id."""
    database = using or router.db_for_write(OutboxJob)
    unique = task.unique if task.unique is not None else uuid.uuid4().hex
    now = timezone.now()
    row_id = _insert(
        database,
        {
            "alias": alias,
            "task_name": task_name,
            "function": task.function,
            "data": task.data,
            "unique": unique,
            "priority": _PRIORITIES[task.priority],
            "run_at": task.run_at,
            "created_at": now,
            "attempts": 0,
            "last_error": "",
            "not_before": now + timedelta(seconds=FRESH),  # the committing thread's, for now
            "claimed_until": None,
            "claimed_by": "",
        },
    )
    pending: dict[str, list[int]] = _pending.__dict__.setdefault("rows", {})
    pending.setdefault(database, []).append(row_id)
    transaction.on_commit(lambda: _after_commit(database), using=database)
    return row_id


_INSERTS: dict[str, tuple[str, list[Any], bool]] = {}


def _insert(database: str, values: dict[str, Any]) -> int:
    """One INSERT of an outbox row, its SQL built once per database: the ORM's ``create()``
    spends more compiling the statement than the database takes to run it, and this INSERT is
    all the outbox adds to the caller's transaction. The new row's id."""
    connection = connections[database]
    if database not in _INSERTS:
        fields = [f for f in OutboxJob._meta.concrete_fields if f.name != "id"]
        quote = connection.ops.quote_name
        returning = bool(connection.features.can_return_columns_from_insert)
        sql = "INSERT INTO {} ({}) VALUES ({}){}".format(
            quote(OutboxJob._meta.db_table),
            ", ".join(quote(str(f.column)) for f in fields),
            ", ".join(["%s"] * len(fields)),
            f" RETURNING {quote('id')}" if returning else "",
        )
        _INSERTS[database] = (sql, fields, returning)
    sql, fields, returning = _INSERTS[database]
    params = [f.get_db_prep_save(values[f.name], connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            return int(cursor.fetchone()[0])
        return int(connection.ops.last_insert_id(cursor, OutboxJob._meta.db_table, "id"))


def _after_commit(database: str) -> None:
    """Send what this thread wrote in the transaction that just committed. Every hook of one
    transaction calls this; the first sends all its rows, the others find none left. Ids of
    rolled-back rows may be among them: they match no row. Never raises into the caller."""
    global _paused_until
    wake()
    ids = _pending.__dict__.get("rows", {}).pop(database, [])
    if not ids:
        return
    if time.monotonic() < _paused_until:  # a send failed moments ago: keep the views fast
        OutboxJob.objects.using(database).filter(id__in=ids).update(not_before=timezone.now())
        return  # the relay's now
    try:
        _, failed = send_waiting(database, ids=ids, relay="commit")
    except Exception:  # the view's commit succeeded: the relay sends them later
        logger.exception("could not send %d outbox job(s) after the commit", len(ids))
        failed = len(ids)
    if failed:
        _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE


@dataclass(frozen=True)
class Backlog:
    """What waits in the outbox: the admin's overview shows it."""

    waiting: int
    oldest_age: float | None  # seconds, None when empty
    failing: int  # rows whose last send failed


def backlog(using: str | None = None) -> Backlog:
    """How many rows wait, the age of the oldest, and how many have failed to send."""
    rows = OutboxJob.objects.using(using or router.db_for_read(OutboxJob))
    oldest = rows.order_by("created_at").values_list("created_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else None
    return Backlog(rows.count(), age, rows.filter(attempts__gt=0).count())


def send_waiting(
    using: str | None = None,
    *,
    ids: Iterable[int] | None = None,
    limit: int = 1000,
    relay: str = "relay",
) -> tuple[int, int]:
    """Claim up to ``limit`` due rows (only ``ids``, if given), send them, delete those a server
    acknowledged and put the others back with a delay. Returns (sent, failed).

    ``relay="commit"`` is the committing thread sending its own fresh rows (``ids``): they are
    not due for relays yet, so it takes them without a claim."""
    database = using or router.db_for_write(OutboxJob)
    with _pass_lock:
        try:
            return _send(database, ids, limit, relay)
        finally:
            if relay != "commit":  # a relay thread's connection: not left open across a fork
                connections[database].close()


def _send(database: str, ids: Iterable[int] | None, limit: int, relay: str) -> tuple[int, int]:
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    rows = OutboxJob.objects.using(database)
    if relay == "commit" and ids is not None:
        token = ""  # fresh rows of this thread: nobody else takes them yet
        claimed = list(rows.filter(id__in=list(ids), claimed_by="").order_by("id")[:limit])
    else:
        candidates = rows.filter(free, due)
        if ids is not None:
            candidates = candidates.filter(id__in=list(ids))
        wanted = list(candidates.order_by("id").values_list("id", flat=True)[:limit])
        if not wanted:
            return 0, 0
        token = f"{relay}-{uuid.uuid4().hex[:16]}"
        rows.filter(free, id__in=wanted).update(
            claimed_until=now + timedelta(seconds=LEASE), claimed_by=token
        )
        claimed = list(rows.filter(claimed_by=token).order_by("id"))
    by_alias: dict[str, list[tuple[OutboxJob, Task]]] = {}
    for row in claimed:
        task = Task(
            row.function,
            bytes(row.data),
            _BY_NAME.get(row.priority, Priority.NORMAL),
            row.unique,
            background=True,
            run_at=row.run_at,
        )
        by_alias.setdefault(row.alias, []).append((row, task))
    sent: list[int] = []
    sent_rows: list[tuple[int, str]] = []
    failed: list[tuple[OutboxJob, str]] = []
    for alias, items in by_alias.items():
        try:
            clients[alias].run_tasks([task for _, task in items])
        except Exception as error:  # noqa: BLE001 - any failure leaves the rows waiting
            failed.extend((row, f"{type(error).__name__}: {error}") for row, _ in items)
            continue
        for row, task in items:
            if task.state is TaskState.CREATED and task.handle is not None:
                sent.append(row.id)
                sent_rows.append((row.id, row.unique))
            else:
                failed.append((row, _why(task)))
    if sent:
        if relay == "commit":
            _delete_soon(database, sent_rows)  # one DELETE for many commits, not one each
        else:
            rows.filter(id__in=sent).delete()
        logger.info("sent %d outbox job(s) (%s)", len(sent), relay)
    if failed:
        for row, why in failed:
            delay = min(0.5 * 2**row.attempts, MAX_RETRY_DELAY)
            rows.filter(id=row.id, claimed_by=token).update(
                attempts=row.attempts + 1,
                last_error=why[:2000],
                not_before=now + timedelta(seconds=delay),
                claimed_until=None,
                claimed_by="",
            )
        logger.warning(
            "could not send %d outbox job(s) (%s), they wait in the outbox: %s",
            len(failed),
            relay,
            failed[0][1],
        )
    return len(sent), len(failed)


def _delete_soon(database: str, rows: list[tuple[int, str]]) -> None:
    """Rows sent at a commit are deleted by a thread of this process, in batches, every
    ``DELETE_EVERY`` seconds: a DELETE (and its disk sync) per batch instead of per job. A
    process that dies first leaves them to be sent again by a relay, after ``FRESH`` seconds:
    at least once, coalesced by their unique keys while the first is still queued or running."""
    global _deleter
    with _sent_lock:
        _sent.setdefault(database, set()).update(rows)
        if _deleter is None or not _deleter.is_alive():
            _deleter = threading.Thread(
                target=_delete_loop, name="gearman-outbox-delete", daemon=True
            )
            _deleter.start()


def _delete_loop() -> None:
    while True:
        time.sleep(DELETE_EVERY)
        flush_deletes(close=True)


def flush_deletes(*, close: bool = False) -> None:
    """Delete the rows sent at commits now (the deleting thread calls this; tests too)."""
    with _sent_lock:
        batches = {database: rows for database, rows in _sent.items() if rows}
        _sent.clear()
    if not batches:
        return
    with _pass_lock:
        for database, rows in batches.items():
            # By id and unique key: SQLite may give a deleted row's id to a new row.
            ids, uniques = {row_id for row_id, _ in rows}, {unique for _, unique in rows}
            try:
                OutboxJob.objects.using(database).filter(id__in=ids, unique__in=uniques).delete()
            except DatabaseError as error:  # e.g. locked: next time
                logger.warning("could not delete %d sent outbox row(s): %s", len(rows), error)
                with _sent_lock:
                    _sent.setdefault(database, set()).update(rows)
            finally:
                if close:  # the deleting thread's connection: not left open across a fork
                    connections[database].close()


def _why(task: Task) -> str:
    if task.error is not None:
        return f"{type(task.error).__name__}: {task.error}"
    return f"the job ended {task.state.name} instead of being queued"


class Relay:
    """Sends what waits in the outbox of database ``using``: after a commit in this process at
    once, every ``poll`` seconds otherwise, ``batch`` rows per round trip."""

    def __init__(self, using: str | None = None, *, poll: float = 1.0, batch: int = 1000) -> None:
        self.using = using
        self.poll = poll
        self.batch = batch
        self.name = f"relay-{socket.gethostname()}-{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> tuple[int, int]:
        """One pass: (sent, failed)."""
        return send_waiting(self.using, limit=self.batch, relay=self.name)

    def run(self) -> None:
        """Until :meth:`stop`: send, then sleep until woken or ``poll`` seconds passed."""
        missing_table_logged = False
        while not self._stop.is_set():
            try:
                sent, failed = self.run_once()
                missing_table_logged = False
            except DatabaseError as error:  # e.g. migrate has not been run yet
                if not missing_table_logged:
                    logger.warning("the outbox relay cannot read the outbox: %s", error)
                    missing_table_logged = True
                sent, failed = 0, 0
                self._stop.wait(max(self.poll, 5.0))
                continue
            if sent and not failed and sent >= self.batch:
                continue  # more may wait
            _wake.wait(self.poll)
            _wake.clear()

    def start(self) -> threading.Thread:
        """Run in a daemon thread (``gearman_worker``'s); :meth:`stop` ends it."""
        self._thread = threading.Thread(target=self.run, name="gearman-outbox-relay", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        _wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _before_fork() -> None:
    _pass_lock.acquire()


def _after_fork() -> None:
    _pass_lock.release()


def _after_fork_in_child() -> None:
    """The child starts afresh: free locks, no deleting thread, and no rows to delete (the
    parent deletes them)."""
    global _pass_lock, _sent_lock, _deleter
    _pass_lock = threading.RLock()
    _sent_lock = threading.Lock()
    _sent.clear()
    _deleter = None


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork_in_child
)
