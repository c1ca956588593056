"""Retries in ``django_gearman.tasks.runner.execute``: the backoff doubles per attempt and stops
at ``retry_backoff_max``; exceptions outside ``retry_on`` fail at once.

No server and no real waiting: the runner's ``time`` is a fake clock whose ``sleep`` only records
(a foreground job is retried in place), and its ``GearmanClient`` records the re-submission of a
background job (a scheduled job whose envelope carries the next attempt number), which the test
then runs as the worker would when it falls due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from django_gearman.gearman.envelope import decode_call, encode_call
from django_gearman.tasks import runner
from django_gearman.tasks.decorator import GearmanTask, TaskOptions

NOW = 1_000_000.0  # the fake clock's time.time()
SERVER = "127.0.0.1:4730"


class FakeJob:
    """What ``execute`` uses of a worker's job."""

    def __init__(self, data: bytes, handle: str = "H:test:1") -> None:
        self.data = data
        self.handle = handle
        self.function = "retry_backoff_fn"
        self.unique = "u"
        self.server = SERVER
        self.warnings: list[str] = []

    def send_warning(self, data: bytes | str) -> None:
        self.warnings.append(data.decode() if isinstance(data, bytes) else data)


class Recorder:
    """The runner's fake ``time`` module and ``GearmanClient``, and what reached them."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.submitted: list[dict[str, Any]] = []
        self.failures: list[int] = []  # the attempt of each task_failed signal
        self.records: list[int] = []  # the attempt of each record_failure (background)

    def time_module(self) -> SimpleNamespace:
        return SimpleNamespace(
            sleep=self.sleeps.append, time=lambda: NOW, perf_counter=time.perf_counter
        )

    def client_class(self) -> type:
        recorder = self

        class FakeClient:
            def __init__(self, servers: list[str]) -> None:
                self.servers = servers

            def __enter__(self) -> FakeClient:
                return self

            def __exit__(self, *exc_info: object) -> None:
                pass

            def submit_background(self, function: str, data: bytes, **options: Any) -> str:
                recorder.submitted.append(
                    {"servers": self.servers, "function": function, "data": data, **options}
                )
                return f"H:test:{len(recorder.submitted) + 1}"

        return FakeClient


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    monkeypatch.setattr(runner, "time", recorder.time_module())
    monkeypatch.setattr(runner, "GearmanClient", recorder.client_class())
    monkeypatch.setattr(
        runner,
        "record_failure",
        lambda task, job, error, attempt, *rest: recorder.records.append(attempt),
    )

    def on_failed(sender: Any, attempt: int, **kwargs: Any) -> None:
        recorder.failures.append(attempt)

    runner.task_failed.connect(on_failed)
    try:
        yield recorder
    finally:
        runner.task_failed.disconnect(on_failed)


def make_task(func: Callable[..., Any], **options: Any) -> GearmanTask[..., Any]:
    """A task that is not registered (so no worker of another test offers it)."""
    return GearmanTask(func, TaskOptions(name="tests.retry_backoff", **options))


class Always:
    """A task body that raises ``error`` on every call and counts the calls."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        raise self.error(f"call {self.calls}")


