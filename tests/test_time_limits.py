"""Time limits of ``@gearman_task`` and ``manage.py gearman_worker --shutdown-timeout`` (#13).

- ``soft_time_limit`` / ``time_limit`` are checked by the decorator and reach the worker's
  :class:`~django_gearman.gearman.pool.Offered` through ``offered_functions``.
- Through the command (a subprocess, against both servers): a task past its ``time_limit``
  fails ``.submit()`` with a TaskError of type TimeLimitExceeded and runs once; one past its
  ``soft_time_limit`` catches SoftTimeLimitExceeded and returns; ``--shutdown-timeout`` turns a
  stuck warm shutdown cold and the job goes back to the queue.

The tasks the command runs are defined only in its process (this file run as a script, at the
bottom), so the suite's registry is untouched; the test submits them as ``remote_task``\\ s.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from django_gearman import TaskError, gearman_task, remote_task
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import UsageError
from django_gearman.tasks import registry
from django_gearman.tasks.runner import offered_functions
from tests.helpers import wait_for
from tests.test_gearman_worker_command import REPO, worker_env

HANG = remote_task("tests.time_limits.hang")
SOFT = remote_task("tests.time_limits.soft")
STUCK = remote_task("tests.time_limits.stuck")


# -- the decorator's options --------------------------------------------------------------------


def _decorate(**options: Any) -> Any:
    def limited() -> None: ...

    try:
        return gearman_task(name="tests.time_limits.options", **options)(limited)
    finally:
        registry.pop("tests.time_limits.options", None)


def test_the_limits_are_task_options() -> None:
    task = _decorate(soft_time_limit=5, time_limit=10.5)
    assert (task.options.soft_time_limit, task.options.time_limit) == (5.0, 10.5)
    assert _decorate().options.time_limit is None
    assert _decorate(soft_time_limit=1).options.soft_time_limit == 1.0


@pytest.mark.parametrize(
    "options",
    [
        {"time_limit": 0},
        {"time_limit": -1},
        {"soft_time_limit": math.inf},
        {"time_limit": math.nan},
        {"time_limit": "10"},
        {"time_limit": True},
        {"soft_time_limit": 10, "time_limit": 10},
        {"soft_time_limit": 11, "time_limit": 10},
    ],
)
def test_bad_limits_are_usage_errors(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="time_limit"):
        _decorate(**options)


def test_offered_functions_carry_the_limits() -> None:
    def limited() -> None: ...

    gearman_task(name="tests.time_limits.carried", alias="limits", soft_time_limit=1, time_limit=2)(
        limited
    )
    try:
        with override_settings(GEARMAN={"default": {}, "limits": {}}):
            [offered] = [
                f for f in offered_functions("limits") if f.name == "tests.time_limits.carried"
            ]
    finally:
        registry.pop("tests.time_limits.carried", None)
    assert (offered.soft_time_limit, offered.time_limit, offered.timeout) == (1.0, 2.0, None)


# -- through the command ------------------------------------------------------------------------


class Command:
    """This file as a script: ``gearman_worker ARGS`` with the time-limit tasks registered."""

    def __init__(self, address: str, args: tuple[str, ...], folder: Path) -> None:
        self.folder = folder
        self.log_path = folder / "worker.log"
        argv = [sys.executable, "-m", "tests.test_time_limits", str(folder), "gearman_worker",
                "--noreload", "--log-level", "DEBUG", *args]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=worker_env(address),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def starts(self) -> list[str]:
        path = self.folder / "starts"
        return path.read_text().split() if path.exists() else []

    def stop(self) -> None:
        """SIGKILL its whole process group (a stuck child ignores a warm SIGTERM); reap it."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)


@pytest.fixture
def command(gearman_server: Any, tmp_path: Path) -> Iterator[Any]:
    started: list[Command] = []
    address = gearman_server.address

    def start(*args: str) -> Command:
        folder = tmp_path / f"command{len(started)}"
        folder.mkdir()
        started.append(Command(address, args, folder))
        wait_for(
            lambda: started[-1].process.poll() is None and _workers(address, HANG) >= 1,
            timeout=60,
            interval=0.05,
            what="the worker",
        )
        return started[-1]

    with override_settings(GEARMAN={"default": {"SERVERS": [address], "OPTIONS": {"timeout": 30}}}):
        try:
            yield start
        finally:
            for each in started:
                each.stop()


