"""Our client against Debian's real gearman_server, served by our worker."""

from __future__ import annotations

import math
import threading
import time

import pytest

from django_gearman.gearman import (
    GearmanClient,
    JobHandle,
    Priority,
    Task,
    TaskState,
    WorkData,
    WorkStatus,
    WorkWarning,
)
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import (
    JobException,
    JobFailed,
    JobTimeout,
    ServerError,
    ServerUnavailable,
)
from django_gearman.gearman.worker import Job
from tests.helpers import wait_for, worker_thread
from tests.peers import free_port

pytestmark = pytest.mark.interop


def reverse(job: Job) -> bytes:
    return job.data[::-1]


def progress(job: Job) -> str:
    job.send_status(1, 3)
    job.send_data(b"part-1")
    job.send_warning("careful")
    job.send_status(3, 3)
    return "done"


def explode(job: Job) -> None:
    raise ValueError("boom: " + job.data.decode())


def refuse(job: Job) -> None:
    raise JobFailed("no")


def test_foreground_round_trip(gearman_server) -> None:
    with (
        worker_thread(gearman_server.address, {"reverse": reverse}),
        GearmanClient([gearman_server.address], timeout=10) as client,
    ):
        assert client.submit("reverse", b"hello\0world") == b"dlrow\0olleh"
        assert client.submit("reverse", "text") == b"txet"
        for priority in Priority:
            assert client.submit("reverse", b"abc", priority=priority) == b"cba"


def test_progress_reaches_callbacks_and_stream(gearman_server) -> None:
    seen: list[object] = []
    with (
        worker_thread(gearman_server.address, {"progress": progress}),
        GearmanClient([gearman_server.address], timeout=10) as client,
    ):
        result = client.submit(
            "progress", on_data=seen.append, on_warning=seen.append, on_status=seen.append
        )
        assert result == b"done"
        assert [type(e) for e in seen] == [WorkStatus, WorkData, WorkWarning, WorkStatus]
        assert seen[1].data == b"part-1" and seen[2].data == b"careful"
        assert (seen[3].numerator, seen[3].denominator) == (3, 3)
        events = list(client.stream("progress"))
        assert [type(e).__name__ for e in events] == [
            "WorkStatus",
            "WorkData",
            "WorkWarning",
            "WorkStatus",
            "WorkComplete",
        ]
        assert events[-1].result == b"done"


def test_fail_and_exception_are_distinct(gearman_server) -> None:
    functions = {"explode": explode, "refuse": refuse}
    with (
        worker_thread(gearman_server.address, functions),
        GearmanClient([gearman_server.address], timeout=10) as client,
    ):
        with pytest.raises(JobException) as info:
            client.submit("explode", b"x")
        assert info.value.data == b'{"type":"ValueError","message":"boom: x"}'
        assert info.value.handle.startswith("H:")
        with pytest.raises(JobFailed):
            client.submit("refuse")
        # A client that did not send OPTION_REQ exceptions gets WORK_FAIL from gearmand instead.
        with GearmanClient([gearman_server.address], timeout=10, exceptions=False) as plain:
            with pytest.raises(JobFailed):
                plain.submit("explode", b"y")


def test_background_status_and_unique_status(gearman_server) -> None:
    with GearmanClient([gearman_server.address], timeout=10) as client:
        handle = client.submit_background("nobody_listens", b"data", unique="status-key")
        assert isinstance(handle, JobHandle) and str(handle.server) == gearman_server.address
        status = client.get_status(handle)
        assert (status.known, status.running) == (True, False)
        by_unique = client.get_status_unique("status-key")
        assert by_unique.handle == "status-key"  # gearmand answers with the unique, not the handle
        assert by_unique.known and by_unique.waiting == 0
        assert not client.get_status("H:nowhere:1").known
        assert not client.get_status_unique("never-submitted").known


def test_priorities_order_the_queue(gearman_server) -> None:
    order: list[bytes] = []
    with GearmanClient([gearman_server.address], timeout=10) as client:
        for priority, label in [
            (Priority.LOW, b"low"),
            (Priority.NORMAL, b"normal"),
            (Priority.HIGH, b"high"),
        ]:
            for n in range(3):
                client.submit_background("ordered", label + str(n).encode(), priority=priority)
        with worker_thread(gearman_server.address, {"ordered": lambda job: order.append(job.data)}):
            wait_for(lambda: len(order) == 9, what="9 jobs")
    assert order == [
        b"high0",
        b"high1",
        b"high2",
        b"normal0",
        b"normal1",
        b"normal2",
        b"low0",
        b"low1",
        b"low2",
    ]


