"""Who may connect, and who may change the server: address allow-lists (``--allow``,
``--admin-allow``).

The job server has no accounts: anyone who can connect may submit any job, run as a worker
and read the admin lists. So the first line of trust is the network: by default a server bound
to a non-loopback address still accepts loopback peers only, until ``--allow`` names the
networks that may connect; and only ``--admin-allow`` peers (loopback by default) may send the
commands that change the server (``cancel job``, ``drop function``, ``maxqueue``,
``create function``, ``shutdown``). See docs/server.md, "Trust model".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..errors import UsageError

__all__ = ["LOOPBACK", "AddressList", "is_loopback_bind", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The default of both lists.
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def parse_networks(text: str, *, option: str = "--allow") -> tuple[Network, ...]:
    """``"10.0.0.0/8,192.168.1.7"`` as networks (a bare address is a /32 or /128).

    Raises :class:`UsageError` naming ``option`` and the bad item.
    """
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as error:
            raise UsageError(
                f"{option} {item!r} is not an IP network in CIDR form, e.g. 10.0.0.0/8 or "
                f"192.168.1.7 ({error})"
            ) from error
    if not networks:
        raise UsageError(f"{option} needs at least one network, e.g. {option} 10.0.0.0/8")
    return tuple(networks)


def is_loopback_bind(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class AddressList:
    """A set of networks peers' addresses are checked against, with a small cache (a busy
    server sees the same few addresses over and over)."""

    __slots__ = ("_cache", "networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        known = self._cache.get(host)
        if known is None:
            known = self._match(host)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[host] = known
        return known

    def _match(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False  # not an IP peer (e.g. a Unix socket): refused
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's IPv4 peer
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ",".join(str(network) for network in self.networks)
