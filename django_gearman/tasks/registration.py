"""The task registry's shape: task name -> task, filled as modules with tasks are imported (the
app runs ``autodiscover_modules("tasks")`` at start-up). The one instance, ``registry``, is made
beside the decorator that fills it (:mod:`.decorator`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["Registered", "TaskRegistry"]


class Registered(Protocol):
    """What the registry needs of a task: its name and the function behind it."""

    @property
    def name(self) -> str: ...

    @property
    def func(self) -> Callable[..., Any]: ...


T = TypeVar("T", bound=Registered)


class TaskRegistry(dict[str, T]):
    """Task name -> task. Names defined twice (by different functions) are kept in
    ``duplicates`` for the system check (``django_gearman.E010``)."""

    def __init__(self) -> None:
        super().__init__()
        self.duplicates: dict[str, list[str]] = {}

    def add(self, task: T) -> None:
        existing = self.get(task.name)
        if existing is not None and _origin(existing.func) != _origin(task.func):
            self.duplicates.setdefault(task.name, [_origin(existing.func)]).append(
                _origin(task.func)
            )
        self[task.name] = task


def _origin(func: Callable[..., Any]) -> str:
    code = getattr(func, "__code__", None)
    where = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "?"
    return f"{func.__module__}.{func.__qualname__} ({where})"
