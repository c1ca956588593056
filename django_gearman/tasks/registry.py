"""The task registry: task name -> :class:`~.decorator.GearmanTask`, filled as modules with
tasks are imported (the app runs ``autodiscover_modules("tasks")`` at start-up)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decorator import GearmanTask

__all__ = ["registry"]


class _Registry(dict[str, "GearmanTask[..., Any]"]):
    """Task name -> task, filled as modules with tasks are imported. Names defined twice (by
    different functions) are kept in :attr:`duplicates` for the system check."""

    def __init__(self) -> None:
        super().__init__()
        self.duplicates: dict[str, list[str]] = {}

    def add(self, task: GearmanTask[..., Any]) -> None:
        existing = self.get(task.name)
        if existing is not None and _origin(existing.func) != _origin(task.func):
            self.duplicates.setdefault(task.name, [_origin(existing.func)]).append(
                _origin(task.func)
            )
        self[task.name] = task

    def in_queues(self, queues: Iterable[str]) -> list[GearmanTask[..., Any]]:
        wanted = set(queues)
        return [task for task in self.values() if task.options.queue in wanted]


registry = _Registry()


def _origin(func: Callable[..., Any]) -> str:
    code = getattr(func, "__code__", None)
    where = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "?"
    return f"{func.__module__}.{func.__qualname__} ({where})"