def test_unique_key_coalesces_foreground_jobs(gearman_server) -> None:
    calls: list[bytes] = []
    gate = threading.Event()

    def slow(job: Job) -> bytes:
        calls.append(job.unique.encode())
        gate.wait(30)  # until every task was accepted: the first job is still running then
        return b"shared"

    tasks = [
        Task("slow", b"a", unique="same"),
        Task("slow", b"b", unique="same"),
        Task("slow", b"c", unique="other"),
    ]

    def open_gate_once_all_are_accepted() -> None:
        try:
            wait_for(lambda: all(t.handle for t in tasks), timeout=20, what="three JOB_CREATED")
        finally:
            gate.set()

    opener = threading.Thread(target=open_gate_once_all_are_accepted, daemon=True)
    with (
        worker_thread(gearman_server.address, {"slow": slow}),
        GearmanClient([gearman_server.address], timeout=10) as client,
    ):
        opener.start()
        try:
            client.run_tasks(tasks)
        finally:
            gate.set()  # also if run_tasks failed: the worker thread can stop
    opener.join(10)
    assert not opener.is_alive()
    assert [t.state for t in tasks] == [TaskState.COMPLETE] * 3
    assert tasks[0].handle == tasks[1].handle != tasks[2].handle
    assert [t.result for t in tasks] == [b"shared"] * 3
    assert sorted(calls) == [b"other", b"same"]  # the coalesced job ran once


def test_task_set_collects_per_task_results(gearman_server) -> None:
    functions = {"reverse": reverse, "explode": explode, "refuse": refuse}
    with (
        worker_thread(gearman_server.address, functions),
        GearmanClient([gearman_server.address], timeout=10) as client,
    ):
        tasks = [Task("reverse", str(n).encode() + b"x") for n in range(50)]
        tasks += [Task("explode", b"e"), Task("refuse"), Task("reverse", b"bg", background=True)]
        client.run_tasks(tasks)
    assert [t.result for t in tasks[:50]] == [b"x" + str(n).encode()[::-1] for n in range(50)]
    assert tasks[50].state is TaskState.EXCEPTION and b"ValueError" in tasks[50].exception
    assert tasks[51].state is TaskState.FAILED
    assert tasks[52].state is TaskState.CREATED and tasks[52].handle


def test_timeout_then_client_still_works(gearman_server) -> None:
    # The client's own timeout is beyond the test's time limit (pytest-timeout): only the
    # call's timeout lets this call end with JobTimeout.
    with GearmanClient([gearman_server.address], timeout=600) as client:
        with pytest.raises(JobTimeout, match="did not finish within 0.3 s") as timed_out:
            client.submit("no_worker_for_this", b"x", timeout=0.3)
        assert timed_out.value.handle  # the server took the job; no worker finished it
        with worker_thread(gearman_server.address, {"reverse": reverse}):
            assert client.submit("reverse", b"ok") == b"ko"


def test_a_timed_out_job_says_that_no_worker_offers_its_function(gearman_server) -> None:
    with GearmanClient([gearman_server.address], timeout=600) as client:
        with pytest.raises(JobTimeout) as timed_out:
            client.submit("nobody_offers_this", b"x", timeout=0.3)
    error = timed_out.value
    assert (error.function, error.workers) == ("nobody_offers_this", 0)
    message = str(error)
    assert "'nobody_offers_this' did not finish within 0.3 s" in message
    assert f"no worker has registered 'nobody_offers_this' on {gearman_server.address}" in message


def test_a_timed_out_job_whose_workers_are_busy_says_so(gearman_server) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(job: Job) -> bytes:
        started.set()
        release.wait(20)
        return b"late"

    with (
        worker_thread(gearman_server.address, {"slow": slow}),
        GearmanClient([gearman_server.address], timeout=600) as client,
    ):
        client.submit_background("slow", b"first")
        assert started.wait(20)
        try:
            with pytest.raises(JobTimeout) as timed_out:
                client.submit("slow", b"second", timeout=0.3)
        finally:
            release.set()
    error = timed_out.value
    assert error.workers == 1
    assert "1 worker offers 'slow'" in str(error) and "1 running" in str(error)


