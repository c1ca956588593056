"""The conversations, driven in memory against the real server state: no socket anywhere.

A client, a worker and an admin conversation talk to :class:`ServerConnection`\\ s of one
:class:`ServerState` (``tests.helpers.MemoryServer``); each test checks the events that come
out and what each side refuses to send or receive.
"""

from __future__ import annotations

import pytest

from django_gearman.gearman.errors import LocalProtocolError, RemoteProtocolError
from django_gearman.gearman.protocol import (
    AdminConnection,
    ClientConnection,
    ConnectionState,
    EchoReply,
    ErrorReceived,
    JobAssigned,
    JobCreated,
    JobEnded,
    JobUpdate,
    OptionAccepted,
    Outcome,
    Packet,
    PacketType,
    Priority,
    RequestRefused,
    StatusReply,
    WentToSleep,
    Woken,
    WorkerConnection,
    WorkerState,
    WorkStatus,
    encode_submit,
)
from tests.helpers import MemoryServer

T = PacketType


def submit(
    conn: ClientConnection,
    token: object,
    function: bytes = b"reverse",
    data: bytes = b"abc",
    **options: object,
) -> None:
    conn.submit(encode_submit(function, data, **options), token)  # type: ignore[arg-type]


def test_foreground_job_from_submit_to_result() -> None:
    server = MemoryServer()
    client, worker = ClientConnection(), WorkerConnection()
    server.link(client)
    server.link(worker)
    worker.can_do(b"reverse")
    submit(client, "token-1")
    events = server.pump()
    [created] = events[client]
    assert created == JobCreated("token-1", b"H:memory:1")
    assert client.busy and client.running() == ["token-1"]

    worker.grab()
    [assigned] = server.pump()[worker]
    assert assigned == JobAssigned(b"H:memory:1", b"reverse", b"", b"abc")
    assert worker.jobs == {b"H:memory:1"}
    worker.work_status(assigned.handle, 1, 2)
    worker.work_complete(assigned.handle, b"cba")
    events = server.pump()
    assert events[client] == [
        JobUpdate(("token-1",), WorkStatus("H:memory:1", 1, 2)),
        JobEnded(("token-1",), b"H:memory:1", Outcome.COMPLETE, b"cba"),
    ]
    assert not client.busy and worker.jobs == frozenset()


def test_coalesced_submits_end_together_with_both_tokens() -> None:
    server = MemoryServer()
    client, worker = ClientConnection(), WorkerConnection()
    server.link(client)
    server.link(worker)
    submit(client, "a", unique=b"same")
    submit(client, "b", unique=b"same")
    created = server.pump()[client]
    assert [e.token for e in created] == ["a", "b"] and created[0].handle == created[1].handle
    worker.can_do(b"reverse")
    worker.grab()
    [assigned] = server.pump()[worker]
    worker.work_exception(assigned.handle, b'{"type":"ValueError","message":"no"}')
    [ended] = server.pump()[client]
    assert ended.tokens == ("a", "b") and ended.outcome is Outcome.FAIL  # no OPTION_REQ exceptions


def test_exceptions_option_turns_fail_into_exception() -> None:
    server = MemoryServer()
    client, worker = ClientConnection(), WorkerConnection()
    server.link(client)
    server.link(worker)
    client.option(b"exceptions", "opt")
    submit(client, "job")
    assert server.pump()[client] == [
        OptionAccepted("opt", b"exceptions"),
        JobCreated("job", b"H:memory:1"),
    ]
    worker.can_do(b"reverse")
    worker.grab()
    [assigned] = server.pump()[worker]
    worker.work_exception(assigned.handle, b"boom")
    assert server.pump()[client] == [
        JobEnded(("job",), assigned.handle, Outcome.EXCEPTION, b"boom")
    ]


def test_background_job_is_answered_by_job_created_alone() -> None:
    server = MemoryServer()
    client = ClientConnection()
    server.link(client)
    submit(client, "bg", background=True, unique=b"k", priority=Priority.HIGH)
    assert server.pump()[client] == [JobCreated("bg", b"H:memory:1")]
    assert not client.busy


