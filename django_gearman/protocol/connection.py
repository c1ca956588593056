"""A sans-I/O Gearman connection: bytes in, frames out; frames in, bytes out.

``Connection(role)`` knows which packets its role may send and receive (the tables below) and
nothing about sockets: the blocking client and worker and the asyncio server all drive the same
object with ``receive_data(data) -> list[Frame]`` and ``send(...)`` / ``data_to_send()``.
After a protocol error the connection is in the ``ERROR`` state and refuses further use.
"""

from __future__ import annotations

from enum import Enum

from .admin import command_line
from .buffer import DEFAULT_MAX_LINE_SIZE, Frame, PacketBuffer, TextLine
from .constants import DEFAULT_MAX_PACKET_SIZE, REQ, RES, PacketType
from .errors import LocalProtocolError, RemoteProtocolError
from .packets import Packet, _validated, encode, error_packet

__all__ = ["RECEIVES", "SENDS", "Connection", "ConnectionState", "Role"]

T = PacketType


class Role(Enum):
    """Which side of the protocol this end plays."""

    CLIENT = "client"
    WORKER = "worker"
    SERVER = "server"


class ConnectionState(Enum):
    OPEN = "open"
    ERROR = "error"


_ANY_SIDE = {T.ECHO_REQ, T.OPTION_REQ, T.SET_CLIENT_ID}
_CLIENT_REQUESTS = _ANY_SIDE | {
    T.SUBMIT_JOB, T.SUBMIT_JOB_BG, T.SUBMIT_JOB_HIGH, T.SUBMIT_JOB_HIGH_BG, T.SUBMIT_JOB_LOW,
    T.SUBMIT_JOB_LOW_BG, T.SUBMIT_JOB_SCHED, T.SUBMIT_JOB_EPOCH, T.SUBMIT_REDUCE_JOB,
    T.SUBMIT_REDUCE_JOB_BACKGROUND, T.GET_STATUS, T.GET_STATUS_UNIQUE,
}  # fmt: skip
_WORKER_REQUESTS = _ANY_SIDE | {
    T.CAN_DO, T.CANT_DO, T.RESET_ABILITIES, T.PRE_SLEEP, T.GRAB_JOB, T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL,
    T.WORK_STATUS, T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION, T.WORK_DATA, T.WORK_WARNING,
    T.CAN_DO_TIMEOUT, T.ALL_YOURS,
}  # fmt: skip
_ANY_RESPONSE = {T.ECHO_RES, T.ERROR, T.OPTION_RES}
_CLIENT_RESPONSES = _ANY_RESPONSE | {
    T.JOB_CREATED, T.WORK_STATUS, T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION, T.WORK_DATA,
    T.WORK_WARNING, T.STATUS_RES, T.STATUS_RES_UNIQUE,
}  # fmt: skip
_WORKER_RESPONSES = _ANY_RESPONSE | {T.NOOP, T.NO_JOB, T.JOB_ASSIGN, T.JOB_ASSIGN_UNIQ, T.JOB_ASSIGN_ALL}

#: What each role may send: (magic, type) pairs. A connection used as both client and
#: worker (gearmand allows it) takes Role.WORKER's table plus the client's: see ``Role.CLIENT``.
SENDS: dict[Role, frozenset[tuple[bytes, PacketType]]] = {
    Role.CLIENT: frozenset((REQ, t) for t in _CLIENT_REQUESTS),
    Role.WORKER: frozenset((REQ, t) for t in _WORKER_REQUESTS),
    Role.SERVER: frozenset((RES, t) for t in _CLIENT_RESPONSES | _WORKER_RESPONSES),
}
#: What each role may receive. A server receives every request type (it answers the ones it
#: does not implement with an ERROR packet, as gearmand does), including types 5 and 24.
RECEIVES: dict[Role, frozenset[tuple[bytes, PacketType]]] = {
    Role.CLIENT: frozenset((RES, t) for t in _CLIENT_RESPONSES),
    Role.WORKER: frozenset((RES, t) for t in _WORKER_RESPONSES),
    Role.SERVER: frozenset((REQ, t) for t in PacketType),
}


class Connection:
    """One end of a Gearman connection, with no I/O of its own."""

    __slots__ = ("_buffer", "_outgoing", "_receives", "_sends", "role", "state")

    def __init__(
        self,
        role: Role,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
    ) -> None:
        self.role = role
        self.state = ConnectionState.OPEN
        self._buffer = PacketBuffer(max_packet_size=max_packet_size, max_line_size=max_line_size)
        self._outgoing: list[bytes] = []
        self._sends = SENDS[role]
        self._receives = RECEIVES[role]

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Frame]:
        """Feed received bytes; return the frames they complete.

        Raises ``RemoteProtocolError`` (and enters ``ERROR``) if the peer broke the protocol,
        including a packet this role should never receive.
        """
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError("connection is in the ERROR state after a protocol error")
        try:
            frames = self._buffer.feed(data)
            receives = self._receives
            for frame in frames:
                if len(frame) == 3 and (frame[0], frame[1]) not in receives:  # a Packet
                    raise RemoteProtocolError(
                        f"a {self.role.value} does not expect {frame[1].name} with magic {frame[0]!r}",
                        "INVALID_MAGIC" if frame[0] != (REQ if self.role is Role.SERVER else RES) else "INVALID_COMMAND",
                    )
                if type(frame) is TextLine and self.role is Role.WORKER:
                    raise RemoteProtocolError(f"a worker does not expect text lines, got {frame.line[:40]!r}")
        except RemoteProtocolError:
            self.state = ConnectionState.ERROR
            raise
        return frames

    # -- sending ----------------------------------------------------------------------------

    def send(self, type: PacketType, *args: bytes) -> None:
        """Queue a packet (validated against this role and ``ARG_SPEC``)."""
        magic = RES if self.role is Role.SERVER else REQ
        self.send_packet(_validated(magic, type, args))

    def send_packet(self, packet: Packet) -> None:
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError("connection is in the ERROR state after a protocol error")
        if (packet.magic, packet.type) not in self._sends:
            raise LocalProtocolError(f"a {self.role.value} may not send {packet.type.name} with magic {packet.magic!r}")
        self._outgoing.append(encode(packet.magic, packet.type, packet.args))

    def send_unchecked(self, type: int, *args: bytes) -> None:
        """Queue a packet without validation: for hot paths whose arguments are known good."""
        self._outgoing.append(encode(RES if self.role is Role.SERVER else REQ, type, args))

    def send_admin(self, command: str, *args: str) -> None:
        """Queue a text admin command (clients only)."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client sends admin commands")
        self._outgoing.append(command_line(command, *args))

    def send_text(self, data: bytes) -> None:
        """Queue a text admin reply (servers only); ``data`` is already formatted."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only a server sends admin replies")
        self._outgoing.append(data)

    def data_to_send(self) -> bytes:
        """Everything queued since the last call; the caller writes it to the wire."""
        if not self._outgoing:
            return b""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def error_packet(self, error: RemoteProtocolError) -> bytes:
        """The ERROR packet a server sends a peer that broke the protocol, before closing."""
        return error_packet(error)
