"""The frame buffer: any split point, binary and text interleaved, limits, and broken state."""

from __future__ import annotations

import pytest

from django_gearman.gearman.protocol import (
    Packet,
    PacketBuffer,
    PacketTooLarge,
    PacketType,
    RemoteProtocolError,
    TextLine,
)

STREAM_FRAMES = [
    Packet.request(PacketType.SUBMIT_JOB, b"reverse", b"u-1", b"payload\0with\0nuls"),
    TextLine(b"status"),
    Packet.request(PacketType.GRAB_JOB_UNIQ),
    Packet.response(PacketType.JOB_ASSIGN_UNIQ, b"H:host:1", b"reverse", b"", b"x" * 300),
    TextLine(b"show unique jobs"),
    TextLine(b""),
    Packet.request(PacketType.ECHO_REQ, b""),
]
WIRE = b"".join(
    frame.encode()
    if isinstance(frame, Packet)
    else frame.line + (b"\r\n" if frame.line == b"status" else b"\n")
    for frame in STREAM_FRAMES
)


def test_whole_stream_in_one_feed() -> None:
    assert PacketBuffer().feed(WIRE) == STREAM_FRAMES


@pytest.mark.parametrize("split", range(1, len(WIRE)))
def test_split_at_every_byte(split: int) -> None:
    buffer = PacketBuffer()
    frames = buffer.feed(WIRE[:split]) + buffer.feed(WIRE[split:])
    assert frames == STREAM_FRAMES
    assert len(buffer) == 0


def test_one_byte_at_a_time() -> None:
    buffer = PacketBuffer()
    frames = []
    for index in range(len(WIRE)):
        frames += buffer.feed(WIRE[index : index + 1])
    assert frames == STREAM_FRAMES


def test_partial_frame_is_kept() -> None:
    buffer = PacketBuffer()
    wire = STREAM_FRAMES[0].encode()
    assert buffer.feed(wire[:-1]) == []
    assert len(buffer) == len(wire) - 1
    assert buffer.feed(wire[-1:]) == [STREAM_FRAMES[0]]


def test_oversized_packet_is_refused_from_its_header() -> None:
    buffer = PacketBuffer(max_packet_size=1024)
    ok = Packet.request(PacketType.ECHO_REQ, b"a" * 1024).encode()
    assert len(buffer.feed(ok)) == 1
    big = Packet.request(PacketType.ECHO_REQ, b"a" * 1025).encode()
    with pytest.raises(PacketTooLarge) as info:
        buffer.feed(big[:12])  # the header alone is enough to refuse it
    assert (info.value.size, info.value.limit) == (1025, 1024)
    assert info.value.code == "ARGUMENT_TOO_LARGE"


def test_bad_header_fails_before_body_arrives() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown packet type 99"):
        PacketBuffer().feed(b"\0REQ\x00\x00\x00\x63\x00\x00\x10\x00partial")


def test_endless_text_line_is_refused() -> None:
    buffer = PacketBuffer(max_line_size=100)
    buffer.feed(b"s" * 100)
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        buffer.feed(b"s")


def test_buffer_stays_broken_after_an_error() -> None:
    buffer = PacketBuffer()
    with pytest.raises(RemoteProtocolError) as first:
        buffer.feed(b"\0BAD" + bytes(8))
    with pytest.raises(RemoteProtocolError) as second:
        buffer.feed(STREAM_FRAMES[0].encode())
    assert second.value is first.value
