"""What a worker logs: one line per outcome, one traceback per failure, in the same format for
``@gearman_task`` jobs and Django Tasks jobs (the functions are chosen as gearman_worker does)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_gearman import TaskError
from django_gearman.tasks.runner import offered_functions
from tests.helpers import wait_for, worker_thread
from tests.taskapp import framework_tasks as ft
from tests.taskapp import tasks

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]

OUTCOME = re.compile(
    r"^(?P<name>\S+) (?P<handle>H:\S+) (?P<outcome>succeeded|failed) in [\d.]+ ms "
    r"\(attempt (?P<attempt>\d+)(?:, (?P<note>[^)]*))?\)"
)


@pytest.fixture
def gearman(gearman_server) -> Iterator[str]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield gearman_server.address


def command_worker(address: str) -> Any:
    """A worker offering what ``manage.py gearman_worker`` offers, wired as the command wires
    it (offered_functions also quiets django.tasks' own outcome lines: ours replace them)."""
    return worker_thread([address], {o.name: o.callback for o in offered_functions("default")})


def outcome_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if (match := OUTCOME.match(r.getMessage())) and match["name"] == name
    ]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


def test_a_failing_task_is_logged_once_with_one_traceback(
    gearman: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with command_worker(gearman):
        with pytest.raises(TaskError):
            tasks.fail.submit("boom")
        tasks.fail.background("quietly")
        wait_for(lambda: len(outcome_lines(caplog, tasks.fail.name)) == 2, what="two outcomes")
    lines = outcome_lines(caplog, tasks.fail.name)
    assert [r.levelname for r in lines] == ["ERROR", "ERROR"]
    assert all(": ValueError: " in r.getMessage() for r in lines)
    assert tracebacks(caplog) == lines  # one traceback per failure, on the outcome line


def test_django_tasks_jobs_log_their_outcomes_like_gearman_tasks(
    gearman: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with command_worker(gearman):
        tasks.add.submit(1, 2)
        good = ft.multiply.enqueue(6, 7)
        bad = ft.explode.enqueue("boom")

        def both_logged() -> bool:
            return bool(
                outcome_lines(caplog, ft.multiply.module_path)
                and outcome_lines(caplog, ft.explode.module_path)
            )

        wait_for(both_logged, what="the Tasks jobs' outcomes")
    [added] = outcome_lines(caplog, tasks.add.name)
    [succeeded] = outcome_lines(caplog, ft.multiply.module_path)
    [failed] = outcome_lines(caplog, ft.explode.module_path)
    assert (added.name, succeeded.name, failed.name) == ("django_gearman.worker",) * 3
    assert (succeeded.levelname, failed.levelname) == ("INFO", "ERROR")
    assert OUTCOME.match(succeeded.getMessage())["outcome"] == "succeeded"
    assert f"result {good.id}" in succeeded.getMessage()
    assert f"result {bad.id}" in failed.getMessage()
    assert ": RuntimeError: boom" in failed.getMessage()
    assert tracebacks(caplog) == [failed]
    # Nothing else says the same thing: no bare "Task id=... state=..." lines from django.tasks.
    assert not [r for r in caplog.records if r.getMessage().startswith("Task id=")]
