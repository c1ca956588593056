"""django_gearman: Gearman for Django: background tasks, a worker, and an embedded job server.

Importing this package never touches Django settings.
"""

from __future__ import annotations

from typing import Any

from .batch import BatchError, batch
from .tasks import GearmanTask, TaskError, gearman_task, remote_task, run_many

__version__ = "0.1.0"

__all__ = ["BatchError", "GearmanTask", "batch", "TaskError", "__version__", "current_job", "gearman_task", "remote_task", "run_many"]


def __getattr__(name: str) -> Any:
    if name == "current_job":  # imports django.db: only when asked for
        from .runner import current_job  # noqa: PLC0415

        return current_job
    raise AttributeError(f"module 'django_gearman' has no attribute {name!r}")
