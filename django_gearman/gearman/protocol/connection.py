"""What every conversation shares: frames in, bytes out, and the ERROR state after a fault.

A conversation is one end of one Gearman connection, with no I/O of its own (h11's and h2's
design): the caller feeds it the bytes it read with ``receive_data(data)``, gets events back,
calls methods that queue requests, and writes whatever ``data_to_send()`` returns. The roles are
:class:`~.client.ClientConnection`, :class:`~.client.AdminConnection` and
:class:`~.worker.WorkerConnection`. After a :class:`RemoteProtocolError` the conversation is in
the ``ERROR`` state and refuses further use: the caller closes the socket and starts a new one.
"""

from __future__ import annotations

from enum import Enum

from ..errors import LocalProtocolError, RemoteProtocolError
from .buffer import DEFAULT_MAX_LINE_SIZE, Frame, PacketBuffer
from .constants import DEFAULT_MAX_PACKET_SIZE, RES

__all__ = ["ConnectionState", "Conversation"]


class ConnectionState(Enum):
    """``OPEN`` while the byte stream makes sense; ``ERROR`` for good after a protocol error."""

    OPEN = "open"
    ERROR = "error"


class Conversation:
    """The base of the role classes: a :class:`PacketBuffer` in, a list of byte strings out."""

    __slots__ = ("_buffer", "_out", "state")

    #: The role's name, for messages ("a worker does not expect ...").
    role = "peer"
    #: What the role receives (checked by :class:`PacketBuffer`): binary responses, by default.
    receives_magic: bytes | None = RES
    receives_text = False
    receives_binary = True

    def __init__(
        self,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
    ) -> None:
        self.state = ConnectionState.OPEN
        self._buffer = PacketBuffer(
            max_packet_size=max_packet_size,
            max_line_size=max_line_size,
            magic=self.receives_magic,
            text=self.receives_text,
            binary=self.receives_binary,
        )
        self._out: list[bytes] = []

    def data_to_send(self) -> bytes:
        """Everything queued since the last call; the caller writes it to the wire."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def _queue(self, data: bytes) -> None:
        self._check_open()
        self._out.append(data)

    def _check_open(self) -> None:
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(
                f"this {self.role} connection is in the ERROR state after a protocol error"
            )

    def _frames(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes; a framing error puts the conversation in ERROR."""
        self._check_open()
        try:
            return self._buffer.feed(data)
        except RemoteProtocolError:
            self.state = ConnectionState.ERROR
            raise

    def _broken(self, message: str, code: str = "INVALID_COMMAND") -> RemoteProtocolError:
        """Enter ERROR and return the error to raise: the peer said something out of turn."""
        self.state = ConnectionState.ERROR
        return RemoteProtocolError(message, code)
