"""An embedded Gearman job server on asyncio, speaking gearmand's binary and text protocols.

Imports nothing from Django: ``manage.py gearmand`` and ``python -m django_gearman.server``
only parse options and wire this up.
"""

from __future__ import annotations

from .app import GearmanServer

__all__ = ["GearmanServer"]
