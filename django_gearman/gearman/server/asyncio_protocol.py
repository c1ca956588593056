"""The server's connections on asyncio: :class:`ServerProtocol` feeds a
:class:`~.connection.ServerConnection` from its transport and writes its replies.

Flow control: a connection is handled a bounded number of frames at a time, and stops as soon
as it has more unsent output than ``OUTPUT_HIGH_WATER``; its reading is paused until the
transport has written that out (asyncio's ``pause_writing``/``resume_writing``), so a client
that sends requests but never reads its replies stalls only itself. Output others produce for
a client that does not read (WORK_DATA, NOOP) is capped by the server's ``max_output_bytes``:
past it, that client is dropped.

A peer dropped for a protocol error gets the replies it is owed, then (a client) an ERROR
packet, and is closed; one that never reads is aborted ``CLOSE_DEADLINE`` seconds later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ..errors import RemoteProtocolError
from .connection import ServerConnection, ServerHost

__all__ = ["CLOSE_DEADLINE", "ListeningHost", "ServerProtocol"]

logger = logging.getLogger("django_gearman.server")

#: Seconds a connection closed for a protocol error may take to write its last replies.
CLOSE_DEADLINE = 5.0


class ListeningHost(ServerHost, Protocol):
    """A host that listens on a socket, and so keeps its live connections (the GearmanServer)."""

    connections: set[Any]
    max_output_bytes: int  # output waiting for one client that does not read (0: no limit)

    def admit(self, host: str, count: int) -> str | None: ...

    def is_admin(self, host: str) -> bool: ...


class ServerProtocol(ServerConnection, asyncio.Protocol):
    """A :class:`ServerConnection` on an asyncio transport (the server's connections), with
    flow control: see the module docstring."""

    def __init__(self, server: ListeningHost) -> None:
        super().__init__(server)
        self.host = server
        self.connections = server.connections  # the server's, to join and leave
        self.transport: asyncio.Transport | None = None
        self.reading_paused = False
        self.writing_paused = False  # the transport's buffer is over its high-water mark
        self.write_blocked_since = 0  # state.stamp when writing paused (0: it is not)
        self.blocked_size = 0  # the transport's buffered bytes when last looked at, paused
        self.resume_scheduled = False
        self.closing: bytes | None = None  # the ERROR to send once held output is written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        peername = transport.get_extra_info("peername")
        host = peername[0] if peername else "-"
        refusal = self.host.admit(host, len(self.connections))
        if refusal is not None:
            self.live = False
            self.peer.closed = True  # never joined the state: nothing to undo
            transport.close()
            return
        self.peer.admin = self.host.is_admin(host)
        self.opened(sock.fileno() if sock is not None else -1, host)
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed()
        self.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.state.stamp
        try:
            self.take(data)
            if self.process():
                self._backlogged()
        except RemoteProtocolError as error:
            self._protocol_error(error)

    def _backlogged(self) -> None:
        """Frames are left: stop reading until they are handled, and handle them on a later
        loop turn (after this turn's output is written), unless the transport is full."""
        if not self.reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        if not self.writing_paused and not self.resume_scheduled:
            self.resume_scheduled = True
            asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self.resume_scheduled = False
        if not self.live or self.transport is None or self.writing_paused:
            return  # resume_writing() comes back here
        try:
            if self.process():
                self._backlogged()
                return
        except RemoteProtocolError as error:
            self._protocol_error(error)
            return
        if self.reading_paused and self.live:
            self.reading_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.write_blocked_since = self.state.stamp
        self.blocked_size = self.transport.get_write_buffer_size() if self.transport else 0
        if not self.reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.write_blocked_since = 0
        if not self.resume_scheduled:
            self.resume_scheduled = True
            asyncio.get_running_loop().call_soon(self._resume)

    def flush(self) -> None:
        """Write the pending replies, unless they wait for a commit (see :attr:`held`)."""
        data = self.data_to_send()
        transport = self.transport
        if transport is None:
            return
        if data:
            transport.write(data)
            if self.writing_paused:
                limit = self.host.max_output_bytes
                if limit and transport.get_write_buffer_size() > limit:
                    logger.warning(
                        "dropping %s: it does not read, and %d bytes of output wait for it "
                        "(--max-output-bytes %d)",
                        self.peer.host,
                        transport.get_write_buffer_size(),
                        limit,
                    )
                    transport.abort()
                    return
        if self.closing is not None and not self.held:
            transport.write(self.closing)
            transport.close()
            self.closing = None
            # close() waits for the output to be written: a peer that never reads would keep
            # the socket for ever, so it is aborted if still there after CLOSE_DEADLINE.
            asyncio.get_running_loop().call_later(CLOSE_DEADLINE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        """Drop a peer that broke the protocol, after the replies it is owed. A client gets an
        ERROR packet first; a worker (it registered functions) does not, because workers
        pipeline GRAB_JOB after each result and would read the ERROR as that reply (Perl's
        Gearman::Worker then dies): closed silently, it reconnects."""
        transport = self.transport
        self.live = False
        if transport is None:
            return
        worker = bool(self.peer.abilities)
        logger.warning(
            "closing %s%s: %s",
            self.peer.host,
            " (a worker, without an ERROR)" if worker else "",
            error,
        )
        self.closing = b"" if worker else self.error_packet(error)
        if self.reading_paused is False:
            transport.pause_reading()
            self.reading_paused = True
        self.flush()
