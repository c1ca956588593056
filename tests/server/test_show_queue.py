"""``show queue``: our server's admin extension that lists jobs with function, priority, state
and times (for the admin's Jobs page); gearmand answers it with an error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from django_gearman.admin_client import GearmanAdminClient
from django_gearman.client import GearmanClient
from django_gearman.protocol.admin import AdminError, QueuedJob
from django_gearman.protocol.constants import Priority

from ..helpers import wait_for, worker_thread
from ..peers import EmbeddedServer, Gearmand

pytestmark = pytest.mark.interop


@pytest.fixture
def embedded(tmp_path: Path):  # noqa: ANN201
    server = EmbeddedServer(queue_db=str(tmp_path / "queue.sqlite3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_field_in_dispatch_order_and_after_a_restart(embedded: EmbeddedServer) -> None:
    before = int(time.time())
    with GearmanClient([embedded.address]) as client:
        low = str(client.submit_background("sq_b", b"1", priority=Priority.LOW, unique="low\tkey"))
        normal = str(client.submit_background("sq_b", b"2", unique="n"))
        high = str(client.submit_background("sq_b", b"3", priority=Priority.HIGH, unique="h"))
        other = str(client.submit_background("sq_a", b"4", unique="a"))
        later = str(client.submit_background("sq_a", b"5", unique="later", run_at=4_000_000_000))
    started = []

    def hold(job) -> bytes:  # noqa: ANN001
        started.append(job.handle)
        wait_for(lambda: stop, timeout=30, what="the test")
        return b""

    stop = False
    with GearmanClient([embedded.address]) as client:
        running = str(client.submit_background("sq_run", b"x", unique="r"))
    with worker_thread([embedded.address], {"sq_run": hold}):
        wait_for(lambda: started, what="the running job")
        with GearmanAdminClient(embedded.address) as admin:
            rows = admin.show_queue()
            assert [r.handle for r in admin.show_queue(3)] == [r.handle for r in rows[:3]]
            assert admin.show_queue(0) == []
            with pytest.raises(AdminError, match="INVALID_ARGUMENTS"):
                admin.command("show queue", "-1")
        stop = True
    by_handle = {row.handle: row for row in rows}
    assert [r.handle for r in rows] == [running, other, high, normal, low, later]
    assert by_handle[running].state == "running" and by_handle[running].function == "sq_run"
    assert by_handle[low] == QueuedJob(low, "sq_b", "low\tkey", "low", "queued", True, True, by_handle[low].enqueued, 0)
    assert by_handle[high].priority == "high" and by_handle[normal].priority == "normal"
    assert by_handle[later].state == "scheduled" and by_handle[later].run_at == 4_000_000_000
    for row in rows:
        assert row.background and row.durable and before <= row.enqueued <= time.time() + 1

    embedded.kill()  # kill -9: the durable jobs come back with their enqueue times
    embedded.restart()
    with GearmanAdminClient(embedded.address) as admin:
        again = {row.handle: row for row in admin.show_queue()}
    kept = {(r.function, r.unique): r for r in again.values()}
    for row in rows:
        if row.handle == running:
            continue  # it completed before the kill
        restored = kept[(row.function, row.unique)]
        assert (restored.enqueued, restored.run_at, restored.priority) == (row.enqueued, row.run_at, row.priority)


def test_foreground_and_memory_jobs_are_not_durable() -> None:
    server = EmbeddedServer()
    server.start()
    try:
        with GearmanClient([server.address]) as client:
            handle = str(client.submit_background("sq_mem", b"1"))
        with GearmanAdminClient(server.address) as admin:
            [row] = admin.show_queue()
        assert row.handle == handle and row.background and not row.durable
    finally:
        server.stop()


def test_gearmand_does_not_have_it() -> None:
    server = Gearmand()
    server.start()
    try:
        with GearmanAdminClient(server.address) as admin:
            with pytest.raises(AdminError):
                admin.show_queue()
            assert admin.version()  # the connection is still usable
    finally:
        server.stop()
