"""Test helpers: run our worker in a thread, wait for conditions without fixed sleeps, and a
job server in memory for conversation tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django_gearman.gearman.protocol import DEFAULT_MAX_PACKET_SIZE
from django_gearman.gearman.server.connection import ServerConnection
from django_gearman.gearman.server.state import ServerState
from django_gearman.gearman.server.store import MemoryStore
from django_gearman.gearman.worker import Worker


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
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
    servers: str | list[str],
    functions: dict[str, Callable],
    *,
    timeouts: dict[str, float] | None = None,
    **options: Any,
) -> Iterator[Worker]:
    """Run a :class:`Worker` offering ``functions`` in a thread; stop and join it on exit."""
    worker = Worker(servers, reconnect_delay=options.pop("reconnect_delay", 0.05), **options)
    for name, callback in functions.items():
        worker.register(name, callback, timeout=(timeouts or {}).get(name))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.work(install_signals=False)
        except BaseException as error:  # noqa: BLE001 - whatever it is, the test thread raises it
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


class MemoryServer:
    """A job server in memory: the real :class:`ServerState` and :class:`ServerConnection`s,
    no socket and no event loop (h11's ``ConnectionPair`` idea). ``link(conversation)`` attaches
    a client, worker or admin conversation; ``pump()`` moves bytes both ways until nothing moves
    and returns each conversation's events. Timers (CAN_DO_TIMEOUT, scheduled jobs) fire when
    the test calls ``fire_timers()``."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.verbose = "WARNING"
        self.max_packet_size = DEFAULT_MAX_PACKET_SIZE
        self.max_buffer_bytes = 0
        self.buffered = 0
        self.dirty: list[Any] = []
        self.pending: list[Any] = []
        self.held: list[Any] = []
        self.timers: list[_Timer] = []
        self.state = ServerState(
            call_later=self._call_later, store=self.store, handle_prefix=b"H:memory"
        )
        self.links: list[tuple[Any, Any]] = []

    def schedule_flush(self) -> None:
        pass  # pump() collects the output

    def _call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(delay, callback)
        self.timers.append(timer)
        return timer

    def fire_timers(self) -> None:
        due, self.timers = self.timers, []
        for timer in due:
            if not timer.cancelled:
                timer.callback()

    def link(self, conversation: Any) -> Any:
        """Connect ``conversation`` to a new server connection; returns the server's end."""
        server_end = ServerConnection(self)
        server_end.opened(len(self.links) + 10, "127.0.0.1")
        self.links.append((conversation, server_end))
        return server_end

    def pump(self) -> dict[Any, list[Any]]:
        """Deliver everything queued on every link, both ways, until no byte moves."""
        events: dict[Any, list[Any]] = {conversation: [] for conversation, _ in self.links}
        moved = True
        while moved:
            moved = False
            for conversation, server_end in self.links:
                data = conversation.data_to_send()
                if data:
                    server_end.receive_data(data)
                    moved = True
                reply = server_end.data_to_send()
                if reply:
                    events[conversation] += conversation.receive_data(reply)
                    moved = True
            self.dirty.clear()
        return events


class _Timer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def capture_resubmits(
    monkeypatch: Any, submitted: list[dict[str, Any]], handle: str = "H:test:1"
) -> None:
    """Swap the runner's GearmanClient for one that keeps each retry's resubmission
    (``{"data": ..., **options}``) in ``submitted`` and answers ``handle``."""
    from django_gearman.tasks import runner  # noqa: PLC0415 - the Django layer, for these tests only

    class FakeClient:
        def __init__(self, servers: list[str]) -> None:
            pass

        def __enter__(self) -> FakeClient:
            return self

        def __exit__(self, *exc_info: object) -> None:
            pass

        def submit_background(self, function: str, data: bytes, **options: Any) -> str:
            submitted.append({"data": data, **options})
            return handle

    monkeypatch.setattr(runner, "GearmanClient", FakeClient)
