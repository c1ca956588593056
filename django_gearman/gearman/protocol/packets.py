"""Binary packets: the argument table, the ``Packet`` value, and encode/decode.

A packet is a magic (``\\0REQ`` to a server, ``\\0RES`` from one), a type and a body of
NUL-separated arguments in which only the last may itself hold NULs. ``Packet`` is a
``NamedTuple`` rather than a dataclass: the server builds and takes apart hundreds of
thousands of these a second, and tuple construction is the cheapest immutable value Python has.
Use :meth:`Packet.request` / :meth:`Packet.response` to build validated packets.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .constants import HEADER, REQ, RES, PacketType

__all__ = [
    "ARG_SPEC",
    "PACKET_TYPES",
    "Packet",
    "check_header",
    "decode_body",
    "encode",
    "encode_packet",
    "error_packet",
]

T = PacketType

#: Argument names of every packet type, in wire order. The last argument may contain NULs.
ARG_SPEC: dict[PacketType, tuple[str, ...]] = {
    T.CAN_DO: ("function",),
    T.CANT_DO: ("function",),
    T.RESET_ABILITIES: (),
    T.PRE_SLEEP: (),
    T.UNUSED: (),
    T.NOOP: (),
    T.SUBMIT_JOB: ("function", "unique", "data"),
    T.JOB_CREATED: ("handle",),
    T.GRAB_JOB: (),
    T.NO_JOB: (),
    T.JOB_ASSIGN: ("handle", "function", "data"),
    T.WORK_STATUS: ("handle", "numerator", "denominator"),
    T.WORK_COMPLETE: ("handle", "data"),
    T.WORK_FAIL: ("handle",),
    T.GET_STATUS: ("handle",),
    T.ECHO_REQ: ("data",),
    T.ECHO_RES: ("data",),
    T.SUBMIT_JOB_BG: ("function", "unique", "data"),
    T.ERROR: ("code", "text"),
    T.STATUS_RES: ("handle", "known", "running", "numerator", "denominator"),
    T.SUBMIT_JOB_HIGH: ("function", "unique", "data"),
    T.SET_CLIENT_ID: ("client_id",),
    T.CAN_DO_TIMEOUT: ("function", "timeout"),
    T.ALL_YOURS: (),
    T.WORK_EXCEPTION: ("handle", "data"),
    T.OPTION_REQ: ("option",),
    T.OPTION_RES: ("option",),
    T.WORK_DATA: ("handle", "data"),
    T.WORK_WARNING: ("handle", "data"),
    T.GRAB_JOB_UNIQ: (),
    T.JOB_ASSIGN_UNIQ: ("handle", "function", "unique", "data"),
    T.SUBMIT_JOB_HIGH_BG: ("function", "unique", "data"),
    T.SUBMIT_JOB_LOW: ("function", "unique", "data"),
    T.SUBMIT_JOB_LOW_BG: ("function", "unique", "data"),
    T.SUBMIT_JOB_SCHED: (
        "function",
        "unique",
        "minute",
        "hour",
        "day_of_month",
        "month",
        "day_of_week",
        "data",
    ),
    T.SUBMIT_JOB_EPOCH: ("function", "unique", "epoch", "data"),
    T.SUBMIT_REDUCE_JOB: ("function", "unique", "reducer", "data"),
    T.SUBMIT_REDUCE_JOB_BACKGROUND: ("function", "unique", "reducer", "data"),
    T.GRAB_JOB_ALL: (),
    T.JOB_ASSIGN_ALL: ("handle", "function", "unique", "reducer", "data"),
    T.GET_STATUS_UNIQUE: ("unique",),
    T.STATUS_RES_UNIQUE: ("handle", "known", "running", "numerator", "denominator", "waiting"),
}

#: ``PACKET_TYPES[n]`` is the ``PacketType`` for wire value ``n`` (``None`` for 0): a list
#: index is several times faster than ``PacketType(n)`` on the decode hot path.
PACKET_TYPES: list[PacketType | None] = [None] + [
    PacketType(n) for n in range(1, len(PacketType) + 1)
]

_TYPES = list(PacketType)
_ARG_COUNT: list[int] = [0] + [len(ARG_SPEC[t]) for t in _TYPES]
#: Like PACKET_TYPES with no None: index 0 is never read (decode_body checks the range first).
_TYPE_AT: list[PacketType] = [PacketType.UNUSED, *_TYPES]


class Packet(NamedTuple):
    """One binary packet.

    ``magic`` is ``REQ`` or ``RES``; ``type`` a :class:`PacketType`; ``args`` the arguments
    as bytes, exactly as many as ``ARG_SPEC[type]`` names.
    """

    magic: bytes
    type: PacketType
    args: tuple[bytes, ...]

    @classmethod
    def request(cls, type: PacketType, *args: bytes) -> Packet:
        """A validated packet to send to a job server."""
        return _validated(REQ, type, args)

    @classmethod
    def response(cls, type: PacketType, *args: bytes) -> Packet:
        """A validated packet a job server sends."""
        return _validated(RES, type, args)

    def get(self, name: str) -> bytes:
        """The argument called ``name`` in ``ARG_SPEC`` (``KeyError`` names the valid ones)."""
        names = ARG_SPEC[self.type]
        try:
            return self.args[names.index(name)]
        except ValueError:
            raise KeyError(f"{self.type.name} has no argument {name!r}; it has {names}") from None

    def encode(self) -> bytes:
        """The packet's wire bytes."""
        return encode(self.magic, self.type, self.args)


