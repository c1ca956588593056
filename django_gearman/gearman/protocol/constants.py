"""Wire constants of the Gearman binary protocol (gearman.org/protocol, gearmand 1.1)."""

from __future__ import annotations

import struct
from enum import IntEnum

from ..errors import LocalProtocolError

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_PORT",
    "HEADER",
    "MAX_HANDLE_SIZE",
    "MAX_UNIQUE_SIZE",
    "REQ",
    "RES",
    "PacketType",
    "Priority",
]

#: Magic that starts every packet sent *to* a job server.
REQ = b"\0REQ"
#: Magic that starts every packet sent *by* a job server.
RES = b"\0RES"

#: Magic (4 bytes), type (uint32 big-endian), body size (uint32 big-endian).
HEADER = struct.Struct("!4sII")

#: The IANA port of Gearman (the old 7003 is not used any more).
DEFAULT_PORT = 4730

#: Default cap on one packet's body. gearmand has no cap of its own; 64 MiB keeps
#: a broken or hostile peer from making us allocate without limit.
DEFAULT_MAX_PACKET_SIZE = 64 * 1024 * 1024

#: gearmand's limits: a job handle is at most 63 bytes (64 with its NUL); a unique key at most
#: 64 bytes (gearmand answers ERROR ARGUMENT_TOO_LARGE beyond; checked against 1.1.20).
MAX_HANDLE_SIZE = 63
MAX_UNIQUE_SIZE = 64


class PacketType(IntEnum):
    """Every binary packet type of the protocol, numbered as on the wire."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    UNUSED = 5
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


class Priority(IntEnum):
    """The three job priorities; the value is gearmand's internal order (lower runs first), so
    a priority indexes a function's three queues."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @property
    def label(self) -> str:
        """The lower-case name: ``"high"``, ``"normal"`` or ``"low"``."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: Priority | int | str) -> Priority:
        """A priority from itself, its number, or its name in any case (``"high"``)."""
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise LocalProtocolError(
                    f"priority must be 'high', 'normal' or 'low', not {value!r}"
                ) from None
        try:
            return cls(value)
        except ValueError:
            raise LocalProtocolError(
                f"priority must be 0 (high), 1 (normal) or 2 (low), not {value!r}"
            ) from None