def _status(address: str, task: Any) -> tuple[int, int, int]:
    with GearmanAdminClient(address, timeout=5) as admin:
        for row in admin.status():
            if row.function == task.function_name:
                return row.total, row.running, row.available_workers
    return 0, 0, 0


def _workers(address: str, task: Any) -> int:
    return _status(address, task)[2]


@pytest.mark.interop
@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_submit_of_a_task_past_its_time_limit_raises_time_limit_exceeded(
    gearman_server: Any, command: Any, pool: str
) -> None:
    worker = command("--pool", pool, "--concurrency", "2")
    began = time.monotonic()
    with pytest.raises(TaskError) as caught:
        HANG.submit()
    took = time.monotonic() - began
    print(f"[{gearman_server.kind}] {pool}: TaskError after {took:.2f} s")
    assert caught.value.type == "django_gearman.gearman.errors.TimeLimitExceeded", worker.log
    assert took < 10
    time.sleep(max(0.0, began + 2 + 1 + 2 - time.monotonic()))  # past any CAN_DO_TIMEOUT
    assert worker.starts().count("hang") == 1, worker.log
    line = "killed at its time limit" if pool == "processes" else "abandoning thread"
    assert line in worker.log


@pytest.mark.interop
def test_a_task_past_its_soft_time_limit_cleans_up_and_returns(command: Any) -> None:
    worker = command("--pool", "threads")
    assert SOFT.submit() == "cleaned up"
    assert (worker.folder / "marker").read_text() == "SoftTimeLimitExceeded"


@pytest.mark.interop
def test_shutdown_timeout_turns_a_stuck_warm_shutdown_cold(
    gearman_server: Any, command: Any
) -> None:
    address = gearman_server.address
    worker = command("--shutdown-timeout", "1")
    STUCK.background()
    wait_for(lambda: "stuck" in worker.starts(), what="the stuck job to start")
    worker.process.send_signal(signal.SIGTERM)
    try:
        status = worker.process.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(worker.log) from None
    assert status == 128 + signal.SIGTERM, worker.log
    assert "shutdown timeout of 1 s passed" in worker.log
    assert "worker stopped (cold" in worker.log
    wait_for(lambda: _status(address, STUCK)[:2] == (1, 0), what="the job back in the queue")


def test_shutdown_timeout_must_be_a_positive_number() -> None:
    for bad in ("0", "-1", "soon"):
        result = subprocess.run(
            [sys.executable, "-m", "django", "gearman_worker", "--shutdown-timeout", bad],
            cwd=REPO,
            env=worker_env("127.0.0.1:1"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert "--shutdown-timeout" in result.stderr


# -- the command's process ----------------------------------------------------------------------


def _main(argv: list[str]) -> None:
    """``FOLDER gearman_worker ARGS``: register this file's tasks, then run the command."""
    import threading  # noqa: PLC0415

    import django  # noqa: PLC0415
    from django.core.management import execute_from_command_line  # noqa: PLC0415

    from django_gearman.gearman.errors import SoftTimeLimitExceeded  # noqa: PLC0415

    folder = Path(argv[0])
    lock = threading.Lock()

    def started(name: str) -> None:
        with lock, (folder / "starts").open("a") as starts:
            starts.write(f"{name}\n")

    django.setup()

    @gearman_task(name="tests.time_limits.hang", time_limit=2)
    def hang() -> None:
        started("hang")
        while True:
            time.sleep(3600)

    @gearman_task(name="tests.time_limits.stuck")
    def stuck() -> None:
        started("stuck")
        while True:
            time.sleep(3600)

    @gearman_task(name="tests.time_limits.soft", soft_time_limit=0.5, time_limit=30)
    def soft() -> str:
        started("soft")
        try:
            while True:
                time.sleep(0.05)
        except SoftTimeLimitExceeded as error:
            (folder / "marker").write_text(type(error).__name__)
            return "cleaned up"

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    execute_from_command_line(["manage.py", *argv[1:]])


if __name__ == "__main__":
    _main(sys.argv[1:])
