"""@gearman_task end to end: JSON envelope, background/submit, retries, progress, errors, and
the settings, against both servers (our worker runs the tasks through django_gearman.runner)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from django.test import override_settings

from django_gearman import BatchError, TaskError, batch, run_many
from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.envelope import EnvelopeError, encode_call
from django_gearman.gearman.errors import JobTimeout
from django_gearman.models import TaskResultRecord
from django_gearman.tasks import registry
from django_gearman.tasks.runner import job_callback
from tests.helpers import wait_for, worker_thread
from tests.taskapp import tasks

pytestmark = pytest.mark.interop


def task_worker(address: str) -> Any:
    """A worker thread offering every registered task, as gearman_worker does."""
    functions = {
        task.function_name: job_callback(task) for task in registry.values() if not task.remote
    }
    timeouts = {
        task.function_name: task.options.timeout
        for task in registry.values()
        if task.options.timeout
    }
    return worker_thread([address], functions, timeouts=timeouts)


@pytest.fixture
def gearman(gearman_server) -> Iterator[str]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield gearman_server.address


def test_submit_returns_the_result_through_json(gearman: str) -> None:
    with task_worker(gearman):
        assert tasks.add.submit(2, 3) == 5
        assert tasks.echo.submit(1, "two", [3], four={"x": None}) == {
            "args": [1, "two", [3]],
            "kwargs": {"four": {"x": None}},
        }


def test_background_runs_on_the_worker(gearman: str) -> None:
    key = f"bg-{time.monotonic_ns()}"
    with task_worker(gearman):
        handle = tasks.flaky.background(key, 0)
        assert str(handle).startswith("H:")
        wait_for(lambda: tasks.calls.get(key) == 1, what="the background job")


def test_a_task_error_reaches_the_client_with_type_and_message(gearman: str) -> None:
    with task_worker(gearman):
        with pytest.raises(TaskError) as info:
            tasks.fail.submit("boom")
        assert (info.value.type, info.value.message) == ("ValueError", "boom")
        assert tasks.add.submit(1, 1) == 2  # the worker goes on


def test_submit_with_no_worker_says_that_none_offers_the_task(gearman: str) -> None:
    # No worker runs: the client's timeout (OPTIONS "timeout", 30 s by default) ends the wait
    # with an error that names the function and says why, not a bare "did not finish".
    with pytest.raises(JobTimeout) as timed_out:
        tasks.add.using(timeout=0.5).submit(2, 3)
    function = tasks.add.function_name
    assert timed_out.value.function == function and timed_out.value.workers == 0
    assert f"no worker has registered {function!r} on {gearman}" in str(timed_out.value)


def test_a_result_json_cannot_carry_is_a_clear_error(gearman: str) -> None:
    with task_worker(gearman):
        with pytest.raises(TaskError, match="EnvelopeError.*result is object"):
            tasks.not_json.submit()


def test_arguments_json_cannot_carry_raise_in_the_caller(gearman: str) -> None:
    with pytest.raises(EnvelopeError, match="argument 1 is object"):
        tasks.add.background(1, object())
    with pytest.raises(EnvelopeError, match="keyword argument 'when' is datetime"):
        tasks.echo.background(when=datetime.now())


def test_foreground_retries_in_place_then_succeeds(gearman: str) -> None:
    key = f"fg-{time.monotonic_ns()}"
    warnings = []
    with task_worker(gearman):
        with GearmanClient([gearman]) as client:
            result = client.submit(
                tasks.flaky.function_name,
                encode_call([key, 2]),
                on_warning=lambda w: warnings.append(w.data),
            )
    assert result == b"3"
    assert len(warnings) == 2 and b"attempt 1 failed (RuntimeError: attempt 1 fails)" in warnings[0]


@pytest.mark.django_db(transaction=True)
def test_background_retries_are_rescheduled_then_give_up_and_leave_a_failure_record(
    gearman: str,
) -> None:
    key = f"bgr-{time.monotonic_ns()}"
    with task_worker(gearman):
        tasks.flaky.background(key, 5)  # fails every one of its 1 + 2 attempts
        wait_for(lambda: tasks.calls.get(key) == 3, timeout=20, what="three attempts")
        wait_for(
            lambda: TaskResultRecord.objects.filter(
                task_path=tasks.flaky.name, args=[key, 5]
            ).exists(),
            what="the failure record",
        )
    assert tasks.calls[key] == 3  # no fourth attempt
    record = TaskResultRecord.objects.get(task_path=tasks.flaky.name, args=[key, 5])
    assert record.status == "FAILED" and record.attempts == 3 and record.backend == "gearman_task"
    assert "attempt 3 fails" in record.errors[0]["traceback"]


def test_progress_reaches_the_caller(gearman: str) -> None:
    seen = []
    with task_worker(gearman):
        assert (
            tasks.progress.using(
                on_status=lambda s: seen.append((s.numerator, s.denominator))
            ).submit(3)
            == 3
        )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_run_many_collects_results_and_errors_in_order(gearman: str) -> None:
    with task_worker(gearman):
        results = run_many([(tasks.add, [n, n], {}) for n in range(20)] + [(tasks.fail, ["x"], {})])
    assert results[:20] == [2 * n for n in range(20)]
    assert isinstance(results[20], TaskError) and results[20].message == "x"


def test_a_malformed_workload_gets_a_clear_exception_and_the_worker_goes_on(gearman: str) -> None:
    with task_worker(gearman), GearmanClient([gearman]) as client:
        for bad, expected in [
            (b"not json", b"not JSON"),
            (b'["a"]', b"must be a JSON object"),
            (b'{"arg": [1]}', b"unknown key(s) 'arg'"),
            (b'{"args": 1}', b'\\"args\\" must be a JSON array'),
        ]:
            with pytest.raises(Exception) as info:
                client.submit(tasks.add.function_name, bad)
            assert expected in getattr(info.value, "data", b""), (bad, info.value)
        assert tasks.add.submit(2, 2) == 4


def test_prefix_namespaces_function_names(gearman: str) -> None:
    with override_settings(GEARMAN={"default": {"SERVERS": [gearman], "PREFIX": "site1."}}):
        assert tasks.add.function_name == "site1.tests.taskapp.tasks.add"
        with task_worker(gearman):
            assert tasks.add.submit(20, 22) == 42


def test_batch_pipelines_background_calls_and_fills_their_handles(gearman: str) -> None:
    with batch(size=100) as sent:
        tasks_made = [tasks.add.using(unique=f"b{n}").background(n, n) for n in range(250)]
        assert all(
            t.handle is None for t in tasks_made[200:]
        )  # the last 50 wait for the block's end
        with pytest.raises(EnvelopeError):
            tasks.add.background(1, object())  # still checked at the call
    assert sent.total == 250 and sent.failed == []
    assert all(str(t.handle).startswith("H:") for t in tasks_made)
    with GearmanAdminClient(gearman) as admin:
        row = {r.function: r for r in admin.status()}[tasks.add.function_name]
    assert row.total == 250  # no worker yet: all queued


def test_a_batch_with_refused_jobs_raises_listing_them(gearman: str) -> None:
    with GearmanAdminClient(gearman) as admin:
        tasks.echo.using(unique="seed").background()  # make the function known
        admin.maxqueue(tasks.echo.function_name, 3)
    with pytest.raises(BatchError) as info, batch():
        for n in range(5):
            tasks.echo.using(unique=f"q{n}").background(n)
    assert info.value.total == 5 and len(info.value.failed) == 3  # 1 seeded + 2 fit under 3
    assert all(t.error is not None for t in info.value.failed)
