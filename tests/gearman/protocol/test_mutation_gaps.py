"""Behaviours of the protocol layer and the server state that no fast test guarded: each test here
kills mutants that survived ``scripts/mutation`` (see docs/contributing.md). In memory only: the
conversations with raw bytes, and the server's model with fake peers, timers and store.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from django_gearman.gearman.errors import (
    AdminError,
    LocalProtocolError,
    PacketTooLarge,
    RemoteProtocolError,
)
from django_gearman.gearman.protocol import (
    MAX_UNIQUE_SIZE,
    REQ,
    RES,
    AdminReply,
    ClientConnection,
    ConnectionState,
    JobAssigned,
    JobStatus,
    JobUpdate,
    Packet,
    PacketBuffer,
    PacketType,
    Priority,
    StatusReply,
    WentToSleep,
    WorkData,
    WorkerConnection,
    WorkerState,
    WorkWarning,
    encode,
    encode_packet,
    encode_submit,
)
from django_gearman.gearman.protocol.packets import check_header
from django_gearman.gearman.protocol.text import command_line, parse_jobs
from django_gearman.gearman.server.state import ServerState
from tests.gearman.server.test_state import FakePeer, FakeTimer
from tests.helpers import MemoryServer

T = PacketType
NOW = 1_000_000.0


# -- the conversations -------------------------------------------------------------------------


def test_work_data_and_warnings_reach_the_client_as_what_they_are() -> None:
    server = MemoryServer()
    client, worker = ClientConnection(), WorkerConnection()
    server.link(client)
    server.link(worker)
    worker.can_do(b"fn")
    client.submit(encode_submit(b"fn", b"x"), "job")
    [created] = server.pump()[client]
    worker.grab()
    [assigned] = server.pump()[worker]
    worker.work_data(assigned.handle, b"chunk")
    worker.work_warning(assigned.handle, b"careful")
    handle = created.handle.decode()
    events = server.pump()[client]
    assert events == [
        JobUpdate(("job",), WorkData(handle, b"chunk")),
        JobUpdate(("job",), WorkWarning(handle, b"careful")),
    ]
    # WorkData and WorkWarning are equal tuples when their fields are: compare the types too.
    assert [type(event.event) for event in events] == [WorkData, WorkWarning]


def test_a_status_reply_carries_every_field() -> None:
    client = ClientConnection()
    client.get_status(b"H:x:1", "a")
    client.get_status(b"H:x:2", "b")
    assert client.data_to_send() == encode(REQ, T.GET_STATUS, (b"H:x:1",)) + encode(
        REQ, T.GET_STATUS, (b"H:x:2",)
    )
    events = client.receive_data(
        encode(RES, T.STATUS_RES, (b"H:x:1", b"1", b"1", b"3", b"10"))
        + encode(RES, T.STATUS_RES, (b"H:x:2", b"1", b"0", b"", b""))  # gearmand: empty = 0
    )
    assert events == [
        StatusReply("a", JobStatus("H:x:1", known=True, running=True, numerator=3, denominator=10)),
        StatusReply("b", JobStatus("H:x:2", known=True, running=False, numerator=0, denominator=0)),
    ]


def test_job_assign_has_no_unique_and_job_assign_uniq_has_one() -> None:
    worker = WorkerConnection()
    worker.grab(2)
    worker.data_to_send()
    events = worker.receive_data(
        encode(RES, T.JOB_ASSIGN, (b"H:1", b"fn", b"data"))
        + encode(RES, T.JOB_ASSIGN_UNIQ, (b"H:2", b"fn", b"u", b"more"))
    )
    assert events == [
        JobAssigned(b"H:1", b"fn", b"", b"data"),
        JobAssigned(b"H:2", b"fn", b"u", b"more"),
    ]


def test_a_worker_sleeps_only_once_every_grab_found_nothing() -> None:
    worker = WorkerConnection()
    worker.grab(2)
    worker.data_to_send()
    assert worker.receive_data(encode(RES, T.NO_JOB, ())) == []  # one grab still open
    assert worker.worker_state is WorkerState.GRABBING and worker.data_to_send() == b""
    [slept] = worker.receive_data(encode(RES, T.NO_JOB, ()))
    assert isinstance(slept, WentToSleep)
    assert worker.data_to_send() == encode(REQ, T.PRE_SLEEP, ())


def test_grab_of_nothing_sends_nothing() -> None:
    worker = WorkerConnection()
    worker.grab(0)
    assert worker.data_to_send() == b"" and worker.grabs == 0
    assert worker.worker_state is WorkerState.IDLE


def test_the_ability_packets_on_the_wire() -> None:
    worker = WorkerConnection()
    worker.set_client_id(b"me")
    worker.can_do(b"fn", 1)  # 1 ms is the least CAN_DO_TIMEOUT
    worker.cant_do(b"fn")
    worker.reset_abilities()
    assert worker.data_to_send() == b"".join(
        (
            encode(REQ, T.SET_CLIENT_ID, (b"me",)),
            encode(REQ, T.CAN_DO_TIMEOUT, (b"fn", b"1")),
            encode(REQ, T.CANT_DO, (b"fn",)),
            encode(REQ, T.RESET_ABILITIES, ()),
        )
    )
    client = ClientConnection()
    client.set_client_id(b"them")
    assert client.data_to_send() == encode(REQ, T.SET_CLIENT_ID, (b"them",))


def test_encode_packet_is_the_packets_bytes() -> None:
    packet = Packet.request(T.SUBMIT_JOB, b"fn", b"u", b"data")
    assert (
        encode_packet(packet)
        == packet.encode()
        == encode(REQ, T.SUBMIT_JOB, (b"fn", b"u", b"data"))
    )


def test_a_unique_key_of_the_maximum_size_is_accepted() -> None:
    longest = b"u" * MAX_UNIQUE_SIZE
    assert encode_submit(b"fn", b"", unique=longest)
    with pytest.raises(LocalProtocolError):
        encode_submit(b"fn", b"", unique=longest + b"u")


def test_priority_names_parse_in_any_case() -> None:
    assert Priority.parse("high") is Priority.HIGH
    assert Priority.parse("Normal") is Priority.NORMAL
    assert Priority.parse("LOW") is Priority.LOW


# -- framing and admin text --------------------------------------------------------------------


def test_a_packet_of_type_1_split_across_reads_is_framed() -> None:
    """The header of a partial packet is checked early: CAN_DO (type 1) is a valid type."""
    check_header(REQ, 1)
    wire = encode(REQ, T.CAN_DO, (b"function",))
    buffer = PacketBuffer()
    assert buffer.feed(wire[:14]) == []
    [packet] = buffer.feed(wire[14:])
    assert (packet.type, packet.args) == (T.CAN_DO, (b"function",))


def test_the_line_limit_counts_the_unfinished_line_only() -> None:
    buffer = PacketBuffer(max_line_size=100)
    packet = encode(REQ, T.SUBMIT_JOB, (b"fn", b"", b"x" * 60))
    frames = buffer.feed(packet + b"status")  # 80-byte packet, then 6 bytes of a line
    assert len(frames) == 1
    [line] = buffer.feed(b"\n")
    assert line.line == b"status"
    with pytest.raises(RemoteProtocolError) as caught:
        PacketBuffer(max_line_size=100).feed(b"x" * 101)
    assert caught.value.code == "ARGUMENT_TOO_LARGE"


def test_admin_commands_refuse_newlines_and_whitespace_in_arguments() -> None:
    assert command_line("cancel job", "H:X:1") == b"cancel job H:X:1\r\n"
    for bad in ("status\nshutdown", "\0status"):
        with pytest.raises(LocalProtocolError):
            command_line(bad)
    for arg in ("a b", "a\tb", ""):
        with pytest.raises(LocalProtocolError):
            command_line("cancel job", arg)


def _error_of(line: bytes) -> AdminError:
    reply = AdminReply("cancel job")
    reply.add(line)
    with pytest.raises(AdminError) as caught:
        reply.raise_for_error()
    return caught.value


def test_an_admin_error_keeps_its_code_and_whole_message() -> None:
    error = _error_of(b"ERR UNKNOWN_JOB the job is not known here")
    assert (error.code, error.message) == ("UNKNOWN_JOB", "the job is not known here")
    error = _error_of(b"ERR")
    assert (error.code, error.message) == ("UNKNOWN_ERROR", "")
    error = _error_of(b"ERR NO_MESSAGE")
    assert (error.code, error.message) == ("NO_MESSAGE", "")


# -- the server's model ------------------------------------------------------------------------


class FakeStore:
    """Records which stored jobs the state deletes."""

    def __init__(self) -> None:
        self.removed: list[int] = []

    def remove(self, store_id: int) -> None:
        self.removed.append(store_id)


class Model:
    """A ServerState with a fake clock, timers and store."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.timers: list[FakeTimer] = []
        self.store = FakeStore()
        self.state = ServerState(
            call_later=self.call_later,
            clock=lambda: self.now,
            handle_prefix=b"H:gap",
            store=self.store,  # type: ignore[arg-type]
        )

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def armed(self) -> list[float]:
        return [t.at for t in self.timers if not t.cancelled]

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

    def submit(self, peer, name=b"fn", data=b"d", *, unique=b"", priority=1, background=False,
               when=0):  # fmt: skip
        job, created, error = self.state.submit(
            peer, name, unique, data, priority, background=background, when=when
        )
        assert error is None
        if created:
            self.state.enqueue(job)
        return job


