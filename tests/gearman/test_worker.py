"""Our worker against Debian's real gearmand: registration, modes, reconnects, signals."""

from __future__ import annotations

import logging
import os
import signal
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import GearmanError, JobFailed
from django_gearman.gearman.worker import Job, Worker
from tests.helpers import wait_for, worker_thread
from tests.peers import BackgroundProcess

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def test_burst_drains_the_queue_and_returns_the_count(gearman_server) -> None:
    with GearmanClient([gearman_server.address]) as client:
        client.submit_background_many([("burst", str(n)) for n in range(25)])
    seen: list[bytes] = []
    worker = Worker([gearman_server.address])
    worker.register("burst", lambda job: seen.append(job.data))
    assert worker.work(burst=True) == 25
    assert sorted(seen, key=int) == [str(n).encode() for n in range(25)]
    assert worker.work(burst=True) == 0  # nothing left: returns at once


def test_max_jobs_stops_and_leaves_the_rest_queued(gearman_server) -> None:
    with GearmanClient([gearman_server.address]) as client:
        client.submit_background_many([("limited", b"x")] * 10)
    worker = Worker([gearman_server.address])
    worker.register("limited", lambda job: None)
    assert worker.work(max_jobs=4) == 4
    with GearmanAdminClient(gearman_server.address) as admin:
        (row,) = [r for r in admin.status() if r.function == "limited"]
    assert (row.total, row.running) == (6, 0)


def test_client_id_functions_and_unique_reach_the_server(gearman_server) -> None:
    uniques: list[str] = []
    functions = {"ident": lambda job: uniques.append(job.unique) or job.function, "other": print}
    with (
        worker_thread(gearman_server.address, functions, client_id="worker-7"),
        GearmanAdminClient(gearman_server.address) as admin,
    ):
        row = wait_for(
            lambda: [w for w in admin.workers() if w.client_id == "worker-7"], what="worker row"
        )[0]
        assert sorted(row.functions) == ["ident", "other"]
        with GearmanClient([gearman_server.address]) as client:
            assert client.submit("ident", unique="the-unique") == b"ident"
    assert uniques == ["the-unique"]


def test_exception_is_logged_with_traceback(gearman_server, caplog) -> None:
    def broken(job: Job) -> None:
        raise KeyError("missing")

    caplog.set_level(logging.ERROR, logger="django_gearman.worker")
    with (
        worker_thread(gearman_server.address, {"broken": broken}),
        GearmanClient([gearman_server.address]) as client,
    ):
        with pytest.raises(Exception, match="KeyError"):
            client.submit("broken")
    (record,) = [r for r in caplog.records if "broken" in r.getMessage()]
    assert record.exc_info and record.exc_info[0] is KeyError


def test_bad_return_type_becomes_exception_and_worker_keeps_going(gearman_server) -> None:
    with worker_thread(gearman_server.address, {"bad": lambda job: 42, "good": lambda job: b"ok"}):
        with GearmanClient([gearman_server.address]) as client:
            with pytest.raises(Exception, match="TypeError"):
                client.submit("bad")
            assert client.submit("good") == b"ok"


def test_unregister_sends_cant_do(gearman_server) -> None:
    with (
        worker_thread(
            gearman_server.address, {"keep": print, "drop": print}, client_id="unreg"
        ) as worker,
        GearmanAdminClient(gearman_server.address) as admin,
    ):
        wait_for(
            lambda: [w for w in admin.workers() if w.client_id == "unreg" and len(w.functions) == 2]
        )
        worker.unregister("drop")  # from another thread: the link queues CANT_DO
        wait_for(
            lambda: [
                w for w in admin.workers() if w.client_id == "unreg" and w.functions == ("keep",)
            ]
        )


def test_reconnects_after_server_restart(gearman_server) -> None:
    with worker_thread(
        gearman_server.address, {"reverse": lambda job: job.data[::-1]}, reconnect_delay=0.05
    ):
        with GearmanClient([gearman_server.address], timeout=10, retry_delay=0.05) as client:
            assert client.submit("reverse", b"before") == b"erofeb"
            gearman_server.kill()
            gearman_server.restart()
            result = wait_for(
                lambda: _try_submit(client, b"after"), timeout=15, what="job after restart"
            )
    assert result == b"retfa"


