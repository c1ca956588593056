"""``manage.py gearman_worker`` as users run it: a subprocess against both servers.

The command runs as ``python -m django gearman_worker`` with ``tests.settings`` and
``GEARMAN_URL`` pointing at the fixture's server; the test submits jobs to it with
``override_settings(GEARMAN=...)``. Every process started here is stopped in a ``finally``, and
every wait is bounded. Nothing asserts a duration: concurrency shows as distinct pids/threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from django_gearman import remote_task, run_many
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import UsageError
from django_gearman.tasks import registry
from django_gearman.tasks.runner import offered_functions as select_functions
from tests.helpers import wait_for
from tests.taskapp import tasks

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
BANNER_END = "Quit the worker with CONTROL-C."


def worker_env(address: str) -> dict[str, str]:
    """The environment of a ``manage.py gearman_worker`` subprocess on the test settings, its
    alias pointing at ``address`` (nothing of the caller's DJANGO_* or GEARMAN* settings)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "GEARMAN"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(REPO),
        GEARMAN_URL=f"gearman://{address}",
        PYTHONUNBUFFERED="1",
    )
    return env


class WorkerCommand:
    """``gearman_worker ARGS`` in a subprocess, its output in files (a pipe could fill up)."""

    def __init__(
        self, address: str, args: Sequence[str], tmp_path: Path, *, reload: bool = False
    ) -> None:
        """``reload``: autoreload mode (a settings module with DEBUG on, no ``--noreload``), in
        a session of its own, so that a test can Ctrl-C its process group as a terminal does."""
        self.address = address
        self.stdout_path = tmp_path / "worker.out"
        self.stderr_path = tmp_path / "worker.err"
        self.session = reload
        env = worker_env(address)
        argv = [sys.executable, "-m", "django", "gearman_worker", *args]
        if reload:
            (tmp_path / "debug_settings.py").write_text(
                "from tests.settings import *  # noqa: F403\nDEBUG = True\n"
            )
            env.update(
                DJANGO_SETTINGS_MODULE="debug_settings",
                PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
            )
        else:
            argv.insert(4, "--noreload")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=self.session,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"exit {self.process.poll()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr[-4000:]}"

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gearman_worker exited early:\n{self.output()}")
        return True

    def banner(self) -> list[str]:
        """The banner's lines, once it is complete."""
        wait_for(lambda: self.alive() and BANNER_END in self.stdout, timeout=60, what="the banner")
        return self.stdout.splitlines()

    def wait_ready(self, function: str, workers: int = 1) -> None:
        """Until the server counts ``workers`` workers able to run ``function``."""

        def ready() -> bool:
            self.alive()
            with GearmanAdminClient(self.address, timeout=5) as admin:
                rows = {row.function: row for row in admin.status()}
            return function in rows and rows[function].available_workers >= workers

        wait_for(ready, timeout=60, interval=0.05, what=f"{workers} worker(s) for {function}")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"gearman_worker did not exit within {timeout} s:\n{self.output()}"
            ) from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; always reaped. A worker in a session of its
        own has its whole process group killed as well (the reloader's child, the pool's)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(10)
        if self.session:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def gearman(gearman_server: Any) -> Iterator[str]:
    """The fixture server's address, with this process submitting to it."""
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 30}}}
    ):
        yield gearman_server.address


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    """``start(address, *args)`` -> a running :class:`WorkerCommand`; all are stopped at the end."""
    started: list[WorkerCommand] = []

    def start(address: str, *args: str, reload: bool = False) -> WorkerCommand:
        folder = tmp_path / f"worker{len(started)}"
        folder.mkdir()
        worker = WorkerCommand(address, args, folder, reload=reload)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def queue_status(address: str, function: str) -> tuple[int, int]:
    """``(jobs queued or running, available workers)`` of ``function`` on the server."""
    with GearmanAdminClient(address, timeout=5) as admin:
        for row in admin.status():
            if row.function == function:
                return row.total, row.available_workers
    return 0, 0


# -- through the subprocess -----------------------------------------------------------------------


