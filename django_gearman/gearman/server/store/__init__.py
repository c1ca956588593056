"""Where background jobs survive restarts: an in-memory no-op store and a SQLite one.

gearmand keeps background jobs only (epoch jobs included): each is written before the server
answers JOB_CREATED, deleted on WORK_COMPLETE / WORK_FAIL / WORK_EXCEPTION / cancel, and replayed
at start-up. The server drives a :class:`JobStore` the same way:

* ``load()`` once, before serving, to replay;
* ``add(...)`` from the event loop, which returns a :class:`StoreFuture` at once; its ``job_id``
  is known immediately and the future resolves (to that id) once the row is committed, so the
  server sends JOB_CREATED only then, or ERROR if the commit failed;
* or ``add_nowait(...)``, which returns just the id; the server uses it with ``on_commit(loop,
  callback)``, told once per transaction how far the committed ids reach and which of them
  could not be kept (no future per job);
* ``remove(job_id)`` fire-and-forget when the job is done: deletions may lag, so after a crash
  a finished job can run again, but no job that was not in flight runs twice;
* ``await flush()`` and ``close()`` at shutdown.

``SqliteStore`` group-commits: every insert and delete queued during one event-loop iteration
is written in one transaction at its end, so under load one commit carries thousands of jobs.
A transaction that fails is written again one row at a time, so a row SQLite refuses fails
alone; deletes not committed are kept for the next commit. Rows ``load()`` cannot read as jobs
are moved to a ``quarantine`` table, each with a warning.
``MemoryStore`` keeps nothing.
"""

from __future__ import annotations

from ...errors import StoreClosed, StoreError, UsageError
from .base import JobStore, StoredJob, StoreFuture
from .memory import MemoryStore
from .sqlite import SqliteStore

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


def open_store(spec: str, *, fsync: bool = False) -> JobStore:
    """``"memory"`` gives a :class:`MemoryStore`; anything else is the path of a SQLite file
    (``fsync``: every commit reaches the disk before it is acknowledged)."""
    if not spec or not spec.strip():
        raise UsageError(
            "the job store must be 'memory' or the path of a SQLite file, not an empty string"
        )
    if spec.strip().lower() == "memory":
        return MemoryStore()
    return SqliteStore(spec, synchronous="FULL" if fsync else "NORMAL")
