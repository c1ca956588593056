"""The Gearman protocol with no I/O: packets, framing, admin text, and the conversations.

Standard library only (plus the package's error tree): no sockets, no asyncio, no Django. The
blocking client, worker and admin client are loops over the conversations here
(:class:`ClientConnection`, :class:`WorkerConnection`, :class:`AdminConnection`); the asyncio
server frames with the same :class:`PacketBuffer` and formats admin replies with :mod:`.text`.

- ``constants``: magic, packet types, priorities, limits;
- ``packets``: the argument table, ``Packet``, encode/decode;
- ``buffer``: bytes in, packets and text lines out;
- ``text``: admin commands, reply framing, typed rows, gearmand's exact formats;
- ``events``: what the conversations return;
- ``connection``, ``client``, ``worker``: the conversations.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, PacketTooLarge, ProtocolError, RemoteProtocolError
from .buffer import Frame, PacketBuffer, TextLine
from .client import AdminConnection, ClientConnection, encode_submit
from .connection import ConnectionState
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
from .events import (
    EchoReply,
    ErrorReceived,
    JobAssigned,
    JobCreated,
    JobEnded,
    JobStatus,
    JobUpdate,
    OptionAccepted,
    Outcome,
    RequestRefused,
    StatusReply,
    WentToSleep,
    Woken,
    WorkComplete,
    WorkData,
    WorkEvent,
    WorkStatus,
    WorkWarning,
)
from .packets import ARG_SPEC, Packet, decode_body, encode, encode_packet
from .text import AdminReply, FunctionStatus, JobInfo, PriorityStatus, QueuedJob, WorkerInfo
from .worker import WorkerConnection, WorkerState

__all__ = [
    "ARG_SPEC",
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_PORT",
    "MAX_HANDLE_SIZE",
    "MAX_UNIQUE_SIZE",
    "REQ",
    "RES",
    "AdminConnection",
    "AdminReply",
    "ClientConnection",
    "ConnectionState",
    "EchoReply",
    "ErrorReceived",
    "Frame",
    "FunctionStatus",
    "JobAssigned",
    "JobCreated",
    "JobEnded",
    "JobInfo",
    "JobStatus",
    "JobUpdate",
    "LocalProtocolError",
    "OptionAccepted",
    "Outcome",
    "Packet",
    "PacketBuffer",
    "PacketTooLarge",
    "PacketType",
    "Priority",
    "PriorityStatus",
    "ProtocolError",
    "QueuedJob",
    "RemoteProtocolError",
    "RequestRefused",
    "StatusReply",
    "TextLine",
    "WentToSleep",
    "Woken",
    "WorkComplete",
    "WorkData",
    "WorkEvent",
    "WorkStatus",
    "WorkWarning",
    "WorkerConnection",
    "WorkerInfo",
    "WorkerState",
    "decode_body",
    "encode",
    "encode_packet",
    "encode_submit",
]
