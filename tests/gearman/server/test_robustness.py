"""The embedded server under abuse: fuzzed input, many idle connections, crashes of every peer.

Bounded in count and time; loopback only. Each test counts jobs and shows none lost.
"""

from __future__ import annotations

import resource
import signal
import socket
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import JobTimeout
from django_gearman.gearman.protocol import ARG_SPEC, REQ, RES, Packet, PacketType
from tests.helpers import wait_for, worker_thread
from tests.peers import ROOT, BackgroundProcess, EmbeddedServer

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def shared_server():
    server = EmbeddedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@st.composite
def hostile_input(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "packet", "mutated", "text", "oversized"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=200))
    if kind == "text":
        return draw(st.text(max_size=80)).encode() + b"\n"
    if kind == "oversized":
        return REQ + (7).to_bytes(4, "big") + (1 << 31).to_bytes(4, "big")
    ptype = draw(st.sampled_from(list(PacketType)))
    args = tuple(
        draw(st.binary(max_size=20).filter(lambda b: b"\0" not in b)) for _ in ARG_SPEC[ptype]
    )
    wire = bytearray(Packet(draw(st.sampled_from([REQ, RES])), ptype, args).encode())
    if kind == "mutated" and wire:
        at = draw(st.integers(0, len(wire) - 1))
        wire[at] = draw(st.integers(0, 255))
    return bytes(wire)


@given(payloads=st.lists(hostile_input(), min_size=1, max_size=5))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzz_never_disturbs_other_connections(shared_server, payloads: list[bytes]) -> None:
    """Random and mutated packets and lines: the server answers or closes only that connection."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=5) as bad:
        for payload in payloads:
            try:
                bad.sendall(payload)
            except OSError:
                break  # the server closed this connection: allowed
        # Drain what it answered: up to its close, a pause, or a bound on the whole drain.
        bad.settimeout(0.05)
        drain_until = time.monotonic() + 5
        try:
            while bad.recv(65536) and time.monotonic() < drain_until:
                pass
        except OSError:  # TimeoutError included: it has nothing more to say
            pass
    assert shared_server.running
    with GearmanClient([shared_server.address], timeout=5) as client:
        assert client.echo(b"still serving") == b"still serving"


def test_healthy_client_keeps_getting_results_during_fuzzing(shared_server) -> None:
    results: list[bytes] = []
    stop = threading.Event()

    def healthy() -> None:
        with GearmanClient([shared_server.address], timeout=10) as client:
            while not stop.is_set():
                results.append(client.submit("fuzz_rev", b"abc"))

    with worker_thread(shared_server.address, {"fuzz_rev": lambda job: job.data[::-1]}):
        thread = threading.Thread(target=healthy)
        thread.start()
        try:
            junk = [
                b"\0REQ\0\0\0\x63\0\0\0\0",
                b"\0XYZ" + bytes(8),
                b"garbage line\n",
                b"\0REQ\0\0\0\x07\xff\xff\xff\xff",
            ]
            for n in range(200):
                with socket.create_connection(("127.0.0.1", shared_server.port), timeout=5) as bad:
                    bad.sendall(junk[n % len(junk)])
                    bad.settimeout(2)
                    reply = bad.recv(65536)
                    assert reply  # an ERROR packet or an ERR line, never silence
        finally:
            stop.set()
            thread.join(15)  # its submit in flight times out after 10 s at most
    assert not thread.is_alive(), "the healthy client did not stop"
    assert len(results) > 0 and set(results) == {b"cba"}


def test_error_packet_then_close_for_bad_magic(shared_server) -> None:
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=5) as bad:
        bad.sendall(b"\0XYZ" + bytes(8))
        reply = b""
        # Up to the server's close (b""); a server that stays open fails with TimeoutError.
        while chunk := bad.recv(4096):
            reply += chunk
    assert reply.startswith(b"\0RES\0\0\0\x13") and b"INVALID_MAGIC" in reply


def test_ten_thousand_idle_connections_while_jobs_flow(shared_server) -> None:
    wanted = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted + 4000), hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(wanted):
            idle.append(socket.create_connection(("127.0.0.1", shared_server.port), timeout=10))
        with worker_thread(shared_server.address, {"idle_rev": lambda job: job.data[::-1]}):
            with GearmanClient([shared_server.address], timeout=20) as client:
                assert [client.submit("idle_rev", str(n).encode()) for n in range(200)] == [
                    str(n).encode()[::-1] for n in range(200)
                ]
            with GearmanAdminClient(shared_server.address, timeout=20) as admin:
                assert len(admin.workers()) >= wanted
        idle[0].sendall(b"version\n")  # the idle ones are still served
        assert idle[0].recv(100).startswith(b"OK ")
    finally:
        for sock in idle:
            sock.close()


WORKER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from django_gearman.gearman.worker import Worker
    def slow(job):
        print("running", job.data.decode(), flush=True)
        time.sleep(30)
    worker = Worker([{address!r}])
    worker.register("victim", slow)
    worker.work()
    """
)


