"""Test helpers: run our worker in a thread, and wait for conditions without fixed sleeps."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django_gearman.worker import Worker


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@contextlib.contextmanager
def worker_thread(
    servers: str | list[str], functions: dict[str, Callable], *, timeouts: dict[str, float] | None = None, **options: Any
) -> Iterator[Worker]:
    """Run a :class:`Worker` offering ``functions`` in a thread; stop and join it on exit."""
    worker = Worker(servers, reconnect_delay=options.pop("reconnect_delay", 0.05), **options)
    for name, callback in functions.items():
        worker.register(name, callback, timeout=(timeouts or {}).get(name))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.work(install_signals=False)
        except BaseException as error:  # surfaced in the test below
            errors.append(error)

    thread = threading.Thread(target=run, name="gearman-test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(10)
        assert not thread.is_alive(), "worker thread did not stop"
        assert not errors, errors
