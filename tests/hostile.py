"""Hostile input for a job server, and what it costs the server.

Shared by ``tests/gearman/server/test_soak.py``, ``test_hostile_load.py`` and
``bench/server_soak.py``:

- :func:`scripts` yields :class:`Script` values, deterministic from a seed: what one short
  hostile connection sends (bad magic, bad types, truncated headers, oversize lengths, random
  text lines, admin commands with huge arguments, CAN_DO with many names, SET_CLIENT_ID
  garbage, SUBMIT_JOB_EPOCH out of range, half-sent packets, replies never read, fuzzed
  packets), how many packets and text lines that is, and how it leaves;
- :func:`run_scripts` plays them over many concurrent short connections (non-blocking sockets,
  one selector); :func:`run_load` runs the three floods of the load test; ``python -m
  tests.hostile soak|load ADDRESS ...`` does either in a child process, so the hostile side
  never shares a GIL with the healthy client being timed, and prints its counts as JSON;
- :class:`HealthyProbe` times a healthy client's foreground round trips (our client, our
  worker) for as long as it runs;
- :func:`rss_bytes`, :func:`socket_census` (with :func:`settle`) and :class:`RssSampler`
  measure a server process through ``/proc``.

Loopback only. Nothing here sends ``shutdown``: gearmand would obey it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import random
import selectors
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
REQ = b"\0REQ"
RES = b"\0RES"
MIB = 1 << 20
HEADER = struct.Struct("!4sII")

#: Wire values used here (the protocol's own names, without importing it: the child process
#: and gearmand runs need nothing but the standard library).
CAN_DO, CANT_DO, RESET_ABILITIES, PRE_SLEEP = 1, 2, 3, 4
SUBMIT_JOB, GRAB_JOB, WORK_STATUS, WORK_COMPLETE, WORK_FAIL, GET_STATUS = 7, 9, 12, 13, 14, 15
ECHO_REQ, SUBMIT_JOB_BG, SUBMIT_JOB_HIGH, SET_CLIENT_ID, CAN_DO_TIMEOUT = 16, 18, 21, 22, 23
WORK_EXCEPTION, OPTION_REQ, WORK_DATA, GRAB_JOB_UNIQ, SUBMIT_JOB_LOW_BG = 25, 26, 28, 30, 34
SUBMIT_JOB_EPOCH, GRAB_JOB_ALL, GET_STATUS_UNIQUE = 36, 39, 41
JOB_CREATED, ERROR = 8, 19
#: One past the highest packet type gearmand 1.1 knows (STATUS_RES_UNIQUE is 42).
FIRST_UNKNOWN_TYPE = 43
#: gearmand's default, and ours, is larger (64 MiB); this is above both.
OVERSIZE_LENGTHS = (64 * MIB + 1, 1 << 30, (1 << 31) - 1, 1 << 31, (1 << 32) - 1)

#: SUBMIT_JOB_EPOCH values outside the signed 64-bit range, which gearmand 1.1.20 refuses
#: (it closes the connection: its strtoll overflowed). Inside that range gearmand accepts
#: anything, negative and non-numeric (then 0: run now) included.
OUT_OF_RANGE_EPOCHS = (
    str(1 << 63).encode(),
    str(1 << 64).encode(),
    str(10**400).encode(),
    str(-(1 << 63) - 1).encode(),
    b"-" + str(10**400).encode(),
    b"9" * 30,
)

#: Function every accepted epoch job of :func:`scripts` is queued on (one, so they are easy to
#: count and do not add functions).
EPOCH_FUNCTION = b"hostile_epoch"

#: Admin commands that take arguments (never ``shutdown``).
ADMIN_COMMANDS = (
    b"maxqueue",
    b"cancel job",
    b"drop function",
    b"create function",
    b"show queue",
    b"show",
    b"status",
    b"workers",
    b"getpid",
    b"verbose",
    b"version",
    b"prioritystatus",
)


def packet(kind: int, *args: bytes, magic: bytes = REQ) -> bytes:
    body = b"\0".join(args)
    return HEADER.pack(magic, kind, len(body)) + body


# -- what hostile connections send -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Script:
    """One short hostile connection.

    ``data`` is every byte it sends; ``inputs`` how many packets and text lines that is (whole
    or not); ``leave`` how it ends once everything is sent: ``"close"`` at once (unread replies
    make that a reset), ``"half_close"`` (shutdown for writing, then read to the server's
    close, at most ``hold`` seconds), ``"read"`` (read until ``hold`` seconds pass with
    nothing new) or ``"linger"`` (read nothing for ``hold`` seconds, then close).
    """

    kind: str
    data: bytes
    inputs: int
    leave: str = "close"
    hold: float = 0.0


def _name(rng: random.Random, low: int = 1, high: int = 40) -> bytes:
    return bytes(
        rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")
        for _ in range(rng.randint(low, high))
    )


def _junk(rng: random.Random, size: int, *, nul: bool = True, newline: bool = True) -> bytes:
    data = bytearray(rng.randbytes(size))
    for i, byte in enumerate(data):
        if (not nul and byte == 0) or (not newline and byte == 10):
            data[i] = 0x41 + byte % 26
    return bytes(data)


def _big(rng: random.Random, low: int, high: int) -> int:
    """A size between ``low`` and ``high``, spread evenly on a log scale (mostly small)."""
    return int(low * (high / low) ** rng.random())


def _script(
    rng: random.Random,
    kind: str,
    parts: list[bytes],
    leaves: tuple[str, ...] = ("close", "read"),
    hold: float = 0.05,
) -> Script:
    """A :class:`Script` of ``parts`` (one input each), leaving in one of ``leaves``."""
    return Script(
        kind=kind, data=b"".join(parts), inputs=len(parts), leave=rng.choice(leaves), hold=hold
    )


def bad_magic(rng: random.Random) -> Script:
    magic = b"\0" + _junk(rng, 3)
    while magic in (REQ, RES):
        magic = b"\0" + _junk(rng, 3)
    size = rng.randint(0, 32)
    return _script(
        rng, "bad_magic", [HEADER.pack(magic, rng.randint(0, 60), size) + _junk(rng, size)]
    )


def bad_type(rng: random.Random, *, high: bool = True) -> Script:
    """An unknown packet type; with ``high``, also types of 2**31 and more (which crash
    gearmand 1.1.20: it reads the type as a signed int)."""
    choices = [0, FIRST_UNKNOWN_TYPE, rng.randint(FIRST_UNKNOWN_TYPE, 255), 1 << 16, (1 << 31) - 1]
    if high:
        choices += [1 << 31, (1 << 32) - 1]
    size = rng.randint(0, 32)
    data = HEADER.pack(rng.choice((REQ, RES)), rng.choice(choices), size) + _junk(rng, size)
    return _script(rng, "bad_type", [data])


def truncated_header(rng: random.Random) -> Script:
    """Part of a header (or of a packet's start), and then nothing."""
    whole = packet(rng.choice((SUBMIT_JOB, ECHO_REQ, CAN_DO)), _name(rng))
    part = whole[: rng.randint(1, HEADER.size - 1)]
    return _script(rng, "truncated_header", [part], ("close", "half_close"), 0.2)


def oversize(rng: random.Random) -> Script:
    kind = rng.choice((SUBMIT_JOB, SUBMIT_JOB_BG, ECHO_REQ, CAN_DO))
    data = HEADER.pack(REQ, kind, rng.choice(OVERSIZE_LENGTHS)) + _junk(rng, rng.randint(0, 100))
    return _script(rng, "oversize", [data])


def bad_args(rng: random.Random) -> Script:
    """Packets whose body does not split into their arguments, or that take none."""
    data = rng.choice(
        (
            packet(SUBMIT_JOB, _junk(rng, rng.randint(0, 40), nul=False)),  # 1 of 3 arguments
            packet(GRAB_JOB, _junk(rng, rng.randint(1, 40))),  # GRAB_JOB takes none
            packet(WORK_STATUS, _junk(rng, rng.randint(0, 20), nul=False)),
        )
    )
    return _script(rng, "bad_args", [data])


def response_magic(rng: random.Random) -> Script:
    """Well-formed packets with response magic (the server answers ERROR and carries on)."""
    kinds = (JOB_CREATED, ECHO_REQ, WORK_COMPLETE)
    parts = [packet(rng.choice(kinds), _name(rng), magic=RES) for _ in range(rng.randint(1, 10))]
    return _script(rng, "response_magic", parts)


def text_lines(rng: random.Random) -> Script:
    """Random lines: printable, binary, or commands with junk; ``\\n`` or ``\\r\\n``."""
    lines = []
    for _ in range(rng.randint(1, 20)):
        if rng.random() < 0.5:
            line = bytes(rng.randint(0x20, 0x7E) for _ in range(rng.randint(0, 80)))
        else:
            line = _junk(rng, rng.randint(0, 200), newline=False)
        if line[:1] == b"\0" or line.split()[:1] == [b"shutdown"]:
            line = b"x" + line
        lines.append(line + rng.choice((b"\n", b"\r\n")))
    return _script(rng, "text_lines", lines, ("close", "read", "half_close"))


def long_line(rng: random.Random) -> Script:
    """A text line longer than any server's line buffer (64 KiB), never ended."""
    return _script(rng, "long_line", [b"status " + b"x" * rng.randint(64 * 1024, 80 * 1024)])


def admin_huge(rng: random.Random) -> Script:
    """Admin commands with huge or absurd arguments (each line under 64 KiB)."""
    lines = []
    for _ in range(rng.randint(1, 4)):
        command = rng.choice(ADMIN_COMMANDS)
        huge = _name(rng, 600, 1000) if rng.random() < 0.7 else _name(rng, 1000, 60_000)
        numbers = [str(rng.choice((10**30, -5, 1 << 64, 0))).encode() for _ in range(4)]
        if command == b"show queue":
            args = [rng.choice((b"99999999999999999999999999", b"-1", huge))]
        else:
            args = [huge, *numbers[: rng.randint(0, 4)]]
        lines.append(b" ".join([command, *args]) + b"\n")
    return _script(rng, "admin_huge", lines)


def can_do_many(rng: random.Random) -> Script:
    """A worker that registers many functions (some long names, some garbage timeouts), and
    leaves."""
    parts = []
    for _ in range(rng.randint(10, 60)):
        name = _name(rng) if rng.random() < 0.9 else _name(rng, 600, 4000)
        choice = rng.random()
        if choice < 0.7:
            parts.append(packet(CAN_DO, name))
        elif choice < 0.85:
            timeout = rng.choice((b"-1", b"abc", b"99999999999999999999999", b"0", b"1"))
            parts.append(packet(CAN_DO_TIMEOUT, name, timeout))
        else:
            parts.append(packet(CANT_DO, name))
    parts += [packet(RESET_ABILITIES)] if rng.random() < 0.1 else []
    parts += [packet(GRAB_JOB_UNIQ), packet(PRE_SLEEP)]
    return _script(rng, "can_do_many", parts, ("close", "read", "half_close"))


def client_id_garbage(rng: random.Random) -> Script:
    sizes = [_big(rng, 1, 64 * 1024) for _ in range(rng.randint(1, 5))]
    parts = [packet(SET_CLIENT_ID, _junk(rng, size)) for size in sizes]
    return _script(rng, "client_id_garbage", [*parts, b"workers\n"])


def epoch_out_of_range(rng: random.Random) -> Script:
    epochs = [rng.choice(OUT_OF_RANGE_EPOCHS) for _ in range(rng.randint(1, 10))]
    parts = [packet(SUBMIT_JOB_EPOCH, EPOCH_FUNCTION, b"", epoch, b"x") for epoch in epochs]
    return _script(rng, "epoch_out_of_range", parts)


def half_sent(rng: random.Random, max_size: int = 256 * 1024) -> Script:
    """A header announcing up to ``max_size`` bytes, part of the body, then the peer leaves."""
    size = _big(rng, 1024, max_size)
    kind = rng.choice((SUBMIT_JOB, SUBMIT_JOB_BG, ECHO_REQ, WORK_COMPLETE))
    data = HEADER.pack(REQ, kind, size) + b"\x01" * rng.randint(0, size - 1)
    leaves = ("close", "linger", "half_close")
    return _script(rng, "half_sent", [data], leaves, rng.uniform(0.05, 0.3))


def never_read(rng: random.Random) -> Script:
    """Requests with large replies, never read, the connection held a moment."""
    echo = packet(ECHO_REQ, b"e" * rng.randint(1024, 60_000))
    one = rng.choice((b"status\n", b"workers\n", echo))
    parts = [one] * rng.randint(5, 50)
    return _script(rng, "never_read", parts, ("linger",), rng.uniform(0.05, 0.5))


_FUZZ_TYPES = (
    SUBMIT_JOB, SUBMIT_JOB_BG, SUBMIT_JOB_HIGH, SUBMIT_JOB_LOW_BG, GRAB_JOB, GRAB_JOB_UNIQ,
    GRAB_JOB_ALL, WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION, WORK_DATA, WORK_STATUS, GET_STATUS,
    GET_STATUS_UNIQUE, ECHO_REQ, OPTION_REQ, PRE_SLEEP, RESET_ABILITIES,
)  # fmt: skip
_ARGS = {
    SUBMIT_JOB: 3, SUBMIT_JOB_BG: 3, SUBMIT_JOB_HIGH: 3, SUBMIT_JOB_LOW_BG: 3, WORK_COMPLETE: 2,
    WORK_EXCEPTION: 2, WORK_DATA: 2, WORK_STATUS: 3, WORK_FAIL: 1, GET_STATUS: 1,
    GET_STATUS_UNIQUE: 1, ECHO_REQ: 1, OPTION_REQ: 1,
}  # fmt: skip


def fuzz(rng: random.Random, *, high: bool = True) -> Script:
    """Packets of request types with random arguments (unknown handles, random functions,
    foreground submits whose client then leaves), one byte sometimes flipped (without
    ``high``, never into a type of 2**31 or more: see :func:`bad_type`)."""
    parts = []
    for _ in range(rng.randint(1, 10)):
        kind = rng.choice(_FUZZ_TYPES)
        args = [_name(rng, 0, 20) for _ in range(_ARGS.get(kind, 0))]
        if kind in (SUBMIT_JOB, SUBMIT_JOB_HIGH, SUBMIT_JOB_BG, SUBMIT_JOB_LOW_BG):
            args[0] = b"hostile_" + _name(rng, 1, 8)
        wire = bytearray(packet(kind, *args))
        if rng.random() < 0.2:
            at = rng.randrange(len(wire))
            wire[at] = rng.randrange(256 if high or at != 4 else 128)
        parts.append(bytes(wire))
    return _script(rng, "fuzz", parts, ("close", "read", "half_close"))


#: Every kind, with its weight in the mix (a script per connection).
KINDS: dict[str, tuple[Callable[[random.Random], Script], int]] = {
    "bad_magic": (bad_magic, 8),
    "bad_type": (bad_type, 8),
    "truncated_header": (truncated_header, 6),
    "oversize": (oversize, 6),
    "bad_args": (bad_args, 6),
    "response_magic": (response_magic, 6),
    "text_lines": (text_lines, 10),
    "long_line": (long_line, 1),
    "admin_huge": (admin_huge, 6),
    "can_do_many": (can_do_many, 4),
    "client_id_garbage": (client_id_garbage, 4),
    "epoch_out_of_range": (epoch_out_of_range, 6),
    "half_sent": (half_sent, 4),
    "never_read": (never_read, 3),
    "fuzz": (fuzz, 10),
}


#: The makers that, for gearmand, must leave out packet types of 2**31 and more.
_GEARMAND_SAFE: dict[str, Callable[[random.Random], Script]] = {
    "bad_type": functools.partial(bad_type, high=False),
    "fuzz": functools.partial(fuzz, high=False),
}


def scripts(
    inputs: int,
    *,
    seed: int = 0,
    kinds: tuple[str, ...] | None = None,
    gearmand_safe: bool = False,
) -> Iterator[Script]:
    """Scripts until they hold at least ``inputs`` packets and lines, in a seeded mix of
    ``kinds`` (default: all of :data:`KINDS`, by weight). ``gearmand_safe`` leaves out the
    packet types that crash gearmand 1.1.20 (2**31 and more), so it can be compared."""
    rng = random.Random(seed)
    names = list(kinds or KINDS)
    makers = [
        _GEARMAND_SAFE[name] if gearmand_safe and name in _GEARMAND_SAFE else KINDS[name][0]
        for name in names
    ]
    weights = [KINDS[name][1] for name in names]
    total = 0
    while total < inputs:
        script = rng.choices(makers, weights)[0](rng)
        total += script.inputs
        yield script


# -- playing them ---------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """What :func:`run_scripts` did, and what the server did to it."""

    connections: int = 0
    inputs: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    server_closed: int = 0  # the server closed (EOF) or reset the connection before we left
    connect_failed: int = 0
    stuck: int = 0  # the server stopped reading and the send did not finish in time
    by_kind: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "inputs": self.inputs,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "server_closed": self.server_closed,
            "connect_failed": self.connect_failed,
            "stuck": self.stuck,
            "by_kind": dict(self.by_kind),
        }


