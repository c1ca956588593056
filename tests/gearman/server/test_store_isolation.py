"""The durable store under failure (#14): one row that cannot be written fails only its own
submit, deletes are never lost with a failed batch, a submit merged onto a job still being
committed is answered only after that commit (ERROR with it if it fails), corrupt rows are
quarantined at start-up, a file that is no job store is a clear start-up error, and ``--fsync``
reaches the store and syncs every commit.

Rows are made unwritable the way SQLite really refuses them: a value it cannot hold (an epoch of
2**63) or a ``BEFORE INSERT`` trigger that aborts rows holding a marker. End-to-end tests drive
``GearmanServer`` on the test's own loop (so the store is at hand), or
``python -m django_gearman.server`` for start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.protocol.constants import REQ, PacketType
from django_gearman.gearman.protocol.packets import Packet, encode
from django_gearman.gearman.server import cli
from django_gearman.gearman.server.app import GearmanServer
from django_gearman.gearman.server.store import MemoryStore, SqliteStore, open_store
from tests.gearman.server.test_app import read_packets
from tests.peers import EmbeddedServer

T = PacketType
ROOT = Path(__file__).resolve().parents[3]
STORE_LOGGER = "django_gearman.server.store"
QUEUE_ERROR = (T.ERROR, b"QUEUE_ERROR")


def submit(kind: PacketType, unique: bytes, data: bytes, function: bytes = b"fn") -> bytes:
    return encode(REQ, kind, (function, unique, data))


def poisoned(path: Path, marker: bytes = b"poison", **options: Any) -> SqliteStore:
    """A store on ``path`` in which SQLite refuses every row whose job holds ``marker``."""
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    try:
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON gearman_jobs "
            f"WHEN instr(NEW.job, x'{marker.hex()}') "
            "BEGIN SELECT RAISE(ABORT, 'this row cannot be stored'); END"
        )
        db.commit()
    finally:
        db.close()
    return SqliteStore(path, **options)


def spy_on_batches(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the rows of every first-try transaction (the real write still runs)."""
    real_write = store._write
    sizes: list[int] = []

    def write(rows: list[Any], deletes: list[int]) -> BaseException | None:
        sizes.append(len(rows))
        return real_write(rows, deletes)

    monkeypatch.setattr(store, "_write", write)
    return sizes


def kept(path: Path) -> list[bytes]:
    with SqliteStore(path) as store:
        return [job.data for job in store.load()]


def pairs(packets: list[Packet]) -> list[tuple[PacketType, bytes]]:
    return [(p.type, p.args[0] if p.args else b"") for p in packets]


