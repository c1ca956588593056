"""The text admin protocol on the server side: gearmand 1.1.20's commands and exact replies,
and our ``show queue``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice

from ..protocol import text as fmt
from ..protocol.constants import Priority
from .model import Function, Peer, ServerJob
from .state import ServerState

__all__ = ["VERSION", "admin_reply"]

#: What ``version`` answers; gearadmin only shows it.
VERSION = "1.1.20-django-gearman"

OK = b"OK\r\n"


def _err(code: str, message: str = "") -> bytes:
    return fmt.format_error(code, message)


def admin_reply(state: ServerState, peer: Peer, line: bytes, *, verbose: str = "WARNING") -> bytes:
    """The reply to one admin line (tokens split on spaces, the command case-insensitive)."""
    tokens = line.split()
    if not tokens:
        return _err("UNKNOWN_COMMAND", "Unknown+server+command")
    command = tokens[0].lower()
    args = tokens[1:]
    if command == b"status":
        return fmt.format_status(
            fmt.FunctionStatus(_s(f.name), f.total, f.running, len(f.workers))
            for f in _functions(state)
        )
    if command == b"prioritystatus":
        return fmt.format_priority_status(
            fmt.PriorityStatus(
                _s(f.name), len(f.queues[0]), len(f.queues[1]), len(f.queues[2]), len(f.workers)
            )
            for f in _functions(state)
        )
    if command == b"workers":
        return fmt.format_workers(
            fmt.WorkerInfo(
                p.fd, p.host, _s(p.client_id), tuple(_s(f.name) for f in reversed(p.abilities))
            )
            for p in reversed(state.peers)
        )
    if command == b"show" and args and args[0].lower() == b"queue":
        return _show_queue(state, args[1:])
    if command == b"show":
        what = b" ".join(args).lower()
        if what == b"jobs":
            return fmt.format_jobs(
                fmt.JobInfo(_s(j.handle), j.retries, j.ignore, j.worker is None and not j.ignore)
                for j in state.jobs.values()
            )
        if what == b"unique jobs":
            return fmt.format_unique_jobs(_s(j.unique) for j in state.jobs.values())
        return _err("UNKNOWN_SHOW_ARGUMENTS")
    if command == b"cancel" and len(args) == 2 and args[0].lower() == b"job":
        return OK if state.cancel(args[1]) else _err("UNKNOWN_JOB")
    if command == b"maxqueue":
        return _maxqueue(state, args)
    if command == b"create" and len(args) == 2 and args[0].lower() == b"function":
        state.function(args[1])
        return OK
    if command == b"drop" and len(args) == 2 and args[0].lower() == b"function":
        error = state.drop_function(args[1])
        return OK if error is None else f"ERR {error}\r\n".encode()
    if command == b"getpid":
        return f"OK {os.getpid()}\n".encode()
    if command == b"verbose":
        return f"OK {verbose}\n".encode()
    if command == b"version":
        return f"OK {VERSION}\n".encode()
    return _err("UNKNOWN_COMMAND", "Unknown+server+command" + _s(tokens[0]))


#: Rows ``show queue`` gives without a count.
SHOW_QUEUE_DEFAULT = 1000


def _show_queue(state: ServerState, args: list[bytes]) -> bytes:
    """``show queue [N]`` (ours, not gearmand's): the first N jobs of :func:`_listed` with
    function, priority, state and times."""
    if len(args) > 1 or (args and not args[0].isdigit()):
        return _err("INVALID_ARGUMENTS", "show+queue+takes+one+optional+row+count")
    limit = int(args[0]) if args else SHOW_QUEUE_DEFAULT
    return fmt.format_queue(
        fmt.QueuedJob(
            _s(job.handle),
            _s(job.function.name),
            _s(job.unique),
            Priority(job.priority).label,
            kind,
            job.background,
            bool(job.store_id),
            job.enqueued,
            job.when,
        )
        for kind, job in islice(_listed(state), limit)
    )


def _listed(state: ServerState) -> Iterator[tuple[str, ServerJob]]:
    """Every job but cancelled ones, lazily: running jobs in submit order, then queued jobs in
    the order workers get them (function by function by name, high to low priority), then
    scheduled jobs by run time. Running jobs are found through the workers, not all jobs."""
    running = [job for peer in state.peers for job in peer.jobs if not job.ignore]
    running.sort(key=_submit_order)
    for job in running:
        yield "running", job
    for function in sorted(state.functions.values(), key=_name):
        for queue in function.queues:
            for job in queue:
                if not job.ignore:
                    yield "queued", job
    for job in state.scheduled_jobs():
        yield "scheduled", job


def _submit_order(job: ServerJob) -> tuple[int, bytes]:
    return len(job.handle), job.handle  # handles are one prefix and a rising counter


def _name(function: Function) -> bytes:
    return function.name


def _maxqueue(state: ServerState, args: list[bytes]) -> bytes:
    if not args:
        return _err(
            "INVALID_ARGUMENTS", "An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue"
        )
    try:
        sizes = [max(0, int(a)) for a in args[1:]]
    except ValueError:
        return _err(
            "INVALID_ARGUMENTS", "An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue"
        )
    function = state.functions.get(args[0])
    if function is not None:  # gearmand: an unknown function still gets OK (no-op)
        if not sizes:
            function.max_queue = (0, 0, 0)
        elif len(sizes) >= 3:
            function.max_queue = (sizes[0], sizes[1], sizes[2])
        else:
            function.max_queue = (sizes[0],) * 3
    return OK


def _functions(state: ServerState) -> list[Function]:
    return list(state.functions.values())  # gearmand's order is its hash table's: not meaningful


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
