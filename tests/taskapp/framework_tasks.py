"""Tasks written against Django's own Tasks API (django.tasks, or the django-tasks backport)."""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task


@task
def multiply(a: int, b: int) -> int:
    return a * b


@task(priority=10, queue_name="reports")
def report(name: str) -> dict[str, Any]:
    return {"report": name, "rows": [1, 2, 3]}


@task
def explode(message: str) -> None:
    raise RuntimeError(message)


@task(takes_context=True)
def attempt_of(context: Any) -> int:
    return int(context.attempt)


#: Keys for which :func:`until_mended` still fails (the admin retry tests mend them).
BROKEN: set[str] = set()


@task
def until_mended(key: str) -> str:
    if key in BROKEN:
        raise RuntimeError(f"{key} is broken")
    return f"{key} mended"
