"""Blocking sockets carrying a sans-I/O conversation, and job server addresses.

The only module of the client, worker and admin client that touches sockets: connect with a
timeout, write what the conversation queued, read and hand the bytes to the conversation.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from .errors import ServerTimeout, ServerUnavailable, UsageError
from .protocol import DEFAULT_PORT

__all__ = ["ServerAddress", "Transport", "parse_server", "parse_servers", "remaining"]

_RECV_SIZE = 64 * 1024  # below glibc's mmap threshold: a larger recv buffer costs an mmap per call


class ServerAddress(NamedTuple):
    """A job server's host and port; ``str()`` gives ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(spec: str | tuple[str, int] | ServerAddress) -> ServerAddress:
    """Parse ``"host"``, ``"host:port"`` or ``"[v6]:port"``; the port defaults to 4730."""
    if isinstance(spec, tuple):
        return ServerAddress(str(spec[0]), int(spec[1]))
    text = spec.strip()
    if text.startswith("gearman://"):
        text = text[len("gearman://") :].rstrip("/")
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"invalid server {spec!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"invalid server {spec!r}")
            port = _port(rest[1:], spec)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, spec)
    if not host:
        raise UsageError(f"invalid server {spec!r}: empty host")
    return ServerAddress(host, port)


def _port(text: str, spec: object) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid port in server {spec!r}: expected 1-65535")
    return int(text)


ServerSpec = str | tuple[str, int] | ServerAddress


def parse_servers(servers: ServerSpec | Sequence[ServerSpec]) -> list[ServerAddress]:
    """Parse one server or a list; a string may hold several, separated by commas."""
    specs: Sequence[ServerSpec]
    if isinstance(servers, tuple) and len(servers) == 2 and isinstance(servers[1], int):
        specs = [(str(servers[0]), servers[1])]  # one (host, port), a ServerAddress too
    elif isinstance(servers, str):
        specs = [part for part in servers.split(",") if part.strip()]
    else:
        specs = servers  # a sequence of specs
    result = [parse_server(spec) for spec in specs]
    if not result:
        raise UsageError("no Gearman servers given")
    return result


class _Conversation(Protocol):
    def receive_data(self, data: bytes) -> list[Any]: ...

    def data_to_send(self) -> bytes: ...


C = TypeVar("C", bound=_Conversation)


class Transport(Generic[C]):
    """A (re)connectable blocking socket and the conversation of its current connection.

    ``new_conversation`` makes the conversation for each fresh connection (a
    :class:`~.protocol.ClientConnection`, :class:`~.protocol.WorkerConnection` or
    :class:`~.protocol.AdminConnection`); after a reconnect, nothing of the old one is left.
    """

    __slots__ = ("address", "conn", "new_conversation", "sock")

    def __init__(self, address: ServerAddress, new_conversation: Callable[[], C]) -> None:
        self.address = address
        self.new_conversation = new_conversation
        self.sock: socket.socket | None = None
        self.conn: C = new_conversation()

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self, timeout: float) -> None:
        """Open a fresh connection (with a fresh conversation); raises ``OSError``."""
        self.close()
        sock = socket.create_connection(self.address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.conn = self.new_conversation()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def flush(self) -> None:
        """Write everything the conversation has queued; raises ``OSError``."""
        data = self.conn.data_to_send()
        if data:
            assert self.sock is not None, "flush() on a closed transport"
            self.sock.sendall(data)

    def read(self, timeout: float | None) -> list[Any]:
        """Block up to ``timeout`` seconds for data; return the conversation's events for it
        (maybe none yet).

        Raises :class:`ServerTimeout` (a ``TimeoutError``) when nothing arrives in time,
        :class:`ServerUnavailable` (a ``ConnectionError``) when the peer closed,
        ``RemoteProtocolError`` when it sent garbage.
        """
        sock = self.sock
        assert sock is not None, "read() on a closed transport"
        sock.settimeout(timeout)
        try:
            data = sock.recv(_RECV_SIZE)
        except (TimeoutError, BlockingIOError):
            raise ServerTimeout(
                f"no reply from {self.address} within {timeout or 0:.3g}s"
            ) from None
        if not data:
            raise ServerUnavailable({str(self.address): "closed the connection"})
        return self.conn.receive_data(data)


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (a ``time.monotonic()`` value), never negative."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