def test_echo(gearman_server) -> None:
    with GearmanClient([gearman_server.address]) as client:
        assert client.echo(b"ping\0pong") == b"ping\0pong"


def test_scheduled_job_waits_for_its_time(gearman_server) -> None:
    ran: list[tuple[bytes, float]] = []
    with GearmanClient([gearman_server.address], timeout=10) as client:
        far = client.submit_background("later", b"far", run_at=4_000_000_000)  # in 2096
        run_at = time.time() + 2
        client.submit_background("later", b"soon", run_at=run_at)
        functions = {
            "later": lambda job: ran.append((job.data, time.time())),
            "nudge": lambda job: None,
        }
        # idle_poll=None: the worker only wakes when the server says so (see the next test).
        with worker_thread(gearman_server.address, functions, idle_poll=None):
            client.submit_background("later", b"now")
            wait_for(lambda: [data for data, _ in ran if data == b"now"], what="the job due now")
            if gearman_server.kind == "gearmand":
                # gearmand 1.1 does not wake sleeping workers when the time comes (its issue
                # #101), so another job is needed to make it hand the scheduled one out.
                # The epoch goes out in whole seconds, rounded up (never early).
                wait_for(lambda: time.time() > math.ceil(run_at) + 0.2, timeout=5)
                client.submit_background("nudge")
            # ours wakes the sleeping worker at the job's time, with no other event
            wait_for(lambda: [data for data, _ in ran if data == b"soon"], what="the soon job")
        # "now" was queued behind both scheduled jobs of its function yet ran, and "far" did
        # not: the server holds a job until its time, then hands it out (never early).
        assert sorted(data for data, _ in ran) == [b"now", b"soon"]
        assert dict(ran)[b"soon"] >= int(run_at)
        far_status = client.get_status(far)
        assert far_status.known and not far_status.running  # still held
    with pytest.raises(ValueError, match="normal priority"):
        GearmanClient.background_task("later", run_at=run_at, priority=Priority.HIGH)


def test_idle_poll_picks_up_scheduled_jobs_even_on_gearmand(gearman_server) -> None:
    ran: list[float] = []
    with GearmanClient([gearman_server.address], timeout=10) as client:
        run_at = time.time() + 1.5
        client.submit_background("later_polled", b"x", run_at=run_at)
        # No nudge this time: a sleeping worker asks again every idle_poll seconds.
        with worker_thread(
            gearman_server.address,
            {"later_polled": lambda job: ran.append(time.time())},
            idle_poll=0.5,
        ):
            wait_for(lambda: ran, timeout=15, what="the scheduled job")
    assert ran[0] >= int(run_at)


def test_queue_full_is_server_error(gearman_server) -> None:
    with GearmanClient([gearman_server.address], timeout=10) as client:
        client.submit_background("bounded", b"1")  # gearmand ignores maxqueue for unknown functions
        with GearmanAdminClient(gearman_server.address) as admin:
            admin.maxqueue("bounded", 1)
        with pytest.raises(ServerError) as info:
            client.submit_background("bounded", b"2")
        assert info.value.code == "QUEUE_ERROR"
        assert client.submit_background("unbounded", b"3")  # the connection is still usable


def test_unique_too_long_is_refused_locally(gearman_server) -> None:
    with GearmanClient([gearman_server.address]) as client:
        with pytest.raises(ValueError, match="at most 64"):
            client.submit_background("f", unique="u" * 65)
        assert client.submit_background("f", unique="u" * 64)


def test_no_server_reachable() -> None:
    port = free_port()
    with GearmanClient([f"127.0.0.1:{port}"], connect_timeout=1) as client:
        with pytest.raises(ServerUnavailable, match=f"127.0.0.1:{port}"):
            client.submit("f", b"x")
        with pytest.raises(ServerUnavailable):
            client.submit_background("f", b"x")


def test_large_payload(gearman_server) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB with NULs
    with (
        worker_thread(gearman_server.address, {"reverse": reverse}),
        GearmanClient([gearman_server.address], timeout=20) as client,
    ):
        assert client.submit("reverse", payload) == payload[::-1]
