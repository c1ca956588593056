"""Where background jobs survive restarts: an in-memory no-op store and a SQLite one.

The server asks the store to keep a background job before it answers JOB_CREATED, and to forget
it when the job completes, fails or is cancelled; at start-up it replays what the store holds.

``SqliteStore`` group-commits: a writer thread takes every insert and delete queued since its
last transaction, runs them in one transaction, commits, and resolves the waiting futures with
one callback on the event loop. Under load that is one fsync for thousands of jobs.
WAL with ``synchronous=NORMAL`` survives the server process being killed (even ``kill -9``);
after an OS crash or power loss it may lose the last transactions. ``synchronous="FULL"``
closes that gap at the cost of one fsync per commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["JobStore", "MemoryStore", "SqliteStore", "StoredJob", "open_store"]

logger = logging.getLogger("django_gearman.server.store")

SCHEMA_VERSION = 1


class StoredJob(NamedTuple):
    """A background job as the store keeps it; ``id`` orders the replay."""

    id: int
    function: bytes
    unique: bytes
    priority: int
    data: bytes
    when: int
    reducer: bytes = b""


class StoreFuture(asyncio.Future):
    """A future for one durable write that also carries the job's store id at once."""

    job_id: int


class JobStore:
    """The interface the server uses. Every method is called from the event loop's thread."""

    #: False when nothing survives a restart (the server then answers at once).
    durable = False

    def load(self) -> list[StoredJob]:
        """Every kept job, in id order (called once, before serving)."""
        return []

    def add(self, function: bytes, unique: bytes, priority: int, data: bytes, when: int, reducer: bytes = b"") -> StoreFuture:
        """Keep a job; the future resolves (to the id) once it is durable."""
        raise NotImplementedError

    def remove(self, job_id: int) -> None:
        """Forget a job (batched; may lag the call)."""

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""

    def close(self) -> None:
        """Flush and release; safe to call twice."""


class MemoryStore(JobStore):
    """Keeps nothing: background jobs live only as long as the server process."""

    durable = False


class SqliteStore(JobStore):
    """Background jobs in a SQLite database in WAL mode, written by one thread, group-committed."""

    durable = True

    def __init__(self, path: str, *, synchronous: str = "NORMAL") -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"the directory {directory!r} for the job store does not exist")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = path
        self.synchronous = synchronous
        self.commits = 0  # transactions committed (for tests and benchmarks)
        self._db = self._connect()
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM gearman_jobs").fetchone()
        self._next_id = int(row[0]) + 1
        self._lock = threading.Condition()
        self._inserts: list[tuple] = []
        self._futures: list[StoreFuture] = []
        self._deletes: list[tuple[int]] = []
        self._flush_waiters: list[Callable[[], None]] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute(
                "CREATE TABLE IF NOT EXISTS gearman_jobs (id INTEGER PRIMARY KEY, function BLOB NOT NULL, "
                "unique_key BLOB NOT NULL, priority INTEGER NOT NULL, data BLOB NOT NULL, "
                "run_at INTEGER NOT NULL, reducer BLOB NOT NULL)"
            )
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            db.close()
            raise ValueError(f"{self.path} has job store schema {version}; this version reads {SCHEMA_VERSION}")
        return db

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    def load(self) -> list[StoredJob]:
        rows = self._db.execute(
            "SELECT id, function, unique_key, priority, data, run_at, reducer FROM gearman_jobs ORDER BY id"
        )
        return [StoredJob(*row) for row in rows]

    def add(self, function: bytes, unique: bytes, priority: int, data: bytes, when: int, reducer: bytes = b"") -> StoreFuture:
        loop = self._ensure_thread()
        job_id = self._next_id
        self._next_id += 1
        future = StoreFuture(loop=loop)
        future.job_id = job_id
        with self._lock:
            self._inserts.append((job_id, function, unique, priority, data, when, reducer))
            self._futures.append(future)
            self._lock.notify()
        return future

    def remove(self, job_id: int) -> None:
        self._ensure_thread()
        with self._lock:
            self._deletes.append((job_id,))
            self._lock.notify()

    async def flush(self) -> None:
        if self._thread is None:
            self._commit_now()
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._lock:
            self._flush_waiters.append(lambda: loop.call_soon_threadsafe(_set, done))
            self._lock.notify()
        await done

    def close(self) -> None:
        thread = self._thread
        if thread is not None:
            with self._lock:
                self._closing = True
                self._lock.notify()
            thread.join()
            self._thread = None
        if self._db is not None:
            self._commit_now()
            self._db.close()
            self._db = None  # type: ignore[assignment]

    # -- the writer thread --------------------------------------------------------------------

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._writer, name="gearman-store-writer", daemon=True)
            self._thread.start()
        assert self._loop is not None
        return self._loop

    def _writer(self) -> None:
        while True:
            with self._lock:
                while not (self._inserts or self._deletes or self._flush_waiters or self._closing):
                    self._lock.wait()
                inserts, self._inserts = self._inserts, []
                futures, self._futures = self._futures, []
                deletes, self._deletes = self._deletes, []
                waiters, self._flush_waiters = self._flush_waiters, []
                closing = self._closing
            error = self._write(inserts, deletes)
            if futures:
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(_resolve, futures, error)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass
            for waiter in waiters:
                try:
                    waiter()
                except RuntimeError:
                    pass
            if closing:
                return

    def _write(self, inserts: list[tuple], deletes: list[tuple[int]]) -> BaseException | None:
        if not inserts and not deletes:
            return None
        try:
            self._db.execute("BEGIN")
            if inserts:
                self._db.executemany("INSERT INTO gearman_jobs VALUES (?, ?, ?, ?, ?, ?, ?)", inserts)
            if deletes:
                self._db.executemany("DELETE FROM gearman_jobs WHERE id = ?", deletes)
            self._db.execute("COMMIT")
            self.commits += 1
            return None
        except sqlite3.Error as error:
            logger.error("job store %s: could not commit %d insert(s): %s", self.path, len(inserts), error)
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return error

    def _commit_now(self) -> None:
        with self._lock:
            inserts, self._inserts = self._inserts, []
            deletes, self._deletes = self._deletes, []
        error = self._write(inserts, deletes)
        if error is not None:
            raise error


def _resolve(futures: list[StoreFuture], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(future.job_id)
            else:
                future.set_exception(error)


def _set(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def open_store(spec: str) -> JobStore:
    """``"memory"`` gives a :class:`MemoryStore`; anything else is a SQLite file path."""
    if not spec or not spec.strip():
        raise ValueError("the job store must be a file path or 'memory'")
    if spec.strip().lower() == "memory":
        return MemoryStore()
    return SqliteStore(spec)
