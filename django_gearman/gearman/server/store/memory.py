"""The store that keeps nothing: background jobs live as long as the server process."""

from __future__ import annotations

import asyncio

from .base import CommitCallback, JobStore, StoredJob, StoreFuture

__all__ = ["MemoryStore"]


class MemoryStore(JobStore):
    """Keeps nothing: background jobs live only as long as the server process.

    Only ids are handed out, so that code written for a durable store also runs here.
    """

    durable = False

    def __init__(self) -> None:
        self._next_id = 1

    def __repr__(self) -> str:
        return "<MemoryStore>"

    def load(self) -> list[StoredJob]:
        return []

    def add_nowait(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
        enqueued: int = 0,
    ) -> int:
        """Return a new id at once (nothing is kept, so nothing is waited for)."""
        job_id = self._next_id
        self._next_id = job_id + 1
        return job_id

    def add(
        self,
        function: bytes,
        unique: bytes,
        priority: int,
        data: bytes,
        when: int,
        reducer: bytes = b"",
        enqueued: int = 0,
    ) -> StoreFuture:
        """Like :meth:`add_nowait`, but as an already resolved future (needs a running loop)."""
        job_id = self.add_nowait(function, unique, priority, data, when, reducer, enqueued)
        future = StoreFuture(loop=asyncio.get_running_loop())
        future.job_id = job_id
        future.set_result(job_id)
        return future

    def on_commit(self, loop: asyncio.AbstractEventLoop, callback: CommitCallback) -> None:
        pass  # nothing is ever committed

    def remove(self, job_id: int) -> None:
        pass

    async def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
