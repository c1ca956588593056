"""Scheduled jobs (SUBMIT_JOB_EPOCH): held until their time, then handed back to be queued.

One timer for the whole schedule, armed for the soonest job and re-armed as jobs come and go:
when it fires, every job whose time has come is released at once (so sleeping workers are woken
then, which gearmand 1.1 fails to do: its issue #101).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

from .model import ServerJob, Timer

__all__ = ["Schedule"]


class Schedule:
    """A heap of jobs by run time; ``release(job)`` is called for each as its time comes."""

    def __init__(
        self,
        *,
        call_later: Callable[[float, Callable[[], None]], Timer],
        clock: Callable[[], float],
        release: Callable[[ServerJob], None],
    ) -> None:
        self.call_later = call_later
        self.clock = clock
        self.release = release
        self._heap: list[tuple[int, int, ServerJob]] = []  # (when, seq, job)
        self._seq = itertools.count()
        self._timer: Timer | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[ServerJob]:
        """Every job held, soonest first (cancelled or dropped ones too: the caller filters)."""
        return (job for _, _, job in sorted(self._heap))

    def add(self, job: ServerJob) -> None:
        """Hold ``job`` until ``job.when``."""
        heapq.heappush(self._heap, (job.when, next(self._seq), job))
        self._arm()

    def _arm(self) -> None:
        if not self._heap:
            return
        first = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= first:
                return
            self._timer.cancel()
        self._timer_at = first
        self._timer = self.call_later(max(0.0, first - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            _, _, job = heapq.heappop(self._heap)
            self.release(job)
        self._arm()
