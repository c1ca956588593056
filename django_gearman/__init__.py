"""django_gearman: Gearman for Django: background tasks, a worker, and an embedded job server.

Two layers, one package:

- ``django_gearman.gearman``: Gearman itself, with no Django: the sans-I/O protocol, the client,
  the worker and its pool, the admin client, the JSON envelope, the error tree, and the job
  server (``python -m django_gearman.server``);
- everything else here: the Django app built on it (settings, ``@gearman_task``, the worker and
  server commands, the Django Tasks backend, the admin pages, the test doubles).

The names below are the public API. They are looked up lazily: importing this package (or the
Gearman core under it) imports no Django and never touches settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "gearman_task": "django_gearman.tasks",
    "remote_task": "django_gearman.tasks",
    "run_many": "django_gearman.tasks",
    "batch": "django_gearman.tasks",
    "GearmanTask": "django_gearman.tasks",
    "TaskError": "django_gearman.tasks",
    "BatchError": "django_gearman.tasks",
    "current_job": "django_gearman.gearman.work",
    "GearmanError": "django_gearman.gearman.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # what __getattr__ gives, for type checkers and editors
    from .gearman.errors import GearmanError as GearmanError
    from .gearman.work import current_job as current_job
    from .tasks import BatchError as BatchError
    from .tasks import GearmanTask as GearmanTask
    from .tasks import TaskError as TaskError
    from .tasks import batch as batch
    from .tasks import gearman_task as gearman_task
    from .tasks import remote_task as remote_task
    from .tasks import run_many as run_many


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'django_gearman' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value
