"""``django_gearman.admin.retry.retry_result``, the admin's retry of a failed results row.

- Two retries of the same failed row (two admins clicked Retry on the page they both loaded)
  while the first retry's job still waits for a worker: the second joins the first job (only
  the click that turns the row from FAILED to READY queues one), so the server holds one job
  and the task runs once.
- A submit that fails (no server) leaves the row as it was: FAILED, with its finish and enqueue
  times, so the admin can retry it again later.

Both kinds of rows: a failed background ``@gearman_task`` job and a Django Tasks task.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_gearman.admin.retry import retry_result
from django_gearman.backends import run_job, task_backends
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import GearmanError
from django_gearman.models import TaskResultRecord
from django_gearman.tasks.runner import job_callback
from tests.helpers import wait_for, worker_thread
from tests.peers import free_port
from tests.taskapp import framework_tasks as ft
from tests.taskapp import tasks as gt

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
ENQUEUED = datetime.datetime(2024, 5, 6, 7, 0, 0, tzinfo=datetime.timezone.utc)


class Kind:
    """One kind of retriable row: how to make it failed, its Gearman function, its callback."""

    def __init__(self, name: str) -> None:
        self.name = name

    def failed_row(self, pk: str, key: str) -> TaskResultRecord:
        if self.name == "gearman_task":
            fields = {"task_path": gt.until_mended.name, "backend": "gearman_task"}
        else:
            fields = {"task_path": ft.until_mended.module_path, "backend": "default"}
        return TaskResultRecord.objects.create(
            id=pk,
            queue_name="default",
            status=TaskResultRecord.Status.FAILED,
            args=[key],
            errors=[{"exception_class_path": "builtins.RuntimeError", "traceback": "broken"}],
            enqueued_at=ENQUEUED,
            finished_at=FINISHED,
            **fields,
        )

    def function(self) -> str:
        if self.name == "gearman_task":
            return gt.until_mended.function_name
        return task_backends["default"].function_name("default")

    def callback(self) -> Callable[[Any], bytes]:
        return job_callback(gt.until_mended) if self.name == "gearman_task" else run_job


@pytest.fixture(params=["gearman_task", "tasks_backend"])
def kind(request: pytest.FixtureRequest) -> Kind:
    return Kind(request.param)


@pytest.fixture
def server(gearman_server) -> Iterator[Any]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield gearman_server


def jobs_of(address: str, function: str) -> int:
    with GearmanAdminClient(address) as admin:
        return sum(row.total for row in admin.status() if row.function == function)


def test_a_second_retry_while_the_first_job_waits_joins_it(server: Any, kind: Kind) -> None:
    pk = f"join-{kind.name}"
    kind.failed_row(pk, "j1")
    # Two admins loaded the page while the row was FAILED; both click Retry.
    first_click = TaskResultRecord.objects.get(pk=pk)
    second_click = TaskResultRecord.objects.get(pk=pk)

    first = retry_result(first_click)
    assert TaskResultRecord.objects.get(pk=pk).status == TaskResultRecord.Status.READY
    second = retry_result(second_click)

    assert jobs_of(server.address, kind.function()) == 1  # one job, not two
    with GearmanAdminClient(server.address) as admin:
        # The row's id (its task id) and the attempt lead the job's unique key.
        assert [key.rsplit(":", 1)[0] for key in admin.show_unique_jobs()] == [f"{pk}:1"]
    assert second == first  # the second click answers with the first one's job
    assert TaskResultRecord.objects.get(pk=pk).job_handle == second

    runs: list[str] = []
    callback = kind.callback()

    def counted(job: Any) -> bytes:
        runs.append(job.handle)
        return callback(job)

    with worker_thread([server.address], {kind.function(): counted}):
        wait_for(
            lambda: TaskResultRecord.objects.get(pk=pk).status == "SUCCESSFUL",
            what="the retried job",
        )
        wait_for(lambda: jobs_of(server.address, kind.function()) == 0, what="an empty queue")
    assert len(runs) == 1
    record = TaskResultRecord.objects.get(pk=pk)
    assert record.return_value == "j1 mended"
    assert TaskResultRecord.objects.count() == 1


def test_a_failed_submit_restores_the_row(kind: Kind) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = {"SERVERS": [address], "OPTIONS": {"timeout": 5, "connect_timeout": 1}}
    pk = f"down-{kind.name}"
    kind.failed_row(pk, "d1")
    with override_settings(GEARMAN={"default": settings}):
        with pytest.raises(GearmanError):
            retry_result(TaskResultRecord.objects.get(pk=pk))
    record = TaskResultRecord.objects.get(pk=pk)
    assert record.status == TaskResultRecord.Status.FAILED
    assert record.finished_at == FINISHED
    assert record.enqueued_at == ENQUEUED
    assert record.job_handle == ""
    assert record.errors == [
        {"exception_class_path": "builtins.RuntimeError", "traceback": "broken"}
    ]
