"""The job server's model: functions, queues, jobs, workers, and gearmand 1.1's rules.

No sockets and no asyncio here: each connection is a :class:`Peer` whose ``write`` the I/O
layer supplies, and timers come from an injected ``call_later``. What it implements, with
gearmand 1.1.20 as the reference (``libgearman-server/{server,job,worker}.cc``):

- three priorities per function; a worker takes from its functions in CAN_DO order,
  highest priority first within a function;
- unique-key coalescing on (function, unique) for queued *and running* jobs: later foreground
  submitters attach to the same job and all get its result;
- WORK_EXCEPTION reaches only clients that sent ``OPTION_REQ exceptions``; the others get
  WORK_FAIL;
- a worker that disconnects or times out (CAN_DO_TIMEOUT) gives its job back to the queue,
  counting a retry; ``job_retries`` caps that, then clients get WORK_FAIL;
- a foreground job whose clients all left before it ran is dropped when it would be handed out;
- scheduled jobs (SUBMIT_JOB_EPOCH) are released at their time **and sleeping workers are woken
  then** (gearmand 1.1 fails to, its issue #101).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

from ..protocol.constants import MAX_UNIQUE_SIZE, PacketType
from .model import (
    ERR_INVALID_FUNCTION_NAME,
    ERR_NOT_FOUND,
    ERR_QUEUE_FULL,
    ERR_SERVER_FULL,
    ERR_UNIQUE_TOO_LARGE,
    NO_JOB,
    NOOP,
    Function,
    Peer,
    ServerJob,
    Store,
    Timer,
    packet,
    valid_name,
)
from .schedule import Schedule

__all__ = ["ServerState"]

logger = logging.getLogger("django_gearman.server")

T = PacketType


class ServerState:
    """Every function, job and worker of one job server, and the rules that move them."""

    def __init__(
        self,
        *,
        call_later: Callable[[float, Callable[[], None]], Timer],
        store: Store | None = None,
        job_retries: int = 0,
        worker_wakeup: int = 0,
        handle_prefix: bytes = b"H:localhost",
        clock: Callable[[], float] = time.time,
        max_jobs: int = 0,
        max_job_bytes: int = 0,
        max_queue: tuple[int, int, int] = (0, 0, 0),
        limits: dict[bytes, tuple[int, int, int]] | None = None,
    ) -> None:
        self.call_later = call_later
        #: Caps over all functions (0: none): live jobs, and their data and unique bytes.
        self.max_jobs = max_jobs
        self.max_job_bytes = max_job_bytes
        self.job_bytes = 0
        #: Queue limits per priority: every function's default, and those set per function
        #: (``--max-queue NAME=N`` or ``maxqueue``), which outlive the function itself.
        self.default_max_queue = max_queue
        self.limits: dict[bytes, tuple[int, int, int]] = dict(limits or {})
        self.store = store
        self.job_retries = job_retries
        self.worker_wakeup = worker_wakeup
        self.clock = clock
        #: The current Unix second, for ``ServerJob.enqueued``; :meth:`tick` sets it, and the server
        #: calls that every second (one shared int object, rather than a clock call and a new
        #: int per job).
        self.stamp = int(clock())
        self.functions: dict[bytes, Function] = {}
        self.jobs: dict[bytes, ServerJob] = {}
        self.uniques: dict[tuple[bytes, bytes], ServerJob] = {}
        self.by_unique: dict[
            bytes, ServerJob
        ] = {}  # for GET_STATUS_UNIQUE, which names no function
        self.peers: dict[Peer, None] = {}
        self._handle_prefix = handle_prefix + b":"
        self._counter = itertools.count(1)
        self.schedule = Schedule(call_later=call_later, clock=clock, release=self._release)

    def tick(self) -> float:
        """Set :attr:`stamp` from the clock; return the clock's time."""
        now = self.clock()
        self.stamp = int(now)
        return now

    # -- connections ------------------------------------------------------------------------

    def connect(self, peer: Peer) -> None:
        self.peers[peer] = None

    def disconnect(self, peer: Peer) -> None:
        """A connection closed: requeue the jobs it was running, detach it as a client."""
        if peer.closed:
            return
        peer.closed = True
        self.peers.pop(peer, None)
        for job, timer in list(peer.jobs.items()):
            if timer is not None:
                timer.cancel()
            self._give_back(job)
        peer.jobs.clear()
        abilities = list(peer.abilities)
        peer.abilities.clear()
        for function in abilities:
            function.workers.pop(peer, None)
            function.sleepers.pop(peer, None)
            self._maybe_forget(function)
        for job in peer.waiting_on:
            if peer in job.clients:
                job.clients.remove(peer)
            if not job.clients and not job.background and job.worker is None:
                job.ignore = True  # dropped when a worker would get it, as gearmand does
        peer.waiting_on.clear()

    def function(self, name: bytes) -> Function:
        """The function named ``name``, made if new (the caller has checked the name)."""
        function = self.functions.get(name)
        if function is None:
            function = self.functions[name] = Function(
                name, self.limits.get(name, self.default_max_queue)
            )
        return function

    def _maybe_forget(self, function: Function) -> None:
        """Forget a function no job, worker or ``create function`` refers to: a client cannot
        grow the server by naming functions. Its queue limit is kept in :attr:`limits`."""
        if (
            not function.jobs
            and not function.workers
            and not function.pinned
            and self.functions.get(function.name) is function
        ):
            del self.functions[function.name]

    def set_max_queue(self, name: bytes, sizes: tuple[int, int, int] | None) -> None:
        """``maxqueue``: set (or with None, clear back to the default) a function's limits."""
        if sizes is None:
            self.limits.pop(name, None)
        else:
            self.limits[name] = sizes
        function = self.functions.get(name)
        if function is not None:
            function.max_queue = sizes if sizes is not None else self.default_max_queue
        if self.store is not None and hasattr(self.store, "save_limit"):
            self.store.save_limit(name, sizes)

    # -- clients ----------------------------------------------------------------------------

    def submit(
        self,
        peer: Peer | None,
        name: bytes,
        unique: bytes,
        data: bytes,
        priority: int,
        background: bool,  # noqa: FBT001 - the submit path: positional is cheaper
        when: int = 0,
        reducer: bytes = b"",
    ) -> tuple[ServerJob | None, bool, bytes | None]:
        """Create (or coalesce onto) a job. Returns ``(job, created, error_packet)``.

        ``created`` is False when the submit attached to an existing job. The caller sends
        JOB_CREATED (after making a new background job durable) and then calls :meth:`enqueue`.
        """
        if len(unique) > MAX_UNIQUE_SIZE:
            return None, False, ERR_UNIQUE_TOO_LARGE
        function = self.functions.get(name)
        if function is None:
            if not valid_name(name):
                return None, False, ERR_INVALID_FUNCTION_NAME
            function = self.function(name)
        key = None
        if unique:
            key = (name, b"-\0" + data) if unique == b"-" else (name, unique)
            existing = self.uniques.get(key)
            if existing is not None:
                if peer is not None and not background:
                    existing.clients.append(peer)
                    peer.waiting_on.add(existing)
                    existing.ignore = False
                return existing, False, None
        limit = function.max_queue[priority]
        if limit and function.total >= limit:
            self._maybe_forget(function)
            return None, False, ERR_QUEUE_FULL
        if peer is not None and (self.max_jobs or self.max_job_bytes):  # (not on replay)
            if (self.max_jobs and len(self.jobs) >= self.max_jobs) or (
                self.max_job_bytes and self.job_bytes + len(data) > self.max_job_bytes
            ):
                self._maybe_forget(function)
                return None, False, ERR_SERVER_FULL
        function.jobs += 1
        self.job_bytes += len(data)
        handle = self._handle_prefix + str(next(self._counter)).encode()
        job = ServerJob(handle, function, unique, data, priority, background, when, reducer)
        job.enqueued = self.stamp
        if key is not None:
            job.key = key
            self.uniques[key] = job
            self.by_unique[unique] = job
        self.jobs[handle] = job
        if peer is not None and not background:
            job.clients.append(peer)
            peer.waiting_on.add(job)
        return job, True, None

    def enqueue(self, job: ServerJob) -> None:
        """Put a job in its queue (or the schedule, if it runs later) and wake workers."""
        if job.when and job.when > self.clock():
            self.schedule.add(job)
            return
        job.function.queues[job.priority].append(job)
        if job.function.sleepers:
            self._wake(job.function)

    def forget(self, job: ServerJob) -> None:
        """Drop a job that never got queued (its durable write failed)."""
        self._finish(job, store=False)

    def _wake(self, function: Function) -> None:
        sleepers = function.sleepers
        budget = self.worker_wakeup or len(sleepers)
        for peer in list(sleepers)[:budget]:
            peer.noop_sent = True
            for other in peer.abilities:
                other.sleepers.pop(peer, None)
            peer.write(NOOP)

    def scheduled_jobs(self) -> list[ServerJob]:
        """Jobs waiting for their run time (SUBMIT_JOB_EPOCH), soonest first."""
        return [job for job in self.schedule if not job.ignore and job.handle in self.jobs]

    def _release(self, job: ServerJob) -> None:
        if job.handle in self.jobs:  # not dropped meanwhile
            self.enqueue(job)  # due now, so queued; ``when`` stays (show queue's run_at)

    def status(self, peer: Peer, handle: bytes) -> bytes:
        job = self.jobs.get(handle)
        if job is None:
            return packet(T.STATUS_RES, handle, b"0", b"0", b"0", b"0")
        running = b"1" if job.worker is not None else b"0"
        return packet(T.STATUS_RES, handle, b"1", running, job.numerator, job.denominator)

    def status_unique(self, peer: Peer, unique: bytes) -> bytes:
        job = self.by_unique.get(unique)
        if job is None or job.handle not in self.jobs:
            return packet(T.STATUS_RES_UNIQUE, unique, b"0", b"0", b"0", b"0", b"0")
        running = b"1" if job.worker is not None else b"0"
        waiting = str(len(job.clients)).encode()
        return packet(
            T.STATUS_RES_UNIQUE, unique, b"1", running, job.numerator, job.denominator, waiting
        )

    # -- workers ----------------------------------------------------------------------------

    def can_do(self, peer: Peer, name: bytes, timeout_ms: int = 0) -> None:
        function = self.functions.get(name)
        if function is None:
            if not valid_name(name):  # CAN_DO has no reply: a job for it could never be sent
                logger.warning(
                    "ignoring CAN_DO %r from %s: not a valid function name", name[:80], peer.host
                )
                return
            function = self.function(name)
        peer.abilities[function] = timeout_ms
        function.workers[peer] = None

    def cant_do(self, peer: Peer, name: bytes) -> None:
        function = self.functions.get(name)
        if function is None or function not in peer.abilities:
            return
        del peer.abilities[function]
        function.workers.pop(peer, None)
        function.sleepers.pop(peer, None)
        for job in [job for job in peer.jobs if job.function is function]:
            self._release_worker(peer, job)
            self._give_back(job)
        self._maybe_forget(function)

    def reset_abilities(self, peer: Peer) -> None:
        for function in list(peer.abilities):
            self.cant_do(peer, function.name)

    def pre_sleep(self, peer: Peer) -> None:
        for function in peer.abilities:
            if function.queues[0] or function.queues[1] or function.queues[2]:
                peer.write(NOOP)  # work arrived between NO_JOB and PRE_SLEEP
                return
        peer.sleeping = True
        peer.noop_sent = False
        for function in peer.abilities:
            function.sleepers[peer] = None

    def grab(self, peer: Peer, kind: PacketType) -> None:
        """GRAB_JOB / GRAB_JOB_UNIQ / GRAB_JOB_ALL: hand out the next job, or NO_JOB."""
        if peer.sleeping:
            peer.sleeping = False
            if not peer.noop_sent:  # a woken peer already left every sleepers list
                for function in peer.abilities:
                    function.sleepers.pop(peer, None)
        for function, timeout_ms in peer.abilities.items():
            queues = function.queues
            for queue in queues:
                while queue:
                    job = queue.popleft()
                    if job.ignore:
                        self._finish(job)
                        continue
                    self._assign(peer, job, timeout_ms, kind)
                    return
        peer.write(NO_JOB)

    def _assign(self, peer: Peer, job: ServerJob, timeout_ms: int, kind: PacketType) -> None:
        job.worker = peer
        job.function.running += 1
        timer = None
        if timeout_ms:
            timer = self.call_later(
                max(timeout_ms, 1000) / 1000, lambda: self._timed_out(peer, job)
            )
        peer.jobs[job] = timer
        if kind is T.GRAB_JOB:
            peer.write(packet(T.JOB_ASSIGN, job.handle, job.function.name, job.data))
        elif kind is T.GRAB_JOB_ALL and job.reducer:
            peer.write(
                packet(
                    T.JOB_ASSIGN_ALL,
                    job.handle,
                    job.function.name,
                    job.unique,
                    job.reducer,
                    job.data,
                )
            )
        else:
            peer.write(
                packet(T.JOB_ASSIGN_UNIQ, job.handle, job.function.name, job.unique, job.data)
            )

    def _timed_out(self, peer: Peer, job: ServerJob) -> None:
        """CAN_DO_TIMEOUT expired: as gearmand, take the job back (counting a retry)."""
        if peer.jobs.get(job, False) is False or job.worker is not peer:
            return
        logger.info(
            "job %s timed out on worker %s; requeueing",
            job.handle.decode(),
            peer.client_id.decode("utf-8", "replace"),
        )
        del peer.jobs[job]
        self._give_back(job)

    def _release_worker(self, peer: Peer, job: ServerJob) -> None:
        timer = peer.jobs.pop(job, None)
        if timer is not None:
            timer.cancel()

    def _give_back(self, job: ServerJob) -> None:
        """The job's worker left without a result: requeue it, or fail it past the retry cap."""
        job.function.running -= 1
        job.worker = None
        job.retries += 1
        if self.job_retries and job.retries >= self.job_retries:
            logger.warning("job %s failed after %d attempts", job.handle.decode(), job.retries)
            self._to_clients(job, packet(T.WORK_FAIL, job.handle))
            self._finish(job)
            return
        if not job.clients and not job.background:
            self._finish(job)  # nobody waits for it any more
            return
        self.enqueue(job)

    # -- results ----------------------------------------------------------------------------

    def work_result(self, peer: Peer, kind: PacketType, handle: bytes, data: bytes) -> None:
        """WORK_COMPLETE / WORK_FAIL / WORK_EXCEPTION: tell the clients, finish the job."""
        job = self.jobs.get(handle)
        if job is None or job.worker is not peer:
            self._not_found(peer, handle)
            return
        self._release_worker(peer, job)
        job.function.running -= 1
        job.worker = None
        if job.clients:
            if kind is T.WORK_COMPLETE:
                self._to_clients(job, packet(T.WORK_COMPLETE, handle, data))
            elif kind is T.WORK_FAIL:
                self._to_clients(job, packet(T.WORK_FAIL, handle))
            else:
                exception = packet(T.WORK_EXCEPTION, handle, data)
                fail = packet(T.WORK_FAIL, handle)
                for client in job.clients:
                    client.write(exception if client.exceptions else fail)
        self._finish(job)

    def work_update(self, peer: Peer, kind: PacketType, args: tuple[bytes, ...]) -> None:
        """WORK_DATA / WORK_WARNING / WORK_STATUS: forward to the clients (status is kept)."""
        job = self.jobs.get(args[0])
        if job is None or job.worker is not peer:
            self._not_found(peer, args[0])
            return
        if kind is T.WORK_STATUS:
            job.numerator, job.denominator = args[1], args[2]
        if job.clients:
            self._to_clients(job, packet(kind, *args))

    def _not_found(self, peer: Peer, handle: bytes) -> None:
        """A result for a job this peer does not run (it timed out, was cancelled, or was
        never its). gearmand answers ERROR JOB_NOT_FOUND; to a worker (it registered
        functions) that ERROR is read as the reply to the GRAB_JOB it pipelined after the
        result (Perl's Gearman::Worker then dies), so a worker gets nothing, and it is logged."""
        if peer.abilities:
            logger.info(
                "ignoring a result for %s from worker %s: not its job (timed out or cancelled?)",
                handle[:64].decode("utf-8", "replace"),
                peer.host,
            )
            return
        peer.write(ERR_NOT_FOUND)

    def _to_clients(self, job: ServerJob, data: bytes) -> None:
        for client in job.clients:
            client.write(data)

    def _finish(self, job: ServerJob, *, store: bool = True) -> None:
        if self.jobs.pop(job.handle, None) is job:
            self.job_bytes -= len(job.data)
            function = job.function
            function.jobs -= 1
            if not function.jobs:
                self._maybe_forget(function)
        if job.key is not None and self.uniques.get(job.key) is job:
            del self.uniques[job.key]
            if self.by_unique.get(job.unique) is job:
                del self.by_unique[job.unique]
        for client in job.clients:
            client.waiting_on.discard(job)
        job.clients = []
        if store and job.store_id and self.store is not None:
            self.store.remove(job.store_id)

    # -- admin ------------------------------------------------------------------------------

    def cancel(self, handle: bytes) -> bool:
        """``cancel job``, as gearmand: clients get WORK_FAIL, the stored copy is deleted, and the
        job stays listed as ignored until a worker would get it. A running job is cancelled
        the same way (its worker finishes it unheard); cancelling twice is OK too. False only
        for an unknown handle."""
        job = self.jobs.get(handle)
        if job is None:
            return False
        self._to_clients(job, packet(T.WORK_FAIL, handle))
        for client in job.clients:
            client.waiting_on.discard(job)
        job.clients = []
        job.ignore = True
        if job.store_id and self.store is not None:
            self.store.remove(job.store_id)
            job.store_id = 0
        return True

    def drop_function(self, name: bytes) -> str | None:
        """``drop function``: None on success, else gearmand's error text.

        As gearmand, the name matches without regard to case, and only workers or running jobs
        prevent the drop. gearmand then frees the function under its queued jobs, which never
        run again; here they are discarded cleanly: waiting clients get WORK_FAIL and stored
        copies are deleted.
        """
        function = self.functions.get(name)
        if function is None:
            lowered = name.lower()
            function = next((f for f in self.functions.values() if f.name.lower() == lowered), None)
            if function is None:
                return "function not found"
        if function.workers or function.running:
            return "there are still connected workers or executing clients"
        del self.functions[function.name]
        for queue in function.queues:
            for job in queue:
                self._to_clients(job, packet(T.WORK_FAIL, job.handle))
                self._finish(job)
            queue.clear()
        for job in self.schedule:
            if job.function is function and job.handle in self.jobs:
                self._to_clients(job, packet(T.WORK_FAIL, job.handle))
                self._finish(job)  # the schedule skips jobs no longer in self.jobs
        return None