def test_banner_lists_every_function_and_jobs_run(gearman: str, start_worker: Any) -> None:
    worker = start_worker(gearman)
    lines = worker.banner()
    offered = [
        line.strip()
        for line in lines[
            lines.index(next(line for line in lines if line.startswith("Functions"))) + 1 : -1
        ]
    ]
    for task in (tasks.add, tasks.echo, tasks.flaky, tasks.sleep_then, tasks.where):
        assert task.function_name in offered
    assert "django_tasks.default" in offered  # the Django Tasks backend's queues too
    assert f"Servers: {gearman}" in lines
    assert "Running: pool processes, concurrency 1" in lines
    assert lines[-1] == BANNER_END
    worker.wait_ready(tasks.add.function_name)
    assert tasks.add.submit(2, 3) == 5
    assert tasks.echo.submit("x", k=1) == {"args": ["x"], "kwargs": {"k": 1}}
    worker.stop()
    assert worker.process.returncode == 0, worker.output()


def test_burst_drains_the_queue_then_exits_0(gearman: str, start_worker: Any) -> None:
    function = tasks.flaky.function_name
    for n in range(20):
        tasks.flaky.background(f"burst-{os.getpid()}-{n}", 0)
    assert queue_status(gearman, function)[0] == 20
    worker = start_worker(gearman, "--burst", "--concurrency", "2")
    assert worker.wait() == 0, worker.output()
    assert queue_status(gearman, function)[0] == 0
    assert "burst: no jobs left, stopping" in worker.stderr


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_sigterm_lets_the_running_job_finish_then_exits_0(
    gearman: str, start_worker: Any, pool: str
) -> None:
    function = tasks.sleep_then.function_name
    worker = start_worker(gearman, "--pool", pool)
    worker.wait_ready(function)
    results: list[Any] = []
    submitter = threading.Thread(
        target=lambda: results.append(run_many([(tasks.sleep_then, [3.0, 7], {})])[0]), daemon=True
    )
    submitter.start()
    try:
        wait_for(
            lambda: queue_status(gearman, function) == (1, 1) and _running(gearman, function),
            what="the job to start",
        )
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.output()
    finally:
        submitter.join(40)  # run_many's own timeout is 30 s (the fixture's settings)
    assert not submitter.is_alive(), "run_many did not return"
    assert results == [7], worker.output()
    assert "warm shutdown" in worker.stderr


STOP_LINE = "django_gearman.worker: worker stopped (warm): every job it took has finished"


def test_stop_is_logged_without_reload(gearman: str, start_worker: Any) -> None:
    worker = start_worker(gearman)
    lines = worker.banner()
    assert not any("Autoreload" in line for line in lines), lines
    worker.wait_ready(tasks.add.function_name)
    worker.process.send_signal(signal.SIGINT)
    assert worker.wait() == 0, worker.output()
    assert STOP_LINE in worker.stderr, worker.output()


def test_reload_mode_says_so_and_stops_warmly_on_sigint(gearman: str, start_worker: Any) -> None:
    worker = start_worker(gearman, reload=True)
    lines = worker.banner()
    assert (
        "Autoreload: on because DEBUG is True: the worker restarts when code changes "
        "(--noreload turns it off)."
    ) in lines, lines
    worker.wait_ready(tasks.add.function_name)
    worker.process.send_signal(signal.SIGINT)  # to the reloader's process only
    assert worker.wait() == 0, worker.output()
    assert STOP_LINE in worker.stderr, worker.output()
    assert "Traceback" not in worker.stderr, worker.output()


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_ctrl_c_in_reload_mode_lets_the_running_job_finish(
    gearman: str, start_worker: Any, pool: str
) -> None:
    function = tasks.sleep_then.function_name
    worker = start_worker(gearman, "--pool", pool, reload=True)
    worker.wait_ready(function)
    results: list[Any] = []
    submitter = threading.Thread(
        target=lambda: results.append(run_many([(tasks.sleep_then, [1.0, 7], {})])[0]), daemon=True
    )
    submitter.start()
    try:
        wait_for(
            lambda: queue_status(gearman, function) == (1, 1) and _running(gearman, function),
            what="the job to start",
        )
        os.killpg(worker.pid, signal.SIGINT)  # Ctrl-C: the whole process group gets SIGINT
        assert worker.wait() == 0, worker.output()
    finally:
        submitter.join(40)  # run_many's own timeout is 30 s (the fixture's settings)
    assert not submitter.is_alive(), "run_many did not return"
    assert results == [7], worker.output()
    assert "warm shutdown" in worker.stderr, worker.output()
    assert STOP_LINE in worker.stderr, worker.output()
    assert "received again" not in worker.stderr, worker.output()  # one Ctrl-C, not two


def _running(address: str, function: str) -> bool:
    with GearmanAdminClient(address, timeout=5) as admin:
        return any(row.function == function and row.running == 1 for row in admin.status())


