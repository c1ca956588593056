"""``clients[alias]``: the client backend of a ``GEARMAN`` alias, one per thread.

Like ``django.core.cache.caches``: built on Django's ``BaseConnectionHandler``, so each thread
(and each async context) gets its own client, since a client's sockets must not be shared
between threads. The class is the alias's ``BACKEND`` (the real
:class:`~django_gearman.gearman.GearmanClient` unless a test double is chosen), built with the
alias's servers and ``OPTIONS``. Clients connect lazily and are rebuilt when ``GEARMAN`` changes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from asgiref.local import Local
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.connection import BaseConnectionHandler

from . import conf
from .gearman.base import BaseClient
from .gearman.client import GearmanClient

__all__ = ["clients"]


class GearmanClientHandler(BaseConnectionHandler):
    settings_name = "GEARMAN"
    exception_class = conf.InvalidGearmanSettings

    def configure_settings(self, settings: dict[str, Any] | None) -> dict[str, Any]:
        return conf.raw_settings()

    def create_connection(self, alias: str) -> BaseClient:
        config = conf.get_settings(alias)
        backend: Callable[..., BaseClient] = config.backend_class()  # Backend(servers, **OPTIONS)
        client = backend(list(map(str, config.servers)), **config.options)
        if isinstance(client, GearmanClient):
            # A thread's client goes when the thread does, without anyone calling close():
            # close its sockets then, rather than leave them to the garbage collector's warning.
            weakref.finalize(client, client.sockets_closer())
        return client


clients = GearmanClientHandler()


@receiver(setting_changed)
def _gearman_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "GEARMAN":
        conf.reset()
        clients.close_all()  # this thread's; other threads' clients are dropped unclosed
        clients.__dict__.pop("settings", None)
        clients._connections = Local(clients.thread_critical)  # type: ignore[attr-defined]
