"""Every packet type encodes, frames and decodes back to itself; bad packets fail clearly."""

from __future__ import annotations

import pytest

from django_gearman.gearman.protocol import (
    ARG_SPEC,
    REQ,
    RES,
    LocalProtocolError,
    Packet,
    PacketBuffer,
    PacketType,
    RemoteProtocolError,
)
from django_gearman.gearman.protocol.packets import decode_body, encode


def sample_args(kind: PacketType) -> tuple[bytes, ...]:
    names = ARG_SPEC[kind]
    # Distinct values per argument; the last one holds NULs, which only the last may.
    return tuple(
        (f"{name}-{index}".encode() + (b"\0tail\0" if index == len(names) - 1 else b""))
        for index, name in enumerate(names)
    )


@pytest.mark.parametrize("kind", list(PacketType), ids=lambda k: k.name)
@pytest.mark.parametrize("magic", [REQ, RES], ids=["REQ", "RES"])
def test_every_packet_type_round_trips(kind: PacketType, magic: bytes) -> None:
    packet = Packet(magic, kind, sample_args(kind))
    wire = packet.encode()
    assert wire[:4] == magic
    assert int.from_bytes(wire[4:8], "big") == kind.value
    assert int.from_bytes(wire[8:12], "big") == len(wire) - 12
    assert PacketBuffer().feed(wire) == [packet]


def test_all_42_types_are_covered() -> None:
    assert [t.value for t in PacketType] == list(range(1, 43))
    assert set(ARG_SPEC) == set(PacketType)


def test_wire_bytes_match_the_spec_exactly() -> None:
    # Bytes as libgearman writes SUBMIT_JOB("reverse", "", "test") (gearman.org/protocol).
    assert Packet.request(PacketType.SUBMIT_JOB, b"reverse", b"", b"test").encode() == (
        b"\0REQ\x00\x00\x00\x07\x00\x00\x00\x0dreverse\x00\x00test"
    )
    assert Packet.response(PacketType.NOOP).encode() == b"\0RES\x00\x00\x00\x06\x00\x00\x00\x00"


def test_get_reads_arguments_by_name() -> None:
    packet = Packet.response(PacketType.JOB_ASSIGN_UNIQ, b"H:x:1", b"fn", b"u", b"data")
    assert packet.get("unique") == b"u"
    with pytest.raises(KeyError, match="reducer"):
        packet.get("reducer")


def test_wrong_argument_count_is_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="SUBMIT_JOB takes 3 argument"):
        Packet.request(PacketType.SUBMIT_JOB, b"fn", b"data")


def test_nul_only_allowed_in_last_argument() -> None:
    with pytest.raises(LocalProtocolError, match="may not contain NUL"):
        Packet.request(PacketType.SUBMIT_JOB, b"f\0n", b"", b"data")
    assert Packet.request(PacketType.SUBMIT_JOB, b"fn", b"", b"d\0a\0t\0a").args[2] == b"d\0a\0t\0a"


def test_non_bytes_argument_is_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="must be bytes"):
        Packet.request(PacketType.CAN_DO, "fn")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("magic", "type_value", "body", "code"),
    [
        (b"\0XYZ", 1, b"fn", "INVALID_MAGIC"),
        (REQ, 0, b"", "INVALID_COMMAND"),
        (REQ, 43, b"", "INVALID_COMMAND"),
        (REQ, 7, b"only-one-arg", "INVALID_PACKET"),
        (REQ, 4, b"unexpected body", "INVALID_PACKET"),
    ],
)
def test_malformed_frames_are_remote_errors(
    magic: bytes, type_value: int, body: bytes, code: str
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(magic, type_value, body)
    assert info.value.code == code
    with pytest.raises(RemoteProtocolError):
        PacketBuffer().feed(encode(magic, type_value, [body]))


def test_empty_arguments_survive() -> None:
    packet = Packet.request(PacketType.SUBMIT_JOB, b"fn", b"", b"")
    assert PacketBuffer().feed(packet.encode()) == [packet]


@pytest.mark.parametrize(
    "kind", [PacketType.WORK_COMPLETE, PacketType.WORK_DATA, PacketType.WORK_WARNING]
)
def test_a_missing_last_argument_is_read_as_empty(kind: PacketType) -> None:
    """Perl's Gearman::Worker sends these with the handle alone for a value of "" or "0"."""
    packet = decode_body(REQ, kind, b"H:host:1")
    assert packet.args == (b"H:host:1", b"")


def test_only_the_last_argument_may_be_missing() -> None:
    with pytest.raises(RemoteProtocolError, match="needs 3 arguments"):
        decode_body(REQ, PacketType.WORK_STATUS, b"H:host:1")
    with pytest.raises(RemoteProtocolError, match="needs 3 arguments"):
        decode_body(REQ, PacketType.SUBMIT_JOB, b"fn")
