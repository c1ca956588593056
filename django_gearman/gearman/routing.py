"""Which job server a client job goes to, and which servers are up.

A job with a unique key goes to the server chosen by rendezvous hashing of the key, so the same
key always meets the same server (and gearmand can coalesce it); other jobs are spread
round-robin. A server that refuses or drops a connection goes to the back of the order for a
backoff (doubling per failure, capped), and comes back by itself.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import select
import time

from .protocol import ClientConnection
from .transport import ServerAddress, Transport

__all__ = ["Server", "Servers"]

logger = logging.getLogger("django_gearman.client")


class Server:
    """One job server as the client sees it: its transport, and whether it is up."""

    __slots__ = ("address", "down_until", "failures", "last_error", "transport")

    def __init__(self, address: ServerAddress, max_packet_size: int) -> None:
        self.address = address
        self.transport = Transport(
            address, lambda: ClientConnection(max_packet_size=max_packet_size)
        )
        self.down_until = 0.0
        self.failures = 0
        self.last_error = ""

    def fileno(self) -> int:
        return self.transport.fileno()

    @property
    def busy(self) -> bool:
        return self.transport.conn.busy


class Servers:
    """A client's job servers, in the order to try them for each job."""

    def __init__(
        self,
        addresses: list[ServerAddress],
        *,
        max_packet_size: int,
        retry_delay: float,
        max_retry_delay: float,
    ) -> None:
        self.all = [Server(address, max_packet_size) for address in addresses]
        self.by_address = {server.address: server for server in self.all}
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._round_robin = itertools.count()

    def candidates(self, unique: str | None) -> list[Server]:
        """Servers in the order to try: the key's rendezvous order, else round-robin; down last."""
        servers = self.all
        if len(servers) > 1:
            if unique:
                key = unique.encode()
                servers = sorted(servers, key=lambda s: _weight(key, s.address), reverse=True)
            else:
                start = next(self._round_robin) % len(servers)
                servers = servers[start:] + servers[:start]
            now = time.monotonic()
            if any(s.down_until > now for s in servers):
                servers = [s for s in servers if s.down_until <= now] + [
                    s for s in servers if s.down_until > now
                ]
        return servers

    def mark_down(self, server: Server, error: Exception) -> None:
        """``server`` failed: skip it for a backoff that doubles with each failure in a row."""
        server.failures += 1
        server.last_error = str(error) or type(error).__name__
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** (server.failures - 1))
        server.down_until = time.monotonic() + delay
        logger.info(
            "server %s unavailable (%s); retrying in %.1fs",
            server.address,
            server.last_error,
            delay,
        )


def readable(servers: list[Server], timeout: float) -> list[Server]:
    """The servers with data to read; poll(), since descriptors may be above select()'s 1024."""
    poller = select.poll()
    by_fd = {}
    for server in servers:
        by_fd[server.fileno()] = server
        poller.register(server.fileno(), select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def _weight(key: bytes, address: ServerAddress) -> bytes:
    return hashlib.blake2b(key + b"\0" + str(address).encode(), digest_size=8).digest()
