"""A client that sends requests but never reads its replies is dropped after ``--stall-timeout``
(#14, finding 6 and the close that waited for ever on a peer that never reads).

Reading from such a client is paused as soon as its unread replies fill the socket, so its
later requests (a malformed packet among them) are never reached and ``last_seen`` stops
moving: only the time its output has not drained tells it apart from an idle client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from django_gearman.gearman.protocol.constants import REQ, PacketType
from django_gearman.gearman.protocol.packets import encode
from tests.helpers import wait_for
from tests.peers import EmbeddedServer, admin_command

ECHO = encode(REQ, PacketType.ECHO_REQ, [b"x" * 1024 * 1024])  # 1 MiB back for each


def _hog(address: str, name: bytes, tail: bytes = b"", *, rcvbuf: int = 4096) -> socket.socket:
    """A connection named ``name`` (``workers`` shows it) that asks for 64 MiB and reads none."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.sendall(encode(REQ, PacketType.SET_CLIENT_ID, [name]))
    sock.settimeout(0.5)  # short: the stall timeout runs from the first blocked write
    sent = 0
    try:  # the server stops reading once the replies fill the socket: send what it takes
        for _ in range(64):
            sock.sendall(ECHO)
            sent += 1
        sock.sendall(tail)
    except (TimeoutError, OSError):
        pass
    assert sent >= 4, "the server read too little to fill the socket"
    return sock


def _listed(address: str, name: bytes) -> bool:
    return name in admin_command(address, "workers")


@pytest.mark.parametrize("tail", [b"", b"\0REQ\xff\xff\xff\xff\0\0\0\0"], ids=["echo", "malformed"])
def test_a_client_that_never_reads_is_dropped_after_the_stall_timeout(tail: bytes) -> None:
    server = EmbeddedServer(extra_args=["--stall-timeout", "2", "--log-level", "INFO"])
    server.start()
    try:
        hog = _hog(server.address, b"hog", tail)
        try:
            assert _listed(server.address, b"hog")
            # Everyone else is served meanwhile.
            assert admin_command(server.address, "version").startswith(b"OK")
            wait_for(lambda: not _listed(server.address, b"hog"), timeout=15, what="the drop")
            assert admin_command(server.address, "version").startswith(b"OK")
            # The server aborted it: reading now ends in EOF or a reset, well short of 64 MiB.
            got = 0
            try:
                while chunk := hog.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            assert got < 64 * 1024 * 1024
        finally:
            hog.close()
        assert "it has read none of its output" in server.log_tail(200)
    finally:
        server.stop()


def test_a_slow_reader_is_not_dropped() -> None:
    """A client that reads, however slowly, keeps its connection: with a stall timeout of 2 s it
    keeps asking for 1 MiB echoes for 6 s while reading at most 256 KiB every 0.1 s (a much
    slower reader can show no progress for a while: the kernel wakes the server's writes only
    once a third of the socket's send buffer is free)."""
    server = EmbeddedServer(extra_args=["--stall-timeout", "2"])
    server.start()
    try:
        slow = _hog(server.address, b"slow", rcvbuf=256 * 1024)
        slow.settimeout(None)

        def keep_asking() -> None:
            with contextlib.suppress(OSError):  # ends when the socket is closed
                while True:
                    slow.sendall(ECHO)

        asker = threading.Thread(target=keep_asking, daemon=True)
        asker.start()
        try:
            got = 0
            slow.settimeout(5)
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                got += len(slow.recv(256 * 1024))  # a reset here fails the test
                time.sleep(0.1)
            assert _listed(server.address, b"slow")
            assert got > 4 * 1024 * 1024  # it was served all along, not just at the start
        finally:
            slow.shutdown(socket.SHUT_RDWR)
            slow.close()
            asker.join(10)
    finally:
        server.stop()
