"""The Gearman protocol with no I/O: packets, admin text, framing, and connections.

Standard library only: no sockets, no asyncio, no Django. The client, the worker and the
server all share this one codec.
"""

from __future__ import annotations

from .admin import (
    AdminError,
    AdminReply,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    QueuedJob,
    WorkerInfo,
)
from .buffer import Frame, PacketBuffer, TextLine
from .connection import Connection, ConnectionState, Role
from .constants import (
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_PORT,
    MAX_HANDLE_SIZE,
    MAX_UNIQUE_SIZE,
    REQ,
    RES,
    PacketType,
    Priority,
)
from .errors import LocalProtocolError, PacketTooLarge, ProtocolError, RemoteProtocolError
from .packets import ARG_SPEC, Packet, decode_body, encode, encode_packet

__all__ = [
    "ARG_SPEC",
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_PORT",
    "MAX_HANDLE_SIZE",
    "MAX_UNIQUE_SIZE",
    "REQ",
    "RES",
    "AdminError",
    "AdminReply",
    "Connection",
    "ConnectionState",
    "Frame",
    "FunctionStatus",
    "JobInfo",
    "LocalProtocolError",
    "Packet",
    "PacketBuffer",
    "PacketTooLarge",
    "PacketType",
    "Priority",
    "PriorityStatus",
    "QueuedJob",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "TextLine",
    "WorkerInfo",
    "decode_body",
    "encode",
    "encode_packet",
]
