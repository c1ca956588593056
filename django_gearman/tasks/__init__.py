"""``@gearman_task`` and what runs around it: the registry, batches, the worker-side runner and
the results it writes.

- ``decorator``: :func:`gearman_task`, :class:`GearmanTask` (``.background()``, ``.submit()``,
  ``.background_on_commit()``, ``.using()``), :func:`remote_task`, :func:`run_many`;
- ``registration``: the registry's shape (``registry``, task name -> task, is in ``decorator``);
- ``batching``: ``with batch():``, pipelined ``.background()`` calls;
- ``runner``: runs a task's jobs on a worker (retries, logging, database connections);
- ``results``: the failure and retry rows a worker writes.
"""

from __future__ import annotations

from .batching import BatchError, batch
from .decorator import (
    GearmanTask,
    TaskError,
    TaskOptions,
    gearman_task,
    registry,
    remote_task,
    run_many,
)

__all__ = [
    "BatchError",
    "GearmanTask",
    "TaskError",
    "TaskOptions",
    "batch",
    "gearman_task",
    "registry",
    "remote_task",
    "run_many",
]
