"""The server's model on its own: no sockets, fake peers, a fake clock and timers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from django_gearman.gearman.protocol import PacketBuffer, PacketType
from django_gearman.gearman.server.state import Peer, ServerState

T = PacketType


class FakeTimer:
    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at, self.callback, self.cancelled = at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Harness:
    def __init__(self, **options) -> None:
        self.now = 1_000_000.0
        self.timers: list[FakeTimer] = []
        self.removed: list[int] = []
        self.state = ServerState(
            call_later=self.call_later, clock=lambda: self.now, handle_prefix=b"H:test", **options
        )

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in sorted(self.timers, key=lambda t: t.at):
            if timer.at <= self.now and not timer.cancelled:
                timer.cancelled = True
                timer.callback()

    def peer(self) -> FakePeer:
        peer = FakePeer()
        self.state.connect(peer)
        return peer

    def submit(
        self, peer, name=b"fn", data=b"d", *, unique=b"", priority=1, background=False, when=0
    ):
        job, created, error = self.state.submit(
            peer, name, unique, data, priority, background=background, when=when
        )
        assert error is None
        if created:
            self.state.enqueue(job)
        return job


class FakePeer(Peer):
    __slots__ = ("buffer", "received")

    def __init__(self) -> None:
        super().__init__(self._receive)
        self.buffer = PacketBuffer()
        self.received: list = []

    def _receive(self, data: bytes) -> None:
        self.received += self.buffer.feed(data)

    def take(self) -> list:
        received, self.received = self.received, []
        return [(p.type, p.args) for p in received]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_priority_order_within_a_function(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    for priority, label in [(2, b"low"), (1, b"normal"), (0, b"high")]:
        h.submit(client, data=label, priority=priority, background=True)
    h.state.can_do(worker, b"fn")
    got = []
    for _ in range(3):
        h.state.grab(worker, T.GRAB_JOB_UNIQ)
        ((kind, args),) = worker.take()
        got.append(args[3])
        h.state.work_result(worker, T.WORK_COMPLETE, args[0], b"")
    assert got == [b"high", b"normal", b"low"]
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    assert worker.take() == [(T.NO_JOB, ())]


def test_functions_served_in_can_do_order(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    h.submit(client, b"second", b"2", priority=0, background=True)
    h.submit(client, b"first", b"1", priority=2, background=True)
    h.state.can_do(worker, b"first")
    h.state.can_do(worker, b"second")
    h.state.grab(worker, T.GRAB_JOB)
    assert worker.take()[0] == (T.JOB_ASSIGN, (b"H:test:2", b"first", b"1"))


def test_coalescing_attaches_clients_to_queued_and_running_jobs(h: Harness) -> None:
    a, b, c, worker = h.peer(), h.peer(), h.peer(), h.peer()
    job = h.submit(a, unique=b"u")
    assert h.submit(b, unique=b"u") is job
    h.state.can_do(worker, b"fn")
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    worker.take()
    assert h.submit(c, unique=b"u") is job  # running: still coalesced
    h.state.work_result(worker, T.WORK_COMPLETE, job.handle, b"result")
    for peer in (a, b, c):
        assert peer.take() == [(T.WORK_COMPLETE, (job.handle, b"result"))]
    assert h.submit(a, unique=b"u") is not job  # finished: the key is free again


def test_unique_dash_coalesces_on_data(h: Harness) -> None:
    a = h.peer()
    first = h.submit(a, data=b"same", unique=b"-", background=True)
    assert h.submit(a, data=b"same", unique=b"-", background=True) is first
    assert h.submit(a, data=b"other", unique=b"-", background=True) is not first


def test_exception_downgraded_for_clients_without_the_option(h: Harness) -> None:
    plain, fancy, worker = h.peer(), h.peer(), h.peer()
    fancy.exceptions = True
    job = h.submit(plain, unique=b"x")
    h.submit(fancy, unique=b"x")
    h.state.can_do(worker, b"fn")
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    h.state.work_result(worker, T.WORK_EXCEPTION, job.handle, b"oops")
    assert plain.take() == [(T.WORK_FAIL, (job.handle,))]
    assert fancy.take() == [(T.WORK_EXCEPTION, (job.handle, b"oops"))]


def test_worker_disconnect_requeues_and_retry_cap_fails() -> None:
    h = Harness(job_retries=2)
    client = h.peer()
    job = h.submit(client)
    for _ in range(2):  # two workers take the job and vanish: the retry cap is 2
        worker = h.peer()
        h.state.can_do(worker, b"fn")
        h.state.grab(worker, T.GRAB_JOB_UNIQ)
        assert worker.take()[0][0] is T.JOB_ASSIGN_UNIQ
        h.state.disconnect(worker)
    assert client.take() == [(T.WORK_FAIL, (job.handle,))]
    assert job.handle not in h.state.jobs and b"fn" not in h.state.functions  # forgotten


def test_client_gone_before_run_drops_the_job(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    job = h.submit(client)
    h.state.disconnect(client)
    assert h.state.jobs[job.handle].ignore
    h.state.can_do(worker, b"fn")
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    assert worker.take() == [(T.NO_JOB, ())]
    assert job.handle not in h.state.jobs


def test_sleeping_worker_woken_once_and_pre_sleep_race(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    h.state.can_do(worker, b"fn")
    h.state.pre_sleep(worker)
    h.submit(client, background=True)
    h.submit(client, background=True)
    assert worker.take() == [(T.NOOP, ())]  # one NOOP per sleep
    late = h.peer()
    h.state.can_do(late, b"fn")
    h.state.pre_sleep(late)  # jobs already waiting: woken at once
    assert late.take() == [(T.NOOP, ())]


def test_worker_wakeup_budget() -> None:
    h = Harness(worker_wakeup=1)
    workers = [h.peer() for _ in range(3)]
    for worker in workers:
        h.state.can_do(worker, b"fn")
        h.state.pre_sleep(worker)
    h.submit(h.peer(), background=True)
    assert sum(len(w.take()) for w in workers) == 1


def test_scheduled_job_released_and_sleepers_woken_at_its_time(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    h.state.can_do(worker, b"fn")
    h.state.pre_sleep(worker)
    job = h.submit(client, background=True, when=int(h.now) + 60)
    assert worker.take() == []
    h.advance(59)
    assert worker.take() == []
    h.advance(1)
    assert worker.take() == [(T.NOOP, ())]  # gearmand 1.1 would not send this (its issue #101)
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    assert worker.take()[0][1][0] == job.handle


def test_can_do_timeout_requeues(h: Harness) -> None:
    client, slow, other = h.peer(), h.peer(), h.peer()
    job = h.submit(client)
    h.state.can_do(slow, b"fn", 500)  # raised to 1000 ms, as gearmand
    h.state.grab(slow, T.GRAB_JOB_UNIQ)
    h.advance(0.9)
    assert job.worker is slow
    h.advance(0.2)
    assert job.worker is None and job.retries == 1
    h.state.can_do(other, b"fn")
    h.state.grab(other, T.GRAB_JOB_UNIQ)
    assert other.take()[0][1][0] == job.handle
    slow.take()
    h.state.work_result(slow, T.WORK_COMPLETE, job.handle, b"late")  # the slow one is too late
    # gearmand answers JOB_NOT_FOUND; a worker would read it as its next GRAB_JOB's reply
    # (Perl's dies), so it gets nothing, and the job stays the other worker's.
    assert slow.take() == [] and job.worker is other


def test_maxqueue_counts_running_and_queued(h: Harness) -> None:
    client = h.peer()
    h.submit(client, background=True)
    h.state.functions[b"fn"].max_queue = (2, 2, 2)
    h.submit(client, background=True)
    job, created, error = h.state.submit(client, b"fn", b"", b"x", 1, background=True)
    assert job is None and error is not None and b"QUEUE_ERROR" in error


def test_work_result_from_the_wrong_peer_is_job_not_found(h: Harness) -> None:
    client, worker, stranger = h.peer(), h.peer(), h.peer()
    job = h.submit(client)
    h.state.can_do(worker, b"fn")
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    h.state.work_result(stranger, T.WORK_COMPLETE, job.handle, b"x")
    assert stranger.take()[0][1][0] == b"JOB_NOT_FOUND"
    assert client.take() == []


def test_cancel_marks_ignored_and_fails_clients(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    job = h.submit(client)
    assert h.state.cancel(job.handle)
    assert client.take() == [(T.WORK_FAIL, (job.handle,))]
    assert h.state.cancel(job.handle)  # again: OK, as gearmand, and nothing more is sent
    assert client.take() == []
    assert not h.state.cancel(b"H:unknown:1")
    h.state.can_do(worker, b"fn")
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    assert worker.take() == [(T.NO_JOB, ())]


def test_cancel_of_a_running_job_fails_its_clients_and_the_worker_finishes_unheard(
    h: Harness,
) -> None:
    client, worker = h.peer(), h.peer()
    job = h.submit(client)
    h.state.can_do(worker, b"fn")
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    assert worker.take()[0][0] == T.JOB_ASSIGN_UNIQ
    assert h.state.cancel(job.handle)
    assert client.take() == [(T.WORK_FAIL, (job.handle,))]
    h.state.work_result(worker, T.WORK_COMPLETE, job.handle, b"late")
    assert client.take() == [] and worker.take() == []
    assert job.handle not in h.state.jobs


def test_drop_function_discards_its_queued_jobs_but_not_while_workers_are_on_it(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    queued = h.submit(client)
    h.state.can_do(worker, b"fn")
    assert h.state.drop_function(b"fn") == "there are still connected workers or executing clients"
    h.state.cant_do(worker, b"fn")
    assert h.state.drop_function(b"FN") is None  # case-insensitive, as gearmand's strcasecmp
    assert client.take() == [(T.WORK_FAIL, (queued.handle,))]
    assert b"fn" not in h.state.functions and queued.handle not in h.state.jobs
    assert h.state.drop_function(b"fn") == "function not found"


def test_status_reports(h: Harness) -> None:
    client, worker = h.peer(), h.peer()
    job = h.submit(client, unique=b"key")
    h.state.can_do(worker, b"fn")
    h.state.grab(worker, T.GRAB_JOB_UNIQ)
    h.state.work_update(worker, T.WORK_STATUS, (job.handle, b"3", b"7"))
    assert client.take() == [(T.WORK_STATUS, (job.handle, b"3", b"7"))]
    h.state.status(client, job.handle)
    assert PacketBuffer().feed(h.state.status(client, job.handle))[0].args == (
        job.handle,
        b"1",
        b"1",
        b"3",
        b"7",
    )
    assert PacketBuffer().feed(h.state.status_unique(client, b"key"))[0].args == (
        b"key",
        b"1",
        b"1",
        b"3",
        b"7",
        b"1",
    )
    assert PacketBuffer().feed(h.state.status_unique(client, b"nope"))[0].args == (
        b"nope",
        b"0",
        b"0",
        b"0",
        b"0",
        b"0",
    )
