"""What the server needs of a job store: :class:`JobStore`, and the values it passes."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Mapping
from typing import NamedTuple, TypeVar

__all__ = ["JobStore", "StoreFuture", "StoredJob"]

_Store = TypeVar("_Store", bound="JobStore")


class StoredJob(NamedTuple):
    """A background job as the store keeps it.

    ``id`` is assigned by the store and increases, so it is also the replay order. ``priority``
    is 0 (high), 1 (normal) or 2 (low); ``when`` is the Unix time to run at, 0 meaning now;
    ``enqueued`` the Unix time it was submitted (0: unknown, for jobs from before layout 3).
    """

    id: int
    function: bytes
    unique: bytes
    priority: int
    data: bytes
    when: int
    reducer: bytes = b""
    enqueued: int = 0


class StoreFuture(asyncio.Future[int]):
    """The answer to :meth:`JobStore.add`: ``job_id`` at once, the result (that id) once durable."""

    __slots__ = ("job_id",)

    job_id: int


#: ``callback(last_id, failed)`` of :meth:`JobStore.on_commit`.
CommitCallback = Callable[[int, Mapping[int, BaseException]], None]


class JobStore(abc.ABC):
    """What the server needs of a job store. All but ``load`` run on the event loop's thread."""

    #: False when nothing survives a restart: the server then answers JOB_CREATED without
    #: waiting and never calls :meth:`add`.
    durable: bool = False

    @abc.abstractmethod
    def load(self) -> list[StoredJob]:
        """Every kept job in id order; called once at start-up, before serving."""

    @abc.abstractmethod
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
        """Keep a job. The returned future carries the new ``job_id`` at once and resolves to it
        once the job is durable; if it cannot be kept, the future holds the exception.
        ``enqueued`` is the submit's Unix time (0: unknown), given back by :meth:`load`.

        As in the protocol, only ``data`` may contain NUL bytes (the server never passes a
        function, unique key or reducer with one: the packet could not have carried it)."""

    @abc.abstractmethod
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
        """Keep a job and return its id at once, making no future: the server's path, which
        learns what is durable in batches through :meth:`on_commit`."""

    @abc.abstractmethod
    def on_commit(self, loop: asyncio.AbstractEventLoop, callback: CommitCallback) -> None:
        """Call ``callback(last_id, failed)`` on ``loop`` after each batch that added jobs:
        every job up to ``last_id`` not yet reported is now durable, except those in ``failed``
        (job id -> the error that kept it out; empty when all were stored). Jobs are committed
        in id order, so one call covers a whole batch; a failed batch is retried row by row,
        so one bad row never fails the others."""

    def load_limits(self) -> dict[bytes, tuple[int, int, int]]:
        """Queue limits per function set by ``maxqueue`` (kept by durable stores only)."""
        return {}

    def save_limit(self, function: bytes, sizes: tuple[int, int, int] | None) -> None:
        """Keep (or with None, forget) a function's ``maxqueue`` limits; durable stores
        write it at once (an admin command, rare)."""
        return  # memory only: the limit lasts until the server stops

    @abc.abstractmethod
    def remove(self, job_id: int) -> None:
        """Forget a job, without waiting: removals are batched and may become durable late."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until every add and remove queued so far is committed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Commit what is queued and release the store; calling it again does nothing."""

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
