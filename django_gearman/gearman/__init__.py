"""Gearman without Django: the protocol, a client, a worker and its pool, and a job server.

Everything here runs in any Python program; nothing imports Django, django-environ or the
Django layer around it (the import contracts in ``pyproject.toml`` and a test with Django
blocked keep it so)::

    from django_gearman.gearman import GearmanClient, Worker

    client = GearmanClient(["127.0.0.1:4730"])
    client.submit("reverse", b"hello")                  # b"olleh", once a worker ran it

    worker = Worker(["127.0.0.1:4730"])
    worker.register("reverse", lambda job: job.data[::-1])
    worker.work()

The rooms, from the ground up:

- ``errors``: the one error tree (:class:`GearmanError` and its kinds);
- ``protocol``: sans-I/O: packets, framing, admin text, and the client, worker and admin
  conversations (bytes in, events out);
- ``transport``: the only blocking-socket code; ``jobs``: handles, statuses, tasks;
- ``base``, ``client``: :class:`GearmanClient` (routing, failover, task sets) on
  :class:`BaseClient`, the interface every client backend offers;
- ``work``: the :class:`Job` a worker function gets, and how its outcome is made;
- ``worker``, ``pool``: :class:`Worker` and the process/thread pool that runs many;
- ``admin_client``: the text admin protocol as typed rows;
- ``envelope``: the JSON wire format of tasks (PHP and Perl speak it too);
- ``server``: the asyncio job server (``python -m django_gearman.server``).
"""

from __future__ import annotations

from .admin_client import GearmanAdminClient
from .base import BaseClient
from .client import GearmanClient
from .errors import GearmanError
from .jobs import (
    JobHandle,
    JobStatus,
    Task,
    TaskState,
    WorkComplete,
    WorkData,
    WorkStatus,
    WorkWarning,
)
from .protocol import Priority
from .work import Job, current_job
from .worker import Worker

__all__ = [
    "BaseClient",
    "GearmanAdminClient",
    "GearmanClient",
    "GearmanError",
    "Job",
    "JobHandle",
    "JobStatus",
    "Priority",
    "Task",
    "TaskState",
    "WorkComplete",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
    "Worker",
    "current_job",
]
