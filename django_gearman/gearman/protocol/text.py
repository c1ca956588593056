"""The text admin protocol: commands, reply framing, typed rows, and gearmand's exact formats.

Formats are byte-exact to gearmand 1.1.20 (``libgearman-server/text.cc``): list replies are
lines ending in ``\\n`` closed by ``.\\n``; ``OK``/``ERR`` lines end in ``\\r\\n`` except the
``OK <value>\\n`` replies of ``getpid``, ``verbose`` and ``version``. The parsers turn replies
into rows; the ``format_*`` functions produce the same bytes from rows (for our server).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import AdminError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "LIST_COMMANDS",
    "AdminReply",
    "FunctionStatus",
    "JobInfo",
    "PriorityStatus",
    "QueuedJob",
    "WorkerInfo",
    "command_line",
    "format_error",
    "format_jobs",
    "format_priority_status",
    "format_queue",
    "format_status",
    "format_unique_jobs",
    "format_workers",
    "is_list_command",
    "parse_jobs",
    "parse_ok",
    "parse_priority_status",
    "parse_queue",
    "parse_status",
    "parse_unique_jobs",
    "parse_value",
    "parse_workers",
]

#: Commands whose reply is a list closed by a ``.`` line.
LIST_COMMANDS = frozenset({"status", "prioritystatus", "workers", "show jobs", "show unique jobs"})

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # lossless: names are bytes on the wire


def _text(raw: bytes) -> str:
    return raw.decode(_ENCODING, _ERRORS)


def _raw(text: str) -> bytes:
    return text.encode(_ENCODING, _ERRORS)


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    """A ``status`` row: jobs queued+running, running, and workers able to run the function."""

    function: str
    total: int
    running: int
    available_workers: int

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker (``total - running``)."""
        return self.total - self.running


