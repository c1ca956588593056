"""The text admin protocol on the server side: gearmand 1.1.20's commands and exact replies,
and our ``show queue``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from itertools import islice

from ..protocol import text as fmt
from ..protocol.constants import Priority
from .model import Function, Peer, ServerJob, valid_name
from .state import ServerState

__all__ = ["VERSION", "admin_reply"]

#: What ``version`` answers; gearadmin only shows it.
VERSION = "1.1.20-django-gearman"

OK = b"OK\r\n"
END = b".\n"

#: Commands that change the server's state: only peers on the admin allow-list
#: (``--admin-allow``, loopback by default) may send them.
STATE_CHANGING = frozenset({b"cancel", b"drop", b"maxqueue", b"create", b"shutdown"})
DENIED = b"ERR PERMISSION_DENIED Only+addresses+in+--admin-allow+may+change+the+server\r\n"


def _err(code: str, message: str = "") -> bytes:
    return fmt.format_error(code, message)


def admin_reply(
    state: ServerState,
    peer: Peer,
    line: bytes,
    *,
    verbose: str = "WARNING",
    shutdown: Callable[[bool], None] | None = None,
) -> bytes:
    """The reply to one admin line (tokens split on spaces, the command case-insensitive).

    ``shutdown(graceful)`` stops the server (``shutdown [graceful]``, as gearmand's); without
    it the command is refused. State-changing commands need ``peer.admin``.
    """
    tokens = line.split()
    if not tokens:
        return _err("UNKNOWN_COMMAND", "Unknown+server+command")
    command = tokens[0].lower()
    args = tokens[1:]
    if command in STATE_CHANGING and not peer.admin:
        return DENIED
    if command == b"status":  # (as fmt.format_status, in bytes: 3x faster on many functions)
        return (
            b"".join(
                [
                    b"%s\t%d\t%d\t%d\n"
                    % (
                        f.name,
                        len(f.queues[0]) + len(f.queues[1]) + len(f.queues[2]) + f.running,
                        f.running,
                        len(f.workers),
                    )
                    for f in _functions(state)
                ]
            )
            + END
        )
    if command == b"prioritystatus":
        return (
            b"".join(
                [
                    b"%s\t%d\t%d\t%d\t%d\n"
                    % (
                        f.name,
                        len(f.queues[0]),
                        len(f.queues[1]),
                        len(f.queues[2]),
                        len(f.workers),
                    )
                    for f in _functions(state)
                ]
            )
            + END
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
            return fmt.format_unique_jobs(_line_safe(j.unique) for j in state.jobs.values())
        return _err("UNKNOWN_SHOW_ARGUMENTS")
    if command in STATE_CHANGING:
        return _change(state, command, args, shutdown) or _err(
            "UNKNOWN_COMMAND", "Unknown+server+command" + _s(tokens[0])
        )
    if command == b"getpid":
        return f"OK {os.getpid()}\n".encode()
    if command == b"verbose":
        return f"OK {verbose}\n".encode()
    if command == b"version":
        return f"OK {VERSION}\n".encode()
    return _err("UNKNOWN_COMMAND", "Unknown+server+command" + _s(tokens[0]))


def _change(
    state: ServerState,
    command: bytes,
    args: list[bytes],
    shutdown: Callable[[bool], None] | None,
) -> bytes | None:
    """The state-changing commands' replies (None: not a well-formed one)."""
    if command == b"cancel" and len(args) == 2 and args[0].lower() == b"job":
        return OK if state.cancel(args[1]) else _err("UNKNOWN_JOB")
    if command == b"maxqueue":
        return _maxqueue(state, args)
    if command == b"create" and len(args) == 2 and args[0].lower() == b"function":
        if not valid_name(args[1]):
            return _err("INVALID_FUNCTION_NAME", "Function+names+have+no+control+characters")
        state.function(args[1]).pinned = True
        return OK
    if command == b"drop" and len(args) == 2 and args[0].lower() == b"function":
        error = state.drop_function(args[1])
        return OK if error is None else f"ERR {error}\r\n".encode()
    if command == b"shutdown" and len(args) <= 1:
        graceful = bool(args) and args[0].lower() == b"graceful"
        if shutdown is None or (args and not graceful):
            return None
        shutdown(graceful)
        return OK
    return None


#: Rows ``show queue`` gives without a count.
SHOW_QUEUE_DEFAULT = 1000
#: Most rows one ``show queue`` gives, whatever count is asked for.
SHOW_QUEUE_MAX = 100_000


def _show_queue(state: ServerState, args: list[bytes]) -> bytes:
    """``show queue [N]`` (ours, not gearmand's): the first N jobs of :func:`_listed` with
    function, priority, state and times."""
    if len(args) > 1 or (args and not args[0].isdigit()):
        return _err("INVALID_ARGUMENTS", "show+queue+takes+one+optional+row+count")
    limit = min(int(args[0]), SHOW_QUEUE_MAX) if args else SHOW_QUEUE_DEFAULT
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
        sizes = [min(max(0, int(a)), 2**31 - 1) for a in args[1:]]
    except ValueError:
        return _err(
            "INVALID_ARGUMENTS", "An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue"
        )
    # gearmand ignores an unknown function; here the limit waits for the function to appear,
    # and is kept in the durable store.
    if not valid_name(args[0]):
        return _err("INVALID_FUNCTION_NAME", "Function+names+have+no+control+characters")
    if not sizes:
        state.set_max_queue(args[0], None)
    elif len(sizes) >= 3:
        state.set_max_queue(args[0], (sizes[0], sizes[1], sizes[2]))
    else:
        state.set_max_queue(args[0], (sizes[0],) * 3)
    return OK


def _functions(state: ServerState) -> list[Function]:
    return list(state.functions.values())  # gearmand's order is its hash table's: not meaningful


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


_LINE_BREAKERS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def _line_safe(raw: bytes) -> str:
    """A unique key on a line of its own: control characters as ``\\xNN`` escapes."""
    return _s(raw).translate(_LINE_BREAKERS)
