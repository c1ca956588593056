"""An incremental frame buffer: bytes in, binary packets and text lines out.

Gearman serves binary packets and text admin commands on one port: a frame whose first byte
is NUL is a binary packet, anything else is a text line ending at ``\\n``. The buffer accepts
data split at any byte, enforces a maximum packet size as soon as a header announces one, and
caps how long a text line may grow before its newline arrives.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import PacketTooLarge, RemoteProtocolError
from .constants import DEFAULT_MAX_PACKET_SIZE, HEADER, REQ
from .packets import PACKET_TYPES, Packet, check_header, decode_body

__all__ = ["DEFAULT_MAX_LINE_SIZE", "Frame", "PacketBuffer", "TextLine"]

#: Longest text line accepted before its newline (gearmand's own buffer is 8 KiB).
DEFAULT_MAX_LINE_SIZE = 64 * 1024

_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from


class TextLine(NamedTuple):
    """One text-protocol line, without its ``\\n`` and any trailing ``\\r``."""

    line: bytes


Frame = Packet | TextLine


class PacketBuffer:
    """Accumulates received bytes and yields complete frames.

    What a role may receive is checked here, where each frame's kind and magic are read anyway:
    ``magic`` (``RES`` for a client or worker) refuses binary packets with the other magic,
    ``text=False`` refuses text lines, ``binary=False`` (an admin client) refuses packets. A
    server takes everything (it answers a response-magic packet with an ERROR itself).

    After a :class:`RemoteProtocolError` the buffer is broken: every later call raises the same
    error, because the byte stream can no longer be framed. With ``defer_errors`` (the server),
    :meth:`feed` instead returns the frames that came before the bad one and keeps the error in
    :attr:`error`: the peer is owed the replies to those frames before it is dropped.
    """

    __slots__ = (
        "_data",
        "_error",
        "binary",
        "defer_errors",
        "magic",
        "max_line_size",
        "max_packet_size",
        "text",
    )

    def __init__(
        self,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        magic: bytes | None = None,
        text: bool = True,
        binary: bool = True,
        defer_errors: bool = False,
    ) -> None:
        self._data = bytearray()
        self.defer_errors = defer_errors
        self._error: RemoteProtocolError | None = None
        self.max_packet_size = max_packet_size
        self.max_line_size = max_line_size
        self.magic = magic
        self.text = text
        self.binary = binary

    def __len__(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._data)

    @property
    def error(self) -> RemoteProtocolError | None:
        """Why the stream can no longer be framed (None while it can)."""
        return self._error

    def clear(self) -> None:
        """Drop what is buffered (the connection is gone): its memory goes back at once. The
        kept error loses its traceback, whose frames hold the last read and the connection."""
        self._data = bytearray()
        if self._error is not None:
            self._error = self._error.with_traceback(None)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return every frame it completes, in order."""
        if self._error is not None:
            return self._fail(self._error, [])
        buf = self._data
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data  # the common case: whole frames in one read, no copy
        frames: list[Frame] = []
        append = frames.append
        pos = 0
        end = len(view)
        expected = self.magic
        refuse_binary = not self.binary
        try:
            while pos < end:
                if view[pos] == 0:
                    if end - pos < _HEADER_SIZE:
                        break
                    magic, type_value, size = _unpack_header(view, pos)
                    if size > self.max_packet_size:
                        raise PacketTooLarge(size, self.max_packet_size)
                    stop = pos + _HEADER_SIZE + size
                    if stop > end:
                        # Check what we can early: a bad magic or type fails now, not after
                        # the (possibly huge, possibly never-arriving) body.
                        check_header(magic, type_value)
                        break
                    if (expected is not None and magic != expected) or refuse_binary:
                        self._refuse(magic, type_value)
                    append(decode_body(magic, type_value, bytes(view[pos + _HEADER_SIZE : stop])))
                    pos = stop
                else:
                    newline = view.find(b"\n", pos)
                    if newline < 0:
                        if end - pos > self.max_line_size:
                            raise RemoteProtocolError(
                                f"text line longer than {self.max_line_size} bytes",
                                "ARGUMENT_TOO_LARGE",
                            )
                        break
                    line = bytes(view[pos:newline])
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if not self.text:
                        raise RemoteProtocolError(
                            f"text lines are not expected here, got {line[:40]!r}"
                        )
                    append(TextLine(line))
                    pos = newline + 1
        except RemoteProtocolError as error:
            self._error = error
            self._data = bytearray()
            return self._fail(error, frames)
        if buf:
            del buf[:pos]
        elif pos < end:
            self._data = bytearray(view[pos:])
        return frames

    def _fail(self, error: RemoteProtocolError, frames: list[Frame]) -> list[Frame]:
        """Raise ``error``, or with ``defer_errors`` return the frames read before it."""
        if self.defer_errors:
            return frames
        raise error

    def _refuse(self, magic: bytes, type_value: int) -> None:
        """Raise: a packet this end never receives (the wrong magic, or binary at all)."""
        check_header(magic, type_value)  # an invalid one says so first
        name = PACKET_TYPES[type_value].name  # type: ignore[union-attr]  # checked above
        if not self.binary:
            raise RemoteProtocolError(f"a binary {name} packet where text lines are expected")
        which = "request" if magic == REQ else "response"
        raise RemoteProtocolError(
            f"{name} with {which} magic is not expected here", "INVALID_MAGIC"
        )