@dataclass(frozen=True, slots=True)
class PriorityStatus:
    """A ``prioritystatus`` row: queued (not running) jobs per priority, and workers."""

    function: str
    high: int
    normal: int
    low: int
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A ``workers`` row: one connection (clients too, with no functions)."""

    fd: int
    address: str
    client_id: str
    functions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A ``show jobs`` row."""

    handle: str
    retries: int
    ignore_job: bool
    job_queued: bool


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A ``show queue`` row (our server's extension; gearmand has no such command).

    ``priority`` is ``"high"``, ``"normal"`` or ``"low"``; ``state`` is ``"running"``,
    ``"queued"`` or ``"scheduled"`` (an epoch job before its time); ``enqueued`` and ``run_at``
    are Unix seconds, 0 meaning unknown and "as soon as possible".
    """

    handle: str
    function: str
    unique: str
    priority: str
    state: str
    background: bool
    durable: bool
    enqueued: int
    run_at: int


def command_line(command: str, *args: str) -> bytes:
    """The wire bytes of an admin command; arguments may not hold whitespace or newlines."""
    for arg in args:
        if not arg or any(ch in arg for ch in " \t\r\n"):
            raise LocalProtocolError(f"admin argument {arg!r} is empty or holds whitespace")
    if command.startswith("\0") or "\n" in command:
        raise LocalProtocolError(f"invalid admin command {command!r}")
    # CRLF, as gearadmin sends: gearmand 1.1.20 drops the last character of a line that ends in
    # a bare LF, so "create function abc\n" would create "ab".
    return _raw(" ".join((command, *args))) + b"\r\n"


def is_list_command(command: str) -> bool:
    """Does this command's reply end at a ``.`` line? (``show queue`` may carry a row count.)"""
    words = command.strip().lower().split()
    return " ".join(words) in LIST_COMMANDS or words[:2] == ["show", "queue"]


class AdminReply:
    """Collects the text lines of one admin reply (sans-I/O framing).

    Feed lines with :meth:`add`; it returns True once the reply is complete. A list command's
    reply ends at a ``.`` line, any other at its first line; an ``ERR`` line ends either.
    """

    __slots__ = ("is_list", "lines")

    def __init__(self, command: str) -> None:
        self.is_list = is_list_command(command)
        self.lines: list[bytes] = []

    def add(self, line: bytes) -> bool:
        if self.is_list:
            if line == b".":
                return True
            if not self.lines and line.startswith(b"ERR "):
                self.lines.append(line)
                return True
            self.lines.append(line)
            return False
        self.lines.append(line)
        return True

    def raise_for_error(self) -> None:
        """Raise :class:`AdminError` if the reply is an ``ERR`` line."""
        if len(self.lines) == 1 and (self.lines[0].startswith(b"ERR ") or self.lines[0] == b"ERR"):
            parts = _text(self.lines[0]).split(" ", 2)
            raise AdminError(
                parts[1] if len(parts) > 1 else "UNKNOWN_ERROR", parts[2] if len(parts) > 2 else ""
            )


def _fields(line: bytes, count: int, what: str) -> list[str]:
    fields = _text(line).split("\t")
    if len(fields) != count:
        raise RemoteProtocolError(
            f"malformed {what} line {line!r}: expected {count} tab-separated fields"
        )
    return fields


def _int(value: str, line: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise RemoteProtocolError(f"malformed number {value!r} in admin line {line!r}") from None


def parse_status(lines: Iterable[bytes]) -> list[FunctionStatus]:
    rows = []
    for line in lines:
        fn, total, running, workers = _fields(line, 4, "status")
        rows.append(FunctionStatus(fn, _int(total, line), _int(running, line), _int(workers, line)))
    return rows


def parse_priority_status(lines: Iterable[bytes]) -> list[PriorityStatus]:
    rows = []
    for line in lines:
        fn, high, normal, low, workers = _fields(line, 5, "prioritystatus")
        rows.append(
            PriorityStatus(
                fn, _int(high, line), _int(normal, line), _int(low, line), _int(workers, line)
            )
        )
    return rows


def parse_workers(lines: Iterable[bytes]) -> list[WorkerInfo]:
    rows = []
    for line in lines:
        text = _text(line)
        parts = text.split(" ", 2)
        if len(parts) != 3:
            raise RemoteProtocolError(f"malformed workers line {line!r}")
        fd, address, rest = parts
        client_id, sep, functions = rest.partition(" :")
        if not sep:
            raise RemoteProtocolError(f"malformed workers line {line!r}: no ' :' separator")
        rows.append(WorkerInfo(_int(fd, line), address, client_id, tuple(functions.split())))
    return rows


def parse_jobs(lines: Iterable[bytes]) -> list[JobInfo]:
    rows = []
    for line in lines:
        handle, retries, ignore, queued = _fields(line, 4, "show jobs")
        rows.append(JobInfo(handle, _int(retries, line), ignore != "0", queued != "0"))
    return rows


def parse_unique_jobs(lines: Iterable[bytes]) -> list[str]:
    return [_text(line) for line in lines]


def parse_queue(lines: Iterable[bytes]) -> list[QueuedJob]:
    rows = []
    for line in lines:
        handle, function, unique, priority, state, background, durable, enqueued, run_at = _fields(
            line, 9, "show queue"
        )
        rows.append(
            QueuedJob(
                _unescape(handle),
                _unescape(function),
                _unescape(unique),
                priority,
                state,
                background != "0",
                durable != "0",
                _int(enqueued, line),
                _int(run_at, line),
            )
        )
    return rows


def parse_ok(lines: Sequence[bytes]) -> None:
    """Check an ``OK`` reply (``cancel job``, ``maxqueue``, ``create/drop function``)."""
    if list(lines) != [b"OK"]:
        raise RemoteProtocolError(f"expected OK, got {list(lines)!r}")


def parse_value(lines: Sequence[bytes]) -> str:
    """The value of an ``OK <value>`` reply (``getpid``, ``verbose``, ``version``)."""
    if len(lines) != 1 or not lines[0].startswith(b"OK "):
        raise RemoteProtocolError(f"expected 'OK <value>', got {list(lines)!r}")
    return _text(lines[0][3:])


# -- formatting, for a server -------------------------------------------------------------

_END = b".\n"


def format_status(rows: Iterable[FunctionStatus]) -> bytes:
    return (
        b"".join(
            _raw(f"{r.function}\t{r.total}\t{r.running}\t{r.available_workers}\n") for r in rows
        )
        + _END
    )


def format_priority_status(rows: Iterable[PriorityStatus]) -> bytes:
    return (
        b"".join(_raw(f"{r.function}\t{r.high}\t{r.normal}\t{r.low}\t{r.workers}\n") for r in rows)
        + _END
    )


def format_workers(rows: Iterable[WorkerInfo]) -> bytes:
    return (
        b"".join(
            _raw(
                f"{r.fd} {r.address} {r.client_id or '-'} :"
                + "".join(f" {fn}" for fn in r.functions)
                + "\n"
            )
            for r in rows
        )
        + _END
    )


def format_jobs(rows: Iterable[JobInfo]) -> bytes:
    return (
        b"".join(
            _raw(f"{r.handle}\t{r.retries}\t{int(r.ignore_job)}\t{int(r.job_queued)}\n")
            for r in rows
        )
        + _END
    )


def format_queue(rows: Iterable[QueuedJob]) -> bytes:
    return (
        b"".join(
            _raw(
                f"{_escape(r.handle)}\t{_escape(r.function)}\t{_escape(r.unique)}\t{r.priority}\t{r.state}\t"
                f"{int(r.background)}\t{int(r.durable)}\t{r.enqueued}\t{r.run_at}\n"
            )
            for r in rows
        )
        + _END
    )


# Names and unique keys are bytes without NULs: a tab or line break in one would break the row,
# so ``show queue`` writes them as backslash escapes.
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _escape(text: str) -> str:
    if not any(ch in text for ch in "\\\t\n\r"):
        return text
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            following = next(chars, "")
            if following not in _UNESCAPES:
                raise RemoteProtocolError(f"bad escape \\{following} in show queue field {text!r}")
            out.append(_UNESCAPES[following])
        else:
            out.append(ch)
    return "".join(out)


def format_unique_jobs(uniques: Iterable[str]) -> bytes:
    return b"".join(_raw(f"{u}\n") for u in uniques) + _END


def format_error(code: str, message: str = "") -> bytes:
    """An ``ERR`` line, exactly as given (gearmand writes some messages with ``+`` for spaces)."""
    text = f"ERR {code} {message}" if message else f"ERR {code}"
    return _raw(text) + b"\r\n"
