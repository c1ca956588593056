"""The durable store under failure (#14): one row that cannot be written fails only its own
submit, deletes that fail are retried, a submit merged onto a job still being committed is
answered only after that commit, and corrupt rows are quarantined at start-up.

In-process ``GearmanServer`` on the test's loop (a store can be made to fail on purpose), and
``python -m django_gearman.server`` for start-up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.protocol.constants import REQ, PacketType
from django_gearman.gearman.protocol.packets import encode
from django_gearman.gearman.server.app import GearmanServer
from django_gearman.gearman.server.store import SqliteStore, open_store
from tests.gearman.server.test_app import read_packets
from tests.peers import EmbeddedServer

T = PacketType


def submit(kind: PacketType, unique: bytes, data: bytes, function: bytes = b"fn") -> bytes:
    return encode(REQ, kind, (function, unique, data))


def poison_writes(store: SqliteStore, monkeypatch: pytest.MonkeyPatch, marker: bytes) -> list:
    """Make every transaction holding a job whose data contains ``marker`` fail."""
    real_write = store._write
    calls: list[tuple[int, int]] = []

    def write(rows: list[Any], deletes: list[int]) -> BaseException | None:
        calls.append((len(rows), len(deletes)))
        if any(marker in row[3] for row in rows):
            return sqlite3.IntegrityError("this row cannot be stored")
        return real_write(rows, deletes)

    monkeypatch.setattr(store, "_write", write)
    return calls


def test_one_bad_row_fails_only_its_own_submit(tmp_path: Path, monkeypatch) -> None:
    store = SqliteStore(tmp_path / "q.sqlite3")
    calls = poison_writes(store, monkeypatch, b"poison")

    async def main() -> list[Any]:
        server = GearmanServer("127.0.0.1", 0, store=store)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            other_reader, other_writer = await asyncio.open_connection("127.0.0.1", server.port)
            # Both in one loop turn, so in one transaction.
            writer.write(submit(T.SUBMIT_JOB_BG, b"bad", b"poison"))
            other_writer.write(submit(T.SUBMIT_JOB_BG, b"good", b"honest"))
            bad = await read_packets(reader, 1)
            good = await read_packets(other_reader, 1)
            for w in (writer, other_writer):
                w.close()
                await w.wait_closed()
            return [bad[0], good[0]]
        finally:
            await server.close()

    bad, good = asyncio.run(asyncio.wait_for(main(), 30))
    assert bad.type is T.ERROR and bad.args[0] == b"QUEUE_ERROR"
    assert good.type is T.JOB_CREATED
    with SqliteStore(tmp_path / "q.sqlite3") as reopened:
        assert [job.data for job in reopened.load()] == [b"honest"]
    assert any(rows > 1 for rows, _ in calls), "the two rows were never in one batch"


def test_failed_deletes_are_retried_so_finished_jobs_do_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "q.sqlite3")
    real_write = store._write
    failures = [sqlite3.OperationalError("database is locked")] * 2

    def write(rows: list[Any], deletes: list[int]) -> BaseException | None:
        if deletes and not rows and failures:
            return failures.pop()
        return real_write(rows, deletes)

    monkeypatch.setattr(store, "_write", write)
    job_id = store.add_nowait(b"fn", b"u", 1, b"done soon", 0)
    store.commit()
    store.remove(job_id)
    store.commit()  # the delete fails (twice: batch, then alone) and is kept
    assert failures == []
    assert store._failed_deletes == [job_id]  # kept for the next commit
    store.commit()  # the next commit retries it
    store.close()
    with SqliteStore(tmp_path / "q.sqlite3") as reopened:
        assert reopened.load() == []


def test_merged_submits_are_answered_only_after_the_commit(tmp_path: Path, monkeypatch) -> None:
    """A background and a foreground submit merged (same unique) onto a job whose commit fails:
    both get ERROR, none a JOB_CREATED, and no job is left behind."""
    store = SqliteStore(tmp_path / "q.sqlite3")
    poison_writes(store, monkeypatch, b"poison")

    async def main() -> tuple[list[Any], list[Any], int]:
        server = GearmanServer("127.0.0.1", 0, store=store)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            merged_reader, merged_writer = await asyncio.open_connection("127.0.0.1", server.port)
            await asyncio.sleep(0.05)  # both connected before the submits
            writer.write(submit(T.SUBMIT_JOB_BG, b"key", b"poison"))
            merged_writer.write(
                submit(T.SUBMIT_JOB_BG, b"key", b"other")
                + submit(T.SUBMIT_JOB, b"key", b"waits")
                + encode(REQ, T.ECHO_REQ, (b"after",))
            )
            first = await read_packets(reader, 1)
            merged = await read_packets(merged_reader, 3)
            jobs = len(server.state.jobs)
            for w in (writer, merged_writer):
                w.close()
                await w.wait_closed()
            return first, merged, jobs
        finally:
            await server.close()

    first, merged, jobs = asyncio.run(asyncio.wait_for(main(), 30))
    assert [(p.type, p.args[0]) for p in first] == [(T.ERROR, b"QUEUE_ERROR")]
    kinds = [(p.type, p.args[0]) for p in merged]
    assert kinds[-1] == (T.ECHO_RES, b"after")
    # Merged in the same loop turn: ERROR in place of each JOB_CREATED. (Had the merged
    # connection's bytes come a turn later, the job was already gone: then its submits made a
    # new job, which fails the same way.)
    assert all(kind == (T.ERROR, b"QUEUE_ERROR") for kind in kinds[:2]), kinds
    assert jobs == 0


def test_corrupt_rows_are_quarantined_and_start_up_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    with SqliteStore(path) as store:
        store.add_nowait(b"fn_ok", b"u1", 1, b"good", 0)
        store.commit()
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO gearman_jobs (id, priority, run_at, job, enqueued) VALUES (?, ?, ?, ?, ?)",
        [
            (100, 1, 0, b"no separators", 0),
            (101, 7, 0, b"fn\0u\0\0data", 0),
            (102, 1, "soon", b"fn\0u2\0\0data", 0),
            (103, 1, 0, "text, not a blob", 0),
        ],
    )
    db.commit()
    db.close()
    server = EmbeddedServer(queue_db=path, extra_args=["--log-level", "WARNING"])
    server.start()
    try:
        with GearmanAdminClient(server.address) as admin:
            assert [(r.function, r.total) for r in admin.status()] == [("fn_ok", 1)]
        with GearmanClient([server.address], timeout=10) as client:
            assert client.echo(b"alive") == b"alive"
    finally:
        server.stop()
    db = sqlite3.connect(path)
    quarantined = sorted(row[0] for row in db.execute("SELECT row_id FROM quarantine"))
    left = sorted(row[0] for row in db.execute("SELECT id FROM gearman_jobs"))
    db.close()
    assert quarantined == [100, 101, 102, 103]
    assert left == [1]


def test_corrupt_rows_are_named_in_the_log(tmp_path: Path, caplog) -> None:
    path = tmp_path / "q.sqlite3"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO gearman_jobs (id, priority, run_at, job) VALUES (5, 1, 0, x'00')")
    db.commit()
    db.close()
    with caplog.at_level("WARNING", "django_gearman.server.store"), SqliteStore(path) as store:
        assert store.load() == []
        assert store.quarantined == 1
    assert any("id=5" in record.getMessage() for record in caplog.records)


def test_a_file_that_is_not_sqlite_fails_at_start_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a job store\n" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "django_gearman.server", "127.0.0.1:0", "--queue", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "not a job store" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_text().startswith("these are my notes")  # left alone


def test_fsync_option_makes_every_commit_synchronous_full(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "q.sqlite3"), fsync=True)
    try:
        assert store._open().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()
    store = open_store(str(tmp_path / "r.sqlite3"))
    try:
        assert store._open().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        store.close()
