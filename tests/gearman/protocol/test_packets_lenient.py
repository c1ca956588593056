"""A missing last argument read as empty, for the types where that is the only reading (#14).

Perl's Gearman::Worker sends WORK_COMPLETE, WORK_DATA, WORK_WARNING and WORK_EXCEPTION with the
handle alone for a value of ``""`` or ``"0"``. These tests push those exact bodies through the
decoder, the frame buffer and an in-memory server; every other type must stay strict (the table
in ``decode_body``'s docstring).
"""

from __future__ import annotations

from typing import Any

import pytest

from django_gearman.gearman.protocol import (
    ARG_SPEC,
    REQ,
    RES,
    ClientConnection,
    JobEnded,
    Outcome,
    Packet,
    PacketBuffer,
    PacketType,
    RemoteProtocolError,
    encode_submit,
)
from django_gearman.gearman.protocol.constants import HEADER
from django_gearman.gearman.protocol.packets import decode_body, encode_packet
from tests.helpers import MemoryServer

T = PacketType

LENIENT = [T.WORK_COMPLETE, T.WORK_DATA, T.WORK_WARNING, T.WORK_EXCEPTION, T.ERROR]
STRICT = [t for t in PacketType if len(ARG_SPEC[t]) >= 2 and t not in LENIENT]


def short_body(kind: PacketType) -> tuple[tuple[bytes, ...], bytes]:
    """Every argument of ``kind`` but the last, and the body they make (no trailing NUL)."""
    given = tuple(f"{name}-{i}".encode() for i, name in enumerate(ARG_SPEC[kind][:-1]))
    return given, b"\0".join(given)


@pytest.mark.parametrize("kind", LENIENT, ids=lambda k: k.name)
@pytest.mark.parametrize("magic", [REQ, RES], ids=["REQ", "RES"])
def test_a_missing_last_argument_is_empty(kind: PacketType, magic: bytes) -> None:
    given, body = short_body(kind)
    packet = decode_body(magic, kind, body)
    assert packet == Packet(magic, kind, (*given, b""))
    # Sent on, it has its NUL: Perl's Gearman::Client needs /^(.+?)\0/ in a WORK_COMPLETE.
    assert encode_packet(packet) == HEADER.pack(magic, kind, len(body) + 1) + body + b"\0"


@pytest.mark.parametrize("kind", STRICT, ids=lambda k: k.name)
def test_every_other_type_still_needs_all_its_arguments(kind: PacketType) -> None:
    _, body = short_body(kind)
    count = len(ARG_SPEC[kind])
    with pytest.raises(RemoteProtocolError, match=f"{kind.name} needs {count} arguments"):
        decode_body(REQ, kind, body)


def test_the_strict_list_is_what_the_docstring_says() -> None:
    # Every type that has two or more arguments is in exactly one of the lists.
    assert {t.name for t in STRICT} == {
        "SUBMIT_JOB",
        "SUBMIT_JOB_BG",
        "SUBMIT_JOB_HIGH",
        "SUBMIT_JOB_HIGH_BG",
        "SUBMIT_JOB_LOW",
        "SUBMIT_JOB_LOW_BG",
        "SUBMIT_JOB_SCHED",
        "SUBMIT_JOB_EPOCH",
        "SUBMIT_REDUCE_JOB",
        "SUBMIT_REDUCE_JOB_BACKGROUND",
        "JOB_ASSIGN",
        "JOB_ASSIGN_UNIQ",
        "JOB_ASSIGN_ALL",
        "WORK_STATUS",
        "STATUS_RES",
        "STATUS_RES_UNIQUE",
        "CAN_DO_TIMEOUT",
    }


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (T.WORK_COMPLETE, b"H:host:1"),  # Perl: return "0" or return ""
        (T.WORK_DATA, b"H:host:1"),  # Perl: $worker->send_work_data($job, "0")
        (T.WORK_WARNING, b"H:host:1"),  # Perl: $worker->send_work_warning($job, "")
        (T.WORK_EXCEPTION, b"H:host:1"),  # Perl: $worker->send_work_exception($job, "0")
    ],
    ids=lambda v: v.name if isinstance(v, PacketType) else None,
)
def test_perls_handle_only_bodies(kind: PacketType, body: bytes) -> None:
    assert decode_body(REQ, kind, body).args == (b"H:host:1", b"")


