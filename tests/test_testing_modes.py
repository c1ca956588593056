"""django_gearman.testing: outbox and immediate modes, no server involved."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_gearman import TaskError, testing
from django_gearman.envelope import EnvelopeError

from .taskapp import tasks


@pytest.fixture
def outbox() -> Iterator[list[testing.Submission]]:
    testing.clear()
    with override_settings(GEARMAN={"default": {"MODE": "outbox", "PREFIX": "t."}}):
        yield testing.outbox
    testing.clear()


@pytest.fixture
def immediate() -> Iterator[None]:
    testing.clear()
    with override_settings(GEARMAN={"default": {"MODE": "immediate"}}):
        yield
    testing.clear()


def test_outbox_records_every_submission(outbox: list[testing.Submission]) -> None:
    handle = tasks.add.background(1, 2)
    assert handle.startswith("outbox:")
    assert tasks.echo.using(unique="k", priority="low").submit(x=[1, (2, 3)]) is None
    first, second = outbox
    assert (first.task, first.function, first.args, first.background) == (
        "tests.taskapp.tasks.add", "t.tests.taskapp.tasks.add", [1, 2], True,
    )  # fmt: skip
    assert (second.kwargs, second.priority, second.unique, second.background) == ({"x": [1, [2, 3]]}, "low", "k", False)


def test_outbox_still_refuses_what_json_cannot_carry(outbox: list[testing.Submission]) -> None:
    with pytest.raises(EnvelopeError):
        tasks.add.background(1, {2})
    assert outbox == []


def test_immediate_runs_in_process_through_json(immediate: None) -> None:
    assert tasks.echo.submit((1, 2), k={"a": (3,)}) == {"args": [[1, 2]], "kwargs": {"k": {"a": [3]}}}
    with pytest.raises(TaskError) as info:
        tasks.fail.submit("nope")
    assert (info.value.type, info.value.message) == ("ValueError", "nope")


def test_immediate_background_failures_are_kept_not_raised(immediate: None) -> None:
    assert tasks.fail.background("quiet").startswith("immediate:")
    [(name, error)] = testing.errors
    assert name == "tests.taskapp.tasks.fail" and str(error) == "quiet"


def test_background_on_commit_waits_for_the_transaction(outbox: list[testing.Submission], django_db_blocker) -> None:
    from django.db import transaction

    with django_db_blocker.unblock(), transaction.atomic():
        tasks.add.background_on_commit(5, 6)
        assert outbox == []  # not before the commit
    assert [s.args for s in outbox] == [[5, 6]]