async def connect(server: GearmanServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def hang_up(*writers: asyncio.StreamWriter) -> None:
    for writer in writers:
        writer.close()
        await writer.wait_closed()


# -- the store alone ------------------------------------------------------------------------


def test_an_epoch_sqlite_cannot_hold_fails_only_its_own_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The finding: 2**63 overflows SQLite's INTEGER, and used to fail the whole batch."""
    path = tmp_path / "q.sqlite3"

    async def main() -> None:
        with SqliteStore(path) as store:
            before = store.add(b"fn", b"a", 1, b"honest before", 0)
            bad = store.add(b"fn", b"b", 1, b"far future", 2**63)
            after = store.add(b"fn", b"c", 1, b"honest after", 0)
            with caplog.at_level(logging.WARNING, STORE_LOGGER):
                with pytest.raises(OverflowError):
                    await bad
            assert (await before, await after) == (1, 3)
            assert store.commits == 1  # the retry is one transaction, not one per row

    asyncio.run(asyncio.wait_for(main(), 30))
    assert kept(path) == [b"honest before", b"honest after"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "could not store job 2 (function b'fn')" in errors[0]


def test_on_commit_names_the_failed_ids(tmp_path: Path) -> None:
    store = poisoned(tmp_path / "q.sqlite3")
    reports: list[tuple[int, dict[int, type]]] = []

    async def main() -> None:
        store.on_commit(
            asyncio.get_running_loop(),
            lambda last, failed: reports.append((last, {k: type(v) for k, v in failed.items()})),
        )
        for data in (b"a", b"poison", b"b", b"poison too", b"c"):
            store.add_nowait(b"fn", b"", 1, data, 0)
        await store.flush()
        store.add_nowait(b"fn", b"", 1, b"d", 0)
        await store.flush()

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        store.close()
    assert reports == [(5, {2: sqlite3.IntegrityError, 4: sqlite3.IntegrityError}), (6, {})]
    assert kept(tmp_path / "q.sqlite3") == [b"a", b"b", b"c", b"d"]


def test_deletes_in_a_batch_with_a_bad_row_are_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They used to be rolled back with it, and the finished job ran again after a restart."""
    path = tmp_path / "q.sqlite3"
    store = poisoned(path)
    done = store.add_nowait(b"fn", b"", 1, b"finished", 0)
    store.commit()
    batches = spy_on_batches(store, monkeypatch)

    async def main() -> None:
        store.remove(done)  # in one loop turn with the adds: one batch
        store.add_nowait(b"fn", b"", 1, b"poison", 0)
        store.add_nowait(b"fn", b"", 1, b"new", 0)
        await asyncio.sleep(0)  # the turn's commit runs

    asyncio.run(asyncio.wait_for(main(), 30))
    store.close()
    assert batches == [2]
    assert kept(path) == [b"new"]


def test_a_database_error_fails_the_batch_whole_and_keeps_its_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error of the database itself (I/O, disk full) meets every row alike: no retry, one
    log line, and the deletes are written by the next commit."""
    path = tmp_path / "q.sqlite3"
    store = SqliteStore(path)
    done = store.add_nowait(b"fn", b"", 1, b"finished", 0)
    store.commit()
    real_write = store._write
    failures = [sqlite3.OperationalError("disk I/O error")]

    def write(rows: list[Any], deletes: list[int]) -> BaseException | None:
        return failures.pop() if failures else real_write(rows, deletes)

    monkeypatch.setattr(store, "_write", write)
    reports: list[tuple[int, list[int]]] = []

    async def main() -> list[int]:
        store.on_commit(
            asyncio.get_running_loop(), lambda last, failed: reports.append((last, [*failed]))
        )
        store.remove(done)
        lost = [store.add_nowait(b"fn", b"", 1, b"lost %d" % n, 0) for n in range(3)]
        with caplog.at_level(logging.WARNING, STORE_LOGGER):
            await store.flush()
        assert store._failed_deletes == [done]
        store.add_nowait(b"fn", b"", 1, b"later", 0)
        await store.flush()  # writes the kept delete with it
        assert store._failed_deletes == []
        return lost

    lost = asyncio.run(asyncio.wait_for(main(), 30))
    store.close()
    assert reports == [(lost[-1], lost), (lost[-1] + 1, [])]
    assert [r.getMessage() for r in caplog.records] == [
        f"job store {path}: could not commit 3 insert(s) and 1 delete(s): disk I/O error; "
        "the deletes are retried with the next commit"
    ]
    assert kept(path) == [b"later"]


def test_a_failed_delete_alone_is_kept_for_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete-only batch that fails used to be dropped: the job ran again after a restart."""
    path = tmp_path / "q.sqlite3"
    store = SqliteStore(path)
    real_write = store._write
    failures = [sqlite3.OperationalError("disk I/O error")]

    def write(rows: list[Any], deletes: list[int]) -> BaseException | None:
        if deletes and not rows and failures:
            return failures.pop()
        return real_write(rows, deletes)

    monkeypatch.setattr(store, "_write", write)
    job_id = store.add_nowait(b"fn", b"u", 1, b"done soon", 0)
    store.commit()
    store.remove(job_id)  # outside a loop: committed at once; the delete fails and is kept
    assert failures == [] and store._failed_deletes == [job_id]
    store.commit()  # the next commit retries it
    assert store._failed_deletes == []
    store.close()
    assert kept(path) == []


def test_the_memory_store_takes_the_new_callback() -> None:
    store = MemoryStore()
    loop = asyncio.new_event_loop()
    try:
        store.on_commit(loop, lambda last, failed: None)  # never called: nothing is committed
    finally:
        loop.close()
    assert store.add_nowait(b"fn", b"", 1, b"", 0) == 1


# -- through the server -----------------------------------------------------------------------


def test_a_bad_row_from_one_client_does_not_fail_another_clients_submit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "q.sqlite3"
    store = poisoned(path)
    batches = spy_on_batches(store, monkeypatch)

    async def main() -> tuple[list[Packet], list[Packet]]:
        server = GearmanServer("127.0.0.1", 0, store=store)
        await server.start()
        try:
            reader, writer = await connect(server)
            other_reader, other_writer = await connect(server)
            await asyncio.sleep(0.05)  # both accepted: their bytes are read in one loop turn
            writer.write(submit(T.SUBMIT_JOB_BG, b"", b"poison"))
            other_writer.write(submit(T.SUBMIT_JOB_BG, b"", b"honest"))
            bad = await read_packets(reader, 1)
            good = await read_packets(other_reader, 1)
            await hang_up(writer, other_writer)
            return bad, good
        finally:
            await server.close()

    bad, good = asyncio.run(asyncio.wait_for(main(), 30))
    assert pairs(bad) == [QUEUE_ERROR]
    assert good[0].type is T.JOB_CREATED
    assert kept(path) == [b"honest"]
    assert 2 in batches, f"the two submits were not one batch: {batches}"


def test_submits_merged_onto_a_job_whose_commit_fails_all_get_error(tmp_path: Path) -> None:
    """A background and a foreground submit merged (same unique key) onto a job still being
    committed: when its commit fails, each gets ERROR in place of its JOB_CREATED (the
    foreground one never a JOB_CREATED it would wait on forever), in order with later replies,
    and the job is gone: the key takes a new job at once."""
    store = poisoned(tmp_path / "q.sqlite3")

    async def main() -> tuple[list[Packet], list[Packet], list[Packet], tuple[int, int]]:
        server = GearmanServer("127.0.0.1", 0, store=store)
        await server.start()
        try:
            reader, writer = await connect(server)
            merged_reader, merged_writer = await connect(server)
            await asyncio.sleep(0.05)
            writer.write(submit(T.SUBMIT_JOB_BG, b"key", b"poison"))
            merged_writer.write(
                submit(T.SUBMIT_JOB_BG, b"key", b"other")
                + submit(T.SUBMIT_JOB, b"key", b"waits")
                + encode(REQ, T.ECHO_REQ, (b"after",))
            )
            first = await read_packets(reader, 1)
            merged = await read_packets(merged_reader, 3)
            left = (len(server.state.jobs), len(server.state.uniques))
            writer.write(submit(T.SUBMIT_JOB_BG, b"key", b"fine now"))
            again = await read_packets(reader, 1)
            await hang_up(writer, merged_writer)
            return first, merged, again, left
        finally:
            await server.close()

    first, merged, again, left = asyncio.run(asyncio.wait_for(main(), 30))
    assert pairs(first) == [QUEUE_ERROR]
    assert pairs(merged) == [QUEUE_ERROR, QUEUE_ERROR, (T.ECHO_RES, b"after")]
    assert left == (0, 0)  # no zombie for status to show
    assert again[0].type is T.JOB_CREATED
    assert kept(tmp_path / "q.sqlite3") == [b"fine now"]


def test_a_merged_submit_held_behind_a_later_job_still_gets_its_error(tmp_path: Path) -> None:
    """The failed job and the connection's own later job commit in different transactions
    (``max_batch=1``): the ERROR still replaces the merged submit's JOB_CREATED."""
    store = poisoned(tmp_path / "q.sqlite3", max_batch=1)

    async def main() -> tuple[list[Packet], list[Packet]]:
        server = GearmanServer("127.0.0.1", 0, store=store)
        await server.start()
        try:
            reader, writer = await connect(server)
            merged_reader, merged_writer = await connect(server)
            await asyncio.sleep(0.05)
            writer.write(submit(T.SUBMIT_JOB_BG, b"key", b"poison"))
            merged_writer.write(
                submit(T.SUBMIT_JOB, b"key", b"waits") + submit(T.SUBMIT_JOB_BG, b"own", b"fine")
            )
            first = await read_packets(reader, 1)
            merged = await read_packets(merged_reader, 2)
            await hang_up(writer, merged_writer)
            return first, merged
        finally:
            await server.close()

    first, merged = asyncio.run(asyncio.wait_for(main(), 30))
    assert pairs(first) == [QUEUE_ERROR]
    assert [p.type for p in merged] == [T.ERROR, T.JOB_CREATED]
    assert merged[0].args[0] == b"QUEUE_ERROR"
    assert kept(tmp_path / "q.sqlite3") == [b"fine"]


def test_a_merged_foreground_submit_gets_the_result_once_the_job_is_committed(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "q.sqlite3")

    async def main() -> tuple[list[Packet], list[Packet]]:
        server = GearmanServer("127.0.0.1", 0, store=store)
        await server.start()
        try:
            reader, writer = await connect(server)
            waiter_reader, waiter_writer = await connect(server)
            await asyncio.sleep(0.05)
            writer.write(submit(T.SUBMIT_JOB_BG, b"key", b"work"))
            waiter_writer.write(submit(T.SUBMIT_JOB, b"key", b"ignored"))
            [created] = await read_packets(reader, 1)
            [merged] = await read_packets(waiter_reader, 1)
            worker_reader, worker_writer = await connect(server)
            worker_writer.write(encode(REQ, T.CAN_DO, (b"fn",)) + encode(REQ, T.GRAB_JOB_UNIQ, ()))
            [assign] = await read_packets(worker_reader, 1)
            handle = assign.args[0]
            worker_writer.write(encode(REQ, T.WORK_COMPLETE, (handle, b"done")))
            result = await read_packets(waiter_reader, 1)
            await hang_up(writer, waiter_writer, worker_writer)
            return [created, merged, assign], result
        finally:
            await server.close()

    (created, merged, assign), result = asyncio.run(asyncio.wait_for(main(), 30))
    assert created.type is merged.type is T.JOB_CREATED
    assert created.args[0] == merged.args[0] == assign.args[0]
    assert assign.args[3] == b"work"  # the first submit's data: the second merged onto it
    assert pairs(result) == [(T.WORK_COMPLETE, created.args[0])]
    assert kept(tmp_path / "q.sqlite3") == []  # done, so deleted


# -- start-up -------------------------------------------------------------------------------


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
            (104, 1, 0, b"\0u\0\0data", 0),
            (105, 1, 0, b"fn\0u5\0\0data", "yesterday"),
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
    try:
        quarantined = dict(db.execute("SELECT row_id, reason FROM quarantine").fetchall())
        left = [row[0] for row in db.execute("SELECT id FROM gearman_jobs")]
    finally:
        db.close()
    assert sorted(quarantined) == [100, 101, 102, 103, 104, 105]
    assert "priority 7" in quarantined[101] and "'soon'" in quarantined[102]
    assert left == [1]


def test_each_corrupt_row_gets_one_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "q.sqlite3"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO gearman_jobs (id, priority, run_at, job) VALUES (5, 1, 0, x'00')")
    db.execute("INSERT INTO gearman_jobs (id, priority, run_at, job) VALUES (6, 9, 0, x'00')")
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING, STORE_LOGGER), SqliteStore(path) as store:
        assert store.load() == []
        assert store.quarantined == 2
        assert store.load() == []  # moved: not found (nor warned about) again
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "row id=5 is not a job" in warnings[0] and "row id=6" in warnings[1]


def start_failure(queue: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django_gearman.server", "127.0.0.1:0", "--queue", str(queue)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


def test_a_file_that_is_not_sqlite_fails_at_start_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a job store\n" * 100)
    result = start_failure(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"'{path}' is not a job store: SQLite cannot read it" in result.stderr
    assert "give the server the path of a new file" in result.stderr
    assert path.read_text().startswith("these are my notes")  # left alone


def test_a_damaged_store_fails_at_start_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    with SqliteStore(path) as store:
        for n in range(2000):
            store.add_nowait(b"fn", b"u%d" % n, 1, b"x" * 200, 0)
        store.commit()
    raw = bytearray(path.read_bytes())
    raw[8192:] = b"\xa5" * (len(raw) - 8192)  # every page past the second
    path.write_bytes(bytes(raw))
    result = start_failure(path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "give the server the path of a new file" in result.stderr or (
        "restore the file from a backup" in result.stderr
    )


def test_a_jobs_table_another_program_made_fails_at_start(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE gearman_jobs (id INTEGER PRIMARY KEY, stuff)")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    result = start_failure(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "its gearman_jobs table has no priority, run_at, job, enqueued column" in result.stderr


# -- --fsync --------------------------------------------------------------------------------


def test_fsync_makes_the_store_synchronous_full(tmp_path: Path) -> None:
    for fsync, level in ((True, 2), (False, 1)):  # FULL, NORMAL
        store = open_store(str(tmp_path / f"{fsync}.sqlite3"), fsync=fsync)
        try:
            assert store._open().execute("PRAGMA synchronous").fetchone() == (level,)
        finally:
            store.close()


def test_the_fsync_option_reaches_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m django_gearman.server --fsync``: the command line's store syncs in FULL."""
    monkeypatch.setattr(cli, "tune_gc", lambda: None)  # process-wide: not in a test run
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    seen: dict[bool, tuple[str, int]] = {}
    for fsync in (True, False):
        argv = ["127.0.0.1:0", "--queue", str(tmp_path / f"{fsync}.sqlite3")]
        options = parser.parse_args(argv + (["--fsync"] if fsync else []))

        def on_bind(server: GearmanServer, loop_name: str, *, fsync: bool = fsync) -> None:
            store = server.store
            seen[fsync] = (
                store.synchronous,
                store._open().execute("PRAGMA synchronous").fetchone()[0],
            )
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(server.close()))

        cli.run(options, on_bind=on_bind)
    assert seen == {True: ("FULL", 2), False: ("NORMAL", 1)}


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(
        ["strace", "-f", "-o", "/dev/null", "true"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _strace_works(), reason="needs strace (and ptrace allowed)")
def test_fsync_syncs_the_wal_at_every_commit(tmp_path: Path) -> None:
    """In WAL mode ``synchronous=FULL`` syncs the WAL at each commit: with ``--fsync``, N
    sequential durable submits (one commit each) make at least N fsync/fdatasync calls;
    without it, none until a checkpoint."""
    count = 30
    syncs = {}
    for fsync in (False, True):
        trace = tmp_path / f"trace-{fsync}"
        server = EmbeddedServer(
            queue_db=tmp_path / f"{fsync}.sqlite3", extra_args=["--fsync"] if fsync else []
        )
        server.start()
        try:
            attach = subprocess.Popen(
                ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace)]
                + ["-p", str(server.pid)],
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(1.0)  # strace attaches
                with GearmanClient([server.address], timeout=10) as client:
                    for n in range(count):
                        client.submit_background("fn", b"job %d" % n)  # waits for JOB_CREATED
                    client.echo(b"done")
            finally:
                attach.terminate()
                attach.wait(10)
        finally:
            server.stop()
        syncs[fsync] = sum("sync(" in line for line in trace.read_text().splitlines())
    assert syncs[True] >= count, syncs
    assert syncs[False] < count // 3, syncs
