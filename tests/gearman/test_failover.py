"""GearmanClient with two servers: what a lost server means for a job it had accepted, and which
server a handle's status is asked of.

- A foreground job the server accepted (JOB_CREATED) and was running when the server died ends
  with ConnectionLost: it may still run (the server may come back with it), so it is neither
  submitted again to the other server nor waited on until the timeout.
- Two servers hand out the same handle text (``H:<host>:1``): ``get_status`` of a JobHandle
  asks the server that gave it, not the first one that knows that text.

Against our server and gearmand (both servers of a test are of the same kind).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import ConnectionLost
from tests.helpers import wait_for, worker_thread

pytestmark = pytest.mark.interop

FUNCTION = "failover_hold"


def jobs_of(address: str) -> int:
    with GearmanAdminClient(address) as admin:
        return sum(row.total for row in admin.status() if row.function == FUNCTION)


class Hold:
    """A worker callback that records where each job came from and holds it until released."""

    def __init__(self, status: tuple[int, int] | None = None) -> None:
        self.started: list[str] = []  # "host:port" of the server each job came from
        self.release = threading.Event()
        self.status = status

    def __call__(self, job: Any) -> bytes:
        self.started.append(str(job.server))
        if self.status is not None:
            job.send_status(*self.status)
        self.release.wait(30)
        return b"done"


def test_an_accepted_foreground_job_ends_with_connection_lost(server_factory) -> None:
    servers = {server.address: server for server in (server_factory(), server_factory())}
    hold = Hold()
    outcome: list[BaseException | bytes] = []

    def submit() -> None:
        with GearmanClient(list(servers), timeout=20, connect_timeout=1) as client:
            try:
                outcome.append(client.submit(FUNCTION, b"x"))
            except BaseException as error:  # noqa: BLE001 - the test below looks at it
                outcome.append(error)

    with worker_thread(list(servers), {FUNCTION: hold}, reconnect_delay=0.1):
        thread = threading.Thread(target=submit, name="failover-submit", daemon=True)
        thread.start()
        try:
            wait_for(lambda: hold.started, what="the job to start on a worker")
            [running_on] = hold.started
            (survivor,) = set(servers) - {running_on}
            servers[running_on].kill()
            wait_for(lambda: outcome, timeout=15, what="the submit to end")
        finally:
            hold.release.set()
            thread.join(30)
        assert not thread.is_alive()
        [error] = outcome
        assert isinstance(error, ConnectionLost), error
        assert "may still run" in str(error)
        # Not submitted again: the other server never had the job, and no worker got it twice.
        assert jobs_of(survivor) == 0
    assert hold.started == [running_on]


def test_get_status_asks_the_server_that_gave_the_handle(server_factory) -> None:
    a, b = server_factory(), server_factory()
    hold = Hold(status=(1, 4))
    with worker_thread([a.address], {FUNCTION: hold}):  # a worker on `a` only
        try:
            with GearmanClient([a.address]) as client:
                on_a = client.submit_background(FUNCTION, b"runs")
            wait_for(lambda: hold.started, what="the job on a to start")
            with GearmanClient([b.address]) as client:
                on_b = client.submit_background(FUNCTION, b"waits")  # no worker: it waits
            assert str(on_a) == str(on_b)  # both servers' first job: the same handle text
            assert on_a.server != on_b.server

            with GearmanClient([a.address, b.address], timeout=10) as client:
                wait_for(lambda: client.get_status(on_a).numerator == 1, what="the status on a")
                status_a = client.get_status(on_a)
                status_b = client.get_status(on_b)
            assert (status_a.known, status_a.running) == (True, True)
            assert (status_a.numerator, status_a.denominator) == (1, 4)
            assert (status_b.known, status_b.running) == (True, False)
            assert (status_b.numerator, status_b.denominator) == (0, 0)
        finally:
            hold.release.set()
