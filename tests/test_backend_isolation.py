"""Issue #13: a Django Tasks job runs only what ``enqueue()`` queued on the queue it came from.

Raw jobs, hand-built envelopes (:func:`~django_gearman.gearman.envelope.encode_call`), against
both servers: anyone who can reach the job server can submit one, so the worker

- resolves the job's task only among Task objects of modules already imported (each installed
  app's ``tasks`` module and what they import), never importing the module a job names;
- runs it only for the READY row ``enqueue()`` wrote for that id (or the RUNNING row of the same
  task, the job re-queued after its worker died), with the job's task path and the backend and
  queue of the Gearman function the job arrived on;
- and otherwise fails the job with one log line, touching no row.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from django.utils.crypto import get_random_string

from django_gearman.backends import worker_functions
from django_gearman.gearman import GearmanClient
from django_gearman.gearman.envelope import decode_error, encode_call
from django_gearman.gearman.errors import JobError, JobException
from django_gearman.models import TaskResultRecord
from tests.helpers import worker_thread
from tests.taskapp import framework_tasks as ft

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]

DEFAULT = "django_tasks.default"
REPORTS = "django_tasks.reports"
OTHER = "b.django_tasks.default"  # the "other" backend's queue: GEARMAN alias "second", prefix b.


@pytest.fixture
def gearman(gearman_server: Any) -> Iterator[str]:
    """TASKS as in tests/settings.py plus a second GearmanBackend, ``other``, on its own
    functions (the GEARMAN alias ``second`` has the prefix ``b.``)."""
    servers = {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}
    tasks = {
        **settings.TASKS,
        "other": {
            "BACKEND": "django_gearman.backends.GearmanBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"ALIAS": "second"},
        },
    }
    with override_settings(
        GEARMAN={"default": servers, "second": {**servers, "PREFIX": "b."}}, TASKS=tasks
    ):
        yield gearman_server.address


def ready_row(task: Any, *, backend: str = "default", **fields: Any) -> TaskResultRecord:
    """A row as ``enqueue()`` writes it (READY), for ``task`` (a Task or a dotted path)."""
    path = task if isinstance(task, str) else task.module_path
    values: dict[str, Any] = {
        "id": get_random_string(32),
        "task_path": path,
        "backend": backend,
        "queue_name": "default" if isinstance(task, str) else task.queue_name,
        "args": [6, 7],
        "enqueued_at": timezone.now(),
    }
    values.update(fields)
    return TaskResultRecord.objects.create(**values)


def rows() -> list[dict[str, Any]]:
    return list(TaskResultRecord.objects.order_by("pk").values())


def raw_job(address: str, function: str, meta: dict[str, Any], args: Any = (6, 7)) -> bytes:
    """Submit a foreground job with ``meta`` to ``function`` while a worker offers every queue
    of every GearmanBackend (as ``manage.py gearman_worker`` does); its result bytes."""
    with worker_thread([address], worker_functions()):
        with GearmanClient([address]) as client:
            return client.submit(
                function, encode_call(list(args), {}, meta), unique=get_random_string(16)
            )


def refused(
    address: str,
    function: str,
    meta: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    args: Any = (6, 7),
) -> str:
    """Submit the job, expect it to fail, and return its error message; the worker logged one
    line for it."""
    with caplog.at_level(logging.ERROR, logger="django_gearman.worker"):
        with pytest.raises(JobError) as info:
            raw_job(address, function, meta, args)
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR and "failed in" in r.message]
    assert len(lines) == 1, [r.message for r in caplog.records]
    assert isinstance(info.value, JobException)
    kind, message = decode_error(info.value.data)
    assert kind.endswith("UsageError") and message in lines[0].message
    return message


def meta_for(record: TaskResultRecord, task: str | None = None) -> dict[str, Any]:
    return {
        "task": task or record.task_path,
        "result_id": record.id,
        "backend": record.backend,
        "background": True,
    }


# -- the task a job names: only Task objects already imported, never an import ----------------


@pytest.fixture
def marker_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``gm_iso_marker`` and package ``gm_iso_pkg`` (imported) with submodule ``sub`` (not):
    importing either module writes ``tmp_path/imported-<name>``."""
    for name, where in (("gm_iso_marker", "gm_iso_marker.py"), ("sub", "gm_iso_pkg/sub.py")):
        file = tmp_path / where
        file.parent.mkdir(exist_ok=True)
        file.write_text(
            f"from pathlib import Path\nPath({str(tmp_path)!r}, 'imported-{name}').write_text('')\n"
            "x = 1\n"
        )
    (tmp_path / "gm_iso_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("gm_iso_pkg")
    yield tmp_path
    for name in ("gm_iso_marker", "gm_iso_pkg", "gm_iso_pkg.sub"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("path", ["gm_iso_marker.x", "gm_iso_pkg.sub.x"])
@pytest.mark.parametrize("row", ["no row", "a READY row"])
def test_a_job_naming_a_module_not_imported_fails_without_importing_it(
    gearman: str,
    marker_modules: Path,
    caplog: pytest.LogCaptureFixture,
    path: str,
    row: str,
) -> None:
    """Even a READY row naming that path (one no enqueue() can write) imports nothing."""
    record = ready_row(path) if row == "a READY row" else None
    before = rows()
    meta = meta_for(record) if record else {"task": path, "result_id": "r" * 32}
    message = refused(gearman, DEFAULT, meta, caplog)
    module = path.rpartition(".")[0]
    assert module not in sys.modules
    assert list(marker_modules.glob("imported-*")) == []
    assert rows() == before
    if record is not None:
        assert f"{path!r} is not a task of a module this worker imported" in message


@pytest.mark.parametrize(
    "path", ["tests.taskapp.framework_tasks.BROKEN", "os.system", "tests.taskapp.nothing.x"]
)
def test_a_job_naming_something_that_is_not_a_task_fails(
    gearman: str, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    record = ready_row(path)
    before = rows()
    message = refused(gearman, DEFAULT, meta_for(record), caplog)
    assert repr(path) in message
    assert rows() == before
    assert "tests.taskapp.nothing" not in sys.modules


# -- the queue and backend: those of the function the job came on ----------------------------


def test_a_job_naming_a_task_of_another_queue_fails(
    gearman: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ft.report is on the "reports" queue: its row's job arrives on django_tasks.reports."""
    record = ready_row(ft.report, args=["weekly"])
    before = rows()
    message = refused(gearman, DEFAULT, meta_for(record), caplog, args=["weekly"])
    assert "queue 'reports'" in message and repr(DEFAULT) in message
    assert rows() == before


@pytest.mark.parametrize("backend", ["other", "gearman_task", "nowhere"])
def test_a_job_naming_a_task_of_another_backend_fails(
    gearman: str, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    """A row of the "other" GearmanBackend (its jobs come on b.django_tasks.default), a retried
    ``@gearman_task`` row, a row of an alias not in TASKS: none runs on django_tasks.default."""
    record = ready_row(ft.multiply, backend=backend)
    before = rows()
    message = refused(gearman, DEFAULT, meta_for(record), caplog)
    assert f"backend {backend!r}" in message
    assert rows() == before


def test_the_other_backends_row_runs_on_its_own_function(gearman: str) -> None:
    """The control: the same kind of row as above runs when its job comes on its function."""
    record = ready_row(ft.multiply, backend="other")
    assert raw_job(gearman, OTHER, meta_for(record)) == b"42"
    done = TaskResultRecord.objects.get(pk=record.pk)
    assert (done.status, done.return_value, done.backend) == ("SUCCESSFUL", 42, "other")


def test_the_meta_backend_must_be_the_rows(gearman: str, caplog: pytest.LogCaptureFixture) -> None:
    record = ready_row(ft.multiply)
    before = rows()
    message = refused(gearman, DEFAULT, {**meta_for(record), "backend": "other"}, caplog)
    assert "backend 'other'" in message
    assert rows() == before


# -- the row a job writes: only the READY row enqueue() wrote for it ---------------------------


def test_a_job_with_other_arguments_than_its_rows_fails(
    gearman: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The row's arguments are the ones enqueue() was given: a job may not swap in its own."""
    record = ready_row(ft.multiply)
    before = rows()
    with caplog.at_level(logging.ERROR, logger="django_gearman.worker"):
        with pytest.raises(JobException) as info:
            raw_job(gearman, DEFAULT, meta_for(record), args=(1000, 1000))
    assert "arguments" in decode_error(info.value.data)[1]
    assert rows() == before


def test_a_job_with_another_tasks_row_fails(gearman: str, caplog: pytest.LogCaptureFixture) -> None:
    """A job naming ft.multiply may not write ft.until_mended's row (same backend and queue)."""
    record = ready_row(ft.until_mended, args=["k"])
    before = rows()
    message = refused(gearman, DEFAULT, meta_for(record, task=ft.multiply.module_path), caplog)
    assert repr(ft.until_mended.module_path) in message
    assert rows() == before


@pytest.mark.parametrize("status", ["SUCCESSFUL", "FAILED"])
def test_a_job_with_a_finished_row_fails(
    gearman: str, caplog: pytest.LogCaptureFixture, status: str
) -> None:
    record = ready_row(
        ft.multiply, status=status, finished_at=timezone.now(), worker_ids=["host-1"]
    )
    before = rows()
    message = refused(gearman, DEFAULT, meta_for(record), caplog)
    assert status in message
    assert rows() == before


def test_a_job_without_a_row_fails_and_makes_none(
    gearman: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before issue #13 such a job (another client's, or a deleted row's) made itself a row."""
    other = ready_row(ft.multiply)
    before = rows()
    meta = {"task": ft.multiply.module_path, "result_id": "no-such-row", "backend": "default"}
    message = refused(gearman, DEFAULT, meta, caplog)
    assert "'no-such-row'" in message
    assert rows() == before and other.pk != "no-such-row"


def test_a_ready_row_runs(gearman: str) -> None:
    """A hand-built job for a READY row, as enqueue() would have sent it, runs and records."""
    record = ready_row(ft.multiply)
    assert raw_job(gearman, DEFAULT, meta_for(record)) == b"42"
    done = TaskResultRecord.objects.get(pk=record.pk)
    assert (done.status, done.return_value, len(done.worker_ids)) == ("SUCCESSFUL", 42, 1)


def test_a_running_row_of_the_same_task_runs_again(gearman: str) -> None:
    """The server re-queues a job whose worker died: its row is RUNNING, the attempt is 2."""
    first = timezone.now()
    record = ready_row(
        ft.attempt_of,
        args=[],
        status="RUNNING",
        started_at=first,
        last_attempted_at=first,
        worker_ids=["dead-host-1"],
    )
    assert raw_job(gearman, DEFAULT, meta_for(record), args=()) == b"2"
    done = TaskResultRecord.objects.get(pk=record.pk)
    assert (done.status, done.return_value, done.started_at) == ("SUCCESSFUL", 2, first)
    assert done.worker_ids[0] == "dead-host-1" and len(done.worker_ids) == 2