BACKOFF = {"retry_backoff": 0.5, "retry_backoff_max": 3.0, "retry_on": (ValueError,)}
# 0.5 * 2 ** (attempt - 1) for attempts 1..5, capped at 3.0
EXPECTED_DELAYS = [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_foreground_job_sleeps_doubling_delays_up_to_the_cap(recorder: Recorder) -> None:
    body = Always(ValueError)
    task = make_task(body, retries=5, **BACKOFF)
    job = FakeJob(encode_call(["key"]))
    with pytest.raises(ValueError, match="call 6"):
        runner.execute(task, job)
    assert recorder.sleeps == EXPECTED_DELAYS
    assert body.calls == 6  # the first attempt and five retries
    assert recorder.failures == [6]  # task_failed once, for the last attempt
    assert recorder.submitted == []  # retried in place, not re-submitted
    assert recorder.records == []  # a foreground failure leaves no results row
    assert [w.split(";")[1].strip() for w in job.warnings] == [
        f"retrying in {delay:.1f} s" for delay in EXPECTED_DELAYS
    ]
    assert job.warnings[0].startswith("attempt 1 failed (ValueError: call 1)")


def test_a_foreground_job_that_recovers_stops_retrying(recorder: Recorder) -> None:
    calls: list[int] = []

    def third_time_lucky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return len(calls)

    task = make_task(third_time_lucky, retries=5, **BACKOFF)
    assert runner.execute(task, FakeJob(encode_call())) == b"3"
    assert recorder.sleeps == [0.5, 1.0]
    assert recorder.failures == []


def test_a_background_job_is_rescheduled_with_the_next_attempt(recorder: Recorder) -> None:
    body = Always(ValueError)
    task = make_task(body, retries=5, **BACKOFF)
    data = encode_call(["key"], {"n": 1}, {"background": True, "queue": "q"})
    attempts_run = 0
    while True:  # run each re-submitted job as the worker would once it falls due
        job = FakeJob(data, handle=f"H:test:{attempts_run + 1}")
        attempts_run += 1
        try:
            assert runner.execute(task, job) == b""  # this attempt is done; the next is queued
        except ValueError as error:
            assert str(error) == "call 6"
            break
        assert len(recorder.submitted) == attempts_run
        data = recorder.submitted[-1]["data"]
        assert attempts_run < 10, "the retries never stop"

    assert recorder.sleeps == []  # the worker never waits for a background retry
    assert [s["run_at"] - NOW for s in recorder.submitted] == EXPECTED_DELAYS
    calls = [decode_call(s["data"]) for s in recorder.submitted]
    assert [call.meta["attempt"] for call in calls] == [2, 3, 4, 5, 6]
    for call in calls:  # the rest of the envelope is carried over
        assert call.args == ["key"] and call.kwargs == {"n": 1}
        assert call.meta["background"] is True and call.meta["queue"] == "q"
    assert {(tuple(s["servers"]), s["function"]) for s in recorder.submitted} == {
        ((SERVER,), "retry_backoff_fn")
    }
    assert recorder.failures == [6] and recorder.records == [6]


def test_a_background_job_picks_up_at_its_envelope_attempt(recorder: Recorder) -> None:
    task = make_task(Always(ValueError), retries=5, **BACKOFF)
    data = encode_call([], None, {"background": True, "attempt": 3})
    assert runner.execute(task, FakeJob(data)) == b""
    [submitted] = recorder.submitted
    assert submitted["run_at"] - NOW == 2.0  # 0.5 * 2 ** (3 - 1)
    assert decode_call(submitted["data"]).meta["attempt"] == 4


@pytest.mark.parametrize("mode", ["foreground", "background"])
def test_an_exception_outside_retry_on_fails_at_the_first_attempt(
    recorder: Recorder, mode: str
) -> None:
    background = mode == "background"
    body = Always(TypeError)
    task = make_task(body, retries=5, **BACKOFF)
    data = encode_call([], None, {"background": True} if background else None)
    with pytest.raises(TypeError, match="call 1"):
        runner.execute(task, FakeJob(data))
    assert body.calls == 1
    assert recorder.sleeps == [] and recorder.submitted == []
    assert recorder.failures == [1]
    assert recorder.records == ([1] if background else [])


def test_retry_on_catches_subclasses_only_of_what_it_names(recorder: Recorder) -> None:
    """A subclass of a ``retry_on`` class is retried; its base class is not."""

    class Transient(ConnectionError):
        pass

    task = make_task(Always(Transient), retries=2, retry_on=(ConnectionError,))
    with pytest.raises(Transient):
        runner.execute(task, FakeJob(encode_call()))
    assert recorder.sleeps == [1.0, 2.0]  # the default backoff: 1 s, doubling

    recorder.sleeps.clear()
    task = make_task(Always(OSError), retries=2, retry_on=(ConnectionError,))
    with pytest.raises(OSError, match="call 1"):
        runner.execute(task, FakeJob(encode_call()))
    assert recorder.sleeps == []


def test_a_result_json_cannot_carry_is_not_retried(recorder: Recorder) -> None:
    """An EnvelopeError is in ``retry_on=Exception`` but retrying would fail the same way."""
    calls: list[int] = []

    def not_json() -> object:
        calls.append(1)
        return object()

    task = make_task(not_json, retries=3)
    with pytest.raises(Exception, match="result is object"):
        runner.execute(task, FakeJob(encode_call()))
    assert calls == [1] and recorder.sleeps == [] and recorder.failures == [1]