def test_the_worker_sleeps_on_no_job_and_wakes_on_noop() -> None:
    server = MemoryServer()
    client, worker = ClientConnection(), WorkerConnection()
    server.link(client)
    server.link(worker)
    worker.can_do(b"reverse")
    worker.grab(2)
    events = server.pump()
    assert events[worker] == [WentToSleep()]  # both grabs answered NO_JOB; one PRE_SLEEP went out
    assert worker.worker_state is WorkerState.SLEEPING and worker.grabs == 0
    submit(client, "late", background=True)
    assert server.pump()[worker] == [Woken()]
    assert worker.worker_state is WorkerState.IDLE
    worker.grab()
    [assigned] = server.pump()[worker]
    assert assigned.function == b"reverse" and worker.worker_state is WorkerState.IDLE


def test_replies_are_matched_to_requests_in_order() -> None:
    server = MemoryServer()
    client = ClientConnection()
    server.link(client)
    submit(client, "first", background=True)
    client.echo(b"ping", "echo")
    client.get_status(b"H:memory:1", "status")
    client.get_status_unique(b"nope", "unique")
    events = server.pump()[client]
    assert events[0] == JobCreated("first", b"H:memory:1")
    assert events[1] == EchoReply("echo", b"ping")
    assert events[2].token == "status" and events[2].status.known and not events[2].status.running
    assert (
        isinstance(events[3], StatusReply)
        and not events[3].status.known
        and events[3].status.waiting == 0
    )


def test_error_answers_the_oldest_request() -> None:
    client = ClientConnection()
    client.echo(b"x", "echo")
    submit(client, "job")
    client.data_to_send()
    error = Packet.response(T.ERROR, b"QUEUE_ERROR", b"Job queue is full").encode()
    echo = Packet.response(T.ECHO_RES, b"x").encode()
    assert client.receive_data(echo + error) == [
        EchoReply("echo", b"x"),
        RequestRefused("job", "QUEUE_ERROR", "Job queue is full"),
    ]
    assert client.receive_data(error) == [
        ErrorReceived("QUEUE_ERROR", "Job queue is full")
    ]  # nothing awaited


def test_gearmand_work_fail_with_a_stray_nul_still_ends_the_job() -> None:
    client = ClientConnection()
    submit(client, "job")
    client.receive_data(Packet.response(T.JOB_CREATED, b"H:x:1").encode())
    # gearmand 1.1.20 sends the WORK_FAIL made from a WORK_EXCEPTION with a trailing NUL.
    [ended] = client.receive_data(Packet.response(T.WORK_FAIL, b"H:x:1\0").encode())
    assert ended == JobEnded(("job",), b"H:x:1", Outcome.FAIL, b"")


