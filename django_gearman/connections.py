"""``clients[alias]``: a :class:`GearmanClient` per ``GEARMAN`` alias, per thread.

Like ``django.core.cache.caches``: built on Django's ``BaseConnectionHandler``, so each thread
(and each async context) gets its own client, since a client's sockets must not be shared
between threads. Clients connect lazily and are rebuilt when ``GEARMAN`` changes.
"""

from __future__ import annotations

import weakref
from typing import Any

from asgiref.local import Local
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.connection import BaseConnectionHandler

from . import conf
from .client import GearmanClient

__all__ = ["clients"]


class GearmanClientHandler(BaseConnectionHandler):  # type: ignore[type-arg]
    settings_name = "GEARMAN"
    exception_class = conf.InvalidGearmanSettings

    def configure_settings(self, settings: dict[str, Any] | None) -> dict[str, Any]:
        return conf.raw_settings()

    def create_connection(self, alias: str) -> GearmanClient:
        config = conf.get_settings(alias)
        client = GearmanClient(list(map(str, config.servers)), **config.options)
        # A thread's client goes when the thread does, without anyone calling close():
        # close its sockets then, rather than leave them to the garbage collector's warning.
        weakref.finalize(client, _close_sockets, client._servers)  # noqa: SLF001
        return client


def _close_sockets(servers: list[Any]) -> None:
    for server in servers:
        server.transport.close()


clients = GearmanClientHandler()


@receiver(setting_changed)
def _gearman_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "GEARMAN":
        conf.reset()
        clients.close_all()  # this thread's; other threads' clients are dropped unclosed
        clients.__dict__.pop("settings", None)
        clients._connections = Local(clients.thread_critical)  # noqa: SLF001
