"""An embedded Gearman job server on asyncio, speaking gearmand's binary and text protocols.

- ``model``, ``state``: the pure model (connections, functions, queues, jobs) and gearmand
  1.1's rules that move it;
- ``connection``: one connection: bytes in, calls on the state, replies out, in order;
- ``text``: the admin commands and gearadmin's exact replies, plus our ``show queue``;
- ``store``: where background jobs survive restarts (memory, SQLite);
- ``app``: :class:`GearmanServer`: bind, replay, serve, shut down;
- ``cli``: the command line shared by ``python -m django_gearman.server`` and ``manage.py
  gearmand``.

Part of the Django-free core: it imports neither Django nor the client side.
"""

from __future__ import annotations

from .app import GearmanServer

__all__ = ["GearmanServer"]
