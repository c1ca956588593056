"""The text admin protocol: commands, reply framing, typed rows, and gearmand's exact formats.

Formats are byte-exact to gearmand 1.1.20 (``libgearman-server/text.cc``): list replies are
lines ending in ``\\n`` closed by ``.\\n``; ``OK``/``ERR`` lines end in ``\\r\\n`` except the
``OK <value>\\n`` replies of ``getpid``, ``verbose`` and ``version``. The parsers turn replies
into rows; the ``format_*`` functions produce the same bytes from rows (for our server).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import AdminError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "LIST_COMMANDS",
    "AdminReply",
    "AdminRows",
    "FunctionStatus",
    "JobInfo",
    "PriorityStatus",
    "QueuedJob",
    "UnreadableRow",
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

_Row = TypeVar("_Row")

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


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """Reply lines that did not parse as a row of ``command``: its raw bytes and why.

    A name with a line break splits one row over several lines; those lines are kept together
    in ``raw``, joined by ``\\n``, so none of them passes for a row of its own.
    """

    command: str
    raw: bytes
    reason: str

    @property
    def text(self) -> str:
        """``raw`` as text (bytes that are not UTF-8 as lone surrogates, losslessly)."""
        return _text(self.raw)


class AdminRows(list[_Row]):
    """The rows of one list reply (a plain list), and the lines that did not parse.

    With ``strict=False`` a parser keeps going past a line it cannot read and records it in
    ``unreadable``; a caller can then show the other rows and say how many could not be read.
    """

    __slots__ = ("unreadable",)

    def __init__(self, rows: Iterable[_Row] = (), unreadable: Iterable[UnreadableRow] = ()) -> None:
        super().__init__(rows)
        self.unreadable: tuple[UnreadableRow, ...] = tuple(unreadable)


# The row parsers below raise RemoteProtocolError with a short reason; _rows names the line.


def _fields(line: bytes, count: int) -> list[str]:
    fields = _text(line).split("\t")
    if len(fields) != count:
        raise RemoteProtocolError(f"expected {count} tab-separated fields")
    return fields


def _named_fields(line: bytes, numbers: int) -> list[str]:
    """A name, then ``numbers`` tab-separated numbers: the name is all before the last ones.

    gearmand escapes nothing, so a name may hold tabs; numbers never do, so this is exact.
    """
    fields = _text(line).rsplit("\t", numbers)
    if len(fields) != numbers + 1:
        raise RemoteProtocolError(f"expected {numbers + 1} tab-separated fields")
    return fields


def _int(value: str) -> int:
    # ASCII digits only: int() would also take "-1", " 1", "1_0" and other scripts' digits.
    if value.isascii() and value.isdigit():
        try:
            return int(value)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            pass
    raise RemoteProtocolError(f"malformed number {value[:40]!r}")


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise RemoteProtocolError(f"malformed flag {value[:40]!r}")
    return value == "1"


def _rows(
    command: str,
    lines: Iterable[bytes],
    parse_line: Callable[[bytes], _Row],
    *,
    strict: bool,
    joins: bool = True,
) -> AdminRows[_Row]:
    """Parse row by row; ``strict`` raises at the first line that does not parse.

    Otherwise such a line is recorded as unreadable, and (``joins``) so is every line after it
    up to the next one that parses: a line break in a name cuts its row in two, and the second
    half, which ends with the row's numbers, must not pass for a row of its own.
    """
    rows: list[_Row] = []
    unreadable: list[UnreadableRow] = []
    cut: list[bytes] = []  # lines of a row that does not parse, while it may go on
    reason = ""
    for line in lines:
        try:
            row = parse_line(line)
        except RemoteProtocolError as error:
            if strict:
                raise _malformed(command, line, error) from None
            if not joins:
                unreadable.append(UnreadableRow(command, line, str(error)))
                continue
            reason = reason or str(error)
            cut.append(line)
            continue
        if cut:
            cut.append(line)
            unreadable.append(UnreadableRow(command, b"\n".join(cut), _split_reason(len(cut))))
            cut, reason = [], ""
        else:
            rows.append(row)
    if cut:
        unreadable.append(UnreadableRow(command, b"\n".join(cut), reason))
    return AdminRows(rows, unreadable)


def _malformed(command: str, line: bytes, error: RemoteProtocolError) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed {command} line {line[:200]!r}: {error}")


def _split_reason(count: int) -> str:
    return f"one row over {count} lines: a name or client id with a line break"


def _status_row(line: bytes) -> FunctionStatus:
    fn, total, running, workers = _named_fields(line, 3)
    return FunctionStatus(fn, _int(total), _int(running), _int(workers))


def _priority_row(line: bytes) -> PriorityStatus:
    fn, high, normal, low, workers = _named_fields(line, 4)
    return PriorityStatus(fn, _int(high), _int(normal), _int(low), _int(workers))


def _job_row(line: bytes) -> JobInfo:
    handle, retries, ignore, queued = _named_fields(line, 3)
    return JobInfo(handle, _int(retries), _flag(ignore), _flag(queued))


def _worker_row(line: bytes) -> WorkerInfo:
    parts = _text(line).split(" ", 2)
    if len(parts) != 3:
        raise RemoteProtocolError("expected 'FD ADDRESS CLIENT_ID :'")
    fd, address, rest = parts
    client_id, sep, functions = rest.partition(" :")
    if not sep:
        raise RemoteProtocolError("no ' :' separator")
    # Names are separated by spaces; a tab is part of a name (gearmand escapes nothing).
    return WorkerInfo(_int(fd), address, client_id, tuple(fn for fn in functions.split(" ") if fn))


def _queue_row(line: bytes) -> QueuedJob:
    handle, function, unique, priority, state, background, durable, enqueued, run_at = _fields(
        line, 9
    )
    return QueuedJob(
        _unescape(handle),
        _unescape(function),
        _unescape(unique),
        priority,
        state,
        _flag(background),
        _flag(durable),
        _int(enqueued),
        _int(run_at),
    )


def parse_status(lines: Iterable[bytes], *, strict: bool = True) -> AdminRows[FunctionStatus]:
    """``status`` rows; with ``strict=False``, lines that do not parse are kept aside (see
    :class:`AdminRows`)."""
    return _rows("status", lines, _status_row, strict=strict)


def parse_priority_status(
    lines: Iterable[bytes], *, strict: bool = True
) -> AdminRows[PriorityStatus]:
    return _rows("prioritystatus", lines, _priority_row, strict=strict)


_WORKER_ROW_START = re.compile(rb"[0-9]+ [^ ]+ ")


def parse_workers(lines: Iterable[bytes], *, strict: bool = True) -> AdminRows[WorkerInfo]:
    """``workers`` rows. A row is a line starting ``FD ADDRESS `` and holding `` :``; lines
    before that separator or not starting so are the rest of the row above, cut by a line break
    in its client id or a function name, and the whole row is unreadable. (A client id can
    still forge a whole row that looks like any other: gearmand's format cannot tell them apart.)
    """
    rows: list[WorkerInfo] = []
    unreadable: list[UnreadableRow] = []
    groups: list[list[bytes]] = []
    for line in lines:
        if groups and (
            not _WORKER_ROW_START.match(line) or not any(b" :" in part for part in groups[-1])
        ):
            groups[-1].append(line)
        else:
            groups.append([line])
    for group in groups:
        raw = b"\n".join(group)
        if len(group) > 1:
            reason = _split_reason(len(group))
            if strict:
                raise _malformed("workers", raw, RemoteProtocolError(reason))
            unreadable.append(UnreadableRow("workers", raw, reason))
            continue
        try:
            rows.append(_worker_row(raw))
        except RemoteProtocolError as error:
            if strict:
                raise _malformed("workers", raw, error) from None
            unreadable.append(UnreadableRow("workers", raw, str(error)))
    return AdminRows(rows, unreadable)


def parse_jobs(lines: Iterable[bytes], *, strict: bool = True) -> AdminRows[JobInfo]:
    return _rows("show jobs", lines, _job_row, strict=strict)


def parse_unique_jobs(lines: Iterable[bytes]) -> list[str]:
    return [_text(line) for line in lines]


def parse_queue(lines: Iterable[bytes], *, strict: bool = True) -> AdminRows[QueuedJob]:
    """``show queue`` rows; our server escapes tabs and line breaks, so rows never join."""
    return _rows("show queue", lines, _queue_row, strict=strict, joins=False)


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
