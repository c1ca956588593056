"""The worker's conversation: abilities, the grab/sleep cycle, and the results of its jobs.

A worker asks for work with GRAB_JOB_UNIQ; the server answers each grab with a job
(JOB_ASSIGN*) or NO_JOB. Once every grab outstanding came back NO_JOB the worker sends
PRE_SLEEP and waits: the server sends NOOP when a job arrives, and the worker grabs again.
:class:`WorkerConnection` runs that cycle: it counts grabs, sends PRE_SLEEP itself when the last
one finds nothing, and reports :class:`WentToSleep` / :class:`Woken`; the caller decides how many
jobs to ask for (its prefetch, what is left of ``max_jobs``). It also refuses to send a result
for a job it was not given, or twice.

No I/O here: see :mod:`~django_gearman.gearman.protocol.connection`.
"""

from __future__ import annotations

import enum
from typing import Any

from ..errors import LocalProtocolError
from .connection import Conversation
from .constants import REQ, PacketType
from .events import ErrorReceived, JobAssigned, WentToSleep, Woken
from .packets import Packet, encode

__all__ = ["WorkerConnection", "WorkerState"]

T = PacketType
_GRAB = Packet.request(T.GRAB_JOB_UNIQ).encode()
_PRE_SLEEP = Packet.request(T.PRE_SLEEP).encode()
_SLEPT = WentToSleep()
_WOKEN = Woken()


class WorkerState(enum.Enum):
    """Where the grab/sleep cycle stands."""

    IDLE = "idle"  # no grab outstanding, not asleep (just connected, or running what it got)
    GRABBING = "grabbing"  # GRAB_JOB_UNIQ sent, not every one answered
    SLEEPING = "sleeping"  # PRE_SLEEP sent; waiting for NOOP


