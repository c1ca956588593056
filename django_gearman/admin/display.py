"""How the queue pages show what a job server sends: names, client ids, handles and times.

A job server passes on the bytes its clients and workers sent (gearmand escapes nothing), so a
function name or client id may hold tabs, line breaks, control or bidi characters, or bytes
that are not UTF-8 (our parsers keep those as lone surrogates, which no page could encode).
:func:`label` shows such text with backslash escapes and marks it so; Django's templates
escape HTML on top. An action (cancel, drop) is offered only for a name that a form and an
admin command line can carry (:func:`action_problem` says why not), and a time is shown as a
date only if it is one (:func:`moment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString

__all__ = ["Label", "Moment", "action_problem", "escaped", "label", "moment"]

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ESCAPED_TITLE = (
    "shown with backslash escapes: it holds control characters or bytes that are not UTF-8"
)

#: The last Unix second a page shows as a date: a day before the end of year 9999, so that no
#: time zone's local time runs past it.
LAST_SHOWN_SECOND = 253_402_300_799 - 86_400


def escaped(text: str) -> str:
    """``text`` with backslash escapes for all but printable characters (and ``\\`` itself);
    a byte that was not UTF-8 (a lone surrogate from ``surrogateescape``) shows as ``\\xNN``."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Label:
    """Text from a server as a page shows it: ``text`` can be encoded and put in an attribute;
    ``{{ label.html }}`` (and the ``join`` filter) mark escaped text with ``<code>`` and a title."""

    text: str
    escaped: bool

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return bool(self.text)

    @property
    def html(self) -> SafeString:
        """The text for a page: HTML-escaped, and in ``<code>`` with a title if escaped."""
        return self.__html__()

    def __html__(self) -> SafeString:
        if not self.escaped:
            return escape(self.text)
        return format_html(
            '<code class="gearman-escaped" title="{}">{}</code>', _ESCAPED_TITLE, self.text
        )


def label(text: str) -> Label:
    """``text`` as is if every character is printable, else :func:`escaped`."""
    if text.isprintable():
        return Label(text, escaped=False)
    return Label(escaped(text), escaped=True)


def action_problem(name: str) -> str:
    """Why an admin action cannot name ``name`` (a function or job handle), or ``""``.

    Admin command arguments end at whitespace (``command_line`` refuses them), and a name that
    is not UTF-8 cannot come back from a form intact.
    """
    if not name:
        return "it is empty"
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in name):
        return "it is not UTF-8, so a form cannot carry it"
    if " " in name or not name.isprintable():
        return "it holds whitespace or control characters, which an admin command cannot carry"
    return ""


class Moment(NamedTuple):
    """A Unix time from a server: ``at`` when it is a date a page can show, and ``raw``."""

    at: datetime | None
    raw: int


def moment(seconds: int) -> Moment:
    """``seconds`` as a date, unless 0 (unknown, or "now") or past what a date can hold."""
    if 0 < seconds <= LAST_SHOWN_SECOND:
        return Moment(datetime.fromtimestamp(seconds, tz=timezone.utc), seconds)
    return Moment(None, seconds)
