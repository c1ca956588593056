"""``manage.py gearman_worker`` with the process pool: what signals do to the supervisor and its
children.

- A first SIGTERM/SIGINT is a warm shutdown; a second one while a long job runs is a cold one:
  the children are killed and the command exits with 128 + the signal.
- Ctrl-C (SIGINT to the whole process group) reaches the children too, but they ignore it: the
  supervisor forwards it as one SIGTERM each, so a child running a job finishes it and exits 0.
- Children of a supervisor killed with SIGKILL stop too (PR_SET_PDEATHSIG).

The command runs in a session of its own (its own process group), as from a terminal. Children
are found in /proc by their parent pid; every wait polls with a deadline, and nothing asserts a
duration. Every process seen (the supervisor and each child) is killed by pid at teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from django_gearman.gearman.admin_client import GearmanAdminClient
from tests.helpers import wait_for
from tests.peers import EmbeddedServer
from tests.taskapp import tasks
from tests.test_gearman_worker_command import worker_env

pytestmark = [pytest.mark.interop, pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc"
)]  # fmt: skip

REPO = Path(__file__).resolve().parent.parent


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` of a process from /proc, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie nobody reaped yet)."""
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"


def queue_status(address: str, function: str) -> tuple[int, int, int]:
    """``(jobs queued or running, running, available workers)`` of ``function``."""
    with GearmanAdminClient(address, timeout=5) as admin:
        for row in admin.status():
            if row.function == function:
                return row.total, row.running, row.available_workers
    return 0, 0, 0


class PoolCommand:
    """``gearman_worker --pool processes ARGS`` in a new session, its output in files."""

    def __init__(self, address: str, args: tuple[str, ...], folder: Path) -> None:
        self.address = address
        self.stderr_path = folder / "worker.err"
        env = worker_env(address)
        argv = [
            sys.executable, "-m", "django", "gearman_worker", "--noreload",
            "--pool", "processes", "--log-level", "DEBUG", *args,
        ]  # fmt: skip
        with (folder / "worker.out").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, as a shell gives a command
            )
        self.seen: set[int] = set()  # every child pid ever seen, for the teardown

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def children(self) -> list[int]:
        pids = children_of(self.pid)
        self.seen.update(pids)
        return pids

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gearman_worker exited early ({self.process.returncode}):\n"
                                 f"{self.stderr[-4000:]}")  # fmt: skip
        return True

    def wait_ready(self, function: str, workers: int) -> list[int]:
        """Until ``workers`` children run and the server counts them as workers of ``function``;
        returns the children's pids."""

        def ready() -> bool:
            self.alive()
            return (
                len(self.children()) == workers
                and queue_status(self.address, function)[2] == workers
            )

        wait_for(ready, timeout=60, interval=0.05, what=f"{workers} worker(s) for {function}")
        return self.children()

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"gearman_worker did not exit within {timeout} s:\n{self.stderr[-4000:]}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the supervisor and every child seen, by pid; reap the supervisor."""
        if self.process.poll() is None:
            self.children()
            self.process.kill()
        self.process.wait(10)
        for pid in self.seen:
            if not gone(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    """Our server, with this process submitting to it."""
    server = EmbeddedServer()
    try:
        server.start()
        with override_settings(
            GEARMAN={"default": {"SERVERS": [server.address], "OPTIONS": {"timeout": 30}}}
        ):
            yield server
    finally:
        server.stop()


@pytest.fixture
def start_pool(server: EmbeddedServer, tmp_path: Path) -> Iterator[Any]:
    started: list[PoolCommand] = []

    def start(*args: str) -> PoolCommand:
        folder = tmp_path / f"pool{len(started)}"
        folder.mkdir()
        command = PoolCommand(server.address, args, folder)
        started.append(command)
        return command

    try:
        yield start
    finally:
        for command in started:
            command.kill()


SLEEP = tasks.sleep_then


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_kills_the_children_and_exits_128_plus_it(
    server: EmbeddedServer, start_pool: Any, signum: int
) -> None:
    function = SLEEP.function_name
    pool = start_pool("--concurrency", "2")
    children = pool.wait_ready(function, workers=2)
    SLEEP.background(600.0, 1)  # far longer than the test
    wait_for(lambda: queue_status(server.address, function)[1] == 1, what="the job to start")

    os.kill(pool.pid, signum)  # warm: the idle child stops, the busy one goes on with its job
    wait_for(lambda: "warm shutdown (workers finish" in pool.stderr, what="the warm shutdown")
    wait_for(lambda: pool.alive() and len(pool.children()) == 1, what="the idle child to stop")
    [busy] = pool.children()
    assert busy in children

    os.kill(pool.pid, signum)  # cold
    assert pool.wait() == 128 + signum, pool.stderr[-4000:]
    assert "received again: cold shutdown" in pool.stderr
    assert all(gone(pid) for pid in children)
    # The job did not finish: the server got it back when its worker vanished.
    wait_for(
        lambda: queue_status(server.address, function)[:2] == (1, 0),
        what="the interrupted job back in the queue",
    )


def test_ctrl_c_reaches_each_child_once_as_sigterm_and_the_job_finishes(
    server: EmbeddedServer, start_pool: Any
) -> None:
    function = SLEEP.function_name
    pool = start_pool("--concurrency", "2")
    children = pool.wait_ready(function, workers=2)
    results: list[Any] = []

    def submit() -> None:
        try:
            results.append(SLEEP.submit(4.0, 7))
        except Exception as error:  # noqa: BLE001 - the assertion below shows it
            results.append(error)

    submitter = threading.Thread(target=submit, name="pool-signals-submit", daemon=True)
    submitter.start()
    try:
        wait_for(lambda: queue_status(server.address, function)[1] == 1, what="the job to start")
        os.killpg(pool.pid, signal.SIGINT)  # Ctrl-C: the supervisor and both children get it
        assert pool.wait(60) == 0, pool.stderr[-4000:]
    finally:
        submitter.join(40)
    assert not submitter.is_alive()
    assert results == [7], pool.stderr[-4000:]  # the busy child finished its job
    log = pool.stderr
    assert log.count("SIGINT received: warm shutdown") == 1
    assert "received again" not in log
    for pid in children:
        # One SIGTERM each (a second one would stop the child cold, with status 143).
        assert log.count(f"pid {pid}: warm shutdown") == 1, log[-4000:]
        assert f"(pid {pid}) stopped (status 0)" in log, log[-4000:]
        assert gone(pid)


def test_children_stop_when_the_supervisor_is_killed(
    server: EmbeddedServer, start_pool: Any
) -> None:
    function = SLEEP.function_name
    pool = start_pool("--concurrency", "2")
    children = pool.wait_ready(function, workers=2)
    pool.process.kill()  # SIGKILL: no handler runs, nothing is forwarded
    pool.process.wait(10)
    wait_for(
        lambda: all(gone(pid) for pid in children),
        timeout=30,
        what=f"the orphaned children {children} to exit",
    )
    wait_for(
        lambda: queue_status(server.address, function)[2] == 0,
        what="the server to see no worker left",
    )