def test_worker_killed_mid_job_loses_nothing(gearman_server) -> None:
    done: set[bytes] = set()
    with GearmanClient([gearman_server.address], timeout=30) as client:
        client.submit_background_many([("victim", str(n)) for n in range(20)])
        doomed = BackgroundProcess(
            [sys.executable, "-c", WORKER.format(root=str(ROOT), address=gearman_server.address)]
        )
        try:
            doomed.wait_for_line(lambda line: line.startswith("running"), 30, what="a job")
            doomed.send_signal(signal.SIGKILL)
            assert doomed.wait(10) == -signal.SIGKILL
        finally:
            doomed.stop()
        with worker_thread(gearman_server.address, {"victim": lambda job: done.add(job.data)}):
            wait_for(lambda: len(done) == 20, what=f"20 jobs (have {len(done)})")
    assert done == {str(n).encode() for n in range(20)}


def test_client_gone_before_job_ran_is_dropped(gearman_server) -> None:
    ran: list[bytes] = []
    client = GearmanClient([gearman_server.address], timeout=0.3)
    with pytest.raises(JobTimeout, match="did not finish") as timed_out:
        client.submit("orphan", b"x")
    client.close()  # the foreground submitter is gone
    orphan = timed_out.value.handle
    with GearmanAdminClient(gearman_server.address) as admin:

        def marked_ignored() -> bool:
            return any(j.handle == orphan and j.ignore_job for j in admin.show_jobs())

        wait_for(marked_ignored, what=f"{orphan} marked ignored")
        with GearmanClient([gearman_server.address], timeout=10) as other:
            other.submit_background("orphan", b"kept")
        with worker_thread(gearman_server.address, {"orphan": lambda job: ran.append(job.data)}):
            # The orphan was queued first: handed out, it would have run before this one.
            wait_for(lambda: ran, what="the background job")
            wait_for(
                lambda: not [r for r in admin.status() if r.function == "orphan" and r.total],
                what="nothing left queued for orphan",
            )
    assert ran == [b"kept"]  # the orphaned foreground job was dropped, as gearmand does


def test_server_killed_with_queued_jobs_replays_them(tmp_path) -> None:
    """10,000 durable background jobs, ``kill -9``, restart: every job runs, none twice."""
    server = EmbeddedServer(queue_db=str(tmp_path / "queue.sqlite3"))
    server.start()
    try:
        total = 10_000
        with GearmanClient([server.address], timeout=60) as client:
            for start in range(0, total, 1000):
                client.submit_background_many(
                    [("durable", str(n)) for n in range(start, start + 1000)]
                )
        server.kill()
        server.restart()
        seen: list[int] = []
        with (
            worker_thread(server.address, {"durable": lambda job: seen.append(int(job.data))}),
            GearmanAdminClient(server.address) as admin,
        ):
            wait_for(
                lambda: len(seen) >= total, timeout=60, what=f"{total} jobs (have {len(seen)})"
            )
            wait_for(
                lambda: not [r for r in admin.status() if r.function == "durable" and r.total],
                what="the server to take every completion",
            )
            # A completion's deletion is committed by a callback the server's loop runs before
            # the I/O of its next turn: once the server answered a request after the last
            # completion, the next request is read after that commit.
            admin.version()
        assert sorted(seen) == list(range(total))  # every job once: none was in flight
        server.kill()
        server.restart()  # completed jobs were deleted from the store
        with GearmanAdminClient(server.address) as admin:
            assert [r for r in admin.status() if r.function == "durable" and r.total] == []
    finally:
        server.stop()
