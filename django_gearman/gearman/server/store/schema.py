"""The SQLite job store's file: its layout, opening it (checks, locking, migrations), and
what makes a stored row a job."""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

from ...errors import StoreError

__all__ = [
    "CREATE_LIMITS",
    "CREATE_QUARANTINE",
    "SCHEMA_VERSION",
    "connect",
    "corrupt",
    "create_private",
]

logger = logging.getLogger("django_gearman.server.store")

#: ``PRAGMA user_version`` of the database layout below; bump it with a migration.
SCHEMA_VERSION = 3

# One row per job. ``job`` is the job's function, unique key, reducer and data joined by NULs
# (only the data may contain NULs, as in the protocol): four columns insert in half the time
# of one column per field, because binding each parameter costs more than SQLite's work.
# ``enqueued`` (layout 3) is the server's enqueue time in Unix seconds, bound like the rest: that
# inserts faster than a computed default, and the restored job shows the time it showed before.
# (Files made by the first layout-3 code have such a default; every insert names the column,
# so it is never used.)
_CREATE = """
CREATE TABLE IF NOT EXISTS gearman_jobs (
    id INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    job BLOB NOT NULL,
    enqueued INTEGER NOT NULL DEFAULT 0
)"""


# Rows load() found corrupt, kept for a human to look at (``reason`` says what was wrong).
CREATE_QUARANTINE = (
    "CREATE TABLE IF NOT EXISTS quarantine (row_id, priority, run_at, job, enqueued, reason TEXT, "
    "moved_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')))"
)


def corrupt(job_id: Any, priority: Any, when: Any, job: Any, enqueued: Any) -> str | None:
    """Why a ``gearman_jobs`` row is not a job the server can replay (None: it is one)."""
    if type(job_id) is not int:
        return f"id is {type(job_id).__name__}, not an integer"
    if type(priority) is not int or priority not in (0, 1, 2):
        return f"priority {priority!r} is not 0, 1 or 2"
    if type(when) is not int or when < 0:
        return f"run_at {when!r} is not Unix seconds"
    if type(enqueued) is not int:
        return f"enqueued {enqueued!r} is not Unix seconds"
    if not isinstance(job, bytes):
        return f"job is {type(job).__name__}, not a blob"
    if job.count(b"\0") < 3:
        return "job does not hold function, unique key, reducer and data"
    if not job.split(b"\0", 1)[0]:
        return "job has an empty function name"
    return None


# ``maxqueue`` settings, kept across restarts (one row per function; written at once).
CREATE_LIMITS = (
    "CREATE TABLE IF NOT EXISTS limits (function BLOB PRIMARY KEY, high INTEGER NOT NULL, "
    "normal INTEGER NOT NULL, low INTEGER NOT NULL)"
)


def create_private(path: str) -> None:
    """Create the store file readable by its owner only (0600) if it does not exist yet.

    The queue holds every background job's arguments, so no other user should read it. SQLite
    gives its -wal, -shm and -journal files the database file's permissions, so those are 0600
    too. ``O_CREAT`` with mode 0600 is atomic (no moment with wider permissions, and the umask
    can only narrow it) and leaves an existing file, and its mode, alone.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as error:
        raise StoreError(f"{path!r}: {error.strerror or error}") from error
    os.close(fd)


def connect(path: str, synchronous: str) -> tuple[sqlite3.Connection, int]:
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
        elif version not in (1, 2, SCHEMA_VERSION):
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
        elif version == 1:
            _migrate_from_1(db)
        elif version == 2:
            _migrate_from_2(db)
        _check_columns(db, path)
        next_id = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM gearman_jobs").fetchone()[0]
        db.execute("COMMIT")
    except sqlite3.OperationalError as error:
        db.close()
        if "locked" in str(error):
            raise StoreError(
                f"{path!r} is in use by another process (another job server?)"
            ) from error
        raise StoreError(f"{path!r}: {error}") from error
    except sqlite3.DatabaseError as error:
        db.close()
        if _unreadable(error):
            raise StoreError(
                f"{path!r} is not a job store: SQLite cannot read it ({error}). It was left "
                "as it is: give the server the path of a new file (it is created) or of a job "
                "store, or move this one aside and start with an empty queue"
            ) from error
        raise StoreError(f"{path!r} is not a job store: {error}") from error
    except sqlite3.Error as error:
        db.close()
        raise StoreError(f"{path!r} is not a job store: {error}") from error
    except BaseException:
        db.close()
        raise
    return db, next_id


def _unreadable(error: sqlite3.DatabaseError) -> bool:
    """Whether SQLite found the file not a database, or damaged (``sqlite_errorcode`` is
    Python 3.11+; 3.10 has only the message)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (26, 11)  # SQLITE_NOTADB, SQLITE_CORRUPT, and extended codes
    return "not a database" in str(error) or "malformed" in str(error)


def _check_columns(db: sqlite3.Connection, path: str) -> None:
    """Refuse a ``gearman_jobs`` table this server did not make (its rows could not be read)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(gearman_jobs)")}
    missing = [c for c in ("id", "priority", "run_at", "job", "enqueued") if c not in columns]
    if missing:
        raise StoreError(
            f"{path!r} is not a job store: its gearman_jobs table has no {', '.join(missing)} "
            "column; give the server the path of a new file or of a job store it wrote"
        )


def _migrate_from_2(db: sqlite3.Connection) -> None:
    """Layout 2 to 3, inside the caller's transaction: adds ``enqueued``, 0 (unknown) for the
    jobs already kept. ALTER TABLE with a constant default rewrites no row."""
    db.execute("ALTER TABLE gearman_jobs ADD COLUMN enqueued INTEGER NOT NULL DEFAULT 0")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    logger.info("job store: moved to layout version %d (enqueue times unknown)", SCHEMA_VERSION)


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Layout 1 (one column per field) to the current one, inside the caller's transaction."""
    rows = db.execute(
        "SELECT id, priority, run_at, function, unique_key, reducer, data FROM gearman_jobs"
    ).fetchall()
    db.execute("DROP TABLE gearman_jobs")
    db.execute(_CREATE)
    db.executemany(
        "INSERT INTO gearman_jobs (id, priority, run_at, job, enqueued) VALUES (?, ?, ?, ?, 0)",
        [(row[0], row[1], row[2], b"\0".join(row[3:])) for row in rows],
    )
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    logger.info("job store: moved %d job(s) to layout version %d", len(rows), SCHEMA_VERSION)
