"""One connection to the job server: bytes in, state calls, bytes out, in order.

:class:`ServerConnection` is the server's end of a connection with no I/O, in the h11/h2
style: ``receive_data`` feeds the shared ``PacketBuffer``, each frame becomes a call on
:class:`~.state.ServerState`, and replies collect in order until ``data_to_send()``.
:class:`ServerProtocol` is the thin asyncio adapter around it: ``data_received`` feeds it, and
replies are written once per event-loop turn. A peer that breaks the protocol gets an ERROR
packet and is closed; nobody else notices. Tests drive :class:`ServerConnection` in memory
against the client and worker conversations, with no socket at all.

Replies stay in request order even when a durable background submit must wait for its
commit: its JOB_CREATED goes into the peer's output at once, and the output is *held* (nothing
of it written) until the store has committed that job; a failed commit turns those replies
into ERROR packets first. Commits happen at the end of the same loop iteration, so a hold
costs no round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RemoteProtocolError
from ..protocol.buffer import PacketBuffer, TextLine
from ..protocol.constants import REQ, PacketType, Priority
from ..protocol.packets import PACKET_TYPES, error_packet
from .model import ERR_INVALID_COMMAND, ERR_UNKNOWN_OPTION, Peer, ServerJob, job_created, packet
from .state import ServerState
from .text import admin_reply

if TYPE_CHECKING:
    from .store import JobStore

__all__ = ["ListeningHost", "ServerConnection", "ServerHost", "ServerProtocol"]

logger = logging.getLogger("django_gearman.server")

T = PacketType
ERR_MAGIC = packet(T.ERROR, b"INVALID_MAGIC", b"Request magic expected")
_NORMAL = int(Priority.NORMAL)


class ServerHost(Protocol):
    """What a connection needs of its server (:class:`~.app.GearmanServer`, or a stand-in)."""

    state: ServerState
    store: JobStore
    verbose: str
    max_packet_size: int
    dirty: list[Any]  # connections with output to write this loop turn
    pending: list[ServerJob]  # durable submits waiting for their commit, in store-id order
    held: list[Any]  # connections whose output waits for a commit

    def schedule_flush(self) -> None: ...


class ListeningHost(ServerHost, Protocol):
    """A host that listens on a socket, and so keeps its live connections (the GearmanServer)."""

    connections: set[Any]


class ServerConnection:
    """The server's end of one client/worker/admin connection, with no I/O of its own."""

    def __init__(self, server: ServerHost) -> None:
        self.server = server
        self.state = server.state
        self.live = True  # False once closed: frames read after that are dropped
        self.buffer = PacketBuffer(max_packet_size=server.max_packet_size)
        self.out: list[bytes] = []  # replies not yet written, in order
        self.held = 0  # id of the last durable job in self.out still being committed (0: none)
        self.peer = Peer(self.write)
        self.durable: bool = server.store.durable

    def opened(self, fd: int = -1, host: str = "-") -> None:
        """The connection is up: the state counts it (``workers`` lists it)."""
        self.peer.fd = fd
        self.peer.host = host
        self.state.connect(self.peer)

    def closed(self) -> None:
        """The connection is gone: its running jobs go back to the queue, its waits end."""
        self.live = False
        self.state.disconnect(self.peer)

    def receive_data(self, data: bytes) -> None:
        """Act on every frame ``data`` completes. A :class:`RemoteProtocolError` means the byte
        stream can no longer be framed: send :meth:`error_packet` and close."""
        frames = self.buffer.feed(data)
        handlers = _HANDLERS
        for frame in frames:
            if not self.live:
                return
            if type(frame) is TextLine:  # (not isinstance: the path of every packet)
                self.write(
                    admin_reply(self.state, self.peer, frame.line, verbose=self.server.verbose)
                )
            elif frame[0] == REQ:
                handlers[frame[1]](self, frame[2])  # type: ignore[misc]  # a Packet here
            else:
                self.write(ERR_MAGIC)

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

    def data_to_send(self) -> bytes:
        """The replies to write now: none while they wait for a commit (see :attr:`held`)."""
        out = self.out
        if not out or self.held:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def release(self, failed: dict[bytes, bytes]) -> None:
        """The held replies' jobs are committed; ``failed`` maps the JOB_CREATED replies of jobs
        that could not be stored to the ERROR sent instead."""
        self.held = 0
        if failed:
            self.out[:] = [failed.get(reply, reply) for reply in self.out]
        if self.out:
            self.server.dirty.append(self)

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
        try:
            timeout = int(args[1])
        except ValueError:
            timeout = 0
        self.state.can_do(self.peer, args[0], max(0, timeout))

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
        self.peer.client_id = args[0] or b"-"

    def _on_submit_epoch(self, args: tuple[bytes, ...]) -> None:
        try:
            when = int(args[2])
        except ValueError:
            when = 0
        self._submit(args[0], args[1], args[3], _NORMAL, background=True, when=max(0, when))

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
            out = self.out
            if not out:
                self.server.dirty.append(self)
                self.server.schedule_flush()
            out.append(reply)
            if created:
                state.enqueue(job)
            return
        server = self.server
        job.store_id = server.store.add_nowait(
            name, unique, priority, data, when, reducer, job.enqueued
        )
        server.pending.append(job)
        if not self.held:
            server.held.append(self)
        self.held = job.store_id
        self.write(reply)


class ServerProtocol(ServerConnection, asyncio.Protocol):
    """A :class:`ServerConnection` on an asyncio transport (the server's connections)."""

    def __init__(self, server: ListeningHost) -> None:
        super().__init__(server)
        self.connections = server.connections  # the server's, to join and leave
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        peername = transport.get_extra_info("peername")
        self.opened(sock.fileno() if sock is not None else -1, peername[0] if peername else "-")
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed()
        self.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.receive_data(data)
        except RemoteProtocolError as error:
            self._protocol_error(error)

    def flush(self) -> None:
        """Write the pending replies, unless they wait for a commit (see :attr:`held`)."""
        data = self.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        logger.info("closing %s: %s", self.peer.host, error)
        transport = self.transport
        if transport is None:
            return
        self.flush()
        transport.write(self.error_packet(error))
        transport.close()
        self.live = False


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
