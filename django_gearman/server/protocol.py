"""The asyncio side of a connection: bytes in, state calls, bytes out, in order.

A thin adapter in the h11/h2 style: ``data_received`` feeds the shared ``PacketBuffer``,
each frame becomes a call on :class:`~.state.ServerState`, and replies are collected per peer
and written once per event-loop turn. A peer that breaks the protocol gets an ERROR packet and
is closed; nobody else notices.

Replies stay in request order even when a durable background submit must wait for its
commit: the peer's output holds a slot for that JOB_CREATED, and nothing behind the slot is
written before it is filled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..protocol.buffer import PacketBuffer, TextLine
from ..protocol.constants import REQ, PacketType
from ..protocol.errors import RemoteProtocolError
from ..protocol.packets import Packet, error_packet
from .admin import admin_reply
from .state import ERR_INVALID_COMMAND, ERR_UNKNOWN_OPTION, Job, Peer, packet

if TYPE_CHECKING:
    from .app import GearmanServer

__all__ = ["ServerProtocol"]

logger = logging.getLogger("django_gearman.server")

T = PacketType
ERR_MAGIC = packet(T.ERROR, b"INVALID_MAGIC", b"Request magic expected")
_SUBMIT = {
    T.SUBMIT_JOB: (1, False), T.SUBMIT_JOB_BG: (1, True), T.SUBMIT_JOB_HIGH: (0, False),
    T.SUBMIT_JOB_HIGH_BG: (0, True), T.SUBMIT_JOB_LOW: (2, False), T.SUBMIT_JOB_LOW_BG: (2, True),
}  # fmt: skip
_GRAB = {T.GRAB_JOB, T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL}
_RESULT = {T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION}
_UPDATE = {T.WORK_DATA, T.WORK_WARNING, T.WORK_STATUS}
_UNSUPPORTED = {T.SUBMIT_JOB_SCHED, T.ALL_YOURS, T.UNUSED}


class _Slot:
    """A place in a peer's output for a reply that is not ready yet (JOB_CREATED of a job
    still being made durable)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class ServerProtocol(asyncio.Protocol):
    """One client/worker/admin connection to the job server."""

    def __init__(self, server: GearmanServer) -> None:
        self.server = server
        self.state = server.state
        self.transport: asyncio.Transport | None = None
        self.buffer = PacketBuffer(max_packet_size=server.max_packet_size)
        self.out: list[Any] = []  # bytes and _Slot, in order
        self.slots = 0  # _Slot objects in self.out (filled or not)
        self.peer = Peer(self.write)

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        peername = transport.get_extra_info("peername")
        self.peer.fd = sock.fileno() if sock is not None else -1
        self.peer.host = peername[0] if peername else "-"
        self.state.connect(self.peer)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.disconnect(self.peer)
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.buffer.feed(data)
        except RemoteProtocolError as error:
            self._protocol_error(error)
            return
        handle = self._handle
        for frame in frames:
            if self.transport is None:
                return
            if type(frame) is TextLine:
                self.write(admin_reply(self.state, self.peer, frame.line, verbose=self.server.verbose))
            else:
                handle(frame)  # type: ignore[arg-type]

    # -- output -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.server.dirty.append(self)
            self.server.schedule_flush()
        out.append(data)

    def flush(self) -> None:
        """Write what is ready (everything up to the first unfilled slot)."""
        out = self.out
        transport = self.transport
        if not out:
            return
        if transport is None:
            out.clear()
            return
        if not self.slots:
            transport.write(b"".join(out))
            out.clear()
            return
        ready = []
        for index, item in enumerate(out):
            if type(item) is _Slot:
                if item.data is None:
                    del out[:index]
                    break
                self.slots -= 1
                item = item.data
            ready.append(item)
        else:
            out.clear()
        if ready:
            transport.write(b"".join(ready))

    # -- packets ----------------------------------------------------------------------------

    def _handle(self, frame: Packet) -> None:
        magic, kind, args = frame
        state = self.state
        peer = self.peer
        if magic != REQ:
            self.write(ERR_MAGIC)
            return
        submit = _SUBMIT.get(kind)
        if submit is not None:
            self._submit(args[0], args[1], args[2], submit[0], submit[1])
        elif kind in _GRAB:
            state.grab(peer, kind)
        elif kind in _RESULT:
            state.work_result(peer, kind, args[0], args[1] if len(args) > 1 else b"")
        elif kind is T.PRE_SLEEP:
            state.pre_sleep(peer)
        elif kind in _UPDATE:
            state.work_update(peer, kind, args)
        elif kind is T.CAN_DO:
            state.can_do(peer, args[0])
        elif kind is T.CAN_DO_TIMEOUT:
            try:
                timeout = int(args[1])
            except ValueError:
                timeout = 0
            state.can_do(peer, args[0], max(0, timeout))
        elif kind is T.CANT_DO:
            state.cant_do(peer, args[0])
        elif kind is T.RESET_ABILITIES:
            state.reset_abilities(peer)
        elif kind is T.GET_STATUS:
            self.write(state.status(peer, args[0]))
        elif kind is T.GET_STATUS_UNIQUE:
            self.write(state.status_unique(peer, args[0]))
        elif kind is T.ECHO_REQ:
            self.write(packet(T.ECHO_RES, args[0]))
        elif kind is T.OPTION_REQ:
            if args[0].lower() == b"exceptions":
                peer.exceptions = True
                self.write(packet(T.OPTION_RES, args[0]))
            else:
                self.write(ERR_UNKNOWN_OPTION)
        elif kind is T.SET_CLIENT_ID:
            peer.client_id = args[0] or b"-"
        elif kind is T.SUBMIT_JOB_EPOCH:
            try:
                when = int(args[2])
            except ValueError:
                when = 0
            self._submit(args[0], args[1], args[3], 1, True, when=max(0, when))
        elif kind is T.SUBMIT_REDUCE_JOB or kind is T.SUBMIT_REDUCE_JOB_BACKGROUND:
            self._submit(args[0], args[1], args[3], 1, kind is T.SUBMIT_REDUCE_JOB_BACKGROUND, reducer=args[2])
        elif kind in _UNSUPPORTED:
            self.write(ERR_INVALID_COMMAND)
        else:  # response types sent with request magic
            self.write(ERR_INVALID_COMMAND)

    def _submit(self, name: bytes, unique: bytes, data: bytes, priority: int, background: bool, *, when: int = 0, reducer: bytes = b"") -> None:
        state = self.state
        job, created, error = state.submit(self.peer, name, unique, data, priority, background, when=when, reducer=reducer)
        if error is not None:
            self.write(error)
            return
        assert job is not None
        reply = packet(T.JOB_CREATED, job.handle)
        store = self.server.store
        if not (created and background and store.durable):
            self.write(reply)
            if created:
                state.enqueue(job)
            return
        slot = _Slot()
        self.write(slot)  # type: ignore[arg-type]
        self.slots += 1
        future = store.add(name, unique, priority, data, when, reducer)
        job.store_id = future.job_id  # type: ignore[attr-defined]
        future.add_done_callback(lambda f: self._durable(f, job, slot, reply))

    def _durable(self, future: asyncio.Future, job: Job, slot: _Slot, reply: bytes) -> None:
        if future.exception() is not None:
            logger.error("could not store job %s: %s", job.handle.decode(), future.exception())
            slot.data = packet(T.ERROR, b"QUEUE_ERROR", b"Could not store the job")
            self.state.forget(job)
        else:
            slot.data = reply
            self.state.enqueue(job)
        if self.out:
            self.server.dirty.append(self)
            self.server.schedule_flush()

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        logger.info("closing %s: %s", self.peer.host, error)
        transport = self.transport
        if transport is None:
            return
        self.flush()
        transport.write(error_packet(error))
        transport.close()
