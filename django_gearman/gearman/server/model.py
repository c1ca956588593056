"""The values the server's rules move around: connections (:class:`Peer`), functions and
their queues (:class:`Function`), jobs (:class:`ServerJob`), and the reply packets they get.

Plain slotted classes, no behaviour of their own: the rules are :mod:`.state`'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..protocol.constants import HEADER, RES, PacketType
from ..protocol.packets import encode

__all__ = ["Function", "Peer", "ServerJob", "Store", "Timer", "job_created", "packet"]

T = PacketType


def packet(kind: int, *args: bytes) -> bytes:
    return encode(RES, kind, args)


_created_headers: dict[int, bytes] = {}


def job_created(handle: bytes) -> bytes:
    """The JOB_CREATED packet for ``handle`` (its header cached by length: one per submit)."""
    header = _created_headers.get(len(handle))
    if header is None:
        header = _created_headers[len(handle)] = HEADER.pack(RES, T.JOB_CREATED, len(handle))
    return header + handle


NOOP = packet(T.NOOP)
NO_JOB = packet(T.NO_JOB)
ERR_NOT_FOUND = packet(T.ERROR, b"JOB_NOT_FOUND", b"Job given in work result not found")
ERR_QUEUE_FULL = packet(T.ERROR, b"QUEUE_ERROR", b"Job queue is full")
ERR_UNIQUE_TOO_LARGE = packet(T.ERROR, b"ARGUMENT_TOO_LARGE", b"Unique value too large")
ERR_UNKNOWN_OPTION = packet(T.ERROR, b"UNKNOWN_OPTION", b"Server does not recognize given option")
ERR_INVALID_COMMAND = packet(T.ERROR, b"INVALID_COMMAND", b"Command not expected")
ERR_INVALID_FUNCTION_NAME = packet(
    T.ERROR,
    b"INVALID_FUNCTION_NAME",
    b"Function names are 1-512 bytes without spaces or control characters",
)
ERR_SERVER_FULL = packet(T.ERROR, b"QUEUE_ERROR", b"Server job limit reached")

#: Longest function name (libgearman's GEARMAN_FUNCTION_MAX_SIZE).
MAX_FUNCTION_NAME = 512
_NAME_BREAKERS = bytes(range(0x21)) + b"\x7f"


def valid_name(name: bytes) -> bool:
    """A function name the text admin protocol can carry: 1-512 bytes, no space or control
    byte (a tab or newline in one would break ``status`` for every admin client)."""
    return 0 < len(name) <= MAX_FUNCTION_NAME and name.translate(None, _NAME_BREAKERS) == name


class Timer(Protocol):
    def cancel(self) -> None: ...


class Store(Protocol):
    """What the state needs of a job store (see ``server/store.py``)."""

    durable: bool

    def remove(self, job_id: int) -> None: ...


class Peer:
    """One connection's server-side state. ``write`` sends bytes to it (set by the I/O layer)."""

    __slots__ = (
        "abilities",
        "admin",
        "client_id",
        "exceptions",
        "fd",
        "host",
        "jobs",
        "noop_sent",
        "sleeping",
        "waiting_on",
        "write",
        "closed",
    )

    def __init__(self, write: Callable[[bytes], Any], *, fd: int = -1, host: str = "-") -> None:
        self.write = write
        self.fd = fd
        self.host = host
        self.client_id = b"-"
        self.admin = True  # may send state-changing admin commands (see --admin-allow)
        self.exceptions = False
        self.abilities: dict[
            Function, int
        ] = {}  # function -> CAN_DO_TIMEOUT ms (0: none), CAN_DO order
        self.jobs: dict[ServerJob, Timer | None] = {}  # jobs this worker runs -> its timeout timer
        self.waiting_on: set[ServerJob] = set()  # foreground jobs this client waits for
        self.sleeping = False
        self.noop_sent = False
        self.closed = False


class Function:
    """A function name's queues (one per priority), workers and counts."""

    __slots__ = ("jobs", "max_queue", "name", "pinned", "queues", "running", "sleepers", "workers")

    def __init__(self, name: bytes, max_queue: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.name = name
        self.jobs = 0  # live jobs of this function in any state: it is forgotten at 0 unused
        self.pinned = False  # made by ``create function``: kept while unused, as gearmand
        self.queues: tuple[deque[ServerJob], deque[ServerJob], deque[ServerJob]] = (
            deque(),
            deque(),
            deque(),
        )
        self.running = 0
        self.workers: dict[Peer, None] = {}  # ordered set of peers that CAN_DO this
        self.sleepers: dict[Peer, None] = {}  # of those, asleep and not yet sent a NOOP
        self.max_queue = max_queue  # per priority; 0 = unlimited

    @property
    def queued(self) -> int:
        return len(self.queues[0]) + len(self.queues[1]) + len(self.queues[2])

    @property
    def total(self) -> int:
        return self.queued + self.running


class ServerJob:
    """A job from SUBMIT to WORK_COMPLETE/FAIL/EXCEPTION."""

    __slots__ = (
        "background",
        "clients",
        "data",
        "denominator",
        "enqueued",
        "function",
        "handle",
        "ignore",
        "key",
        "numerator",
        "pending_id",
        "priority",
        "reducer",
        "retries",
        "store_id",
        "unique",
        "when",
        "worker",
    )

    def __init__(
        self,
        handle: bytes,
        function: Function,
        unique: bytes,
        data: bytes,
        priority: int,
        background: bool,  # noqa: FBT001 - the submit path: positional is cheaper
        when: int = 0,
        reducer: bytes = b"",
    ) -> None:
        self.handle = handle
        self.function = function
        self.unique = unique
        self.data = data
        self.priority = priority
        self.background = background
        self.clients: list[Peer] = []
        self.worker: Peer | None = None
        self.numerator = b"0"
        self.denominator = b"0"
        self.retries = 0
        self.when = when
        self.reducer = reducer
        self.store_id = 0
        self.pending_id = 0  # store id whose commit the job waits for (0: none)
        self.ignore = False
        self.key: tuple[bytes, bytes] | None = None  # (function, unique) for coalescing
        self.enqueued = 0  # Unix seconds of the submit (kept by the durable store); 0 unknown
