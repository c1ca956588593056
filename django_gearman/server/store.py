"""Where background jobs survive restarts: an in-memory no-op store and a SQLite one.

gearmand keeps background jobs only (epoch jobs included): each is written before the server
answers JOB_CREATED, deleted on WORK_COMPLETE / WORK_FAIL / WORK_EXCEPTION / cancel, and replayed
at start-up. The server drives a :class:`JobStore` the same way:

* ``load()`` once, before serving, to replay;
* ``add(...)`` from the event loop, which returns a :class:`StoreFuture` at once; its ``job_id``
  is known immediately and the future resolves (to that id) once the row is committed, so the
  server sends JOB_CREATED only then, or ERROR if the commit failed;
* ``remove(job_id)`` fire-and-forget when the job is done: deletions may lag, so after a crash
  a finished job can run again, but no job that was not in flight runs twice;
* ``await flush()`` and ``close()`` at shutdown.

``SqliteStore`` group-commits: one writer thread takes every insert and delete queued since its
last transaction, runs them in one transaction and resolves the batch's futures with a single
callback on the event loop, so under load one commit carries thousands of jobs.
``MemoryStore`` keeps nothing and has an ``add_nowait()`` fast path.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import sqlite3
import threading
from functools import cache
from itertools import chain, groupby
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "JobStore",
    "MemoryStore",
    "SqliteStore",
    "StoreClosed",
    "StoreError",
    "StoreFuture",
    "StoredJob",
    "open_store",
]

logger = logging.getLogger("django_gearman.server.store")

_Store = TypeVar("_Store", bound="JobStore")

#: ``PRAGMA user_version`` of the database layout below; bump it with a migration.
SCHEMA_VERSION = 1

_CREATE = """
CREATE TABLE IF NOT EXISTS gearman_jobs (
    id INTEGER PRIMARY KEY,
    function BLOB NOT NULL,
    unique_key BLOB NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    run_at INTEGER NOT NULL,
    reducer BLOB NOT NULL
)"""
_COLUMNS = "id, function, unique_key, priority, data, run_at, reducer"
_SELECT = f"SELECT {_COLUMNS} FROM gearman_jobs ORDER BY id"
# Rows per INSERT and ids per DELETE: multi-row statements are about a third cheaper than
# executemany, and hold the GIL less. 128 rows are 896 parameters, under SQLite's old limit of 999.
_INSERT_ROWS = 128
_DELETE_IDS = 512


class StoreError(OSError):
    """The job store's file cannot be opened or used (missing directory, locked, not a store)."""


class StoreClosed(RuntimeError):
    """A job was added to a store after ``close()``."""


class StoredJob(NamedTuple):
    """A background job as the store keeps it.

    ``id`` is assigned by the store and increases, so it is also the replay order. ``priority``
    is 0 (high), 1 (normal) or 2 (low); ``when`` is the Unix time to run at, 0 meaning now.
    """

    id: int
    function: bytes
    unique: bytes
    priority: int
    data: bytes
    when: int
    reducer: bytes = b""


class StoreFuture(asyncio.Future[int]):
    """The answer to :meth:`JobStore.add`: ``job_id`` at once, the result (that id) once durable."""

    __slots__ = ("job_id",)

    job_id: int


