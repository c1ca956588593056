"""Property tests: any bytes either frame or raise RemoteProtocolError, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from django_gearman.gearman.protocol import (
    ARG_SPEC,
    REQ,
    RES,
    Packet,
    PacketBuffer,
    PacketType,
    RemoteProtocolError,
)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    kind = draw(st.sampled_from(list(PacketType)))
    count = len(ARG_SPEC[kind])
    head = [
        draw(st.binary(max_size=20).filter(lambda b: b"\0" not in b))
        for _ in range(max(0, count - 1))
    ]
    tail = [draw(st.binary(max_size=200))] if count else []
    return Packet(draw(st.sampled_from([REQ, RES])), kind, tuple(head + tail))


@given(
    st.lists(packets(), max_size=8), st.lists(st.integers(min_value=1, max_value=64), max_size=20)
)
@settings(max_examples=300, deadline=None)
def test_random_packets_round_trip_in_random_chunks(items: list[Packet], cuts: list[int]) -> None:
    wire = b"".join(p.encode() for p in items)
    buffer, frames, pos = PacketBuffer(), [], 0
    for cut in cuts:
        frames += buffer.feed(wire[pos : pos + cut])
        pos += cut
    frames += buffer.feed(wire[pos:])
    assert frames == items


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_random_bytes_never_raise_anything_but_remote_errors(data: bytes) -> None:
    buffer = PacketBuffer(max_packet_size=4096, max_line_size=256)
    try:
        buffer.feed(data)
    except RemoteProtocolError:
        pass


@given(
    st.lists(packets(), min_size=1, max_size=4),
    st.integers(min_value=0),
    st.binary(min_size=1, max_size=4),
)
@settings(max_examples=300, deadline=None)
def test_mutated_streams_frame_or_fail_cleanly(
    items: list[Packet], position: int, junk: bytes
) -> None:
    wire = bytearray(b"".join(p.encode() for p in items))
    at = position % len(wire)
    wire[at : at + len(junk)] = junk
    try:
        PacketBuffer(max_packet_size=1 << 16).feed(bytes(wire))
    except RemoteProtocolError:
        pass
