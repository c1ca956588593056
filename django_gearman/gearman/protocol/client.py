"""The client's conversations: jobs and status requests (binary), and admin commands (text).

:class:`ClientConnection` knows which reply answers which request. Gearman answers a client's
requests in the order they were sent (JOB_CREATED or ERROR for a submit, STATUS_RES for
GET_STATUS, ...), and then sends WORK_* packets for the foreground jobs it accepted, keyed by job
handle. The caller gives each request an opaque ``token`` (the client uses its ``Task``); every
event names the token(s) it concerns, so the caller keeps no bookkeeping of its own.

:class:`AdminConnection` does the same for the text protocol: one :class:`AdminReply` per
command, in order.

No I/O here: see :mod:`~django_gearman.gearman.protocol.connection`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..errors import LocalProtocolError
from .buffer import TextLine
from .connection import ConnectionState, Conversation
from .constants import MAX_UNIQUE_SIZE, REQ, PacketType, Priority
from .events import (
    EchoReply,
    ErrorReceived,
    JobCreated,
    JobEnded,
    JobStatus,
    JobUpdate,
    OptionAccepted,
    Outcome,
    RequestRefused,
    StatusReply,
    WorkData,
    WorkStatus,
    WorkWarning,
)
from .packets import Packet
from .text import AdminReply, command_line

__all__ = ["AdminConnection", "ClientConnection", "encode_submit"]

T = PacketType
_FOREGROUND = {
    Priority.HIGH: T.SUBMIT_JOB_HIGH,
    Priority.NORMAL: T.SUBMIT_JOB,
    Priority.LOW: T.SUBMIT_JOB_LOW,
}
_BACKGROUND = {
    Priority.HIGH: T.SUBMIT_JOB_HIGH_BG,
    Priority.NORMAL: T.SUBMIT_JOB_BG,
    Priority.LOW: T.SUBMIT_JOB_LOW_BG,
}
#: Submit packet type -> is it a background job? (SUBMIT_JOB_EPOCH jobs are background.)
# What a request waits for: a submit (JOB_CREATED), or one of the other replies.
_SUBMIT, _BG_SUBMIT, _STATUS, _STATUS_UNIQUE, _ECHO, _OPTION = range(6)

#: The first 8 bytes of a submit packet (magic and type) -> what it waits for: one dict
#: lookup tells a submit from anything else, and a foreground one from a background one.
_SUBMITS = {
    **{REQ + kind.to_bytes(4, "big"): _SUBMIT for kind in _FOREGROUND.values()},
    **{REQ + kind.to_bytes(4, "big"): _BG_SUBMIT for kind in _BACKGROUND.values()},
    REQ + T.SUBMIT_JOB_EPOCH.to_bytes(4, "big"): _BG_SUBMIT,
}
_OUTCOMES = {
    T.WORK_COMPLETE: Outcome.COMPLETE,
    T.WORK_FAIL: Outcome.FAIL,
    T.WORK_EXCEPTION: Outcome.EXCEPTION,
}
#: ``_new(Event, (fields...))`` builds an event without the NamedTuple's Python-level
#: ``__new__``: the client makes one per job (as ``packets`` does per packet).
_new = tuple.__new__

_REPLY_TO = {
    T.STATUS_RES: _STATUS,
    T.STATUS_RES_UNIQUE: _STATUS_UNIQUE,
    T.ECHO_RES: _ECHO,
    T.OPTION_RES: _OPTION,
}


def encode_submit(
    function: bytes,
    data: bytes,
    *,
    unique: bytes = b"",
    priority: Priority = Priority.NORMAL,
    background: bool = False,
    epoch: int | None = None,
) -> bytes:
    """The wire bytes of a submit, checked: SUBMIT_JOB[_HIGH|_LOW][_BG], or SUBMIT_JOB_EPOCH
    when ``epoch`` (Unix seconds) is given. Send them with :meth:`ClientConnection.submit`.

    Raises :class:`LocalProtocolError` for an empty function name, a NUL in the name or key, a
    unique key over gearmand's 64 bytes, or a priority other than normal on a scheduled job
    (gearmand runs epoch jobs at normal priority).
    """
    if len(unique) > MAX_UNIQUE_SIZE:
        raise LocalProtocolError(
            f"unique key is {len(unique)} bytes; Gearman allows at most {MAX_UNIQUE_SIZE}"
        )
    if not function:
        raise LocalProtocolError("a job needs a function name")
    if epoch is not None:
        if priority is not Priority.NORMAL:
            raise LocalProtocolError(
                "scheduled (run_at) jobs run at normal priority in gearmand; leave priority NORMAL"
            )
        return Packet.request(
            T.SUBMIT_JOB_EPOCH, function, unique, str(int(epoch)).encode(), data
        ).encode()
    kind = (_BACKGROUND if background else _FOREGROUND)[priority]
    return Packet.request(kind, function, unique, data).encode()


class ClientConnection(Conversation):
    """A client's end of one connection: submits, status and echo requests, and their replies.

    ``receive_data`` returns :class:`JobCreated` / :class:`RequestRefused` for submits,
    :class:`JobUpdate` and :class:`JobEnded` for the foreground jobs accepted (one event for all
    submits coalesced onto one job), :class:`StatusReply`, :class:`EchoReply`,
    :class:`OptionAccepted`, and :class:`ErrorReceived` for an ERROR that answers nothing. A reply
    that answers nothing we asked, a worker's packet, or a text line is a
    :class:`RemoteProtocolError`.
    """

    __slots__ = ("_pending", "_running")

    role = "client"

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._pending: deque[tuple[int, Any]] = deque()  # (what it waits for, token), in order
        self._running: dict[bytes, list[Any]] = {}  # foreground job handle -> tokens attached

    # -- requests --------------------------------------------------------------------------------

    def submit(self, packet: bytes, token: Any) -> None:
        """Queue a submit made by :func:`encode_submit`; JOB_CREATED or ERROR answers it."""
        waits_for = _SUBMITS.get(packet[:8])
        if waits_for is None:
            raise LocalProtocolError(f"not a submit packet: {packet[:12]!r}")
        if self.state is not ConnectionState.OPEN:
            self._check_open()  # raises
        self._out.append(packet)
        self._pending.append((waits_for, token))

    def get_status(self, handle: bytes, token: Any) -> None:
        """Ask for a job's status by handle (GET_STATUS)."""
        self._request(_STATUS, token, T.GET_STATUS, handle)

    def get_status_unique(self, unique: bytes, token: Any) -> None:
        """Ask for a job's status by unique key (GET_STATUS_UNIQUE, gearmand 1.1.19+)."""
        self._request(_STATUS_UNIQUE, token, T.GET_STATUS_UNIQUE, unique)

    def echo(self, data: bytes, token: Any) -> None:
        """ECHO_REQ: the server sends ``data`` back."""
        self._request(_ECHO, token, T.ECHO_REQ, data)

    def option(self, name: bytes, token: Any) -> None:
        """OPTION_REQ, e.g. ``exceptions`` so WORK_EXCEPTION reaches us."""
        self._request(_OPTION, token, T.OPTION_REQ, name)

    def set_client_id(self, client_id: bytes) -> None:
        """SET_CLIENT_ID (no reply): the id ``workers`` shows for this connection."""
        self._queue(Packet.request(T.SET_CLIENT_ID, client_id).encode())

    def _request(self, waits_for: int, token: Any, kind: PacketType, arg: bytes) -> None:
        self._queue(Packet.request(kind, arg).encode())
        self._pending.append((waits_for, token))

    # -- where things stand ----------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Is any reply or foreground result still to come?"""
        return bool(self._pending or self._running)

    def waiting(self) -> list[Any]:
        """Tokens of the requests not yet answered, in the order sent (submits among them were
        not accepted yet: after a lost connection they can go to another server)."""
        return [token for _, token in self._pending]

    def running(self) -> list[Any]:
        """Tokens of the accepted foreground jobs not yet ended."""
        return [token for tokens in self._running.values() for token in tokens]

    # -- replies ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Any]:
        """Feed received bytes; return the events they complete, in order."""
        events: list[Any] = []
        append = events.append
        pending = self._pending
        running = self._running
        for _, kind, args in self._frames(data):  # type: ignore[misc]  # binary responses only
            if kind is T.JOB_CREATED:
                if not pending or pending[0][0] > _BG_SUBMIT:
                    raise self._broken("JOB_CREATED answers no submit")
                waits_for, token = pending.popleft()
                if waits_for == _SUBMIT:
                    running.setdefault(args[0], []).append(token)
                append(_new(JobCreated, (token, args[0])))
            elif kind in _OUTCOMES:
                ended = self._ended(kind, args)
                if ended is not None:  # else: a job we stopped waiting for
                    append(ended)
            elif kind is T.WORK_DATA or kind is T.WORK_WARNING or kind is T.WORK_STATUS:
                tokens = running.get(args[0])
                if tokens is not None:
                    append(JobUpdate(tuple(tokens), _update(kind, args)))
            elif kind is T.ERROR:
                code, text = args[0].decode(errors="replace"), args[1].decode(errors="replace")
                if pending:
                    append(RequestRefused(pending.popleft()[1], code, text))
                else:
                    append(ErrorReceived(code, text))
            elif kind in _REPLY_TO:
                if not pending or pending[0][0] != _REPLY_TO[kind]:
                    raise self._broken(f"{kind.name} answers no request of ours")
                token = pending.popleft()[1]
                append(_reply(kind, token, args))
            else:
                raise self._broken(f"a client does not expect {kind.name}")
        return events

    def _ended(self, kind: PacketType, args: tuple[bytes, ...]) -> JobEnded | None:
        handle = args[0]
        if kind is T.WORK_FAIL:
            # gearmand 1.1.20 sends the WORK_FAIL it makes from a WORK_EXCEPTION (for clients
            # without the exceptions option) with a stray trailing NUL.
            handle = handle.rstrip(b"\0")
        tokens = self._running.pop(handle, None)
        if tokens is None:
            return None
        ended: JobEnded = _new(
            JobEnded, (tuple(tokens), handle, _OUTCOMES[kind], args[1] if len(args) > 1 else b"")
        )
        return ended