def test_process_pool_runs_jobs_in_two_children(gearman: str, start_worker: Any) -> None:
    function = tasks.where.function_name
    worker = start_worker(gearman, "--concurrency", "2", "--pool", "processes")
    worker.wait_ready(function, workers=2)
    first, second = run_many([(tasks.where, [1.0], {}), (tasks.where, [1.0], {})], timeout=30)
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    assert first["pid"] != second["pid"]
    assert worker.pid not in (first["pid"], second["pid"])  # the parent only supervises
    worker.stop()
    assert worker.process.returncode == 0, worker.output()


def test_thread_pool_runs_jobs_in_two_threads(gearman: str, start_worker: Any) -> None:
    function = tasks.where.function_name
    worker = start_worker(gearman, "--concurrency", "2", "--pool", "threads")
    worker.wait_ready(function, workers=2)
    first, second = run_many([(tasks.where, [1.0], {}), (tasks.where, [1.0], {})], timeout=30)
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    assert first["pid"] == second["pid"] == worker.pid
    assert first["thread"] != second["thread"]
    worker.stop()
    assert worker.process.returncode == 0, worker.output()


def test_max_jobs_replaces_the_child_process(gearman: str, start_worker: Any) -> None:
    function = tasks.where.function_name
    worker = start_worker(gearman, "--max-jobs", "1")
    pids = []
    for _ in range(2):
        worker.wait_ready(function)
        pids.append(tasks.where.submit(0)["pid"])
    assert pids[0] != pids[1]
    worker.stop()
    assert worker.process.returncode == 0, worker.output()


def test_task_option_restricts_what_is_offered(gearman: str, start_worker: Any) -> None:
    worker = start_worker(gearman, "--task", tasks.add.name)
    lines = worker.banner()
    assert "Functions (1):" in lines and f"  {tasks.add.function_name}" in lines
    assert f"  {tasks.echo.function_name}" not in lines
    tasks.echo.background("left alone")
    worker.wait_ready(tasks.add.function_name)
    assert tasks.add.submit(1, 2) == 3  # the worker is working ...
    assert queue_status(gearman, tasks.echo.function_name) == (1, 0)  # ... and never took this one


def test_queue_option_offers_that_group(gearman: str, start_worker: Any) -> None:
    worker = start_worker(gearman, "--queue", "pool", "--burst")
    assert worker.wait() == 0, worker.output()
    lines = worker.stdout.splitlines()
    assert "Functions (1):" in lines and f"  {tasks.where.function_name}" in lines


# -- errors (no server needed) --------------------------------------------------------------------


def run_command(*args: str, url: str = "gearman://127.0.0.1:1") -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "GEARMAN"))
    }
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(REPO), GEARMAN_URL=url)
    argv = [sys.executable, "-m", "django", "gearman_worker", "--noreload", *args]
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_an_unknown_task_is_a_readable_error() -> None:
    result = run_command("--task", "nope.nothing")
    assert result.returncode != 0
    assert "Unknown task 'nope.nothing'" in result.stderr
    assert tasks.add.name in result.stderr  # the known ones are listed
    assert "Traceback" not in result.stderr


def test_bad_options_and_settings_are_readable_errors() -> None:
    result = run_command("--concurrency", "0")
    assert result.returncode != 0 and "must be 1 or more" in result.stderr
    result = run_command("--queue", "nowhere")
    assert result.returncode != 0 and "No task in queue(s) 'nowhere'" in result.stderr
    result = run_command(url="gearman://127.0.0.1:notaport")
    assert (
        result.returncode != 0
        and "is not a list of job servers" in result.stderr
        and "Traceback" not in result.stderr
    )
    result = run_command("--alias", "other")
    assert result.returncode != 0 and "no Gearman alias 'other'" in result.stderr


# -- choosing the functions, in-process -----------------------------------------------------------


def test_remote_tasks_are_never_offered() -> None:
    remote = remote_task("resize_image")
    registry.add(remote)
    try:
        names = {offered.name for offered in select_functions("default")}
        assert "resize_image" not in names and tasks.add.function_name in names
        with pytest.raises(UsageError, match="remote task"):
            select_functions("default", ["resize_image"])
    finally:
        del registry["resize_image"]


def test_task_and_queue_selections_add_up() -> None:
    names = [offered.name for offered in select_functions("default", [tasks.add.name], ["pool"])]
    assert names == [tasks.add.function_name, tasks.where.function_name]
    backend = [offered.name for offered in select_functions("default", queues=["reports"])]
    assert backend == ["django_tasks.reports"]