def test_a_present_empty_argument_and_a_missing_one_read_the_same() -> None:
    assert decode_body(REQ, T.WORK_COMPLETE, b"H:1") == decode_body(REQ, T.WORK_COMPLETE, b"H:1\0")
    assert decode_body(RES, T.ERROR, b"ERR_CODE").args == (b"ERR_CODE", b"")


def test_only_one_argument_may_be_missing() -> None:
    # WORK_STATUS is strict anyway; a lenient type with an empty body keeps its one argument.
    with pytest.raises(RemoteProtocolError, match="WORK_STATUS needs 3 arguments"):
        decode_body(REQ, T.WORK_STATUS, b"H:host:1")
    assert decode_body(REQ, T.WORK_COMPLETE, b"").args == (b"", b"")


def test_perls_work_status_without_denominator_stays_an_error() -> None:
    # $worker->send_work_status($job, 1, 2) sends HANDLE\01: no denominator to pass on.
    with pytest.raises(RemoteProtocolError, match="WORK_STATUS needs 3 arguments"):
        decode_body(REQ, T.WORK_STATUS, b"H:host:1\x001")


def test_the_frame_buffer_reads_a_handle_only_frame_split_anywhere() -> None:
    frame = HEADER.pack(REQ, T.WORK_COMPLETE, 8) + b"H:host:1"
    frame += HEADER.pack(REQ, T.GRAB_JOB, 0)  # pipelined after it, as Perl does
    expected = [Packet(REQ, T.WORK_COMPLETE, (b"H:host:1", b"")), Packet(REQ, T.GRAB_JOB, ())]
    for cut in range(len(frame) + 1):
        buffer = PacketBuffer()
        assert buffer.feed(frame[:cut]) + buffer.feed(frame[cut:]) == expected


class RawPeer:
    """A connection that sends bytes exactly as given (Perl's), for :class:`MemoryServer`."""

    def __init__(self) -> None:
        self.outgoing = b""
        self.buffer = PacketBuffer()
        self.received: list[Any] = []

    def send(self, kind: PacketType, body: bytes = b"") -> None:
        self.outgoing += HEADER.pack(REQ, kind, len(body)) + body

    def data_to_send(self) -> bytes:
        data, self.outgoing = self.outgoing, b""
        return data

    def receive_data(self, data: bytes) -> list[Any]:
        self.received += self.buffer.feed(data)
        return []


@pytest.mark.parametrize(
    "kind", [T.WORK_DATA, T.WORK_WARNING, T.WORK_COMPLETE], ids=lambda k: k.name
)
def test_the_server_takes_a_handle_only_result_and_keeps_the_worker(kind: PacketType) -> None:
    server = MemoryServer()
    client, worker = ClientConnection(), RawPeer()
    server.link(client)
    worker_end = server.link(worker)
    worker.send(T.SET_CLIENT_ID, b"perl")
    worker.send(T.CAN_DO, b"perl.zero")
    worker.send(T.GRAB_JOB)
    client.submit(encode_submit(b"perl.zero", b"x"), "token")
    server.pump()
    worker.send(T.GRAB_JOB)  # NO_JOB first (the worker asked before the job came)
    server.pump()
    assigned = next(p for p in worker.received if p.type is T.JOB_ASSIGN)
    handle = assigned.args[0]

    worker.received.clear()
    worker.send(kind, handle)  # Perl's bytes for "0" or ""
    if kind is not T.WORK_COMPLETE:
        worker.send(T.WORK_COMPLETE, handle + b"\0done")
    worker.send(T.GRAB_JOB)  # pipelined: its reply must be NO_JOB, not an ERROR
    events = server.pump()

    assert worker_end.live
    assert [p.type for p in worker.received] == [T.NO_JOB]
    ended = [e for e in events[client] if isinstance(e, JobEnded)]
    result = b"" if kind is T.WORK_COMPLETE else b"done"
    assert [(e.outcome, e.data) for e in ended] == [(Outcome.COMPLETE, result)]
    if kind is not T.WORK_COMPLETE:
        [update] = [e for e in events[client] if not isinstance(e, JobEnded)]
        assert update.event.data == b""
