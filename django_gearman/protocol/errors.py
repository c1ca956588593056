"""Protocol errors that say whose fault they are (after h11's Local/Remote split).

``LocalProtocolError`` means *we* (the caller of this library) tried to do something the
protocol does not allow; ``RemoteProtocolError`` means the *peer* sent bytes that break the
protocol. A server answers the second with an ERROR packet and closes only that connection.
"""

from __future__ import annotations

__all__ = [
    "LocalProtocolError",
    "PacketTooLarge",
    "ProtocolError",
    "RemoteProtocolError",
]


class ProtocolError(Exception):
    """Base class of protocol errors; abstract, raise a subclass.

    ``code`` is the gearmand-style error code (e.g. ``INVALID_MAGIC``) that a server would put
    in the ERROR packet it sends before closing the connection.
    """

    def __init__(self, message: str, code: str = "INVALID_PACKET") -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise LocalProtocolError or RemoteProtocolError")
        super().__init__(message)
        self.message = message
        self.code = code


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol forbids (nothing was sent)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; the connection cannot continue."""


class PacketTooLarge(RemoteProtocolError):
    """A packet announced a body larger than the configured maximum."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"packet of {size} bytes exceeds the maximum of {limit} bytes", "ARGUMENT_TOO_LARGE")
        self.size = size
        self.limit = limit