def _update(kind: PacketType, args: tuple[bytes, ...]) -> WorkData | WorkWarning | WorkStatus:
    handle = args[0].decode()
    if kind is T.WORK_STATUS:
        return WorkStatus(handle, _int(args[1]), _int(args[2]))
    return (WorkData if kind is T.WORK_DATA else WorkWarning)(handle, args[1])


def _reply(kind: PacketType, token: Any, args: tuple[bytes, ...]) -> Any:
    if kind is T.ECHO_RES:
        return EchoReply(token, args[0])
    if kind is T.OPTION_RES:
        return OptionAccepted(token, args[0])
    first, known, running, numerator, denominator = args[:5]
    waiting = _int(args[5]) if kind is T.STATUS_RES_UNIQUE else None
    status = JobStatus(
        first.decode(), known == b"1", running == b"1", _int(numerator), _int(denominator), waiting
    )
    return StatusReply(token, status)


def _int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


class AdminConnection(Conversation):
    """A client's end of the text admin protocol: each command queued by :meth:`command` is
    answered by one complete :class:`AdminReply` from :meth:`receive_data`, in order.

    A binary packet in the middle of admin replies is a :class:`RemoteProtocolError`.
    """

    __slots__ = ("_replies",)

    role = "admin client"
    receives_magic = None
    receives_text = True
    receives_binary = False

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._replies: deque[AdminReply] = deque()

    def command(self, command: str, *args: str) -> None:
        """Queue ``command`` with ``args`` (no whitespace in them) to send."""
        line = command_line(command, *args)
        self._queue(line)
        self._replies.append(AdminReply(command))

    @property
    def busy(self) -> bool:
        """Is a reply still to come?"""
        return bool(self._replies)

    def receive_data(self, data: bytes) -> list[AdminReply]:
        """Feed received bytes; return every reply they complete."""
        done: list[AdminReply] = []
        for frame in self._frames(data):
            assert isinstance(frame, TextLine)  # the buffer refuses packets here
            if not self._replies:
                raise self._broken(f"an admin line answers no command: {frame.line[:40]!r}")
            if self._replies[0].add(frame.line):
                done.append(self._replies.popleft())
        return done
