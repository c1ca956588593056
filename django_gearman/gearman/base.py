"""What every client backend offers: :class:`BaseClient`.

The real client (:class:`~.client.GearmanClient`) and the Django layer's test doubles
(``django_gearman.testing``) implement :meth:`BaseClient.run_tasks`; the one-job calls are built
on it here, so a double takes the same prepared :class:`~.jobs.Task`, checked the same way, as
the real client sends.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from .jobs import JobHandle, Task, WorkData, WorkEvent, WorkStatus, WorkWarning, payload
from .protocol import Priority

__all__ = ["BaseClient"]


class BaseClient(abc.ABC):
    """What a client backend offers: task sets, and the one-job calls built on them."""

    @abc.abstractmethod
    def run_tasks(self, tasks: Sequence[Task], *, timeout: float | None = None) -> Sequence[Task]:
        """Submit every task and wait until all are done (or the timeout passes). Each task
        ends with its own state, result and error; nothing is raised for one task's failure."""

    def close(self) -> None:  # noqa: B027 - optional: a backend with no connections has none to close
        """Release connections (a client reconnects on next use)."""

    def __enter__(self) -> BaseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(
        self,
        function: str,
        data: bytes | str = b"",
        *,
        priority: Priority = Priority.NORMAL,
        unique: str | None = None,
        timeout: float | None = None,
        on_data: Callable[[WorkData], None] | None = None,
        on_warning: Callable[[WorkWarning], None] | None = None,
        on_status: Callable[[WorkStatus], None] | None = None,
    ) -> bytes:
        """Run a foreground job and return its result bytes.

        Raises :class:`JobFailed` on WORK_FAIL, :class:`JobException` on WORK_EXCEPTION,
        :class:`JobTimeout` when it does not finish within ``timeout`` seconds.
        """
        callbacks: dict[type, Callable[[Any], None] | None] = {
            WorkData: on_data,
            WorkWarning: on_warning,
            WorkStatus: on_status,
        }
        on_event = None
        if on_data or on_warning or on_status:

            def on_event(event: WorkEvent) -> None:
                callback = callbacks.get(type(event))
                if callback is not None:
                    callback(event)

        task = Task(function, payload(data), Priority.parse(priority), unique, on_event=on_event)
        self.run_tasks([task], timeout=timeout)
        task.raise_for_state()
        assert task.result is not None
        return task.result

    def submit_background(
        self,
        function: str,
        data: bytes | str = b"",
        *,
        priority: Priority = Priority.NORMAL,
        unique: str | None = None,
        run_at: datetime | float | None = None,
        timeout: float | None = None,
    ) -> JobHandle:
        """Queue a background job and return its handle once the server has accepted it.

        ``run_at`` (an aware datetime or a Unix timestamp) sends ``SUBMIT_JOB_EPOCH``: the job
        runs at that time (gearmand runs such jobs at normal priority). Without ``unique``, a
        random one is sent, as libgearman does, so a persistent queue can store the job.
        """
        task = self.background_task(function, data, priority=priority, unique=unique, run_at=run_at)
        self.run_tasks([task], timeout=timeout)
        task.raise_for_state()
        assert task.handle is not None
        return task.handle

    def submit_background_many(
        self,
        jobs: Iterable[tuple[str, bytes | str]],
        *,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = None,
    ) -> list[JobHandle]:
        """Queue many background jobs, pipelined, and return their handles in order."""
        tasks = [self.background_task(function, data, priority=priority) for function, data in jobs]
        self.run_tasks(tasks, timeout=timeout)
        handles = []
        for task in tasks:
            task.raise_for_state()
            assert task.handle is not None
            handles.append(task.handle)
        return handles

    @staticmethod
    def background_task(
        function: str,
        data: bytes | str = b"",
        *,
        priority: Priority = Priority.NORMAL,
        unique: str | None = None,
        run_at: datetime | float | None = None,
    ) -> Task:
        """A background :class:`Task` for :meth:`run_tasks`, checked now (:meth:`Task.packet`)."""
        when = None
        if run_at is not None:
            when = run_at.timestamp() if isinstance(run_at, datetime) else float(run_at)
        task = Task(
            function, payload(data), Priority.parse(priority), unique, background=True, run_at=when
        )
        task.packet()
        return task
