"""Background jobs in a SQLite file: group commits on the event loop, one bad row isolated,
failed deletes retried. The file's layout, checks and migrations are in :mod:`.schema`."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Mapping
from functools import cache
from itertools import chain
from types import MappingProxyType
from typing import Any

from ...errors import StoreClosed, StoreError, UsageError
from .base import CommitCallback, JobStore, StoredJob, StoreFuture
from .schema import (
    CREATE_LIMITS,
    CREATE_QUARANTINE,
    SCHEMA_VERSION,
    connect,
    corrupt,
    create_private,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

logger = logging.getLogger("django_gearman.server.store")

_SELECT = "SELECT id, priority, run_at, job, enqueued FROM gearman_jobs ORDER BY id"
# Rows per INSERT and ids per DELETE: multi-row statements are about a third cheaper than
# executemany. 199 rows are 995 parameters, under SQLite's old limit of 999.
_INSERT_ROWS = 199
_DELETE_IDS = 512
_NONE_FAILED: Mapping[int, BaseException] = MappingProxyType({})  # every row was committed


class SqliteStore(JobStore):
    """Background jobs in a SQLite file in WAL mode, group-committed on the event loop's thread.

    Adds and removes are queued; the first of an event-loop iteration schedules one commit
    (``call_soon``) that writes everything the iteration queued in one transaction, so under
    load one commit carries hundreds or thousands of jobs. It runs on the loop's own thread: a
    writer thread would fight the loop for the GIL (binding parameters needs it) and lose more
    than SQLite's work could gain in parallel. ``max_batch`` caps the inserts, and separately
    the deletes, in one transaction.

    ``synchronous="NORMAL"`` (the default) survives the server process being killed, even with
    ``kill -9``, because a commit is in the OS's hands once written to the WAL file, and costs
    no fsync per commit; after an OS crash or a power loss the last transactions may be lost.
    ``"FULL"`` fsyncs every commit and closes that gap, at the cost of one fsync per batch, on
    the loop (as Redis's ``appendfsync always`` does).

    The file is opened in exclusive locking mode, so a second server cannot share it (it fails
    at start with :class:`StoreError` rather than replaying the same jobs twice). ``commits``
    counts the transactions committed, for tests and benchmarks.
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_batch: int = 10_000,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = os.fspath(path)
        if max_batch < 1:
            raise UsageError("max_batch must be at least 1")
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("NORMAL", "FULL"):
            raise UsageError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(f"the directory {directory!r} for the job store does not exist")
        create_private(self.path)
        self.max_batch = max_batch
        self.commits = 0
        self._db: sqlite3.Connection | None
        self._db, self._next_id = connect(self.path, self.synchronous)
        # (id, priority, run_at, job, enqueued)
        self._rows: list[tuple[int, int, int, bytes, int]] = []
        self._futures: list[StoreFuture] = []  # of add(); add_nowait() makes none
        self._deletes: list[int] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None  # loop a commit is due on
        self._listener: CommitCallback | None = None
        self._failed_deletes: list[int] = []  # retried with the next commit
        self.quarantined = 0  # corrupt rows moved aside by load()
        self._listener_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    def load(self) -> list[StoredJob]:
        """Every kept job. A row that is not a job (written by something else, or damaged) is
        moved to the ``quarantine`` table with one warning naming it and why, and start-up
        goes on with the others."""
        jobs = []
        bad: list[tuple[Any, str]] = []
        db = self._open()
        try:
            rows = db.execute(_SELECT).fetchall()
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path!r}: the jobs cannot be read ({error}); restore the file from a "
                "backup, or move it aside and start with an empty queue"
            ) from error
        for row in rows:
            job_id, priority, when, job, enqueued = row
            why = corrupt(job_id, priority, when, job, enqueued)
            if why is not None:
                bad.append((row, why))
                continue
            function, unique, reducer, data = bytes(job).split(b"\0", 3)
            jobs.append(
                StoredJob(job_id, function, unique, priority, data, when, reducer, enqueued)
            )
        if bad:
            self._quarantine(bad)
        return jobs

    def _quarantine(self, bad: list[tuple[Any, str]]) -> None:
        """Move rows that are not jobs to the ``quarantine`` table (one warning each). If that
        fails they stay where they are, unreplayed, and are found again next start."""
        for row, why in bad:
            logger.warning(
                "job store %s: row id=%r is not a job (%s); moved it to the quarantine table",
                self.path,
                row[0],
                why,
            )
        db = self._open()
        try:
            db.execute("BEGIN")
            db.execute(CREATE_QUARANTINE)
            db.executemany(
                "INSERT INTO quarantine (row_id, priority, run_at, job, enqueued, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, why) for row, why in bad],
            )
            db.executemany(
                "DELETE FROM gearman_jobs WHERE rowid IS ?", [(row[0],) for row, _ in bad]
            )
            db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback(db)
            logger.error(
                "job store %s: could not quarantine %d row(s), left in place: %s",
                self.path,
                len(bad),
                error,
            )
            return
        self.quarantined += len(bad)

    def load_limits(self) -> dict[bytes, tuple[int, int, int]]:
        db = self._open()
        db.execute(CREATE_LIMITS)
        return {
            bytes(function): (int(high), int(normal), int(low))
            for function, high, normal, low in db.execute(
                "SELECT function, high, normal, low FROM limits"
            )
        }

    def save_limit(self, function: bytes, sizes: tuple[int, int, int] | None) -> None:
        self.commit()  # no batch may be open around this statement
        db = self._open()
        try:
            db.execute(CREATE_LIMITS)
            if sizes is None:
                db.execute("DELETE FROM limits WHERE function = ?", (function,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO limits (function, high, normal, low) "
                    "VALUES (?, ?, ?, ?)",
                    (function, *sizes),
                )
        except sqlite3.Error as error:  # the limit holds until the restart all the same
            logger.error(
                "job store %s: could not keep the maxqueue of %r: %s", self.path, function, error
            )

    def add(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
        enqueued: int = 0,
    ) -> StoreFuture:
        loop = asyncio.get_running_loop()
        future = StoreFuture(loop=loop)
        future.job_id = self._queue(function, unique, priority, data, when, reducer, enqueued, loop)
        self._futures.append(future)
        return future

    def add_nowait(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
        enqueued: int = 0,
    ) -> int:
        return self._queue(
            function, unique, priority, data, when, reducer, enqueued, self._listener_loop
        )

    def on_commit(self, loop: asyncio.AbstractEventLoop, callback: CommitCallback) -> None:
        self._listener_loop = loop
        self._listener = callback

    def _queue(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes,
        enqueued: int,
        loop: asyncio.AbstractEventLoop | None,
    ) -> int:
        if self._db is None:
            raise StoreClosed("the job store is closed")
        job_id = self._next_id
        self._next_id = job_id + 1
        job = b"\0".join((function, unique, reducer, data))
        self._rows.append((job_id, priority, when, job, enqueued))
        if self._scheduled is not loop or loop is None:
            self._schedule(loop)
        return job_id

    def remove(self, job_id: int) -> None:
        if self._db is None:
            logger.debug(
                "job store %s is closed; job %d stays in it until replayed", self.path, job_id
            )
            return
        self._deletes.append(job_id)
        loop = self._listener_loop
        if self._scheduled is not loop or loop is None:
            self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Commit at the end of this loop iteration (now, when no loop is running). A loop
        that closed before running its commit leaves it to the next loop's, or to close()."""
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # start-up code, outside any loop
                self.commit()
                return
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self.commit)

    async def flush(self) -> None:
        self.commit()

    def commit(self) -> None:
        """Write everything queued, in transactions of at most ``max_batch`` inserts (and as
        many deletes); resolve the adds' futures and tell the ``on_commit`` listener.

        A transaction that fails is written again row by row (see ``_retry``), so only the
        rows that cannot be written fail; deletes that were not committed are kept and retried
        with the next commit, so a finished job is not run again after a restart."""
        self._scheduled = None
        if self._failed_deletes:
            self._deletes[:0] = self._failed_deletes
            self._failed_deletes = []
        while self._db is not None and (self._rows or self._deletes):
            rows, deletes = self._take()
            error = self._write(rows, deletes)
            failed = _NONE_FAILED if error is None else self._retry(rows, deletes, error)
            if not rows:
                continue
            last_id = rows[-1][0]
            if self._futures:
                self._resolve(last_id, failed)
            if self._listener is not None:
                self._listener(last_id, failed)

    def _retry(
        self, rows: list[Any], deletes: list[int], error: BaseException
    ) -> dict[int, BaseException]:
        """``error`` rolled back a batch: return the rows that failed (id -> why).

        A row's own fault (a value SQLite cannot bind or take, a constraint) aborts only its
        statement, so the batch is written again in one transaction, one statement per row,
        and only the rows that fail again are left out: one commit, however many rows. An
        error of the database itself (``OperationalError``: I/O, disk full) would meet every
        row alike, so the batch fails whole; so does a retry whose commit fails. Deletes not
        committed are kept for the next commit."""
        if isinstance(error, sqlite3.OperationalError):
            return self._lost(rows, deletes, error)
        logger.warning(
            "job store %s: a batch of %d insert(s) and %d delete(s) failed (%s); retrying one "
            "by one",
            self.path,
            len(rows),
            len(deletes),
            error,
        )
        failed: dict[int, BaseException] = {}
        db = self._open()
        try:
            db.execute("BEGIN")
            insert = _insert_sql(1)
            for row in rows:
                try:
                    db.execute(insert, row)
                except Exception as row_error:
                    if isinstance(row_error, sqlite3.OperationalError) or not db.in_transaction:
                        raise  # the database failed (and may have rolled back): not this row
                    failed[row[0]] = row_error
                    logger.error(
                        "job store %s: could not store job %d (function %r): %s",
                        self.path,
                        row[0],
                        bytes(row[3]).split(b"\0", 1)[0][:80],
                        row_error,
                    )
            for size, start in _chunks(len(deletes), _DELETE_IDS):
                db.execute(_delete_sql(size), deletes[start : start + size])
            db.execute("COMMIT")
        except Exception as retry_error:  # noqa: BLE001 - fails this batch, never the loop
            self._rollback(db)
            return self._lost(rows, deletes, retry_error)
        self.commits += 1
        return failed

    def _lost(
        self, rows: list[Any], deletes: list[int], error: BaseException
    ) -> dict[int, BaseException]:
        """The whole batch failed: every row in it is lost, its deletes wait for the next
        commit. One log line for the batch."""
        logger.error(
            "job store %s: could not commit %d insert(s) and %d delete(s): %s%s",
            self.path,
            len(rows),
            len(deletes),
            error,
            "; the deletes are retried with the next commit" if deletes else "",
        )
        self._failed_deletes.extend(deletes)
        return {row[0]: error for row in rows}

    def close(self) -> None:
        """Commit what is queued and close the file; calling it again does nothing."""
        if self._db is None:
            return
        self.commit()
        self._db.close()
        self._db = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreClosed("the job store is closed")
        return self._db

    def _take(self) -> tuple[list[Any], list[int]]:
        """The next transaction's rows and deletes: at most ``max_batch`` of each."""
        limit = self.max_batch
        if len(self._rows) <= limit:
            rows, self._rows = self._rows, []
        else:
            rows = self._rows[:limit]
            del self._rows[:limit]
        if len(self._deletes) <= limit:
            deletes, self._deletes = self._deletes, []
        else:
            deletes = self._deletes[:limit]
            del self._deletes[:limit]
        if self._rows and deletes:
            # A row still queued cannot be deleted before it is inserted: keep its delete back.
            first = self._rows[0][0]
            self._deletes[:0] = [d for d in deletes if d >= first]
            deletes = [d for d in deletes if d < first]
        return rows, deletes

    def _resolve(self, last_id: int, failed: Mapping[int, BaseException]) -> None:
        futures = self._futures
        count = 0
        for future in futures:
            if future.job_id > last_id:
                break
            count += 1
            if future.done():  # cancelled by its caller
                continue
            if future.get_loop().is_closed():
                continue
            error = failed.get(future.job_id)
            if error is None:
                future.set_result(future.job_id)
            else:
                future.set_exception(error)
        del futures[:count]

    def _write(self, rows: list[Any], deletes: list[int]) -> BaseException | None:
        """One transaction: inserts, then deletes. Return the error that rolled it back, if any."""
        db = self._open()
        try:
            db.execute("BEGIN")
            for size, start in _chunks(len(rows), _INSERT_ROWS):
                db.execute(_insert_sql(size), list(chain.from_iterable(rows[start : start + size])))
            for size, start in _chunks(len(deletes), _DELETE_IDS):
                db.execute(_delete_sql(size), deletes[start : start + size])
            db.execute("COMMIT")
        except Exception as error:  # noqa: BLE001 - any failure fails this batch, never the loop
            self._rollback(db)
            return error
        self.commits += 1
        return None

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("job store %s: rollback failed", self.path)


def _chunks(total: int, most: int) -> list[tuple[int, int]]:
    """``(size, start)`` pieces of ``total`` items: ``most`` at a time, then powers of two, so
    that a few distinct statements (kept in sqlite3's statement cache) serve every batch."""
    pieces = []
    start = 0
    while start < total:
        size = min(most, 1 << ((total - start).bit_length() - 1))
        pieces.append((size, start))
        start += size
    return pieces


@cache
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO gearman_jobs (id, priority, run_at, job, enqueued) VALUES {values}"


@cache
def _delete_sql(ids: int) -> str:
    return f"DELETE FROM gearman_jobs WHERE id IN ({', '.join(['?'] * ids)})"
