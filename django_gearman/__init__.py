"""django_gearman: Gearman for Django: background tasks, a worker, and an embedded job server.

Importing this package never touches Django settings.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