class _Conn:
    __slots__ = ("deadline", "offset", "phase", "script", "sock")

    def __init__(self, sock: socket.socket, script: Script, deadline: float) -> None:
        self.sock = sock
        self.script = script
        self.offset = 0
        self.phase = "connect"  # then "send", then the script's leave
        self.deadline = deadline  # of the current phase (a "read" one moves with each read)


class _Player:
    """The state machine of :func:`run_scripts`: one selector, one :class:`_Conn` each."""

    def __init__(self, address: tuple[str, int], send_timeout: float) -> None:
        self.address = address
        self.send_timeout = send_timeout
        self.tally = Tally()
        self.selector = selectors.DefaultSelector()
        self.live: dict[int, _Conn] = {}  # by fd: connecting, sending, reading or lingering

    def start(self, script: Script) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(0)  # non-blocking
        if sock.connect_ex(self.address) not in (0, errno.EINPROGRESS):
            self.tally.connect_failed += 1
            sock.close()
            return
        conn = _Conn(sock, script, time.monotonic() + self.send_timeout)
        self.live[sock.fileno()] = conn
        self.selector.register(sock, selectors.EVENT_WRITE, conn)
        self.tally.connections += 1
        self.tally.inputs += script.inputs
        self.tally.by_kind[script.kind] += script.inputs

    def finish(self, conn: _Conn, *, server_closed: bool = False) -> None:
        self.live.pop(conn.sock.fileno(), None)
        if conn.phase != "linger":  # a lingering one is no longer in the selector
            self.selector.unregister(conn.sock)
        conn.sock.close()
        self.tally.server_closed += server_closed

    def ready(self, conn: _Conn, now: float) -> None:
        """Its socket is writable (connecting, sending) or readable (reading)."""
        if conn.phase == "connect":
            if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.tally.connect_failed += 1
                self.finish(conn)
                return
            conn.phase = "send"
        try:
            if conn.phase == "send":
                sent = conn.sock.send(conn.script.data[conn.offset : conn.offset + MIB])
                conn.offset += sent
                self.tally.bytes_sent += sent
                if conn.offset >= len(conn.script.data):
                    self.leave(conn, now)
                return
            chunk = conn.sock.recv(MIB)
        except BlockingIOError:
            return
        except OSError:  # reset by the server
            self.finish(conn, server_closed=True)
            return
        if not chunk:
            self.finish(conn, server_closed=True)
            return
        self.tally.bytes_received += len(chunk)
        if conn.phase == "read":
            conn.deadline = now + conn.script.hold

    def leave(self, conn: _Conn, now: float) -> None:
        """Everything is sent: leave as the script says."""
        leave = conn.script.leave
        if leave == "close":
            self.finish(conn)
            return
        if leave == "half_close":
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
        conn.deadline = now + conn.script.hold
        if leave == "linger":
            self.selector.unregister(conn.sock)  # read nothing, just hold
        else:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        conn.phase = leave

    def expire(self, now: float) -> None:
        """Close connections whose phase is over: a send the server did not take in time
        (``stuck``), a hold or a read pause that ended, a half-close the server left open."""
        for conn in [c for c in self.live.values() if now > c.deadline]:
            if conn.phase in ("connect", "send"):
                self.tally.stuck += 1
            self.finish(conn)

    def close(self) -> None:
        for conn in self.live.values():
            conn.sock.close()
        self.live.clear()
        self.selector.close()


