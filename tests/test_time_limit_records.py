"""A job failed at its hard time limit is what a raised exception is to the task layer: its
failure is kept in the results table (background), and its retry policy queues it again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_gearman import gearman_task
from django_gearman.gearman import Worker
from django_gearman.gearman.pool import WorkerSpec
from django_gearman.models import TaskResultRecord
from django_gearman.tasks.runner import offered_functions
from tests.helpers import wait_for

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]

STARTS: list[str] = []


@gearman_task(name="tests.expired.hang", time_limit=1)
def hang(key: str) -> None:
    STARTS.append(key)
    time.sleep(2.5)  # past the limit; the abandoned call returns later, its result discarded


@gearman_task(name="tests.expired.hang_twice", time_limit=1, max_attempts=2, retry_backoff=0.1)
def hang_twice(key: str) -> None:
    STARTS.append(key)
    time.sleep(2.5)


@pytest.fixture
def worker(gearman_server: Any) -> Iterator[Worker]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 10}}}
    ):
        STARTS.clear()
        spec = WorkerSpec(
            servers=(gearman_server.address,),
            functions=tuple(offered_functions("default", task_names=[hang.name, hang_twice.name])),
            client_id=None,
            prefetch=1,
            burst=False,
            max_jobs=None,
            concurrency=1,
        )
        worker = spec.build(1)  # registered as the pools register it, time limits and hooks too
        worker.reconnect_delay = 0.05
        thread = threading.Thread(target=worker.work, kwargs={"install_signals": False})
        thread.start()
        try:
            yield worker
        finally:
            worker.request_stop()
            thread.join(15)


def failures(task: str) -> list[TaskResultRecord]:
    return list(TaskResultRecord.objects.filter(task_path=task, status="FAILED"))


def test_a_background_job_failed_at_its_time_limit_is_recorded(worker: Worker) -> None:
    hang.background("one")
    [record] = wait_for(lambda: failures(hang.name), timeout=20, what="the failure record")
    assert "TimeLimitExceeded" in record.errors[-1]["exception_class_path"]
    time.sleep(1.0)
    assert STARTS == ["one"]  # failed, not handed to anyone again


def test_its_retry_policy_queues_it_again(worker: Worker) -> None:
    hang_twice.background("two")
    [record] = wait_for(lambda: failures(hang_twice.name), timeout=30, what="the last failure")
    assert STARTS == ["two", "two"]  # max_attempts=2: the retry ran, then it gave up
    assert record.attempts >= 1
