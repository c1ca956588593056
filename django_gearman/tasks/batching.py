"""``with batch():`` many ``.background()`` calls pipelined: thousands of jobs a second.

A lone ``.background()`` waits for the server's JOB_CREATED before it returns, one round trip
per job. Inside ``batch()``, ``.background()`` only encodes the job (so bad arguments still raise
at the call) and returns its :class:`~django_gearman.gearman.jobs.Task`; every ``size`` jobs,
and at the end of the block, the batch is sent pipelined, with the client's usual failover, and
each Task's ``.handle`` is filled in. A job the servers refused (or that no server took) makes the
block raise :class:`BatchError` listing them; nothing is dropped silently::

    with batch():
        for user in users:
            send_newsletter.background(user.pk)
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from ..clients import clients
from ..gearman.errors import GearmanError, UsageError
from ..gearman.jobs import Task, TaskState

__all__ = ["Batch", "BatchError", "batch"]

_current: contextvars.ContextVar[Batch | None] = contextvars.ContextVar(
    "django_gearman_batch", default=None
)


class BatchError(GearmanError):
    """Some jobs of a batch were not queued; ``failed`` holds their Tasks (with ``.error``)."""

    def __init__(self, failed: list[Task], total: int) -> None:
        first = failed[0]
        reason = first.error or first.state.value
        super().__init__(
            f"{len(failed)} of {total} background job(s) were not queued; first: {first.function}: "
            f"{reason}"
        )
        self.failed = failed
        self.total = total


class Batch:
    """The jobs of one ``batch()`` block, per ``GEARMAN`` alias, sent ``size`` at a time."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise UsageError("batch size must be at least 1")
        self.size = size
        self.pending: dict[str, list[Task]] = {}
        self.failed: list[Task] = []
        self.total = 0

    def add(self, alias: str, task: Task) -> Task:
        tasks = self.pending.setdefault(alias, [])
        tasks.append(task)
        self.total += 1
        if len(tasks) >= self.size:
            self.send(alias)
        return task

    def send(self, alias: str | None = None) -> None:
        """Send what is pending (for one alias, or all), waiting for every JOB_CREATED."""
        for name in [alias] if alias is not None else list(self.pending):
            tasks = self.pending.pop(name, [])
            if tasks:
                clients[name].run_tasks(tasks)
                self.failed += [task for task in tasks if task.state is not TaskState.CREATED]


@contextmanager
def batch(size: int = 1000) -> Iterator[Batch]:
    """Pipeline the ``.background()`` calls made inside the block (see the module docstring)."""
    current = Batch(size)
    token = _current.set(current)
    try:
        yield current
    finally:
        _current.reset(token)
    current.send()
    if current.failed:
        raise BatchError(current.failed, current.total)


def current_batch() -> Batch | None:
    return _current.get()