class JobStore(abc.ABC):
    """What the server needs of a job store. All but ``load`` run on the event loop's thread."""

    #: False when nothing survives a restart: the server then answers JOB_CREATED without
    #: waiting and never calls :meth:`add`.
    durable: bool = False

    @abc.abstractmethod
    def load(self) -> list[StoredJob]:
        """Every kept job in id order; called once at start-up, before serving."""

    @abc.abstractmethod
    def add(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
    ) -> StoreFuture:
        """Keep a job. The returned future carries the new ``job_id`` at once and resolves to it
        once the job is durable; if it cannot be kept, the future holds the exception."""

    @abc.abstractmethod
    def remove(self, job_id: int) -> None:
        """Forget a job, without waiting: removals are batched and may become durable late."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until every add and remove queued so far is committed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Commit what is queued and release the store; calling it again does nothing."""

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MemoryStore(JobStore):
    """Keeps nothing: background jobs live only as long as the server process.

    Only ids are handed out, so that code written for a durable store also runs here.
    :meth:`add_nowait` is the cheap path: it returns the id and makes no future.
    """

    durable = False

    def __init__(self) -> None:
        self._next_id = 1

    def __repr__(self) -> str:
        return "<MemoryStore>"

    def load(self) -> list[StoredJob]:
        return []

    def add_nowait(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
    ) -> int:
        """Return a new id at once (nothing is kept, so nothing is waited for)."""
        job_id = self._next_id
        self._next_id = job_id + 1
        return job_id

    def add(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
    ) -> StoreFuture:
        """Like :meth:`add_nowait`, but as an already resolved future (needs a running loop)."""
        job_id = self.add_nowait(function, unique, priority, data, when, reducer)
        future = StoreFuture(loop=asyncio.get_running_loop())
        future.job_id = job_id
        future.set_result(job_id)
        return future

    def remove(self, job_id: int) -> None:
        pass

    async def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class SqliteStore(JobStore):
    """Background jobs in a SQLite file in WAL mode, written by one thread, group-committed.

    ``loop`` is the event loop the futures belong to (default: the one running ``add``).
    ``max_batch`` caps the inserts, and separately the deletes, in one transaction.
    ``synchronous="NORMAL"`` (the default) survives the server process being killed, even with
    ``kill -9``, because a commit is in the OS's hands once written to the WAL file; after an OS
    crash or a power loss the last transactions may be lost. ``"FULL"`` fsyncs every commit and
    closes that gap, at the cost of one fsync per batch.

    The file is opened in exclusive locking mode, so a second server cannot share it (it fails
    at start with :class:`StoreError` rather than replaying the same jobs twice). ``commits``
    counts the transactions committed, for tests and benchmarks.
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_batch: int = 10_000,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = os.fspath(path)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(f"the directory {directory!r} for the job store does not exist")
        self.max_batch = max_batch
        self.commits = 0
        self._loop = loop
        self._db: sqlite3.Connection | None
        self._db, self._next_id = _connect(self.path, self.synchronous)
        # The loop on which a _kick is scheduled, if one is (used on the loop thread only).
        self._kick_loop: asyncio.AbstractEventLoop | None = None
        self._db_lock = threading.Lock()  # held by whoever uses the connection
        # Everything below is shared with the writer thread and guarded by _lock.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._rows: list[tuple[int, bytes, bytes, int, bytes, int, bytes]] = []
        self._futures: list[StoreFuture] = []
        self._deletes: list[int] = []
        self._flushes: list[tuple[int, int, asyncio.Future[None]]] = []
        self._rows_taken = 0  # rows (deletes) handed to a transaction so far ...
        self._deletes_taken = 0
        self._rows_done = 0  # ... and finished, committed or failed
        self._deletes_done = 0
        self._go = False  # the writer should take a batch
        self._closing = False  # close() was called: accept no more work, drain, stop
        self._stopped = False  # the writer has drained everything and exited
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    def load(self) -> list[StoredJob]:
        if self._db is None:
            raise StoreClosed("the job store is closed")
        with self._db_lock:  # the writer may be running (though load is normally called first)
            return [StoredJob(*row) for row in self._db.execute(_SELECT)]

    def add(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
    ) -> StoreFuture:
        if self._thread is None or self._closing:
            self._start()  # or raise StoreClosed
        loop = self._loop or asyncio.get_running_loop()
        future = StoreFuture(loop=loop)
        future.job_id = job_id = self._next_id
        self._next_id = job_id + 1
        with self._lock:
            self._rows.append((job_id, function, unique, priority, data, when, reducer))
            self._futures.append(future)
        if self._kick_loop is not loop:
            self._kick_loop = loop
            loop.call_soon(self._kick)
        return future

    def remove(self, job_id: int) -> None:
        if self._closing:
            logger.debug(
                "job store %s is closed; job %d stays in it until replayed", self.path, job_id
            )
            return
        if self._thread is None:
            self._start()
        with self._lock:
            self._deletes.append(job_id)
        try:
            loop = self._loop or asyncio.get_running_loop()
        except RuntimeError:  # called outside the loop (start-up code): wake the writer now
            self._kick()
            return
        if self._kick_loop is not loop:
            self._kick_loop = loop
            loop.call_soon(self._kick)

    async def flush(self) -> None:
        if self._thread is None:
            return  # nothing was ever queued
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._stopped:
                return
            self._flushes.append(
                (self._rows_taken + len(self._rows), self._deletes_taken + len(self._deletes), done)
            )
            self._go = True
            self._wakeup.notify()
        await done

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and close the file (blocks until then)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join()
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- the writer thread ------------------------------------------------------------------

    def _start(self) -> None:
        if self._closing:
            raise StoreClosed("the job store is closed")
        self._thread = threading.Thread(
            target=self._run, name=f"gearman-store {os.path.basename(self.path)}", daemon=True
        )
        self._thread.start()

    def _kick(self) -> None:
        """Let the writer take what is queued. Scheduled with ``call_soon`` by the first add or
        remove of a loop iteration, so that one transaction carries everything the iteration
        queued instead of racing the loop for a few rows at a time."""
        self._kick_loop = None
        with self._lock:
            self._go = True
            self._wakeup.notify()

    def _run(self) -> None:
        """Take what is queued, write it in one transaction, tell the loop; until drained."""
        while True:
            with self._lock:
                while not (self._go or self._closing):
                    self._wakeup.wait()
                rows, futures, deletes = self._take()
                self._go = bool(self._rows or self._deletes)  # max_batch left some: go on
                stop = self._closing and not self._go
            error = None
            if rows or deletes:
                with self._db_lock:
                    error = self._write(rows, deletes)
            if futures:
                _deliver(futures, error)
            with self._lock:
                self._rows_done += len(rows)
                self._deletes_done += len(deletes)
                if stop:
                    self._stopped = True
                    ready, self._flushes = self._flushes, []
                else:
                    ready = [
                        f
                        for f in self._flushes
                        if f[0] <= self._rows_done and f[1] <= self._deletes_done
                    ]
                    if ready:
                        self._flushes = [f for f in self._flushes if f not in ready]
            for _, _, done in ready:
                _call_soon(done.get_loop(), _set_done, done)
            if stop:
                return

    def _take(self) -> tuple[list[Any], list[StoreFuture], list[int]]:
        """The next batch (lock held): at most ``max_batch`` inserts and as many deletes."""
        limit = self.max_batch
        if len(self._rows) <= limit:
            rows, self._rows = self._rows, []
            futures, self._futures = self._futures, []
        else:
            rows, futures = self._rows[:limit], self._futures[:limit]
            del self._rows[:limit], self._futures[:limit]
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
        self._rows_taken += len(rows)
        self._deletes_taken += len(deletes)
        return rows, futures, deletes

    def _write(self, rows: list[Any], deletes: list[int]) -> BaseException | None:
        """One transaction: inserts, then deletes. Return the error that rolled it back, if any."""
        db = self._db
        assert db is not None
        try:
            db.execute("BEGIN")
            for size, start in _chunks(len(rows), _INSERT_ROWS):
                db.execute(_insert_sql(size), list(chain.from_iterable(rows[start : start + size])))
            for size, start in _chunks(len(deletes), _DELETE_IDS):
                db.execute(_delete_sql(size), deletes[start : start + size])
            db.execute("COMMIT")
        except Exception as error:  # the thread must survive: the loop is told through the futures
            logger.error(
                "job store %s: could not commit %d insert(s) and %d delete(s): %s",
                self.path,
                len(rows),
                len(deletes),
                error,
            )
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("job store %s: rollback failed", self.path)
            return error
        self.commits += 1
        return None


def _connect(path: str, synchronous: str) -> tuple[sqlite3.Connection, int]:
    """Open (creating if need be) the store file: WAL, exclusive lock, layout checked.
    Return the connection and the next job id."""
    try:
        # timeout=0: a file locked by another server is an error now, not after a wait.
        db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise StoreError(f"{path!r}: {error}") from error
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL: then no -shm file is needed
        # Look before changing anything: the file may be another application's database.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name != 'gearman_jobs'").fetchone():
                raise StoreError(f"{path!r} is another application's database, not a job store")
        elif version != SCHEMA_VERSION:
            raise StoreError(
                f"{path!r} has job store layout version {version}; "
                f"this server reads version {SCHEMA_VERSION}"
            )
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed transaction survives a process crash (kill -9) but may be lost
        # on an OS crash or power loss; FULL fsyncs each commit. See the SqliteStore docstring.
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, so a second server fails here
        if version == 0:
            db.execute(_CREATE)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        next_id = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM gearman_jobs").fetchone()[0]
        db.execute("COMMIT")
    except sqlite3.OperationalError as error:
        db.close()
        if "locked" in str(error):
            raise StoreError(
                f"{path!r} is in use by another process (another job server?)"
            ) from error
        raise StoreError(f"{path!r}: {error}") from error
    except sqlite3.Error as error:
        db.close()
        raise StoreError(f"{path!r} is not a job store: {error}") from error
    except BaseException:
        db.close()
        raise
    return db, next_id


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
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO gearman_jobs ({_COLUMNS}) VALUES {values}"


@cache
def _delete_sql(ids: int) -> str:
    return f"DELETE FROM gearman_jobs WHERE id IN ({', '.join(['?'] * ids)})"


def _deliver(futures: list[StoreFuture], error: BaseException | None) -> None:
    """Resolve a batch with one callback per event loop (normally exactly one)."""
    loop = futures[0].get_loop()
    if futures[-1].get_loop() is loop:  # loops only follow one another, so this is all of them
        _call_soon(loop, _resolve, futures, error)
        return
    for loop, group in groupby(futures, key=lambda f: f.get_loop()):
        _call_soon(loop, _resolve, list(group), error)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        logger.debug("job store: event loop closed; dropping a %s callback", callback.__name__)


def _resolve(futures: list[StoreFuture], error: BaseException | None) -> None:
    if error is None:
        for future in futures:
            if not future.done():
                future.set_result(future.job_id)
    else:
        for future in futures:
            if not future.done():
                future.set_exception(error)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def open_store(spec: str) -> JobStore:
    """``"memory"`` gives a :class:`MemoryStore`; anything else is the path of a SQLite file."""
    if not spec or not spec.strip():
        raise ValueError(
            "the job store must be 'memory' or the path of a SQLite file, not an empty string"
        )
    if spec.strip().lower() == "memory":
        return MemoryStore()
    return SqliteStore(spec)
