"""The job stores: what is kept survives a reopen and a ``kill -9``, and adds are group-committed.

No Django and no server here: the stores are driven directly, with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from django_gearman.gearman.server.store import (
    JobStore,
    MemoryStore,
    SqliteStore,
    StoreClosed,
    StoredJob,
    StoreError,
    StoreFuture,
    open_store,
)
from django_gearman.gearman.server.store.sqlite import SCHEMA_VERSION
from tests.peers import BackgroundProcess

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]


def run(function: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    """``function()`` on a new event loop; a store future that never resolves fails the test
    after ``timeout`` seconds instead of hanging it."""

    async def bounded() -> T:
        return await asyncio.wait_for(function(), timeout)

    return asyncio.run(bounded())


def add(store: JobStore, n: int, **fields: Any) -> StoreFuture:
    """Add job ``n`` with distinct fields; the future of the add."""
    values = {
        "function": b"fn",
        "unique": b"u%d" % n,
        "priority": 1,
        "data": b"data %d" % n,
        "when": 0,
        **fields,
    }
    return store.add(**values)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "queue.sqlite3")


def test_an_added_job_is_loaded_by_the_next_store_with_every_field(db: str) -> None:
    data = b"\x00\x01\xff" * 1000
    job = StoredJob(0, b"resize image", b"u-\xff", 2, data, 1_893_456_000, b"sum", 1_795_000_000)

    async def main() -> int:
        with SqliteStore(db) as store:
            future = store.add(*job[1:])
            job_id = future.job_id
            assert await future == job_id
        return job_id

    job_id = run(main)
    with SqliteStore(db) as store:
        assert store.load() == [job._replace(id=job_id)]  # the enqueue time as the server gave it


def test_reducer_defaults_to_empty(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db) as store:
            await store.add(b"fn", b"u", 0, b"", 0)

    run(main)
    with SqliteStore(db) as store:
        [job] = store.load()
    assert (job.reducer, job.data, job.when, job.priority) == (b"", b"", 0, 0)


def test_the_job_id_is_known_at_once_and_the_future_resolves_once_committed(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db) as store:
            future = add(store, 1)
            assert isinstance(future, asyncio.Future) and future.job_id == 1
            assert not future.done()  # nothing is committed before the loop runs again
            assert await future == 1
            assert store.commits == 1

    run(main)


def test_a_removed_job_is_gone_after_flush_and_after_reopening(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db) as store:
            futures = [add(store, n) for n in range(5)]
            await futures[-1]
            store.remove(futures[1].job_id)
            store.remove(futures[3].job_id)
            await store.flush()
            assert [job.unique for job in store.load()] == [b"u0", b"u2", b"u4"]

    run(main)
    with SqliteStore(db) as store:
        assert [job.unique for job in store.load()] == [b"u0", b"u2", b"u4"]


def test_a_remove_queued_with_its_add_deletes_it(db: str) -> None:
    """The delete is in the same batch as the insert, or a later one, never an earlier one."""

    async def main() -> None:
        with SqliteStore(db, max_batch=10) as store:
            futures = [add(store, n) for n in range(25)]
            for future in futures[::2]:
                store.remove(future.job_id)
            await store.flush()
            assert [job.id for job in store.load()] == [f.job_id for f in futures[1::2]]

    run(main)


def test_ids_increase_and_continue_after_reopening(db: str) -> None:
    async def first() -> list[int]:
        with SqliteStore(db) as store:
            futures = [add(store, n) for n in range(3)]
            return [await f for f in futures]

    async def second() -> list[int]:
        with SqliteStore(db) as store:
            store.remove(3)  # the highest id may be deleted: ids are still never reused
            await store.flush()
            futures = [add(store, n) for n in range(3, 5)]
            return [await f for f in futures]

    assert run(first) == [1, 2, 3]
    assert run(second) == [4, 5]
    with SqliteStore(db) as store:
        assert [job.id for job in store.load()] == [1, 2, 4, 5]


def test_replay_is_in_the_order_of_adding(db: str) -> None:
    priorities = [2, 0, 1, 0, 2, 1] * 50

    async def main() -> None:
        with SqliteStore(db) as store:
            futures = [add(store, n, priority=p) for n, p in enumerate(priorities)]
            await asyncio.gather(*futures)

    run(main)
    with SqliteStore(db) as store:
        jobs = store.load()
    assert [job.unique for job in jobs] == [b"u%d" % n for n in range(len(priorities))]
    assert [job.priority for job in jobs] == priorities
    assert [job.id for job in jobs] == sorted(job.id for job in jobs)


def test_a_burst_of_adds_is_one_transaction(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db) as store:
            for burst in range(1, 4):
                futures = [add(store, n) for n in range(1000)]
                await futures[-1]
                assert all(f.done() for f in futures)
                assert store.commits == burst

    run(main)


def test_max_batch_caps_a_transaction(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db, max_batch=100) as store:
            futures = [add(store, n) for n in range(1000)]
            await futures[-1]
            assert store.commits == 10
            for future in futures:
                store.remove(future.job_id)
            await store.flush()
            assert store.commits == 20
            assert store.load() == []

    run(main)


def test_removes_are_batched_too(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db) as store:
            futures = [add(store, n) for n in range(1000)]
            await futures[-1]
            for future in futures:
                store.remove(future.job_id)
            await store.flush()
            assert store.commits == 2
            assert store.load() == []

    run(main)


def test_a_row_that_cannot_be_written_fails_alone_and_the_store_goes_on(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        with SqliteStore(db) as store:
            good = add(store, 1)
            bad = add(store, 2, priority=object())  # cannot be bound: its transaction fails
            with caplog.at_level(logging.WARNING, logger="django_gearman.server.store"):
                with pytest.raises(sqlite3.Error):
                    await bad
            assert good.result() == 1  # retried alone, it was stored
            assert "could not store job 2 (function b'fn')" in caplog.text
            assert "retrying one by one" in caplog.text
            assert await add(store, 3) == 3  # the writer survived
            assert [job.unique for job in store.load()] == [b"u1", b"u3"]

    run(main)


def test_close_commits_what_is_queued(db: str) -> None:
    async def main() -> None:
        store = SqliteStore(db)
        futures = [add(store, n) for n in range(10)]
        store.remove(futures[0].job_id)
        store.close()  # before the loop ever ran the writer's kick

    run(main)
    with SqliteStore(db) as store:
        assert [job.unique for job in store.load()] == [b"u%d" % n for n in range(1, 10)]


def test_close_is_safe_twice_and_the_store_refuses_work_after(db: str) -> None:
    async def main() -> None:
        store = SqliteStore(db)
        await add(store, 1)
        store.close()
        store.close()
        with pytest.raises(StoreClosed):
            add(store, 2)
        store.remove(1)  # fire-and-forget: dropped; the job would be replayed
        await store.flush()
        with pytest.raises(StoreClosed):
            store.load()

    run(main)
    unused = SqliteStore(db)
    unused.close()
    unused.close()
    with SqliteStore(db) as store:
        assert [job.id for job in store.load()] == [1]


def test_a_store_can_serve_one_event_loop_after_another(db: str) -> None:
    with SqliteStore(db) as store:

        async def one(n: int) -> int:
            return await add(store, n)

        for n in range(3):
            assert run(functools.partial(one, n)) == n + 1
        store.remove(2)  # outside any loop: the writer is woken at once
        run(store.flush)
        assert [job.id for job in store.load()] == [1, 3]


def test_flush_with_nothing_queued_returns(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db) as store:
            await store.flush()
            await add(store, 1)
            await store.flush()
            await store.flush()

    run(main)


def test_the_file_is_wal_and_versioned(db: str) -> None:
    SqliteStore(db).close()
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        connection.close()


def test_synchronous_full_is_an_option(db: str) -> None:
    async def main() -> None:
        with SqliteStore(db, synchronous="full") as store:
            assert store.synchronous == "FULL"
            await add(store, 1)

    run(main)
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(db, synchronous="OFF")
    with pytest.raises(ValueError, match="max_batch"):
        SqliteStore(db, max_batch=0)


def test_a_second_store_on_the_same_file_is_refused(db: str) -> None:
    with SqliteStore(db):
        with pytest.raises(StoreError, match="in use by another process"):
            SqliteStore(db)
    SqliteStore(db).close()  # released on close


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory .*missing.* does not exist"):
        SqliteStore(str(tmp_path / "missing" / "queue.sqlite3"))
    assert issubclass(StoreError, OSError)  # so the command reports it like other file errors


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a job store"):
        SqliteStore(str(garbage))


def test_another_database_is_left_alone(db: str) -> None:
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY)")
    connection.close()
    with pytest.raises(StoreError, match="another application's database"):
        SqliteStore(db)
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == [
            ("django_migrations",)
        ]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        connection.close()


def test_a_layout_1_file_is_moved_to_the_current_layout_keeping_every_job(db: str) -> None:
    connection = sqlite3.connect(db)
    connection.execute(
        "CREATE TABLE gearman_jobs (id INTEGER PRIMARY KEY, function BLOB NOT NULL, "
        "unique_key BLOB NOT NULL, priority INTEGER NOT NULL, data BLOB NOT NULL, "
        "run_at INTEGER NOT NULL, reducer BLOB NOT NULL)"
    )
    jobs = [
        StoredJob(3, b"fn", b"u1", 0, b"a\x00b", 0, b""),
        StoredJob(7, b"other", b"", 2, b"", 1_893_456_000, b"sum"),
    ]
    connection.executemany(
        "INSERT INTO gearman_jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(j.id, j.function, j.unique, j.priority, j.data, j.when, j.reducer) for j in jobs],
    )
    connection.execute("PRAGMA user_version=1")
    connection.commit()
    connection.close()

    async def add_one(store: SqliteStore) -> int:
        return await add(store, 9, enqueued=1_795_000_009)

    with SqliteStore(db) as store:
        assert store.load() == jobs  # enqueued 0: layout 1 did not keep it
        assert run(lambda: add_one(store)) == 8  # ids go on after the highest kept one
    with SqliteStore(db) as store:
        assert [(j.id, j.enqueued) for j in store.load()] == [(3, 0), (7, 0), (8, 1_795_000_009)]
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
    finally:
        connection.close()


def test_a_layout_2_file_gets_enqueue_times_keeping_every_job(db: str) -> None:
    connection = sqlite3.connect(db)
    connection.execute(
        "CREATE TABLE gearman_jobs (id INTEGER PRIMARY KEY, priority INTEGER NOT NULL, "
        "run_at INTEGER NOT NULL, job BLOB NOT NULL)"
    )
    connection.executemany(
        "INSERT INTO gearman_jobs VALUES (?, ?, ?, ?)",
        [(4, 0, 0, b"fn\0u1\0\0a\0b"), (9, 2, 1_893_456_000, b"other\0\0sum\0")],
    )
    connection.execute("PRAGMA user_version=2")
    connection.commit()
    connection.close()
    with SqliteStore(db) as store:
        assert store.load() == [  # enqueued 0: not known for jobs kept before layout 3
            StoredJob(4, b"fn", b"u1", 0, b"a\0b", 0, b"", 0),
            StoredJob(9, b"other", b"", 2, b"", 1_893_456_000, b"sum", 0),
        ]

        async def add_one() -> int:
            return await add(store, 1, enqueued=1_795_000_001)

        assert run(add_one) == 10
    with SqliteStore(db) as store:
        jobs = store.load()
    assert [(j.id, j.enqueued) for j in jobs] == [(4, 0), (9, 0), (10, 1_795_000_001)]
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
        columns = connection.execute("PRAGMA table_info(gearman_jobs)").fetchall()
        assert [(c[1], c[2], c[3], c[4]) for c in columns][-1] == ("enqueued", "INTEGER", 1, "0")
    finally:
        connection.close()


def test_a_layout_3_file_with_the_computed_default_still_works(db: str) -> None:
    """The first layout-3 code let SQLite stamp ``enqueued``; inserts now name the column."""
    connection = sqlite3.connect(db)
    connection.execute(
        "CREATE TABLE gearman_jobs (id INTEGER PRIMARY KEY, priority INTEGER NOT NULL, "
        "run_at INTEGER NOT NULL, job BLOB NOT NULL, "
        "enqueued INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)))"
    )
    connection.execute("INSERT INTO gearman_jobs VALUES (2, 1, 0, ?, 1795000000)", (b"fn\0u\0\0d",))
    connection.execute("PRAGMA user_version=3")
    connection.commit()
    connection.close()

    async def add_one(store: SqliteStore) -> int:
        return await add(store, 5, enqueued=0)

    with SqliteStore(db) as store:
        assert run(lambda: add_one(store)) == 3
    with SqliteStore(db) as store:
        assert [(j.id, j.enqueued) for j in store.load()] == [(2, 1_795_000_000), (3, 0)]


def test_a_newer_layout_is_refused(db: str) -> None:
    SqliteStore(db).close()
    connection = sqlite3.connect(db)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="layout version"):
        SqliteStore(db)


CHILD = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from django_gearman.gearman.server.store import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    for start in range(0, 10_000, 1000):
        for n in range(start, start + 1000):
            last = store.add(b"fn", b"u%d" % n, n % 3, b"payload %d" % n, n, b"", 1795000000 + n)
        await last  # and so every earlier one
    print("ok", flush=True)
    time.sleep(120)  # killed here, without close()

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_jobs_acknowledged_before_a_kill_9_are_all_loaded(db: str) -> None:
    code = textwrap.dedent(CHILD.format(root=str(ROOT)))
    with BackgroundProcess([sys.executable, "-c", code, db]) as child:
        child.wait_for("ok", timeout=60)  # stderr in the error if it never comes
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    assert os.path.exists(
        db + "-wal"
    )  # never checkpointed or closed: the rows are recovered from the WAL
    with SqliteStore(db) as store:
        jobs = store.load()
    assert len(jobs) == 10_000
    assert [job.id for job in jobs] == list(range(1, 10_001))
    assert jobs[1234] == StoredJob(
        1235, b"fn", b"u1234", 1234 % 3, b"payload 1234", 1234, b"", 1_795_000_000 + 1234
    )


def test_the_memory_store_keeps_nothing_but_hands_out_ids() -> None:
    store = MemoryStore()
    assert store.durable is False and SqliteStore.durable is True
    assert store.load() == []
    assert [store.add_nowait(b"fn", b"u", 1, b"", 0) for _ in range(3)] == [1, 2, 3]

    async def main() -> None:
        future = store.add(b"fn", b"u", 1, b"", 0)
        assert future.done() and future.job_id == 4
        assert await future == 4
        store.remove(4)
        await store.flush()

    run(main)
    store.close()
    store.close()
    assert store.load() == []


def test_open_store() -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    assert isinstance(open_store(" Memory "), MemoryStore)
    for spec in ("", "   "):
        with pytest.raises(ValueError, match="'memory' or the path"):
            open_store(spec)


def test_open_store_with_a_path(db: str) -> None:
    with open_store(db) as store:
        assert isinstance(store, SqliteStore) and store.durable and store.path == db
    with pytest.raises(StoreError):
        open_store(os.path.join(db, "below-a-file", "queue.sqlite3"))