def _try_submit(client: GearmanClient, data: bytes) -> bytes | None:
    try:
        return client.submit("reverse", data, timeout=2)
    except GearmanError:  # the server is not back yet, or the worker has not reconnected
        return None


def test_can_do_timeout_makes_gearmand_give_up(server_factory) -> None:
    server = server_factory(extra_args=["--job-retries=1"])
    release = threading.Event()

    def slow(job: Job) -> bytes:
        release.wait(30)  # still running when the server's 1 s are up
        return b"too late"

    with worker_thread(server.address, {"slow": slow}, timeouts={"slow": 1.0}):
        try:
            with GearmanClient([server.address], timeout=10) as client:
                # Without the timeout the job would complete ("too late"); gearmand took it
                # back after 1 s and, with --job-retries=1, failed it for the client.
                with pytest.raises(JobFailed):
                    client.submit("slow")
        finally:
            release.set()


WORKER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    sys.path.insert(0, {root!r})
    from django_gearman.gearman.worker import Worker
    logging.basicConfig(level=logging.INFO)
    def slow(job):
        print("started", flush=True)
        time.sleep(float(job.data))
        return b"finished"
    worker = Worker([{address!r}])
    worker.register("slow", slow)
    print("count", worker.work(), flush=True)
    """
)


def _start_worker_process(address: str) -> BackgroundProcess:
    script = WORKER_SCRIPT.format(root=str(ROOT), address=address)
    return BackgroundProcess([sys.executable, "-c", script])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_is_warm_shutdown(gearman_server, sig) -> None:
    process = _start_worker_process(gearman_server.address)
    try:
        with GearmanClient([gearman_server.address], timeout=15) as client:
            handle = client.submit_background("slow", b"1.0")
            process.wait_for("started", timeout=30)
            os.kill(process.pid, sig)
            assert process.wait(10) == 0, process.stderr
            assert "count 1" in process.stdout
            assert "warm shutdown" in process.stderr
            assert not client.get_status(handle).known  # it completed, so gearmand forgot it
    finally:
        process.stop()


def test_second_signal_is_cold_shutdown_and_job_is_requeued(gearman_server) -> None:
    process = _start_worker_process(gearman_server.address)
    try:
        with GearmanClient([gearman_server.address], timeout=15) as client:
            handle = client.submit_background("slow", b"30")
            process.wait_for("started", timeout=30)
            os.kill(process.pid, signal.SIGTERM)
            # Two signals sent back to back may arrive as one: the second goes once the worker
            # has said it took the first.
            wait_for(lambda: "warm shutdown" in process.stderr, what="the warm shutdown log line")
            os.kill(process.pid, signal.SIGTERM)
            assert process.wait(10) == 128 + signal.SIGTERM, process.stderr
            assert "cold shutdown" in process.stderr
            status = wait_for(
                lambda: (s := client.get_status(handle)).known and not s.running and s,
                what="requeue",
            )
            assert status.known and not status.running  # back in the queue for another worker
    finally:
        process.stop()


@pytest.mark.parametrize("prefetch", [1, 4])
def test_prefetch_runs_every_job_once_and_max_jobs_stays_exact(gearman_server, prefetch) -> None:
    with GearmanClient([gearman_server.address]) as client:
        client.submit_background_many([("prefetched", str(n)) for n in range(60)])
    seen: list[bytes] = []
    worker = Worker([gearman_server.address], prefetch=prefetch)
    worker.register("prefetched", lambda job: seen.append(job.data))
    assert worker.work(max_jobs=25) == 25  # prefetched extras went back to the queue on close
    with GearmanAdminClient(gearman_server.address) as admin:
        wait_for(lambda: [r for r in admin.status() if r.function == "prefetched"][0].running == 0)
    assert worker.work(burst=True) == 35
    assert sorted(seen, key=int) == [str(n).encode() for n in range(60)]
    with pytest.raises(ValueError):
        Worker([gearman_server.address], prefetch=0)