def run_scripts(
    address: tuple[str, int],
    source: Iterable[Script],
    *,
    concurrency: int = 100,
    send_timeout: float = 5.0,
    progress: Callable[[Tally], None] | None = None,
    progress_every: float = 1.0,
) -> Tally:
    """Play every script over its own connection, ``concurrency`` at a time, and return the
    tally. A send the server does not take within ``send_timeout`` is given up (``stuck``)."""
    player = _Player(address, send_timeout)
    pending = iter(source)
    exhausted = False
    next_progress = time.monotonic() + progress_every
    try:
        while not exhausted or player.live:
            while not exhausted and len(player.live) < concurrency:
                script = next(pending, None)
                exhausted = script is None
                if script is not None:
                    player.start(script)
            for key, _ in player.selector.select(0.01):
                player.ready(key.data, time.monotonic())
            now = time.monotonic()
            player.expire(now)
            if progress is not None and now >= next_progress:
                progress(player.tally)
                next_progress = now + progress_every
    finally:
        player.close()
    return player.tally


# -- the load test's floods -----------------------------------------------------------------


def _read_packets(buffer: bytearray, counts: Counter[int]) -> None:
    """Count the complete reply packets in ``buffer`` by type, and drop them from it."""
    pos = 0
    while len(buffer) - pos >= HEADER.size:
        _, kind, size = HEADER.unpack_from(buffer, pos)
        if len(buffer) - pos - HEADER.size < size:
            break
        counts[kind] += 1
        pos += HEADER.size + size
    del buffer[:pos]


