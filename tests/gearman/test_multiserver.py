"""Several job servers: routing by unique key, spreading, task sets in parallel, and failover."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from django_gearman.gearman import GearmanClient, Task, TaskState
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import GearmanError
from tests.helpers import wait_for, worker_thread
from tests.peers import free_port

pytestmark = pytest.mark.interop


def test_unique_routes_deterministically_and_others_spread(server_factory) -> None:
    servers = [server_factory().address, server_factory().address]
    with GearmanClient(servers) as client:
        keys = [f"key-{n}" for n in range(40)]
        first = {u: str(client.submit_background("routed", unique=u).server) for u in keys}
        with GearmanClient(
            list(reversed(servers))
        ) as other:  # another process, other order: same choice
            again = {u: str(other.submit_background("routed", unique=u).server) for u in first}
        assert first == again
        assert set(first.values()) == set(servers)  # 40 keys all on one server: odds 2**-39
        spread = collections.Counter(
            str(client.submit_background("spread").server) for _ in range(10)
        )
        assert spread == {servers[0]: 5, servers[1]: 5}


def test_task_set_runs_over_all_servers_in_parallel(server_factory) -> None:
    servers = [server_factory().address, server_factory().address]
    release = threading.Barrier(2, timeout=5)

    def meet(job):  # each server's worker blocks until the other server's worker runs too
        release.wait()
        return job.data

    with worker_thread(servers[0], {"meet": meet}), worker_thread(servers[1], {"meet": meet}):
        with GearmanClient(servers, timeout=10) as client:
            tasks = client.run_tasks([Task("meet", b"1"), Task("meet", b"2")])
    assert [t.state for t in tasks] == [TaskState.COMPLETE, TaskState.COMPLETE]
    assert {str(t.handle.server) for t in tasks} == set(servers)


def test_worker_serves_every_server(server_factory) -> None:
    servers = [server_factory().address, server_factory().address]
    seen = collections.Counter()
    with worker_thread(servers, {"count": lambda job: seen.update([job.data])}):
        with GearmanClient(servers, timeout=10) as client:
            for n in range(20):
                client.submit("count", str(n % 2).encode(), unique=f"job-{n}")
    assert sum(seen.values()) == 20


def test_dead_server_is_skipped(server_factory) -> None:
    live = server_factory().address
    dead = f"127.0.0.1:{free_port()}"
    with GearmanClient([dead, live], connect_timeout=1, timeout=10) as client:
        handles = [client.submit_background("skip") for _ in range(6)]
    assert {str(h.server) for h in handles} == {live}


def test_failover_loses_no_background_job(server_factory, tmp_path) -> None:
    """Two gearmand with durable queues; one is killed with -9 mid-run and comes back.

    The client keeps submitting through the outage (to the survivor), the worker reconnects
    to the restarted server and drains what it had persisted: every job runs.
    """
    a = server_factory(queue_db=str(tmp_path / "a.sqlite"))
    b = server_factory(queue_db=str(tmp_path / "b.sqlite"))
    servers = [a.address, b.address]
    done: set[int] = set()
    lock = threading.Lock()
    total = 600

    def record(job):
        time.sleep(0.001)  # slow enough that both queues hold jobs when `a` dies
        with lock:
            done.add(int(job.data))

    submitted: list[int] = []
    with GearmanClient(servers, timeout=10, connect_timeout=1, retry_delay=0.2) as client:
        with worker_thread(servers, {"durable": record}, reconnect_delay=0.1):
            for n in range(total):
                if n == total // 3:
                    a.kill()  # SIGKILL: nothing flushed, no goodbye
                if n == 2 * total // 3:
                    a.restart()
                try:
                    client.submit_background("durable", str(n).encode())
                except GearmanError as error:  # pragma: no cover - would be the bug under test
                    pytest.fail(f"submit {n} failed during failover: {error}")
                submitted.append(n)
            wait_for(
                lambda: len(done) == total, timeout=60, what=f"{total} jobs (have {len(done)})"
            )
    assert done == set(submitted)
    for server in servers:
        with GearmanAdminClient(server) as admin:
            assert all(row.total == 0 for row in admin.status() if row.function == "durable")