@pytest.fixture
def m() -> Model:
    return Model()


def test_pre_sleep_with_only_a_high_priority_job_queued_answers_noop(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    m.state.can_do(worker, b"fn")
    m.submit(client, priority=0, background=True)  # HIGH
    m.state.pre_sleep(worker)
    assert worker.take() == [(T.NOOP, ())]
    assert not worker.sleeping


def test_a_cancelled_job_at_the_head_is_skipped_for_the_next_in_its_queue(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    first = m.submit(client, data=b"1", background=True)
    second = m.submit(client, data=b"2", background=True)
    assert m.state.cancel(first.handle)
    m.state.can_do(worker, b"fn")
    m.state.grab(worker, T.GRAB_JOB)
    assert worker.take() == [(T.JOB_ASSIGN, (second.handle, b"fn", b"2"))]


def test_the_longest_unique_key_is_accepted_and_one_more_byte_refused(m: Model) -> None:
    client = m.peer()
    longest = b"u" * MAX_UNIQUE_SIZE
    job, created, error = m.state.submit(client, b"fn", longest, b"", 1, background=True)
    assert created and error is None and job is not None
    job, created, error = m.state.submit(client, b"fn", longest + b"u", b"", 1, background=True)
    assert (job, created) == (None, False) and error is not None
    [refusal] = PacketBuffer().feed(error)
    assert refusal.type is T.ERROR


def test_a_background_submitter_is_never_told_about_its_job(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    job = m.submit(client, unique=b"u", background=True)
    again = m.submit(client, unique=b"u", background=True)  # coalesces
    assert again is job and job.clients == [] and not client.waiting_on
    m.state.can_do(worker, b"fn")
    m.state.grab(worker, T.GRAB_JOB)
    m.state.work_result(worker, T.WORK_COMPLETE, job.handle, b"done")
    assert client.take() == []


def test_a_client_leaving_a_shared_job_leaves_it_to_the_others(m: Model) -> None:
    first, second, worker = m.peer(), m.peer(), m.peer()
    job = m.submit(first, unique=b"shared")
    assert m.submit(second, unique=b"shared") is job
    m.state.disconnect(first)
    assert job.clients == [second] and not job.ignore
    m.state.can_do(worker, b"fn")
    m.state.grab(worker, T.GRAB_JOB)
    assert worker.take() == [(T.JOB_ASSIGN, (job.handle, b"fn", b"d"))]
    m.state.work_result(worker, T.WORK_FAIL, job.handle, b"")
    assert second.take() == [(T.WORK_FAIL, (job.handle,))]


def test_a_disconnected_worker_is_no_worker_any_more(m: Model) -> None:
    worker = m.peer()
    m.state.can_do(worker, b"fn")
    m.state.pre_sleep(worker)
    function = m.state.functions[b"fn"]
    assert worker in function.workers and worker in function.sleepers
    m.state.disconnect(worker)
    assert worker not in function.workers and worker not in function.sleepers
    assert worker not in m.state.peers


def test_cant_do_gives_back_the_jobs_of_that_function(m: Model) -> None:
    client, w1, w2 = m.peer(), m.peer(), m.peer()
    job = m.submit(client)
    other = m.submit(client, name=b"other")
    m.state.can_do(w1, b"fn")
    m.state.can_do(w1, b"other")
    m.state.grab(w1, T.GRAB_JOB)
    m.state.grab(w1, T.GRAB_JOB)
    assert set(w1.jobs) == {job, other}
    m.state.cant_do(w1, b"fn")
    assert set(w1.jobs) == {other}  # the job of the other function stays
    assert job.worker is None and m.state.functions[b"fn"].running == 0
    m.state.can_do(w2, b"fn")
    m.state.grab(w2, T.GRAB_JOB)
    assert (T.JOB_ASSIGN, (job.handle, b"fn", b"d")) in w2.take()


def test_status_of_unknown_queued_and_running_jobs(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    queued = m.submit(client, unique=b"q", background=True)
    running = m.submit(client, name=b"run", unique=b"r", background=True)
    m.state.can_do(worker, b"run")
    m.state.grab(worker, T.GRAB_JOB)

    def status(handle: bytes) -> tuple:
        [reply] = PacketBuffer().feed(m.state.status(client, handle))
        return reply.type, reply.args

    assert status(b"H:gap:99") == (T.STATUS_RES, (b"H:gap:99", b"0", b"0", b"0", b"0"))
    assert status(queued.handle)[1][1:3] == (b"1", b"0")
    assert status(running.handle)[1][1:3] == (b"1", b"1")
    [reply] = PacketBuffer().feed(m.state.status_unique(client, b"q"))
    assert reply.args[:3] == (b"q", b"1", b"0")


def test_running_counts_go_up_and_down(m: Model) -> None:
    client, w1, w2 = m.peer(), m.peer(), m.peer()
    jobs = [m.submit(client, data=b"%d" % n, background=True) for n in range(2)]
    for worker in (w1, w2):
        m.state.can_do(worker, b"fn")
        m.state.grab(worker, T.GRAB_JOB)
    function = m.state.functions[b"fn"]
    assert function.running == 2
    m.state.work_result(w1, T.WORK_COMPLETE, jobs[0].handle, b"")
    assert function.running == 1
    m.state.work_result(w2, T.WORK_COMPLETE, jobs[1].handle, b"")
    assert function.running == 0


def test_scheduled_jobs_are_released_each_at_its_own_time() -> None:
    m = Model(now=NOW + 0.5)
    client = m.peer()
    soon = m.submit(client, data=b"soon", background=True, when=int(NOW) + 1)
    assert m.armed() == [NOW + 1]  # half a second ahead, not rounded up
    later = m.submit(client, data=b"later", background=True, when=int(NOW) + 90)
    assert m.armed() == [NOW + 1]
    m.advance(0.5)
    function = m.state.functions[b"fn"]
    assert list(function.queues[1]) == [soon]
    assert m.state.scheduled_jobs() == [later]
    assert m.armed() == [NOW + 90]
    m.advance(89)
    assert list(function.queues[1]) == [soon, later]


def test_durable_jobs_leave_the_store_once(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    done = m.submit(client, data=b"done", background=True)
    cancelled = m.submit(client, data=b"cancelled", background=True)
    memory_only = m.submit(client, data=b"memory", background=True)
    forgotten, _, _ = m.state.submit(client, b"fn", b"", b"lost", 1, background=True)
    done.store_id, cancelled.store_id, forgotten.store_id = 7, 8, 9
    m.state.can_do(worker, b"fn")
    m.state.grab(worker, T.GRAB_JOB)
    m.state.work_result(worker, T.WORK_COMPLETE, done.handle, b"")
    assert m.store.removed == [7]
    assert m.state.cancel(cancelled.handle) and m.state.cancel(cancelled.handle)
    assert m.state.cancel(memory_only.handle)  # never stored: nothing to delete
    m.state.forget(forgotten)  # its write failed: there is no stored copy
    assert m.store.removed == [7, 8]


def test_reset_abilities_gives_back_every_job_and_offers_nothing(m: Model) -> None:
    client, worker, other = m.peer(), m.peer(), m.peer()
    job = m.submit(client)
    for name in (b"fn", b"more"):
        m.state.can_do(worker, name)
    m.state.grab(worker, T.GRAB_JOB)
    m.state.reset_abilities(worker)
    assert not worker.abilities and not worker.jobs
    assert all(worker not in f.workers for f in m.state.functions.values())
    m.state.can_do(other, b"fn")
    m.state.grab(other, T.GRAB_JOB)
    assert other.take() == [(T.JOB_ASSIGN, (job.handle, b"fn", b"d"))]


def test_grab_job_all_carries_the_reducer_of_a_reduce_job(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    reduce_job, _, _ = m.state.submit(
        client, b"fn", b"u1", b"d1", 1, background=True, reducer=b"sum"
    )
    m.state.enqueue(reduce_job)
    plain = m.submit(client, unique=b"u2", data=b"d2", background=True)
    m.state.can_do(worker, b"fn")
    m.state.grab(worker, T.GRAB_JOB_ALL)
    m.state.grab(worker, T.GRAB_JOB_ALL)
    assert worker.take() == [
        (T.JOB_ASSIGN_ALL, (reduce_job.handle, b"fn", b"u1", b"sum", b"d1")),
        (T.JOB_ASSIGN_UNIQ, (plain.handle, b"fn", b"u2", b"d2")),  # no reducer: the plain form
    ]


def test_dropping_a_function_discards_its_scheduled_jobs(m: Model) -> None:
    client = m.peer()
    scheduled = m.submit(client, background=True, when=int(NOW) + 60)
    kept = m.submit(client, name=b"other", background=True, when=int(NOW) + 60)
    scheduled.store_id, kept.store_id = 5, 6
    assert m.state.drop_function(b"FN") is None  # any case, as gearmand
    assert scheduled.handle not in m.state.jobs and m.store.removed == [5]
    assert m.state.scheduled_jobs() == [kept]
    m.advance(60)
    assert b"fn" not in m.state.functions  # the released timer brought nothing back


def test_a_can_do_timeout_is_at_least_a_second_and_ends_with_the_job(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    short = m.submit(client, data=b"1", background=True)
    long = m.submit(client, data=b"2", background=True)
    m.state.can_do(worker, b"fn", 10)
    m.state.grab(worker, T.GRAB_JOB)
    assert m.armed() == [NOW + 1.0]  # 10 ms counts as a second
    m.state.work_result(worker, T.WORK_COMPLETE, short.handle, b"")
    assert m.armed() == []  # the job ended: its timer is cancelled
    m.state.can_do(worker, b"fn", 2500)
    m.state.grab(worker, T.GRAB_JOB)
    assert m.armed() == [NOW + 2.5]
    assert long.worker is worker
    plain = m.peer()
    m.state.can_do(plain, b"other")  # CAN_DO: no timeout, no timer
    m.submit(client, name=b"other", background=True)
    m.state.grab(plain, T.GRAB_JOB)
    assert m.armed() == [NOW + 2.5]


def test_only_a_sleeping_worker_is_woken(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    m.state.can_do(worker, b"fn")
    m.state.pre_sleep(worker)
    assert worker.sleeping and worker.take() == []
    m.state.grab(worker, T.GRAB_JOB)  # an idle poll without waiting for NOOP
    assert worker.take() == [(T.NO_JOB, ())] and not worker.sleeping
    m.submit(client, background=True)
    assert worker.take() == []  # awake (grabbing): no NOOP
    m.state.pre_sleep(worker)
    assert worker.take() == [(T.NOOP, ())]  # work is waiting: no sleep


def test_cant_do_of_an_unknown_function_and_a_second_disconnect_change_nothing(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    m.state.cant_do(worker, b"never-offered")
    m.state.can_do(worker, b"fn")
    m.state.cant_do(worker, b"other")  # known function, but not offered by this worker
    assert list(worker.abilities) == [m.state.functions[b"fn"]]
    job = m.submit(client, background=True)
    m.state.grab(worker, T.GRAB_JOB)
    m.state.disconnect(worker)
    m.state.disconnect(worker)
    assert job.retries == 1 and m.state.functions[b"fn"].running == 0


def test_updates_and_results_from_a_worker_not_running_the_job_are_refused(m: Model) -> None:
    client, worker, stranger = m.peer(), m.peer(), m.peer()
    job = m.submit(client)
    m.state.can_do(worker, b"fn")
    m.state.grab(worker, T.GRAB_JOB)
    worker.take()
    m.state.work_update(stranger, T.WORK_DATA, (job.handle, b"x"))
    m.state.work_update(stranger, T.WORK_DATA, (b"H:gap:99", b"x"))
    assert [kind for kind, _ in stranger.take()] == [T.ERROR, T.ERROR]
    assert client.take() == []
    m.state.work_update(worker, T.WORK_DATA, (job.handle, b"x"))
    assert client.take() == [(T.WORK_DATA, (job.handle, b"x"))]
    m.state.work_result(worker, T.WORK_COMPLETE, job.handle, b"r")
    assert job.worker is None and not worker.jobs


def test_grabs_add_up_until_answered() -> None:
    worker = WorkerConnection()
    worker.grab()
    worker.grab()
    assert worker.grabs == 2 and worker.outstanding == 2
    events = worker.receive_data(
        encode(RES, T.JOB_ASSIGN_UNIQ, (b"H:1", b"fn", b"", b"a"))
        + encode(RES, T.JOB_ASSIGN_UNIQ, (b"H:2", b"fn", b"", b"b"))
    )
    assert [e.handle for e in events] == [b"H:1", b"H:2"]
    worker.data_to_send()
    worker.work_fail(b"H:1")
    assert worker.data_to_send() == encode(REQ, T.WORK_FAIL, (b"H:1",))


def test_a_unique_status_reply_goes_to_its_token() -> None:
    client = ClientConnection()
    client.get_status_unique(b"u", "mine")
    assert client.data_to_send() == encode(REQ, T.GET_STATUS_UNIQUE, (b"u",))
    [reply] = client.receive_data(
        encode(RES, T.STATUS_RES_UNIQUE, (b"u", b"1", b"0", b"0", b"0", b"2"))
    )
    assert reply.token == "mine" and reply.status.waiting == 2


def test_after_a_protocol_error_the_conversation_refuses_to_go_on() -> None:
    client = ClientConnection()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"\0BAD" + bytes(8))
    assert client.state is ConnectionState.ERROR
    with pytest.raises(LocalProtocolError):
        client.submit(encode_submit(b"fn", b""), "late")


def test_a_conversation_enforces_its_packet_size_limit() -> None:
    client = ClientConnection(max_packet_size=100)
    client.submit(encode_submit(b"fn", b""), "job")
    with pytest.raises(PacketTooLarge):
        client.receive_data(encode(RES, T.JOB_CREATED, (b"H:" + b"x" * 200,)))


def test_show_jobs_rows_keep_their_flags() -> None:
    rows = parse_jobs([b"H:a:1\t0\t0\t1", b"H:a:2\t3\t1\t0"])
    assert [(r.handle, r.retries, r.ignore_job, r.job_queued) for r in rows] == [
        ("H:a:1", 0, False, True),
        ("H:a:2", 3, True, False),
    ]


def test_a_running_job_whose_clients_all_left_ends_with_its_worker(m: Model) -> None:
    client, worker = m.peer(), m.peer()
    job = m.submit(client)  # foreground
    m.state.can_do(worker, b"fn")
    m.state.grab(worker, T.GRAB_JOB)
    m.state.disconnect(client)
    assert job.handle in m.state.jobs  # still running
    m.state.disconnect(worker)  # nobody would get the result: dropped, not requeued
    assert job.handle not in m.state.jobs
    assert b"fn" not in m.state.functions  # no job and no worker left: forgotten
