"""Task ids (issue #13): every submission carries ``meta["id"]`` and the results table, the
runner's retries and the admin's re-runs are keyed by it, never by the job handle.

- The id: a uuid (hex) in the envelope's meta, under 64 characters, new for every submission,
  the same for every retry of one call; a job that comes without one (a PHP client) gets one at
  the worker.
- A server restart numbers job handles from 1 again: two failing background jobs that got the
  same handle leave two rows (keyed by their ids) and no ``UNIQUE constraint failed`` is logged.
- A retry's unique key is never an earlier job's: after ``cancel job`` of an admin re-run, the
  next re-run still runs instead of coalescing onto the cancelled job.

Server tests run against our embedded server and against gearmand.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from django_gearman.admin.retry import retry_result
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.base import BaseClient
from django_gearman.gearman.client import GearmanClient
from django_gearman.gearman.envelope import decode_call, encode_call
from django_gearman.gearman.jobs import JobHandle, Task, TaskState
from django_gearman.models import TaskResultRecord
from django_gearman.tasks import runner
from django_gearman.tasks.decorator import GearmanTask, TaskOptions
from django_gearman.tasks.runner import job_callback
from tests.helpers import capture_resubmits, wait_for, worker_thread
from tests.taskapp import tasks as gt

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
SERVER = "127.0.0.1:4730"


# -- the id in the envelope -------------------------------------------------------------------


class RecordingClient(BaseClient):
    """A client backend that keeps every Task it is given (``sent``) and answers at once."""

    sent: list[Task] = []

    def __init__(self, servers: Any = None, **options: Any) -> None:
        self.servers = servers

    def run_tasks(self, tasks: Sequence[Task], *, timeout: float | None = None) -> Sequence[Task]:
        for number, task in enumerate(tasks, len(self.sent) + 1):
            task.packet()
            task.handle = JobHandle(f"H:rec:{number}")
            task.result, task.state = (
                b"null",
                (TaskState.CREATED if task.background else TaskState.COMPLETE),
            )
            self.sent.append(task)
        return tasks


@pytest.fixture
def recording() -> Iterator[list[Task]]:
    RecordingClient.sent = []
    with override_settings(GEARMAN={"default": {"BACKEND": "tests.test_task_ids.RecordingClient"}}):
        yield RecordingClient.sent


def meta_of(task: Task) -> dict[str, Any]:
    return decode_call(task.data).meta


def test_every_submission_carries_a_new_short_uuid(recording: list[Task]) -> None:
    gt.add.background(1, 2)
    gt.add.background(1, 2)
    gt.add.submit(1, 2)
    gt.add.using(unique="same").background(1, 2)
    ids = [meta_of(task)["id"] for task in recording]
    assert all(isinstance(i, str) and HEX_ID.match(i) and len(i) < 64 for i in ids), ids
    assert len(set(ids)) == 4  # one per submission, even with equal arguments or unique key
    assert recording[3].unique == "same"  # a user's unique key is left as it was


class FakeJob:
    """What ``execute`` uses of a worker's job."""

    def __init__(self, data: bytes, handle: str = "H:test:1") -> None:
        self.data = data
        self.handle = handle
        self.function = "ids_fn"
        self.unique = "u"
        self.server = SERVER

    def send_warning(self, data: bytes | str) -> None:
        pass


