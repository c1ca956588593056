"""The Django Tasks backend: code written against django.tasks (or the backport) runs on
Gearman workers, against both servers, with results readable from the database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from django_gearman.backends import GearmanBackend, worker_functions
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.models import TaskResultRecord
from tests.helpers import wait_for, worker_thread
from tests.taskapp import framework_tasks as ft

try:
    from django.tasks import TaskResultStatus, task_backends
except ImportError:
    from django_tasks import TaskResultStatus, task_backends

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]


def tasks_worker(address: str) -> Any:
    """A worker thread offering the Tasks backend's queues, as gearman_worker does."""
    return worker_thread([address], worker_functions())


@pytest.fixture
def gearman(gearman_server) -> Iterator[str]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield gearman_server.address


def finished(result):
    result.refresh()
    return result.is_finished


def test_the_backend_declares_what_it_supports() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, GearmanBackend)
    assert (backend.supports_defer, backend.supports_priority, backend.supports_get_result) == (
        True,
        True,
        True,
    )
    assert sorted(worker_functions()) == ["django_tasks.default", "django_tasks.reports"]


def test_enqueue_runs_on_a_worker_and_the_result_is_readable(gearman: str) -> None:
    result = ft.multiply.enqueue(6, 7)
    assert result.status == TaskResultStatus.READY and result.id
    with tasks_worker(gearman):
        wait_for(lambda: finished(result), what="the task result")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42 and result.attempts == 1
    again = ft.multiply.get_result(result.id)  # from the database, as another process would
    assert again.return_value == 42 and again.finished_at is not None and again.args == [6, 7]


def test_a_failure_is_recorded_with_its_traceback(gearman: str) -> None:
    result = ft.explode.enqueue("kaboom")
    with tasks_worker(gearman):
        wait_for(lambda: finished(result), what="the failed task")
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "builtins.RuntimeError" and "kaboom" in error.traceback
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018


def test_priority_and_queue_map_to_gearman(gearman: str) -> None:
    result = ft.report.enqueue("weekly")  # priority 10 -> high, queue "reports"
    with GearmanAdminClient(gearman) as admin:
        rows = {row.function: row for row in admin.priority_status()}
    assert rows["django_tasks.reports"].high == 1
    low = ft.multiply.using(priority=-5).enqueue(1, 1)
    with GearmanAdminClient(gearman) as admin:
        rows = {row.function: row for row in admin.priority_status()}
    assert rows["django_tasks.default"].low == 1
    with tasks_worker(gearman):
        wait_for(lambda: finished(result) and finished(low), what="both tasks")
    assert result.return_value == {"report": "weekly", "rows": [1, 2, 3]} and low.return_value == 1


def test_run_after_defers_the_job(gearman: str) -> None:
    result = ft.multiply.using(run_after=timezone.now() + timedelta(seconds=2)).enqueue(2, 2)
    with tasks_worker(gearman):
        result.refresh()
        assert result.status == TaskResultStatus.READY  # not before its time
        wait_for(lambda: finished(result), timeout=20, what="the deferred task")
    record = TaskResultRecord.objects.get(pk=result.id)
    assert record.started_at >= record.run_after
    assert result.return_value == 4


def test_context_tasks_see_their_attempt(gearman: str) -> None:
    result = ft.attempt_of.enqueue()
    with tasks_worker(gearman):
        wait_for(lambda: finished(result), what="the context task")
    assert result.return_value == 1


def test_unknown_result_ids_raise_the_frameworks_error() -> None:
    with pytest.raises(Exception, match="nope") as info:
        task_backends["default"].get_result("nope")
    assert type(info.value).__name__ in ("TaskResultDoesNotExist", "ResultDoesNotExist")


def test_results_are_listed_per_task_in_the_admin(gearman: str, admin_client) -> None:
    done = ft.multiply.enqueue(3, 3)
    failed = ft.explode.enqueue("in the admin")
    with tasks_worker(gearman):
        wait_for(lambda: finished(done) and finished(failed), what="both tasks")
    page = admin_client.get(
        "/admin/django_gearman/taskresultrecord/", {"task_path": done.task.module_path}
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert done.id in text and failed.id not in text  # filtered to one task
    detail = admin_client.get(f"/admin/django_gearman/taskresultrecord/{failed.id}/change/")
    assert detail.status_code == 200 and "in the admin" in detail.content.decode()  # the traceback
    assert admin_client.get("/admin/django_gearman/taskresultrecord/add/").status_code == 403