def _small_buffers(address: tuple[str, int]) -> socket.socket:
    """A connected socket whose receive buffer is small (set before connecting, so the window
    stays small): what a peer that never reads leaves in the kernel is then the server's own
    send buffer, and the rest is up to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def status_flood(address: tuple[str, int], stop: threading.Event, result: dict[str, Any]) -> None:
    """One connection sends ``status`` lines as fast as the server takes them and never reads.

    ``result``: ``lines_sent``, and ``closed_by_server`` if a send failed (the server gave up
    on us)."""
    chunk = b"status\n" * 1024
    sent = 0
    with _small_buffers(address) as sock:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sent += sock.send(chunk)
            except TimeoutError:
                continue  # the server stopped reading us: the point of backpressure
            except OSError:
                result["closed_by_server"] = True
                break
    result["lines_sent"] = sent // 7


def epoch_flood(address: tuple[str, int], stop: threading.Event, result: dict[str, Any]) -> None:
    """SUBMIT_JOB_EPOCH with out-of-range epochs, pipelined (a window of 500), replies read and
    counted by type; a closed connection is opened again.

    ``result``: ``sent``, ``replies`` (packet type -> count), ``reconnects``."""
    counts: Counter[int] = Counter()
    sent = reconnects = 0
    batch = b"".join(
        packet(SUBMIT_JOB_EPOCH, b"flood_epoch", b"", epoch, b"x") for epoch in OUT_OF_RANGE_EPOCHS
    )
    per_batch = len(OUT_OF_RANGE_EPOCHS)
    while not stop.is_set():
        try:
            sock = socket.create_connection(address, timeout=2)
        except OSError:
            time.sleep(0.01)
            continue
        buffer = bytearray()
        answered_before = sum(counts.values())
        sent_here = 0
        with sock:
            sock.settimeout(0.2)
            try:
                while not stop.is_set():
                    if sent_here - (sum(counts.values()) - answered_before) < 500:
                        sock.sendall(batch)
                        sent += per_batch
                        sent_here += per_batch
                        continue
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    buffer += data
                    _read_packets(buffer, counts)
            except OSError:
                pass
        reconnects += 1
    result.update(
        sent=sent, replies={str(k): v for k, v in counts.items()}, reconnects=reconnects - 1
    )


def half_sent_holders(
    address: tuple[str, int],
    count: int,
    size: int,
    stop: threading.Event,
    result: dict[str, Any],
) -> None:
    """``count`` connections each send a header announcing ``size`` bytes and all of the body
    but its last byte, then hold. Sends that the server does not take are retried until
    ``stop``. ``result``: ``opened``, ``fully_sent``, ``closed_by_server`` (EOF, reset or an
    ERROR before we left), ``still_open``."""
    body = HEADER.pack(REQ, ECHO_REQ, size) + b"h" * (size - 1)
    view = memoryview(body)
    selector = selectors.DefaultSelector()
    offsets: dict[socket.socket, int] = {}
    closed = 0
    opened = 0
    for _ in range(count):
        if stop.is_set():
            break
        try:
            sock = _small_buffers(address)
        except OSError:
            continue
        opened += 1
        sock.settimeout(0)  # non-blocking
        offsets[sock] = 0
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    full = 0
    while not stop.is_set() and offsets:
        for key, events in selector.select(0.05):
            sock = key.fileobj  # type: ignore[assignment]
            gone = False
            if events & selectors.EVENT_READ:
                try:
                    sock.recv(65536)  # EOF, or an ERROR reply: either way the server is done
                    gone = True
                except BlockingIOError:
                    pass
                except OSError:
                    gone = True
            if not gone and events & selectors.EVENT_WRITE:
                try:
                    sent = sock.send(view[offsets[sock] : offsets[sock] + MIB])
                    offsets[sock] += sent
                    if offsets[sock] >= len(body):
                        full += 1
                        selector.modify(sock, selectors.EVENT_READ)
                except BlockingIOError:
                    pass
                except OSError:
                    gone = True
            if gone:
                closed += 1
                selector.unregister(sock)
                del offsets[sock]
                sock.close()
    result.update(opened=opened, fully_sent=full, closed_by_server=closed, still_open=len(offsets))
    for sock in offsets:
        sock.close()
    selector.close()


FLOODS = ("status", "epoch", "holders")


def run_load(
    address: tuple[str, int],
    *,
    duration: float,
    holders: int = 1000,
    holder_size: int = MIB,
    floods: tuple[str, ...] = FLOODS,
) -> dict[str, Any]:
    """The load test's ``floods`` (all three by default) at once for ``duration`` seconds;
    a result dict for each."""
    stop = threading.Event()
    results: dict[str, dict[str, Any]] = {name: {} for name in floods}
    targets: dict[str, tuple[Callable[..., None], tuple[Any, ...]]] = {
        "status": (status_flood, (address, stop)),
        "epoch": (epoch_flood, (address, stop)),
        "holders": (half_sent_holders, (address, holders, holder_size, stop)),
    }
    threads = [
        threading.Thread(target=targets[name][0], args=(*targets[name][1], results[name]))
        for name in floods
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(duration)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return results


# -- the healthy client -------------------------------------------------------------------


class HealthyProbe:
    """A healthy client's foreground round trips, timed, in a thread, with our worker in another.

    ``with HealthyProbe(address) as probe: ...``; then ``probe.latencies`` (seconds, one per
    completed job), ``probe.failures`` (repr of each error) and :meth:`percentile`. Imports
    the client lazily so the hostile child process needs only the standard library.
    """

    FUNCTION = "healthy_echo"

    def __init__(self, address: str, *, interval: float = 0.005, timeout: float = 10.0) -> None:
        self.address = address
        self.interval = interval
        self.timeout = timeout
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: Any = None
        self._exit: contextlib.ExitStack | None = None

    def __enter__(self) -> HealthyProbe:
        from django_gearman.gearman import GearmanClient  # noqa: PLC0415 - see the docstring
        from tests.helpers import worker_thread  # noqa: PLC0415 - see the docstring

        self._exit = contextlib.ExitStack()
        self._exit.__enter__()
        self._exit.enter_context(worker_thread(self.address, {self.FUNCTION: lambda job: job.data}))
        self.client = self._exit.enter_context(GearmanClient([self.address], timeout=self.timeout))
        assert self.client.submit(self.FUNCTION, b"warm up") == b"warm up"
        self._thread = threading.Thread(target=self._run, name="healthy-probe", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        payload = b"p" * 100
        clock = time.perf_counter
        while not self._stop.is_set():
            started = clock()
            try:
                reply = self.client.submit(self.FUNCTION, payload)
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                self.failures.append(repr(error))
            else:
                self.latencies.append(clock() - started)
                if reply != payload:
                    self.failures.append(f"wrong reply {reply[:40]!r}")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
            assert not self._thread.is_alive(), "the healthy probe did not stop"
            self._thread = None

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        assert self._exit is not None
        self._exit.__exit__(*exc_info)

    def percentile(self, fraction: float) -> float:
        """The ``fraction`` (0.99) percentile of the latencies, nearest rank; inf if none."""
        if not self.latencies:
            return float("inf")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> str:
        if not self.latencies:
            return f"no round trip completed; {len(self.failures)} failed"
        ms = 1000
        return (
            f"{len(self.latencies)} round trips, p50 {self.percentile(0.5) * ms:.1f} ms, "
            f"p99 {self.percentile(0.99) * ms:.1f} ms, max {max(self.latencies) * ms:.1f} ms, "
            f"{len(self.failures)} failed {self.failures[:3]}"
        )


# -- measuring a server process -----------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` of ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def socket_inodes(pid: int) -> set[int]:
    """Inode numbers of every socket ``pid`` has open (``/proc/PID/fd`` links ``socket:[N]``)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}  # fmt: skip