#: Types read leniently: a frame whose last argument is missing altogether (no NUL before
#: it) has that argument read as empty. See :func:`decode_body` for which, and why.
_LAST_MAY_BE_MISSING = frozenset(
    {T.WORK_COMPLETE, T.WORK_DATA, T.WORK_WARNING, T.WORK_EXCEPTION, T.ERROR}
)

#: ``tuple.__new__(Packet, (magic, type, args))`` skips the NamedTuple's Python-level
#: ``__new__``: the decoder's hot path builds one per packet received.
_new_packet = tuple.__new__
_TYPE_LIMIT = len(PACKET_TYPES)


def _validated(magic: bytes, type: PacketType, args: tuple[bytes, ...]) -> Packet:
    type = PacketType(type)
    expected = _ARG_COUNT[type]
    if len(args) != expected:
        raise LocalProtocolError(
            f"{type.name} takes {expected} argument(s) {ARG_SPEC[type]}, got {len(args)}"
        )
    for index, arg in enumerate(args):
        if not isinstance(arg, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(
                f"{type.name} argument {ARG_SPEC[type][index]!r} must be bytes, not "
                f"{type_name(arg)}"
            )
        if index < expected - 1 and b"\0" in arg:
            raise LocalProtocolError(
                f"{type.name} argument {ARG_SPEC[type][index]!r} may not contain NUL bytes"
            )
    return Packet(magic, type, tuple(bytes(a) for a in args))


def type_name(value: object) -> str:
    return type(value).__name__


def encode(magic: bytes, type: int, args: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Encode a packet without validation (callers that built ``args`` themselves)."""
    body = b"\0".join(args)
    return HEADER.pack(magic, type, len(body)) + body


def encode_packet(packet: Packet) -> bytes:
    """Encode a :class:`Packet`."""
    return encode(packet.magic, packet.type, packet.args)


def check_header(magic: bytes, type_value: int) -> None:
    """Raise ``RemoteProtocolError`` unless the magic and type are valid."""
    if magic != REQ and magic != RES:
        raise RemoteProtocolError(
            f"bad magic {magic!r}: expected \\0REQ or \\0RES", "INVALID_MAGIC"
        )
    if not 0 < type_value < len(PACKET_TYPES):
        raise RemoteProtocolError(f"unknown packet type {type_value}", "INVALID_COMMAND")


def decode_body(magic: bytes, type_value: int, body: bytes) -> Packet:
    """Build a packet from a frame's parts, raising ``RemoteProtocolError`` if malformed.

    A body must hold every argument of ``ARG_SPEC``, except that for these types a missing
    last argument (the body ends without the NUL before it) is read as empty, ``b""``:

    ==============  =======  ===============================================================
    type            missing  why it is safe
    ==============  =======  ===============================================================
    WORK_COMPLETE   data     Perl's Gearman::Worker (2.004) sends the handle alone
    WORK_DATA       data     for a value of ``""`` or ``"0"``
    WORK_WARNING    data     (see the note below the table)
    WORK_EXCEPTION  data     as above
    ERROR           text     the code alone still says what went wrong
    ==============  =======  ===============================================================

    Perl builds the body as ``$v ? join("\\0", $handle, $v) : $handle``, so the body is then
    the handle alone and an empty value is the only reading (``"0"`` is not on the wire at
    all: such a result arrives as ``b""``).

    Everything else stays strict, because there a short body is ambiguous or would need a
    value made up: a SUBMIT_* ``fn\\0x`` could be a unique without data or data without a
    unique; WORK_STATUS ``handle\\0n`` (Perl's ``$worker->send_work_status`` drops the
    denominator) has no denominator to forward; CAN_DO_TIMEOUT, JOB_ASSIGN* and STATUS_RES*
    are sent short by no known peer, so a short one means a broken stream. gearmand 1.1.20 reads
    a handle-only WORK_COMPLETE as a body of size -1 (it logs a failed ``realloc`` of 2^64-1
    bytes), drops the worker and requeues the job, which the worker then runs again, forever
    unless ``--job-retries`` caps it. The check costs nothing on the hot path: the set is
    consulted only for a frame already found short.
    """
    if (magic != REQ and magic != RES) or not 0 < type_value < _TYPE_LIMIT:
        check_header(magic, type_value)  # raises, with the precise message
    count = _ARG_COUNT[type_value]
    type = _TYPE_AT[type_value]
    packet: Packet
    if count == 1:
        packet = _new_packet(Packet, (magic, type, (body,)))
        return packet
    if count == 0:
        if body:
            raise RemoteProtocolError(
                f"{type.name} takes no arguments but has a {len(body)}-byte body"
            )
        packet = _new_packet(Packet, (magic, type, ()))
        return packet
    args = body.split(b"\0", count - 1)
    if len(args) != count:
        if len(args) == count - 1 and type_value in _LAST_MAY_BE_MISSING:
            args.append(b"")  # e.g. Perl's Gearman::Worker returning "0" or ""
            return _new_packet(Packet, (magic, type, tuple(args)))
        raise RemoteProtocolError(
            f"{type.name} needs {count} arguments {ARG_SPEC[type]}, got {len(args)}"
        )
    packet = _new_packet(Packet, (magic, type, tuple(args)))
    return packet


def error_packet(error: ProtocolError) -> bytes:
    """The ERROR packet (code, message) a server sends a peer that broke the protocol."""
    return encode(RES, PacketType.ERROR, (error.code.encode(), error.message.encode()))
