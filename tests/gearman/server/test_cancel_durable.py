"""``cancel job`` on a durable server deletes the stored copy: the job stays gone after a restart,
clean or after ``kill -9``.

Each test runs against our embedded server (``--queue PATH``, SQLite) and against gearmand with
its libsqlite3 queue: both remove a cancelled job from the queue database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from tests.helpers import wait_for, worker_thread

pytestmark = pytest.mark.interop

FUNCTION = "cancel_durable"


def queued(address: str) -> int:
    """Jobs of FUNCTION the server holds, queued or running (``status``)."""
    with GearmanAdminClient(address) as admin:
        return sum(row.total for row in admin.status() if row.function == FUNCTION)


@pytest.mark.parametrize("how", ["stop", "kill-9"])
def test_a_cancelled_job_does_not_come_back_after_a_restart(
    server_factory, tmp_path: Path, how: str
) -> None:
    server = server_factory(queue_db=tmp_path / "queue.sqlite3")
    with GearmanClient([server.address]) as client:
        gone = client.submit_background(FUNCTION, b"gone", unique="gone")
        client.submit_background(FUNCTION, b"kept", unique="kept")
    assert queued(server.address) == 2
    with GearmanAdminClient(server.address) as admin:
        admin.cancel_job(str(gone))

    if how == "kill-9":
        server.kill()  # SIGKILL: only what the store already has survives
    else:
        server.stop()
    server.restart()

    # The kept job shows that the queue was reloaded; the cancelled one is not in it.
    assert queued(server.address) == 1
    if server_factory.kind == "embedded":
        with GearmanAdminClient(server.address) as admin:
            rows = admin.show_queue()
        assert [(row.unique, row.durable) for row in rows] == [("kept", True)]

    # A worker drains the server: only the kept job runs (the cancelled one was first in line).
    ran: list[bytes] = []
    with worker_thread([server.address], {FUNCTION: lambda job: ran.append(job.data)}):
        wait_for(lambda: b"kept" in ran, what="the kept job")
        wait_for(lambda: queued(server.address) == 0, what="an empty queue")
    assert ran == [b"kept"]


def test_cancelling_twice_then_a_restart_leaves_nothing(server_factory, tmp_path: Path) -> None:
    """The second cancel of the same handle is OK and deletes nothing else."""
    server = server_factory(queue_db=tmp_path / "queue.sqlite3")
    with GearmanClient([server.address]) as client:
        handles = [client.submit_background(FUNCTION, b"%d" % n, unique=f"u{n}") for n in range(3)]
    with GearmanAdminClient(server.address) as admin:
        admin.cancel_job(str(handles[1]))
        admin.cancel_job(str(handles[1]))
    server.kill()
    server.restart()
    assert queued(server.address) == 2