def _tcp_table(pid: int) -> dict[int, tuple[int, int, str]]:
    """``inode -> (local port, remote port, state)`` of every TCP socket ``pid`` can see."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{name}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
                state = _TCP_STATES.get(fields[3], fields[3])
                table.setdefault(int(fields[9]), (int(local, 16), int(remote, 16), state))
    return table


def socket_census(pid: int, healthy_pid: int | None = None) -> Counter[str]:
    """What ``pid``'s sockets are: ``"listening"``; ``"healthy"`` (connected to a socket of
    ``healthy_pid``, by default this process, which runs the healthy client and worker, even
    after they reconnect); ``"unlisted"`` (in no TCP table: the event loop's own socketpair, or
    a connection reset by its peer that the server has not closed); and for every other (a
    hostile peer's) its TCP state, such as ``"CLOSE_WAIT"``."""
    table = _tcp_table(pid)
    ours = {table[i][0] for i in socket_inodes(healthy_pid or os.getpid()) if i in table}
    census: Counter[str] = Counter()
    for inode in socket_inodes(pid):
        if inode not in table:
            census["unlisted"] += 1
            continue
        _, remote, state = table[inode]
        census["listening" if state == "LISTEN" else "healthy" if remote in ours else state] += 1
    return census


def left_open(census: Counter[str], baseline: Counter[str]) -> int:
    """How many sockets of ``census`` are beyond ``baseline`` (taken before the hostile peers
    came): every one neither listening nor healthy, bar the unlisted ones baseline had."""
    others = sum(n for what, n in census.items() if what not in ("listening", "healthy"))
    return others - min(census["unlisted"], baseline["unlisted"])


def admin_lines(address: tuple[str, int], command: bytes, timeout: float = 30.0) -> list[bytes]:
    """The lines of a multi-line admin reply (``status``, ``show jobs``), up to its ``.``."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(command + b"\n")
        reply = bytearray()
        while not (reply == b".\n" or reply.endswith(b"\n.\n")):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            reply += chunk
    return bytes(reply).split(b"\n")[:-2]


def create_functions(address: tuple[str, int], count: int, prefix: bytes = b"load_fn_") -> None:
    """``create function PREFIX<n>`` ``count`` times over one connection, pipelined."""
    with socket.create_connection(address, timeout=60) as admin:
        admin.sendall(b"".join(b"create function %s%05d\n" % (prefix, n) for n in range(count)))
        answered = 0
        while answered < count:
            chunk = admin.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server closed the connection after {answered} OKs")
            answered += chunk.count(b"OK")


def queued_jobs(address: tuple[str, int]) -> int:
    """Jobs the server's ``status`` counts (queued and running), over every function."""
    total = 0
    for line in admin_lines(address, b"status"):
        fields = line.split(b"\t")
        if len(fields) == 4:
            total += int(fields[1])
    return total


def settle(pid: int, baseline: Counter[str], timeout: float) -> tuple[Counter[str], float]:
    """Wait up to ``timeout`` seconds until ``pid`` has no socket beyond ``baseline`` (see
    :func:`left_open`); return its last :func:`socket_census` and the seconds waited."""
    started = time.monotonic()
    while True:
        census = socket_census(pid)
        elapsed = time.monotonic() - started
        if left_open(census, baseline) <= 0 or elapsed > timeout:
            return census, elapsed
        time.sleep(0.1)


class RssSampler:
    """Samples ``pid``'s RSS every ``interval`` seconds in a thread while in its ``with`` block:
    ``.peak`` (bytes) and ``.samples`` (``(monotonic time, bytes)``)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):  # the server may have died
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)


def run_child(
    args: list[str], *, timeout: float, nice: int = 10, root: str | None = None
) -> dict[str, Any]:
    """Run ``python -m tests.hostile ARGS`` at niceness ``nice`` (so the healthy client being
    timed gets the CPU first) and return its JSON result. Killed after ``timeout`` seconds."""
    import subprocess  # noqa: PLC0415 - the child process itself never needs it

    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "tests.hostile", *args, "--nice", str(nice)]
    try:
        done = subprocess.run(
            command, cwd=root, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(f"{' '.join(args)} did not end within {timeout:.0f} s") from error
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the child process --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    soak = sub.add_parser("soak", help="play hostile scripts over many short connections")
    soak.add_argument("port", type=int)
    soak.add_argument("--inputs", type=int, default=20_000)
    soak.add_argument("--seed", type=int, default=0)
    soak.add_argument("--concurrency", type=int, default=100)
    soak.add_argument("--kinds", default="", help="comma-separated kinds (default: all)")
    soak.add_argument("--progress", action="store_true", help="a JSON line on stderr per second")
    soak.add_argument(
        "--gearmand-safe", action="store_true", help="no packet types that crash gearmand"
    )
    load = sub.add_parser("load", help="the load test's three floods at once")
    load.add_argument("port", type=int)
    load.add_argument("--duration", type=float, default=8.0)
    load.add_argument("--holders", type=int, default=1000)
    load.add_argument("--holder-size", type=int, default=MIB)
    load.add_argument("--floods", default=",".join(FLOODS), help="comma-separated floods")
    for each in (soak, load):
        each.add_argument("--nice", type=int, default=0, help="lower our own priority first")
    options = parser.parse_args(argv)
    if options.nice:
        os.nice(options.nice)
    address = (HOST, options.port)
    started = time.monotonic()
    if options.what == "soak":
        kinds = tuple(k for k in options.kinds.split(",") if k) or None

        def progress(tally: Tally) -> None:
            line = {"progress": tally.inputs, "connections": tally.connections}
            print(json.dumps(line), file=sys.stderr, flush=True)

        tally = run_scripts(
            address,
            scripts(
                options.inputs,
                seed=options.seed,
                kinds=kinds,
                gearmand_safe=options.gearmand_safe,
            ),
            concurrency=options.concurrency,
            progress=progress if options.progress else None,
        )
        result: dict[str, Any] = tally.as_dict()
    else:
        result = run_load(
            address,
            duration=options.duration,
            holders=options.holders,
            holder_size=options.holder_size,
            floods=tuple(f for f in options.floods.split(",") if f),
        )
    result["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
