"""Tasks the test suite runs through real workers (discovered like any app's tasks.py)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from django_gearman import current_job, gearman_task

calls: dict[str, int] = {}
_lock = threading.Lock()


def _count(key: str) -> int:
    with _lock:
        calls[key] = calls.get(key, 0) + 1
        return calls[key]


@gearman_task
def add(a: int, b: int) -> int:
    return a + b


@gearman_task(name="tests.echo", priority="high")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@gearman_task
def fail(message: str) -> None:
    raise ValueError(message)


@gearman_task(retries=2, retry_backoff=0.05)
def flaky(key: str, failures: int) -> int:
    """Fails its first ``failures`` attempts (counted per key), then returns the attempt."""
    attempt = _count(key)
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@gearman_task
def progress(steps: int) -> int:
    job = current_job()
    assert job is not None
    for step in range(1, steps + 1):
        job.send_status(step, steps)
    return steps


@gearman_task
def not_json() -> object:
    return object()


@gearman_task
def sleep_then(seconds: float, value: int) -> int:
    """Sleeps, then returns ``value``: a job that is still running when a test stops the worker."""
    time.sleep(seconds)
    return value


@gearman_task(queue="pool")
def where(seconds: float) -> dict[str, int]:
    """Sleeps, then says which process and thread ran it (for the worker command's pools)."""
    time.sleep(seconds)
    return {"pid": os.getpid(), "thread": threading.get_ident()}


#: Keys for which :func:`until_mended` still fails (the admin retry tests mend them).
BROKEN: set[str] = set()


@gearman_task(name="tests.until_mended")
def until_mended(key: str) -> str:
    if key in BROKEN:
        raise RuntimeError(f"{key} is broken")
    return f"{key} mended"
