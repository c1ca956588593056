"""The admin pages' data: a snapshot of each server, the same against ours and gearmand, and a
down server reported instead of raised."""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_gearman.admin.monitor import snapshot, snapshot_all
from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.protocol.constants import Priority
from tests.helpers import wait_for, worker_thread
from tests.peers import free_port

pytestmark = pytest.mark.interop


def test_snapshot_counts_jobs_by_priority_and_lists_workers(gearman_server) -> None:
    address = gearman_server.address
    with GearmanClient([address]) as client:
        client.submit_background("mon_a", b"1", priority=Priority.HIGH, unique="m1")
        client.submit_background("mon_a", b"2", priority=Priority.LOW, unique="m2")
        client.submit_background("mon_a", b"3", unique="m3")
        client.submit_background("mon_b", b"4", unique="m4")
    with worker_thread([address], {"mon_c": lambda job: b""}, client_id="mon-worker"):
        wait_for(lambda: any(w.client_id == "mon-worker" for w in snapshot(address).workers))
        shot = snapshot(address)
    assert (
        shot.up
        and shot.error == ""
        and shot.pid == gearman_server.pid
        and shot.version.startswith("1.1.")
    )
    rows = {row.name: row for row in shot.functions}
    assert (rows["mon_a"].high, rows["mon_a"].normal, rows["mon_a"].low, rows["mon_a"].running) == (
        1,
        1,
        1,
        0,
    )
    assert rows["mon_b"].queued == 1 and rows["mon_c"].workers == 1
    assert shot.queued == 4 and shot.running == 0
    [worker] = [w for w in shot.workers if w.client_id == "mon-worker"]
    assert worker.functions == ("mon_c",)
    assert len(shot.jobs) == 4 and sorted(u for u in shot.unique_keys if u.startswith("m")) == [
        "m1",
        "m2",
        "m3",
        "m4",
    ]


def test_a_down_server_is_reported_not_raised(gearman_server) -> None:
    down = f"127.0.0.1:{free_port()}"
    with override_settings(
        GEARMAN={
            "default": {"SERVERS": [gearman_server.address, down]},
            "other": {"SERVERS": [down]},
        }
    ):
        shots = {shot.address: shot for shot in snapshot_all(timeout=1.0)}
    assert shots[gearman_server.address].up
    assert not shots[down].up and "Connection refused" in shots[down].error
    assert shots[down].aliases == ("default", "other")  # each server once, with every alias


def test_admin_commands_name_functions_and_jobs_intact(gearman_server) -> None:
    """Lines end in CRLF as gearadmin's do: with a bare LF gearmand drops an argument's last
    character ("create function abc" made "ab", and cancel/drop missed)."""
    with GearmanAdminClient(gearman_server.address) as admin:
        admin.create_function("mon_intact")
        assert "mon_intact" in {row.function for row in admin.status()}
        admin.drop_function("mon_intact")
        assert "mon_intact" not in {row.function for row in admin.status()}
    with GearmanClient([gearman_server.address]) as client:
        handle = str(client.submit_background("mon_cancel", b"x"))
    with GearmanAdminClient(gearman_server.address) as admin:
        admin.cancel_job(handle)
        assert [(j.ignore_job, j.job_queued) for j in admin.show_jobs() if j.handle == handle] == [
            (True, False)
        ]


def test_counting_pages_leave_the_job_lists_out(gearman_server) -> None:
    with GearmanClient([gearman_server.address]) as client:
        client.submit_background("mon_count", b"1", unique="c1")
    full, counts = (
        snapshot(gearman_server.address),
        snapshot(gearman_server.address, with_jobs=False),
    )
    assert len(full.jobs) == 1 and full.unique_keys == ("c1",)
    assert counts.jobs == () and counts.unique_keys == () and counts.functions == full.functions