class WorkerConnection(Conversation):
    """A worker's end of one connection.

    ``receive_data`` returns :class:`JobAssigned` for each job handed out,
    :class:`WentToSleep` when the last grab found nothing (PRE_SLEEP is then queued),
    :class:`Woken` when a NOOP ends the sleep, and :class:`ErrorReceived` for an ERROR packet.
    A job nobody grabbed, a client's packet or a text line is a :class:`RemoteProtocolError`.
    """

    __slots__ = ("_jobs", "grabs", "worker_state")

    role = "worker"

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self.worker_state = WorkerState.IDLE
        #: GRAB_JOB_UNIQ sent and not yet answered.
        self.grabs = 0
        self._jobs: set[bytes] = set()  # handles assigned, result not yet sent

    # -- abilities -------------------------------------------------------------------------------

    def set_client_id(self, client_id: bytes) -> None:
        """SET_CLIENT_ID: the id ``workers`` shows for this connection."""
        self._queue(Packet.request(T.SET_CLIENT_ID, client_id).encode())

    def can_do(self, function: bytes, timeout_ms: int | None = None) -> None:
        """Offer ``function``; with ``timeout_ms`` (CAN_DO_TIMEOUT) the server takes a job back
        after that long."""
        if timeout_ms is None:
            self._queue(Packet.request(T.CAN_DO, function).encode())
        elif timeout_ms < 1:
            raise LocalProtocolError(f"CAN_DO_TIMEOUT takes at least 1 ms, not {timeout_ms}")
        else:
            self._queue(
                Packet.request(T.CAN_DO_TIMEOUT, function, str(int(timeout_ms)).encode()).encode()
            )

    def cant_do(self, function: bytes) -> None:
        """Stop offering ``function``."""
        self._queue(Packet.request(T.CANT_DO, function).encode())

    def reset_abilities(self) -> None:
        """Stop offering every function."""
        self._queue(Packet.request(T.RESET_ABILITIES).encode())

    # -- the grab/sleep cycle --------------------------------------------------------------------

    def grab(self, count: int = 1) -> None:
        """Ask for ``count`` more jobs (GRAB_JOB_UNIQ each); also how a sleeping worker asks
        again without waiting for NOOP (its idle poll)."""
        if count <= 0:
            return
        self._queue(_GRAB * count)
        self.grabs += count
        self.worker_state = WorkerState.GRABBING

    @property
    def jobs(self) -> frozenset[bytes]:
        """Handles of the jobs assigned whose result is not sent yet."""
        return frozenset(self._jobs)

    @property
    def outstanding(self) -> int:
        """Jobs asked for and not yet answered, plus jobs held whose result is not sent: what to
        subtract from the jobs wanted before grabbing more (a read may bring several at once)."""
        return self.grabs + len(self._jobs)

    # -- results ---------------------------------------------------------------------------------

    def work_complete(self, handle: bytes, result: bytes) -> None:
        """The job succeeded with ``result`` (WORK_COMPLETE)."""
        self._end(handle)
        self._out.append(encode(REQ, T.WORK_COMPLETE, (handle, result)))

    def work_fail(self, handle: bytes) -> None:
        """The job failed without details (WORK_FAIL)."""
        self._end(handle)
        self._out.append(encode(REQ, T.WORK_FAIL, (handle,)))

    def work_exception(self, handle: bytes, data: bytes) -> None:
        """The job raised; ``data`` describes it (WORK_EXCEPTION)."""
        self._end(handle)
        self._out.append(encode(REQ, T.WORK_EXCEPTION, (handle, data)))

    def work_data(self, handle: bytes, data: bytes) -> None:
        """Partial output for the waiting clients (WORK_DATA)."""
        self._update(T.WORK_DATA, handle, data)

    def work_warning(self, handle: bytes, data: bytes) -> None:
        """A warning for the waiting clients (WORK_WARNING)."""
        self._update(T.WORK_WARNING, handle, data)

    def work_status(self, handle: bytes, numerator: int, denominator: int) -> None:
        """Progress, e.g. 3 of 10 (WORK_STATUS)."""
        self._update(
            T.WORK_STATUS, handle, str(int(numerator)).encode(), str(int(denominator)).encode()
        )

    def _end(self, handle: bytes) -> None:
        if handle not in self._jobs:
            raise LocalProtocolError(
                f"no job {handle!r} is running on this connection (or its result was sent)"
            )
        self._check_open()
        self._jobs.discard(handle)

    def _update(self, kind: PacketType, handle: bytes, *args: bytes) -> None:
        if handle not in self._jobs:
            raise LocalProtocolError(
                f"no job {handle!r} is running on this connection (or its result was sent)"
            )
        self._queue(Packet.request(kind, handle, *args).encode())

    # -- what the server says --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Any]:
        """Feed received bytes; return the events they complete, in order."""
        events: list[Any] = []
        for _, kind, args in self._frames(data):  # type: ignore[misc]  # binary responses only
            if kind is T.JOB_ASSIGN_UNIQ or kind is T.JOB_ASSIGN or kind is T.JOB_ASSIGN_ALL:
                if self.grabs <= 0:
                    raise self._broken(f"{kind.name} answers no grab")
                self.grabs -= 1
                if not self.grabs:
                    self.worker_state = WorkerState.IDLE
                unique = b"" if kind is T.JOB_ASSIGN else args[2]
                self._jobs.add(args[0])
                events.append(JobAssigned(args[0], args[1], unique, args[-1]))
            elif kind is T.NO_JOB:
                if self.grabs <= 0:
                    raise self._broken("NO_JOB answers no grab")
                self.grabs -= 1
                if not self.grabs:  # every grab answered and the last found nothing: sleep
                    self._out.append(_PRE_SLEEP)
                    self.worker_state = WorkerState.SLEEPING
                    events.append(_SLEPT)
            elif kind is T.NOOP:
                if self.worker_state is WorkerState.SLEEPING:  # else: a late wake-up, already awake
                    self.worker_state = WorkerState.IDLE
                    events.append(_WOKEN)
            elif kind is T.ERROR:
                events.append(
                    ErrorReceived(
                        args[0].decode(errors="replace"), args[1].decode(errors="replace")
                    )
                )
            else:
                raise self._broken(f"a worker does not expect {kind.name}")
        return events
