"""django_gearman.testing: the outbox and immediate client backends, no server involved.

The doubles get the very Task the real client would send, after the same checks, so each
test below that expects an error would also fail in production; the fixtures come from the
package's own pytest plugin (its ``pytest11`` entry point), as a project using it gets them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import transaction
from django.test import override_settings

import django_gearman.tasks
from django_gearman import TaskError, testing
from django_gearman.clients import clients
from django_gearman.gearman.envelope import EnvelopeError
from django_gearman.gearman.errors import GearmanError, LocalProtocolError, UsageError
from tests.taskapp import tasks


@pytest.fixture
def prefixed_outbox() -> Iterator[list[testing.Submission]]:
    testing.clear()
    with override_settings(GEARMAN={"default": {"BACKEND": "outbox", "PREFIX": "t."}}):
        yield testing.outbox
    testing.clear()


def test_outbox_records_every_submission(prefixed_outbox: list[testing.Submission]) -> None:
    handle = tasks.add.background(1, 2)
    assert handle.startswith("outbox:")
    assert tasks.echo.using(unique="k", priority="low").submit(x=[1, (2, 3)]) is None
    first, second = prefixed_outbox
    assert (first.task, first.function, first.args, first.background, first.alias) == (
        "tests.taskapp.tasks.add", "t.tests.taskapp.tasks.add", [1, 2], True, "default",
    )  # fmt: skip
    assert (second.kwargs, second.priority, second.unique, second.background) == (
        {"x": [1, [2, 3]]},
        "low",
        "k",
        False,
    )


def test_the_fixture_from_the_plugin_switches_every_alias(
    gearman_outbox: list[testing.Submission],
) -> None:
    assert type(clients["default"]).__name__ == "OutboxClient"
    tasks.add.background(3, 4)
    assert [(s.task, s.args) for s in gearman_outbox] == [("tests.taskapp.tasks.add", [3, 4])]


def test_outbox_still_refuses_what_json_cannot_carry(
    gearman_outbox: list[testing.Submission],
) -> None:
    with pytest.raises(EnvelopeError):
        tasks.add.background(1, {2})
    assert gearman_outbox == []


def test_delay_on_a_foreground_call_fails_as_in_production(
    gearman_outbox: list[testing.Submission],
) -> None:
    with pytest.raises(UsageError, match="only apply to .background"):
        tasks.add.using(delay=5).submit(1, 2)
    assert gearman_outbox == []


def test_a_unique_key_over_64_bytes_fails_as_in_production(
    gearman_outbox: list[testing.Submission],
) -> None:
    with pytest.raises(LocalProtocolError, match="at most 64"):
        tasks.add.using(unique="u" * 100).background(1, 2)
    assert gearman_outbox == []


def test_the_unique_key_is_recorded_as_sent(gearman_outbox: list[testing.Submission]) -> None:
    tasks.add.using(unique=lambda a, b: a * 100 + b).background(4, 2)  # type: ignore[arg-type,return-value]
    [sent] = gearman_outbox
    assert sent.unique == "402"  # a str on the wire, not the int the callable returned


def test_a_scheduled_job_goes_out_at_normal_priority(
    gearman_outbox: list[testing.Submission],
) -> None:
    tasks.add.using(priority="high", delay=30).background(1, 2)
    [sent] = gearman_outbox
    assert (
        sent.priority == "normal" and sent.run_at is not None
    )  # gearmand runs epoch jobs at normal


def test_immediate_runs_in_process_through_json(
    gearman_immediate: list[tuple[str, BaseException]],
) -> None:
    assert tasks.echo.submit((1, 2), k={"a": (3,)}) == {
        "args": [[1, 2]],
        "kwargs": {"k": {"a": [3]}},
    }
    with pytest.raises(TaskError) as info:
        tasks.fail.submit("nope")
    assert (info.value.type, info.value.message) == ("ValueError", "nope")
    assert isinstance(info.value, GearmanError)


def test_immediate_background_failures_are_kept_not_raised(
    gearman_immediate: list[tuple[str, BaseException]],
) -> None:
    assert tasks.fail.background("quiet").startswith("immediate:")
    [(name, error)] = gearman_immediate
    assert (
        name == "tests.taskapp.tasks.fail"
        and isinstance(error, ValueError)
        and str(error) == "quiet"
    )


def test_immediate_refuses_a_function_no_task_of_this_process_runs(
    gearman_immediate: list[tuple[str, BaseException]],
) -> None:
    with pytest.raises(UsageError, match="no task of this process"):
        clients["default"].submit("someone.elses.function", b"{}")


def test_background_on_commit_waits_for_the_transaction(
    gearman_outbox: list[testing.Submission], django_db_blocker
) -> None:
    with django_db_blocker.unblock(), transaction.atomic():
        tasks.add.background_on_commit(5, 6)
        assert gearman_outbox == []  # not before the commit
    assert [s.args for s in gearman_outbox] == [[5, 6]]


def test_the_tasks_layer_does_not_import_the_doubles() -> None:
    package = Path(django_gearman.tasks.__file__).parent
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported.add(f"{'.' * node.level}{node.module or ''}")
    assert not any("testing" in name for name in imported), imported
