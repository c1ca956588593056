"""``max_attempts`` and ``backoff`` (issue #13), the retry options shaped as Django's proposal:

- ``max_attempts=N`` is every attempt (retries + 1); ``retries=`` stays as its alias, and both
  given must agree. ``max_attempts=1`` (the default) never retries.
- ``backoff(exception, result)`` returns the seconds before the next attempt, or None to give
  up; ``result`` is None for a raised exception. It replaces the exponential
  ``retry_backoff`` delay; ``retry_on`` still decides which exceptions are retried at all.
- An admin re-run starts a new set of attempts at its (higher) attempt number.

No server: the runner's clock, sleep and ``GearmanClient`` are fakes that record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from django_gearman import gearman_task
from django_gearman.gearman.envelope import decode_call, encode_call
from django_gearman.gearman.errors import UsageError
from django_gearman.tasks import decorator, runner
from django_gearman.tasks.decorator import GearmanTask, TaskOptions, remote_task
from tests.helpers import capture_resubmits

NOW = 1_000_000.0


class FakeJob:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.handle = "H:policy:1"
        self.function = "policy_fn"
        self.unique = "u"
        self.server = "127.0.0.1:4730"
        self.warnings: list[str] = []

    def send_warning(self, data: bytes | str) -> None:
        self.warnings.append(data.decode() if isinstance(data, bytes) else data)


class Fakes:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.submitted: list[dict[str, Any]] = []
        self.recorded: list[int] = []


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    seen = Fakes()

    capture_resubmits(monkeypatch, seen.submitted, "H:policy:2")
    monkeypatch.setattr(
        runner,
        "time",
        SimpleNamespace(sleep=seen.sleeps.append, time=lambda: NOW, perf_counter=time.perf_counter),
    )

    def record_failure(task: Any, job: Any, error: Any, attempt: int, *rest: Any) -> None:
        seen.recorded.append(attempt)

    monkeypatch.setattr(runner, "record_failure", record_failure)
    return seen


class Failing:
    """A task body that raises ``error`` on each of its first ``times`` calls, then returns."""

    def __init__(self, times: int = 1000, error: type[BaseException] = ValueError) -> None:
        self.times = times
        self.error = error
        self.calls = 0

    def __call__(self, *args: Any) -> int:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error(f"call {self.calls}")
        return self.calls


def options(**given: Any) -> TaskOptions:
    """TaskOptions as ``@gearman_task(**given)`` makes them."""

    def body() -> None: ...

    body.__module__, body.__qualname__ = "tests.policy", "body"
    return gearman_task(name="tests.policy_unregistered", **given)(body).options


def make_task(func: Callable[..., Any], **given: Any) -> GearmanTask[..., Any]:
    return GearmanTask(func, options(**given))


@pytest.fixture(autouse=True)
def unregistered(monkeypatch: pytest.MonkeyPatch) -> None:
    """``options()`` decorates for real; keep the task out of the registry."""
    monkeypatch.setattr(decorator.registry, "add", lambda task: None)


# -- the options ------------------------------------------------------------------------------


def test_max_attempts_counts_every_attempt_and_retries_is_its_alias() -> None:
    assert options().max_attempts == 1 and options().retries == 0
    assert options(max_attempts=4).retries == 3
    assert options(retries=3).max_attempts == 4
    assert options(retries=3, max_attempts=4).max_attempts == 4  # both, agreeing


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"max_attempts": 3, "retries": 3}, r"max_attempts=3 and retries=3 disagree"),
        ({"max_attempts": 0}, r"max_attempts must be a whole number of 1 or more, not 0"),
        ({"max_attempts": 2.5}, r"max_attempts must be a whole number of 1 or more, not 2.5"),
        ({"max_attempts": True}, r"max_attempts must be a whole number"),
        ({"retries": -1}, r"retries must be 0 or more"),
        ({"backoff": 5}, r"backoff must be a callable \(exception, result\) -> seconds or None"),
    ],
)
def test_wrong_retry_options_raise(given: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        options(**given)


def test_remote_tasks_take_the_options_too() -> None:
    task = remote_task("php.policy", max_attempts=2, backoff=lambda e, r: 1)
    assert task.options.max_attempts == 2 and task.options.backoff is not None


# -- max_attempts -----------------------------------------------------------------------------


def test_max_attempts_is_the_number_of_calls(fakes: Fakes) -> None:
    body = Failing()
    with pytest.raises(ValueError, match="call 3"):
        runner.execute(make_task(body, max_attempts=3, retry_backoff=0.5), FakeJob(encode_call()))
    assert body.calls == 3 and fakes.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("mode", ["foreground", "background"])
def test_max_attempts_1_never_retries(fakes: Fakes, mode: str) -> None:
    body = Failing()
    data = encode_call([], None, {"background": True} if mode == "background" else None)
    with pytest.raises(ValueError, match="call 1"):
        runner.execute(make_task(body, max_attempts=1), FakeJob(data))
    assert body.calls == 1 and fakes.sleeps == [] and fakes.submitted == []


# -- backoff ----------------------------------------------------------------------------------


def test_backoff_sets_the_delay_and_sees_the_exception(fakes: Fakes) -> None:
    seen: list[tuple[str, Any]] = []

    def backoff(exception: BaseException, result: Any) -> float:
        seen.append((str(exception), result))
        return 7.5 * len(seen)

    body = Failing(times=2)
    task = make_task(body, max_attempts=5, backoff=backoff, retry_backoff=0.5)
    assert runner.execute(task, FakeJob(encode_call())) == b"3"
    assert fakes.sleeps == [7.5, 15.0]  # backoff's, not retry_backoff's
    assert seen == [("call 1", None), ("call 2", None)]  # result: None for an exception


def test_backoff_is_not_capped_by_retry_backoff_max(fakes: Fakes) -> None:
    task = make_task(Failing(times=1), max_attempts=2, backoff=lambda e, r: 900)
    runner.execute(task, FakeJob(encode_call()))
    assert fakes.sleeps == [900.0]


def test_backoff_none_stops_retrying(fakes: Fakes) -> None:
    body = Failing()
    task = make_task(body, max_attempts=5, backoff=lambda e, r: None if "2" in str(e) else 0)
    with pytest.raises(ValueError, match="call 2"):
        runner.execute(task, FakeJob(encode_call()))
    assert body.calls == 2 and fakes.sleeps == [0.0]


def test_backoff_schedules_a_background_retry(fakes: Fakes) -> None:
    task = make_task(Failing(), max_attempts=3, backoff=lambda e, r: 42)
    assert runner.execute(task, FakeJob(encode_call([], None, {"background": True}))) == b""
    [submitted] = fakes.submitted
    assert submitted["run_at"] - NOW == 42
    assert decode_call(submitted["data"]).meta["attempt"] == 2


def test_a_background_job_whose_backoff_says_none_is_recorded_as_failed(fakes: Fakes) -> None:
    task = make_task(Failing(), max_attempts=3, backoff=lambda e, r: None)
    with pytest.raises(ValueError, match="call 1"):
        runner.execute(task, FakeJob(encode_call([], None, {"background": True})))
    assert fakes.submitted == [] and fakes.recorded == [1]


def test_retry_on_still_decides_what_is_retried(fakes: Fakes) -> None:
    calls: list[int] = []

    def backoff(exception: BaseException, result: Any) -> float:
        calls.append(1)
        return 1

    body = Failing(error=TypeError)
    task = make_task(body, max_attempts=3, backoff=backoff, retry_on=ValueError)
    with pytest.raises(TypeError):
        runner.execute(task, FakeJob(encode_call()))
    assert body.calls == 1 and calls == []


@pytest.mark.parametrize("answer", [-1, "soon", float("nan"), True])
def test_a_backoff_answer_that_is_no_delay_gives_up_and_says_so(
    fakes: Fakes, caplog: pytest.LogCaptureFixture, answer: Any
) -> None:
    body = Failing()
    task = make_task(body, max_attempts=3, backoff=lambda e, r: answer)
    with pytest.raises(ValueError, match="call 1"):  # the task's own error, not backoff's
        runner.execute(task, FakeJob(encode_call()))
    assert body.calls == 1
    assert "backoff" in caplog.text and "not a number of seconds" in caplog.text


def test_a_backoff_that_raises_gives_up_with_the_tasks_error(
    fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    def backoff(exception: BaseException, result: Any) -> float:
        raise KeyError("oops")

    body = Failing()
    with pytest.raises(ValueError, match="call 1"):
        runner.execute(make_task(body, max_attempts=3, backoff=backoff), FakeJob(encode_call()))
    assert body.calls == 1 and "backoff" in caplog.text and "KeyError" in caplog.text


# -- an admin re-run --------------------------------------------------------------------------


def test_an_admin_re_run_gets_its_own_attempts(fakes: Fakes) -> None:
    """The row failed after 2 attempts; the re-run is attempt 3 and may try twice more."""
    task = make_task(Failing(), max_attempts=2, retry_backoff=0)
    meta = {"background": True, "id": "t1", "attempt": 3, "first_attempt": 3, "result_id": "t1"}
    assert runner.execute(task, FakeJob(encode_call([], None, meta))) == b""
    [submitted] = fakes.submitted
    again = decode_call(submitted["data"]).meta
    assert again["attempt"] == 4 and again["first_attempt"] == 3 and again["id"] == "t1"
    with pytest.raises(ValueError):
        runner.execute(task, FakeJob(submitted["data"]))
    assert fakes.recorded == [4] and len(fakes.submitted) == 1


def test_logging_says_which_attempt_of_how_many(
    fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="django_gearman.worker")
    task = make_task(Failing(), max_attempts=3, retry_backoff=2)
    runner.execute(task, FakeJob(encode_call([], None, {"background": True})))
    assert "attempt 1 failed" in caplog.text and "retry 1 of 2 in 2.0 s" in caplog.text
