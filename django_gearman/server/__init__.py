"""``python -m django_gearman.server``: the embedded job server, without a Django project.

The server lives in :mod:`django_gearman.gearman.server` (the Django-free core); this package
only keeps the short command working. Nothing of Django is imported.
"""

from __future__ import annotations

from ..gearman.server import GearmanServer

__all__ = ["GearmanServer"]
