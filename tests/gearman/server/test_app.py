"""The server in-process, with a durable store: JOB_CREATED only after the commit, replies in
request order around it, and a failed commit answered with ERROR in the failed job's place.

These drive ``GearmanServer`` on the test's own event loop over a real loopback socket, so a
store can be made to fail on purpose.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from django_gearman.gearman.protocol.buffer import PacketBuffer
from django_gearman.gearman.protocol.constants import REQ, PacketType
from django_gearman.gearman.protocol.packets import Packet, encode
from django_gearman.gearman.server.app import GearmanServer
from django_gearman.gearman.server.store import SqliteStore

T = PacketType


def submit_bg(n: int) -> bytes:
    return encode(REQ, T.SUBMIT_JOB_BG, (b"fn", b"u%d" % n, b"data %d" % n))


async def read_packets(reader: asyncio.StreamReader, count: int) -> list[Packet]:
    buffer = PacketBuffer()
    packets: list[Any] = []
    while len(packets) < count:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, f"connection closed after {len(packets)} of {count} packets"
        packets += buffer.feed(data)
    assert len(packets) == count
    return packets


async def serve(store: SqliteStore) -> GearmanServer:
    server = GearmanServer("127.0.0.1", 0, store=store)
    await server.start()
    return server


def test_pipelined_durable_submits_are_answered_in_order_after_few_commits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "queue.sqlite3")

    async def main() -> list[Packet]:
        server = await serve(store)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # An echo between the submits must come back between their JOB_CREATEDs.
            writer.write(b"".join(submit_bg(n) for n in range(500)))
            writer.write(encode(REQ, T.ECHO_REQ, (b"between",)))
            writer.write(b"".join(submit_bg(n) for n in range(500, 1000)))
            packets = await read_packets(reader, 1001)
            assert store.load()[-1].unique == b"u999"  # committed before it was acknowledged
            writer.close()
            await writer.wait_closed()
            return packets
        finally:
            await server.close()

    packets = asyncio.run(asyncio.wait_for(main(), 60))
    kinds = [packet.type for packet in packets]
    assert kinds == [T.JOB_CREATED] * 500 + [T.ECHO_RES] + [T.JOB_CREATED] * 500
    handles = [packet.args[0] for packet in packets if packet.type is T.JOB_CREATED]
    assert len(set(handles)) == 1000
    assert [int(h.rsplit(b":", 1)[1]) for h in handles] == sorted(
        int(h.rsplit(b":", 1)[1]) for h in handles
    )
    assert store.commits < 100  # group commit: far fewer transactions than jobs


def test_a_failed_commit_answers_error_in_place_and_queues_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "queue.sqlite3")
    real_write = store._write
    failures = iter([sqlite3.OperationalError("disk I/O error")])

    def write_failing_once(rows: list[Any], deletes: list[int]) -> BaseException | None:
        error = next(failures, None)
        if error is None:
            return real_write(rows, deletes)
        return error  # as _write reports a transaction it rolled back

    monkeypatch.setattr(store, "_write", write_failing_once)

    async def main() -> tuple[list[Packet], list[Packet], int]:
        server = await serve(store)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(submit_bg(1) + encode(REQ, T.ECHO_REQ, (b"after",)) + submit_bg(2))
            first = await read_packets(reader, 3)
            function = server.state.functions.get(b"fn")  # forgotten once it has no job
            queued = function.queued if function is not None else 0
            writer.write(submit_bg(3))
            second = await read_packets(reader, 1)
            writer.close()
            await writer.wait_closed()
            return first, second, queued
        finally:
            await server.close()

    first, second, queued = asyncio.run(asyncio.wait_for(main(), 60))
    assert [(p.type, p.args[0]) for p in first] == [
        (T.ERROR, b"QUEUE_ERROR"),
        (T.ECHO_RES, b"after"),
        (T.ERROR, b"QUEUE_ERROR"),
    ]
    assert queued == 0  # the lost jobs were never handed to a worker
    assert second[0].type is T.JOB_CREATED  # the store goes on after a failed commit
    with SqliteStore(tmp_path / "queue.sqlite3") as reopened:
        assert [job.unique for job in reopened.load()] == [b"u3"]
