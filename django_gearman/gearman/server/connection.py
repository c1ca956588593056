"""One connection to the job server: bytes in, state calls, bytes out, in order.

:class:`ServerConnection` is the server's end of a connection with no I/O, in the h11/h2 style:
``receive_data`` feeds the shared ``PacketBuffer``, each frame becomes a call on
:class:`~.state.ServerState`, and replies collect in order until ``data_to_send()``.
:class:`~.asyncio_protocol.ServerProtocol` is the thin asyncio adapter around it:
``data_received`` feeds it, and replies are written once per event-loop turn. A peer that
breaks the protocol gets an ERROR packet and is closed; nobody else notices. Tests drive
:class:`ServerConnection` in memory against the client and worker conversations, with no socket
at all.

Replies stay in request order even when a durable background submit must wait for its
commit: its JOB_CREATED goes into the peer's output at once, and the output is *held* (nothing
of it written) until the store has committed that job; a failed commit turns those replies
into ERROR packets first. Commits happen at the end of the same loop iteration, so a hold
costs no round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RemoteProtocolError
from ..protocol.buffer import Frame, PacketBuffer, TextLine
from ..protocol.constants import REQ, PacketType, Priority
from ..protocol.packets import PACKET_TYPES, error_packet
from .model import ERR_INVALID_COMMAND, ERR_UNKNOWN_OPTION, Peer, ServerJob, job_created, packet
from .state import ServerState
from .text import admin_reply

if TYPE_CHECKING:
    from .store import JobStore

__all__ = ["FRAME_BUDGET", "OUTPUT_HIGH_WATER", "BudgetExceeded", "ServerConnection", "ServerHost"]

T = PacketType
ERR_MAGIC = packet(T.ERROR, b"INVALID_MAGIC", b"Request magic expected")
ERR_INVALID_ARGUMENT = packet(
    T.ERROR, b"INVALID_ARGUMENT", b"The run time must be Unix seconds from 0 to 253402300799"
)
_NORMAL = int(Priority.NORMAL)

#: Frames handled per read callback before the loop serves other connections.
FRAME_BUDGET = 256
#: Unsent output (bytes) at which a connection stops being served until it is written out.
OUTPUT_HIGH_WATER = 256 * 1024
#: Largest CAN_DO_TIMEOUT kept, in milliseconds (about 24 days; larger values are clamped).
MAX_TIMEOUT_MS = 2**31 - 1
#: Latest SUBMIT_JOB_EPOCH accepted: the last second of year 9999 (what a datetime can hold).
MAX_EPOCH = 253_402_300_799
#: Longest client id kept (gearmand's GEARMAN_MAX_IDENTIFIER); longer ones are cut.
MAX_CLIENT_ID = 254
# A client id is only ever shown: bytes that would break an admin line become "_".
_CLIENT_ID_TABLE = bytes(
    c if 0x20 < c != 0x7F else 0x5F for c in range(256)
)  # printable ASCII and UTF-8 bytes kept
_EMPTY: list[Frame] = []


class BudgetExceeded(RemoteProtocolError):
    """The server holds too many received-but-unhandled bytes: this connection is cut off."""

    def __init__(self, held: int, limit: int) -> None:
        super().__init__(
            f"the server holds {held} bytes of unfinished packets (limit {limit}); try later",
            "SERVER_BUSY",
        )


def _digits(raw: bytes) -> int | None:
    """A non-negative decimal number, or None (not digits; gearmand reads those as 0).
    ``int()`` alone would also take spaces, signs and underscores."""
    if not raw.isdigit() or not raw.isascii():
        return None
    if len(raw) > 19:  # more than any value we keep: no need to build a 400-digit int
        return 10**19
    return int(raw)


class ServerHost(Protocol):
    """What a connection needs of its server (:class:`~.app.GearmanServer`, or a stand-in)."""

    state: ServerState
    store: JobStore
    verbose: str
    max_packet_size: int
    max_buffer_bytes: int  # all connections' unfinished packets together (0: no limit)
    buffered: int  # bytes of unfinished packets held now, all connections
    dirty: list[Any]  # connections with output to write this loop turn
    pending: list[ServerJob]  # durable submits waiting for their commit, in store-id order
    held: list[Any]  # connections whose output waits for a commit

    def schedule_flush(self) -> None: ...


class ServerConnection:
    """The server's end of one client/worker/admin connection, with no I/O of its own."""

    def __init__(self, server: ServerHost) -> None:
        self.server = server
        self.state = server.state
        self.live = True  # False once closed: frames read after that are dropped
        self.buffer = PacketBuffer(max_packet_size=server.max_packet_size, defer_errors=True)
        self.buffered = 0  # len(self.buffer) as counted in server.buffered
        self.frames: list[Frame] = _EMPTY  # received frames not yet handled (flow control)
        self.next = 0  # index of the next one to handle
        self.last_seen = server.state.stamp  # Unix second of the last bytes received
        self.out: list[bytes] = []  # replies not yet written, in order
        self.out_size = 0  # bytes in self.out
        self.held = 0  # id of the last durable job in self.out still being committed (0: none)
        self.peer = Peer(self.write)
        self.durable: bool = server.store.durable

    def opened(self, fd: int = -1, host: str = "-") -> None:
        """The connection is up: the state counts it (``workers`` lists it)."""
        self.peer.fd = fd
        self.peer.host = host
        self.state.connect(self.peer)

    def closed(self) -> None:
        """The connection is gone: its running jobs go back to the queue, its waits end, and
        what it held (buffers, unsent output) is freed now, not at the next GC cycle."""
        self.live = False
        self.state.disconnect(self.peer)
        self.server.buffered -= self.buffered
        self.buffered = 0
        self.buffer.clear()
        self.frames = _EMPTY
        self.out.clear()
        self.out_size = 0
        self.peer.write = _discard  # the peer no longer refers back to this connection

    def receive_data(self, data: bytes) -> None:
        """Act on every frame ``data`` completes. A :class:`RemoteProtocolError` means the byte
        stream can no longer be framed: the replies owed to the frames before the bad one are
        queued first; then send :meth:`error_packet` and close."""
        self.take(data)
        while self.process():
            pass

    def take(self, data: bytes) -> None:
        """Frame ``data`` and add its frames to those waiting; enforce the buffer budget."""
        buffer = self.buffer
        frames = buffer.feed(data)
        held = len(buffer)
        if held != self.buffered:
            server = self.server
            server.buffered += held - self.buffered
            self.buffered = held
            limit = server.max_buffer_bytes
            if held and limit and server.buffered > limit:
                raise BudgetExceeded(server.buffered, limit)
        if self.next < len(self.frames):
            self.frames = self.frames[self.next :] + frames
        else:
            self.frames = frames
        self.next = 0

    def process(self, budget: int = FRAME_BUDGET) -> bool:
        """Handle waiting frames, up to ``budget`` of them or until ``OUTPUT_HIGH_WATER``
        bytes of output wait. True if frames are left for later; raises the stream's
        :class:`RemoteProtocolError` once the frames before it are handled."""
        frames = self.frames
        index = self.next
        end = len(frames)
        stop = index + budget if end - index > budget else end
        handlers = _HANDLERS
        while index < stop:
            if not self.live:
                self.frames = _EMPTY
                return False
            frame = frames[index]
            index += 1
            if type(frame) is TextLine:  # (not isinstance: the path of every packet)
                self.write(
                    admin_reply(
                        self.state,
                        self.peer,
                        frame.line,
                        verbose=self.server.verbose,
                        shutdown=getattr(self.server, "shutdown", None),
                    )
                )
            elif frame[0] == REQ:
                handlers[frame[1]](self, frame[2])  # type: ignore[misc]  # a Packet here
            else:
                self.write(ERR_MAGIC)
            if self.out_size > OUTPUT_HIGH_WATER:
                break
        self.next = index
        if index < end:
            return True
        self.frames = _EMPTY
        error = self.buffer.error
        if error is not None:
            raise error
        return False

    @staticmethod
    def error_packet(error: RemoteProtocolError) -> bytes:
        """The ERROR packet a peer that broke the protocol gets before the connection closes."""
        return error_packet(error)

    # -- output -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.server.dirty.append(self)
            self.server.schedule_flush()
        out.append(data)
        self.out_size += len(data)

    def data_to_send(self) -> bytes:
        """The replies to write now: none while they wait for a commit (see :attr:`held`)."""
        out = self.out
        if not out or self.held:
            return b""
        data = b"".join(out)
        out.clear()
        self.out_size = 0
        return data

    def release(self, failed: Mapping[bytes, bytes], last_id: int = 0) -> bool:
        """The store committed every job up to ``last_id`` (0: every job this output waits
        for); ``failed`` maps the JOB_CREATED replies of jobs that could not be stored to the
        ERROR sent instead, for each of them in the output (a submit merged onto such a job
        too). Return whether the output is released: not while it waits for a later job."""
        if failed:
            out = self.out
            out[:] = [failed.get(reply, reply) for reply in out]
            self.out_size = sum(map(len, out))
        if last_id and self.held > last_id:
            return False
        self.held = 0
        if self.out:
            self.server.dirty.append(self)
        return True

    # -- packets ----------------------------------------------------------------------------

    # One handler per request type, indexed by its wire value (see ``_HANDLERS`` below): a
    # list index beats a chain of comparisons on the path every packet takes.

    def _on_grab(self, args: tuple[bytes, ...], kind: PacketType) -> None:
        self.state.grab(self.peer, kind)

    def _on_result(self, args: tuple[bytes, ...], kind: PacketType) -> None:
        self.state.work_result(self.peer, kind, args[0], args[1] if len(args) > 1 else b"")

    def _on_update(self, args: tuple[bytes, ...], kind: PacketType) -> None:
        self.state.work_update(self.peer, kind, args)

    def _on_pre_sleep(self, args: tuple[bytes, ...]) -> None:
        self.state.pre_sleep(self.peer)

    def _on_can_do(self, args: tuple[bytes, ...]) -> None:
        self.state.can_do(self.peer, args[0])

    def _on_can_do_timeout(self, args: tuple[bytes, ...]) -> None:
        timeout = _digits(args[1]) or 0  # not a number: no timeout, as gearmand's atoi gives
        self.state.can_do(self.peer, args[0], min(timeout, MAX_TIMEOUT_MS))

    def _on_cant_do(self, args: tuple[bytes, ...]) -> None:
        self.state.cant_do(self.peer, args[0])

    def _on_reset_abilities(self, args: tuple[bytes, ...]) -> None:
        self.state.reset_abilities(self.peer)

    def _on_get_status(self, args: tuple[bytes, ...]) -> None:
        self.write(self.state.status(self.peer, args[0]))

    def _on_get_status_unique(self, args: tuple[bytes, ...]) -> None:
        self.write(self.state.status_unique(self.peer, args[0]))

    def _on_echo(self, args: tuple[bytes, ...]) -> None:
        self.write(packet(T.ECHO_RES, args[0]))

    def _on_option(self, args: tuple[bytes, ...]) -> None:
        if args[0].lower() == b"exceptions":
            self.peer.exceptions = True
            self.write(packet(T.OPTION_RES, args[0]))
        else:
            self.write(ERR_UNKNOWN_OPTION)

    def _on_set_client_id(self, args: tuple[bytes, ...]) -> None:
        # Shown in ``workers`` and logs only: bytes that would break an admin line become "_".
        self.peer.client_id = args[0][:MAX_CLIENT_ID].translate(_CLIENT_ID_TABLE) or b"-"

    def _on_submit_epoch(self, args: tuple[bytes, ...]) -> None:
        when = _digits(args[2])  # gearmand's strtoll takes "-5" and "abc" (as 0) too: not here
        if when is None or when > MAX_EPOCH:
            self.write(ERR_INVALID_ARGUMENT)
            return
        self._submit(args[0], args[1], args[3], _NORMAL, background=True, when=when)

    def _on_submit_reduce(self, args: tuple[bytes, ...], *, background: bool) -> None:
        self._submit(args[0], args[1], args[3], _NORMAL, background=background, reducer=args[2])

    def _on_invalid(self, args: tuple[bytes, ...]) -> None:
        # SUBMIT_JOB_SCHED, ALL_YOURS and UNUSED (gearmand answers them so), and response
        # types sent with request magic.
        self.write(ERR_INVALID_COMMAND)

    def _submit(
        self,
        name: bytes,
        unique: bytes,
        data: bytes,
        priority: int,
        background: bool,  # noqa: FBT001 - the submit path: positional is cheaper
        when: int = 0,
        reducer: bytes = b"",
    ) -> None:
        state = self.state
        job, created, error = state.submit(
            self.peer,
            name,
            unique,
            data,
            priority,
            background,
            when,
            reducer,
        )
        if error is not None:
            self.write(error)
            return
        assert job is not None
        reply = job_created(job.handle)
        if not (created and background and self.durable):
            if job.pending_id:
                # Merged onto a durable job whose commit is still to come: answered after it
                # (ERROR in place of JOB_CREATED if it fails, as to the job's submitter).
                self._hold(job.pending_id, reply)
                return
            out = self.out
            if not out:
                self.server.dirty.append(self)
                self.server.schedule_flush()
            out.append(reply)
            self.out_size += len(reply)
            if created:
                state.enqueue(job)
            return
        server = self.server
        job.store_id = server.store.add_nowait(
            name, unique, priority, data, when, reducer, job.enqueued
        )
        job.pending_id = job.store_id
        server.pending.append(job)
        self._hold(job.store_id, reply)

    def _hold(self, store_id: int, reply: bytes) -> None:
        """Queue ``reply``, holding this connection's output until ``store_id`` is committed."""
        if not self.held:
            self.server.held.append(self)
        if store_id > self.held:
            self.held = store_id
        self.write(reply)


