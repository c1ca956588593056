"""Blocking sockets carrying a sans-I/O conversation, and job server addresses.

The only module of the client, worker and admin client that touches sockets: connect with a
timeout (and a TLS handshake, for a ``gearmans://`` address), write what the conversation
queued, read and hand the bytes to the conversation.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar
from urllib.parse import parse_qsl

from .errors import ServerTimeout, ServerUnavailable, UsageError
from .protocol import DEFAULT_PORT
from .tls import ClientTLS, client_context

__all__ = ["ServerAddress", "Transport", "parse_server", "parse_servers", "remaining"]

#: What OpenSSL says when the server's bytes are not TLS: a plain Gearman server answers the
#: handshake with a packet (ours: ERROR) or hangs up on it (gearmand: "invalid magic value").
_NOT_TLS = {"WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING"}
#: Seconds a write may wait for the server to take any of it before the connection counts as
#: lost (per send, so a large payload on a slow link is fine while it moves).
WRITE_STALL = 60.0
_RECV_SIZE = 64 * 1024  # below glibc's mmap threshold: a larger recv buffer costs an mmap per call


class ServerAddress(NamedTuple):
    """A job server's host and port, and how to speak TLS to it (None: plain TCP).

    ``str()`` gives ``host:port``, or for TLS ``gearmans://host:port`` with the options as a
    query, which :func:`parse_server` reads back into the same address.
    """

    host: str
    port: int
    tls: ClientTLS | None = None

    def __str__(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.tls is None:
            return where
        query = self.tls.query()
        return f"gearmans://{where}?{query}" if query else f"gearmans://{where}"


_SCHEMES = {"gearman": False, "gearmans": True}


def parse_server(spec: str | tuple[str, int] | ServerAddress) -> ServerAddress:
    """Parse ``"host"``, ``"host:port"`` or ``"[v6]:port"``; the port defaults to 4730.

    ``gearman://`` may come first; ``gearmans://`` means TLS, with :class:`ClientTLS` options
    in the query (``gearmans://host:4730?ssl_ca=/etc/gearman/ca.pem``).
    """
    if isinstance(spec, ServerAddress):
        return spec
    if isinstance(spec, tuple):
        return ServerAddress(str(spec[0]), int(spec[1]))
    text = spec.strip()
    tls: ClientTLS | None = None
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in _SCHEMES:
            raise UsageError(
                f"invalid server {spec!r}: the scheme must be gearman:// or gearmans:// (TLS)"
            )
        text, _, query = rest.partition("?")
        text = text.rstrip("/")
        if _SCHEMES[scheme.lower()]:
            try:
                tls = ClientTLS.from_query(parse_qsl(query, keep_blank_values=True))
            except UsageError as error:
                raise UsageError(f"invalid server {spec!r}: {error}") from None
        elif query:
            raise _no_query(spec, query)
    elif "?" in text:
        raise _no_query(spec, text.partition("?")[2])
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
    return ServerAddress(host, port, tls)


def _no_query(spec: object, query: str) -> UsageError:
    if "ssl_" in query:
        return UsageError(f"invalid server {spec!r}: TLS parameters need the gearmans:// scheme")
    return UsageError(f"invalid server {spec!r}: a plain TCP address takes no parameters")


def _port(text: str, spec: object) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid port in server {spec!r}: expected 1-65535")
    return int(text)


ServerSpec = str | tuple[str, int] | ServerAddress


def parse_servers(servers: ServerSpec | Sequence[ServerSpec]) -> list[ServerAddress]:
    """Parse one server or a list; a string may hold several, separated by commas.

    In such a string, the first server's scheme goes for the others that have none, and a
    query at the end for all of them: ``gearmans://h1:4730,h2:4730?ssl_ca=ca.pem`` is two TLS
    servers verified against ``ca.pem``.
    """
    specs: Sequence[ServerSpec]
    if isinstance(servers, ServerAddress):
        specs = [servers]
    elif isinstance(servers, tuple) and len(servers) == 2 and isinstance(servers[1], int):
        specs = [(str(servers[0]), servers[1])]  # one (host, port)
    elif isinstance(servers, str):
        specs = _split_list(servers)
    else:
        specs = servers  # a sequence of specs
    result = [parse_server(spec) for spec in specs]
    if not result:
        raise UsageError("no Gearman servers given")
    return result


def _split_list(text: str) -> list[str]:
    head, sep, query = text.strip().partition("?")
    parts = [part.strip() for part in head.split(",") if part.strip()]
    if not parts:
        return []
    scheme, has_scheme, _ = parts[0].partition("://")
    if has_scheme:
        parts = [part if "://" in part else f"{scheme}://{part}" for part in parts]
    if sep:
        parts = [f"{part}?{query}" for part in parts]
    return parts


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

    __slots__ = ("_tls_quiet", "address", "conn", "new_conversation", "sock")

    def __init__(self, address: ServerAddress, new_conversation: Callable[[], C]) -> None:
        self.address = address
        self.new_conversation = new_conversation
        self.sock: socket.socket | None = None
        self.conn: C = new_conversation()
        self._tls_quiet = False  # a TLS connection that has not received a byte yet

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self, timeout: float) -> None:
        """Open a fresh connection (with a fresh conversation).

        Raises ``OSError`` when the server cannot be reached, or the TLS handshake fails within
        ``timeout``: ``ssl.SSLError`` (an ``OSError``) for a certificate that does not verify,
        :class:`ServerUnavailable` (a ``ConnectionError``) when the server does not speak TLS.
        :class:`UsageError` when the address's TLS files cannot be used (no reconnect would
        help).
        """
        self.close()
        host, port, tls = self.address
        context = client_context(tls) if tls is not None else None
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                assert tls is not None
                # The handshake runs here, each step bounded by the socket's timeout.
                sock = context.wrap_socket(sock, server_hostname=tls.server_hostname or host)
        except (ssl.SSLError, ConnectionResetError) as error:
            sock.close()
            reason = getattr(error, "reason", None)
            eof = isinstance(error, (ssl.SSLEOFError, ConnectionResetError))
            if not eof and reason not in _NOT_TLS:
                raise  # e.g. SSLCertVerificationError: its message says what did not verify
            what = (
                "closed the connection during the TLS handshake"
                if eof or reason != "WRONG_VERSION_NUMBER"
                else "answered the TLS handshake in plain text"
            )
            raise ServerUnavailable(
                {str(self.address): f"{what}: does that port speak TLS?"}
            ) from error
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._tls_quiet = context is not None
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
        """Write everything the conversation has queued; raises ``OSError`` (``TimeoutError``
        when the server takes nothing for ``WRITE_STALL`` seconds)."""
        data = self.conn.data_to_send()
        if not data:
            return
        sock = self.sock
        assert sock is not None, "flush() on a closed transport"
        # Block while the server reads, whatever timeout the last read() left (a worker reads
        # with 0 after poll(): a large result would otherwise fail with BlockingIOError, or
        # SSLWantWriteError, as soon as the socket's buffer is full).
        sock.settimeout(WRITE_STALL)
        try:
            if len(data) <= _RECV_SIZE:
                sock.sendall(data)  # one send() in practice
                return
            view = memoryview(data)
            while view:  # each send() may wait WRITE_STALL for room; sendall()'s bound is total
                view = view[sock.send(view) :]
        except (BrokenPipeError, ConnectionResetError) as error:
            if self._tls_quiet:
                raise self._refused() from error
            raise

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
            # TLS: decrypted bytes may wait in the SSL object, where poll() cannot see them.
            while data and type(sock) is ssl.SSLSocket and sock.pending():
                data += sock.recv(_RECV_SIZE)
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            # Non-blocking TLS: what arrived was not a whole record yet (or was a session
            # ticket): as if nothing had come.
            raise ServerTimeout(
                f"no reply from {self.address} within {timeout or 0:.3g}s"
            ) from None
        except (ConnectionResetError, ssl.SSLError) as error:
            if self._tls_quiet:
                raise self._refused(getattr(error, "reason", None)) from error
            raise
        if not data:
            if self._tls_quiet:
                raise self._refused()
            raise ServerUnavailable({str(self.address): "closed the connection"})
        self._tls_quiet = False
        return self.conn.receive_data(data)

    def _refused(self, reason: str | None = None) -> ServerUnavailable:
        # TLS 1.3 lets the client finish its handshake before the server checks the client's
        # certificate: a refused one shows as a connection lost before the first byte.
        alert = f"; {reason}" if reason else ""
        return ServerUnavailable(
            {
                str(self.address): "closed the connection right after the TLS handshake (it "
                f"may require a client certificate, ssl_cert=, or refuse this one{alert})"
            }
        )


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (a ``time.monotonic()`` value), never negative."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