def test_a_reply_nobody_asked_for_breaks_the_client_connection() -> None:
    client = ClientConnection()
    with pytest.raises(RemoteProtocolError, match="JOB_CREATED answers no submit"):
        client.receive_data(Packet.response(T.JOB_CREATED, b"H:x:1").encode())
    assert client.state is ConnectionState.ERROR
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        client.echo(b"x", "late")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (Packet.response(T.NOOP).encode(), "client does not expect NOOP"),
        (Packet.request(T.ECHO_REQ, b"x").encode(), "request magic"),
        (b"status\n", "text lines"),
        (
            Packet.response(T.STATUS_RES, b"h", b"0", b"0", b"0", b"0").encode(),
            "answers no request",
        ),
    ],
)
def test_the_client_refuses_what_a_server_never_sends_it(wire: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        ClientConnection().receive_data(wire)


def test_only_submit_packets_go_through_submit() -> None:
    with pytest.raises(LocalProtocolError, match="not a submit packet"):
        ClientConnection().submit(Packet.request(T.GRAB_JOB).encode(), "x")
    with pytest.raises(LocalProtocolError, match="at most 64"):
        encode_submit(b"f", b"", unique=b"u" * 65)
    with pytest.raises(LocalProtocolError, match="normal priority"):
        encode_submit(b"f", b"", epoch=10, priority=Priority.LOW)
    with pytest.raises(LocalProtocolError, match="NUL"):
        encode_submit(b"f\0g", b"")


def test_the_worker_sends_results_only_for_jobs_it_holds() -> None:
    worker = WorkerConnection()
    with pytest.raises(LocalProtocolError, match="no job"):
        worker.work_complete(b"H:x:1", b"")
    worker.grab()
    worker.receive_data(Packet.response(T.JOB_ASSIGN_UNIQ, b"H:x:1", b"f", b"u", b"d").encode())
    worker.work_data(b"H:x:1", b"part")
    worker.work_fail(b"H:x:1")
    with pytest.raises(LocalProtocolError, match="no job"):
        worker.work_complete(b"H:x:1", b"")  # its result was sent
    with pytest.raises(LocalProtocolError, match="no job"):
        worker.work_status(b"H:x:1", 1, 2)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (Packet.response(T.JOB_ASSIGN, b"h", b"f", b"d").encode(), "answers no grab"),
        (Packet.response(T.NO_JOB).encode(), "answers no grab"),
        (Packet.response(T.JOB_CREATED, b"h").encode(), "worker does not expect JOB_CREATED"),
        (b"hello\n", "text lines"),
    ],
)
def test_the_worker_refuses_what_a_server_never_sends_it(wire: bytes, message: str) -> None:
    worker = WorkerConnection()
    with pytest.raises(RemoteProtocolError, match=message):
        worker.receive_data(wire)
    assert worker.state is ConnectionState.ERROR


def test_a_late_noop_while_awake_is_ignored_and_errors_are_events() -> None:
    worker = WorkerConnection()
    assert worker.receive_data(Packet.response(T.NOOP).encode()) == []
    error = Packet.response(
        T.ERROR, b"JOB_NOT_FOUND", b"Job given in work result not found"
    ).encode()
    assert worker.receive_data(error) == [
        ErrorReceived("JOB_NOT_FOUND", "Job given in work result not found")
    ]


def test_can_do_timeout_must_be_positive() -> None:
    worker = WorkerConnection()
    worker.can_do(b"f", 1500)
    assert worker.data_to_send() == Packet.request(T.CAN_DO_TIMEOUT, b"f", b"1500").encode()
    with pytest.raises(LocalProtocolError):
        worker.can_do(b"f", 0)


def test_admin_commands_are_answered_in_order_in_memory() -> None:
    server = MemoryServer()
    admin, worker = AdminConnection(), WorkerConnection()
    server.link(admin)
    server.link(worker)
    worker.set_client_id(b"w-1")
    worker.can_do(b"reverse")
    server.pump()
    admin.command("version")
    admin.command("workers")
    admin.command("status")
    replies = server.pump()[admin]
    assert [r.lines[0][:3] for r in replies[:1]] == [b"OK "]
    assert any(line.endswith(b"w-1 : reverse") for line in replies[1].lines)
    assert replies[2].lines == [b"reverse\t0\t0\t1"]
    assert not admin.busy


def test_admin_refuses_binary_packets_and_unasked_lines() -> None:
    with pytest.raises(RemoteProtocolError, match="answers no command"):
        AdminConnection().receive_data(b"OK\r\n")
    admin = AdminConnection()
    admin.command("status")
    with pytest.raises(RemoteProtocolError, match="binary NOOP"):
        admin.receive_data(Packet.response(T.NOOP).encode())
    with pytest.raises(LocalProtocolError):
        AdminConnection().command("cancel job", "two words")


def test_the_server_end_answers_bad_magic_and_refuses_garbage() -> None:
    server = MemoryServer()
    client = ClientConnection()
    server_end = server.link(client)
    server_end.receive_data(Packet.response(T.ECHO_RES, b"x").encode())
    assert b"INVALID_MAGIC" in server_end.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        server_end.receive_data(b"\0XYZ" + bytes(8))
    assert info.value.code == "INVALID_MAGIC"
    assert server_end.error_packet(info.value).startswith(b"\0RES\x00\x00\x00\x13")