def _discard(data: bytes) -> None:
    """A closed connection's ``write``: output for it goes nowhere."""


def _submitter(
    priority: Priority, *, background: bool
) -> Callable[[ServerConnection, tuple[bytes, ...]], None]:
    level = int(priority)  # a plain int indexes the queues fastest

    def on_submit(self: ServerConnection, args: tuple[bytes, ...]) -> None:
        self._submit(args[0], args[1], args[2], level, background)

    return on_submit


def _bind(
    method: Callable[..., None], *extra: Any, **keywords: Any
) -> Callable[[ServerConnection, tuple[bytes, ...]], None]:
    if not extra and not keywords:
        return method
    return lambda self, args: method(self, args, *extra, **keywords)


P = ServerConnection
_HANDLERS: list[Callable[[ServerConnection, tuple[bytes, ...]], None]] = [P._on_invalid] * len(
    PACKET_TYPES
)
for _kind, _handler in {
    T.SUBMIT_JOB: _submitter(Priority.NORMAL, background=False),
    T.SUBMIT_JOB_BG: _submitter(Priority.NORMAL, background=True),
    T.SUBMIT_JOB_HIGH: _submitter(Priority.HIGH, background=False),
    T.SUBMIT_JOB_HIGH_BG: _submitter(Priority.HIGH, background=True),
    T.SUBMIT_JOB_LOW: _submitter(Priority.LOW, background=False),
    T.SUBMIT_JOB_LOW_BG: _submitter(Priority.LOW, background=True),
    T.SUBMIT_JOB_EPOCH: P._on_submit_epoch,
    T.SUBMIT_REDUCE_JOB: _bind(P._on_submit_reduce, background=False),
    T.SUBMIT_REDUCE_JOB_BACKGROUND: _bind(P._on_submit_reduce, background=True),
    T.GRAB_JOB: _bind(P._on_grab, T.GRAB_JOB),
    T.GRAB_JOB_UNIQ: _bind(P._on_grab, T.GRAB_JOB_UNIQ),
    T.GRAB_JOB_ALL: _bind(P._on_grab, T.GRAB_JOB_ALL),
    T.WORK_COMPLETE: _bind(P._on_result, T.WORK_COMPLETE),
    T.WORK_FAIL: _bind(P._on_result, T.WORK_FAIL),
    T.WORK_EXCEPTION: _bind(P._on_result, T.WORK_EXCEPTION),
    T.WORK_DATA: _bind(P._on_update, T.WORK_DATA),
    T.WORK_WARNING: _bind(P._on_update, T.WORK_WARNING),
    T.WORK_STATUS: _bind(P._on_update, T.WORK_STATUS),
    T.PRE_SLEEP: P._on_pre_sleep,
    T.CAN_DO: P._on_can_do,
    T.CAN_DO_TIMEOUT: P._on_can_do_timeout,
    T.CANT_DO: P._on_cant_do,
    T.RESET_ABILITIES: P._on_reset_abilities,
    T.GET_STATUS: P._on_get_status,
    T.GET_STATUS_UNIQUE: P._on_get_status_unique,
    T.ECHO_REQ: P._on_echo,
    T.OPTION_REQ: P._on_option,
    T.SET_CLIENT_ID: P._on_set_client_id,
}.items():
    _HANDLERS[_kind] = _handler
del P, _kind, _handler