class Resubmits:
    """The runner's ``GearmanClient`` and ``record_failure``, recorded; its clock stands still."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.recorded: list[tuple[str, int]] = []  # (row id, attempt) per record_failure


@pytest.fixture
def resubmits(monkeypatch: pytest.MonkeyPatch) -> Resubmits:
    seen = Resubmits()

    capture_resubmits(monkeypatch, seen.submitted, "H:test:9")

    def record_failure(
        task: Any,
        job: Any,
        error: Any,
        attempt: int,
        args: Any,
        kwargs: Any,
        task_id: str,
        *rest: Any,
    ) -> None:
        seen.recorded.append((task_id, attempt))

    monkeypatch.setattr(runner, "record_failure", record_failure)
    monkeypatch.setattr(
        runner, "time", SimpleNamespace(sleep=lambda s: None, time=lambda: 1e6, perf_counter=float)
    )
    return seen


def always_failing(**options: Any) -> GearmanTask[..., Any]:
    def body(*args: Any) -> None:
        raise RuntimeError("no")

    return GearmanTask(body, TaskOptions(name="tests.ids_failing", **options))


def run_chain(task: GearmanTask[..., Any], data: bytes, seen: Resubmits) -> None:
    """Run a background job and each re-submission, as the worker would, until it fails."""
    for _ in range(10):
        try:
            runner.execute(task, FakeJob(data))
        except RuntimeError:
            return
        data = seen.submitted[-1]["data"]
    raise AssertionError("the retries never stop")


def test_retries_keep_the_id_and_never_reuse_a_unique_key(resubmits: Resubmits) -> None:
    task = always_failing(retries=3, retry_backoff=0)
    run_chain(task, encode_call(["a"], None, {"background": True, "id": "abc123"}), resubmits)
    metas = [decode_call(s["data"]).meta for s in resubmits.submitted]
    assert [m["id"] for m in metas] == ["abc123"] * 3  # one task, one id
    assert [m["attempt"] for m in metas] == [2, 3, 4]
    keys = [s["unique"] for s in resubmits.submitted]
    assert all(
        key.startswith(f"abc123:{m['attempt']}:") for key, m in zip(keys, metas, strict=True)
    )
    assert len(set(keys)) == 3 and all(len(key.encode()) <= 64 for key in keys)
    assert resubmits.recorded == [("abc123", 4)]  # the failure's row is keyed by the id


def test_a_job_without_an_id_gets_one_at_the_worker(resubmits: Resubmits) -> None:
    """A PHP client sends no meta at all: the worker gives the job an id, which its retries
    and its failure record carry."""
    task = always_failing(retries=1, retry_backoff=0)
    run_chain(task, encode_call(["php"], None, {"background": True}), resubmits)
    [resubmitted] = resubmits.submitted
    task_id = decode_call(resubmitted["data"]).meta["id"]
    assert HEX_ID.match(task_id)
    assert resubmits.recorded == [(task_id, 2)]


def test_a_long_id_still_gives_a_unique_key_gearman_takes(resubmits: Resubmits) -> None:
    task_id = "x" * 63  # the longest id a results row takes
    task = always_failing(retries=1, retry_backoff=0)
    run_chain(task, encode_call([], None, {"background": True, "id": task_id}), resubmits)
    [resubmitted] = resubmits.submitted
    assert len(resubmitted["unique"].encode()) <= 64
    assert decode_call(resubmitted["data"]).meta["id"] == task_id


@pytest.mark.parametrize("bad", [7, "", "y" * 64, None, ["a"]])
def test_an_id_a_row_cannot_hold_is_replaced(resubmits: Resubmits, bad: Any) -> None:
    task = always_failing()
    with pytest.raises(RuntimeError):
        runner.execute(task, FakeJob(encode_call([], None, {"background": True, "id": bad})))
    [(task_id, _)] = resubmits.recorded
    assert HEX_ID.match(task_id)


# -- against the servers ----------------------------------------------------------------------


@pytest.fixture
def durable(server_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Any]:
    """A server (embedded or gearmand) with a durable queue, as GEARMAN's only server."""
    server = server_factory(queue_db=tmp_path / "queue.sqlite3")
    with override_settings(
        GEARMAN={"default": {"SERVERS": [server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield server


def failures() -> Any:
    return TaskResultRecord.objects.filter(task_path=gt.fail.name)


@pytest.mark.django_db(transaction=True)
def test_failures_with_a_reused_handle_after_a_restart_keep_two_rows(
    durable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="django_gearman")
    functions = {gt.fail.function_name: job_callback(gt.fail)}
    with worker_thread([durable.address], functions):
        first = gt.fail.background("before the restart")
        wait_for(lambda: failures().count() == 1, what="the first failure")
    durable.restart()
    with worker_thread([durable.address], functions):
        second = gt.fail.background("after the restart")
        wait_for(lambda: failures().count() == 2, timeout=5, what="the second failure")
    assert str(first) == str(second)  # the server numbered its handles from 1 again
    rows = list(failures())
    assert {row.job_handle for row in rows} == {str(first)}
    assert {tuple(row.args) for row in rows} == {("before the restart",), ("after the restart",)}
    assert all(HEX_ID.match(row.id) for row in rows) and rows[0].id != rows[1].id
    assert "could not record" not in caplog.text and "UNIQUE" not in caplog.text


@pytest.fixture
def server(gearman_server: Any) -> Iterator[Any]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield gearman_server


@pytest.fixture
def broken() -> Iterator[str]:
    gt.BROKEN.add("c1")
    yield "c1"
    gt.BROKEN.discard("c1")


@pytest.mark.django_db(transaction=True)
def test_an_admin_re_run_after_a_cancelled_one_runs(server: Any, broken: str) -> None:
    functions = {gt.until_mended.function_name: job_callback(gt.until_mended)}
    with worker_thread([server.address], functions):
        gt.until_mended.background(broken)
        wait_for(lambda: TaskResultRecord.objects.filter(args=[broken]).exists(), what="failure")
    record = TaskResultRecord.objects.get(args=[broken])
    task_id = record.id
    assert HEX_ID.match(task_id)

    cancelled = retry_result(record)  # no worker now: the re-run waits on the server
    with GearmanAdminClient(server.address) as admin:
        admin.cancel_job(cancelled)  # an operator cancels it on the jobs page
    # The cancelled job never runs, so nothing finishes the row: put it back as it was.
    TaskResultRecord.objects.filter(pk=task_id).update(status=TaskResultRecord.Status.FAILED)

    gt.BROKEN.discard(broken)
    handle = retry_result(TaskResultRecord.objects.get(pk=task_id))
    assert handle != cancelled  # a job of its own, not the cancelled one
    runs: list[dict[str, Any]] = []
    callback = job_callback(gt.until_mended)

    def seen(job: Any) -> bytes:
        runs.append(decode_call(job.data).meta)
        return callback(job)

    with worker_thread([server.address], {gt.until_mended.function_name: seen}):
        wait_for(
            lambda: TaskResultRecord.objects.get(pk=task_id).status == "SUCCESSFUL",
            what="the second re-run",
        )
    record = TaskResultRecord.objects.get(pk=task_id)
    assert record.return_value == f"{broken} mended"
    assert TaskResultRecord.objects.count() == 1
    assert [meta["id"] for meta in runs] == [task_id]  # the same task, a new attempt
    assert runs[0]["attempt"] == 2


@pytest.mark.django_db(transaction=True)
def test_a_job_a_raw_client_sends_without_an_id_is_recorded_under_a_new_id(server: Any) -> None:
    """As a PHP client sends it: arguments and ``background``, but no id."""
    functions = {gt.fail.function_name: job_callback(gt.fail)}
    with worker_thread([server.address], functions):
        with GearmanClient([server.address]) as client:
            handle = client.submit_background(
                gt.fail.function_name, b'{"args": ["raw"], "meta": {"background": true}}'
            )
        wait_for(lambda: failures().exists(), what="the failure")
    [row] = failures()
    assert HEX_ID.match(row.id) and row.job_handle == str(handle) and row.args == ["raw"]
