"""The outbox under crashes, bounded: 4 web-like processes queue 1,000 ``background_on_commit``
jobs (one transaction each) while the job server is killed with -9 and restarted twice and the
worker (with its relay) is killed with -9 once. Every job runs (0 lost); duplicates (at least
once) are counted and printed. ``bench/outbox_bench.py --crash`` is the full-size run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SERVER_KINDS
from tests.helpers import wait_for
from tests.outboxapp.tasks import runs
from tests.peers import ROOT, free_port, stop_process

pytestmark = [pytest.mark.interop, pytest.mark.timeout(420)]

PRODUCERS = 4
JOBS = 250  # per producer

SETTINGS = """
from tests.settings import *  # noqa: F403
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r},
    "OPTIONS": {{"timeout": 60}}}}}}
INSTALLED_APPS = [*INSTALLED_APPS, "tests.outboxapp"]  # noqa: F405
"""

PRODUCER = """
import sys, django
django.setup()
from django.db import transaction
from tests.outboxapp.tasks import record
name, count, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for n in range(count):
    with transaction.atomic():
        record.background_on_commit(path, f"{name}-{n}")
print("done", name, flush=True)
"""


def environment(tmp_path: Path, port: int) -> dict[str, str]:
    (tmp_path / "load_settings.py").write_text(SETTINGS.format(db=str(tmp_path / "db.sqlite3")))
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GEARMAN_"))},
        "DJANGO_SETTINGS_MODULE": "load_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "GEARMAN_URL": f"gearman://127.0.0.1:{port}/?timeout=5&connect_timeout=1&retry_delay=0.1",
    }


def start_worker(env: dict[str, str], tmp_path: Path, n: int) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"worker-{n}.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "django", "gearman_worker", "--noreload", "--pool", "threads",
         "--concurrency", "2", "--task", "tests.outbox.record"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    log.close()
    return worker


def crash_run(kind: str, tmp_path: Path, producers_n: int, jobs: int) -> dict[str, int]:
    """The scenario: ``producers_n`` processes queue ``jobs`` each while the job server is
    killed with -9 twice and the worker once; every job is waited for. Counts of it."""
    port = free_port()
    env = environment(tmp_path, port)
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v0"], env=env, cwd=tmp_path, check=True
    )
    path = str(tmp_path / "runs")
    total = producers_n * jobs
    server = SERVER_KINDS[kind](port, queue_db=tmp_path / "queue.sqlite3")
    server.start()
    worker = start_worker(env, tmp_path, 1)
    producers: list[subprocess.Popen[bytes]] = []
    try:
        producers = [
            subprocess.Popen(
                [sys.executable, "-c", PRODUCER, f"p{n}", str(jobs), path],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            for n in range(producers_n)
        ]

        def progressed(fraction: float) -> Any:
            return lambda: len(runs(path)) >= total * fraction

        wait_for(progressed(0.1), timeout=300, what="10% of the runs")
        server.kill()  # -9: the first crash of the job server
        time.sleep(0.5)
        server.restart()
        wait_for(progressed(0.3), timeout=300, what="30% of the runs")
        os.kill(worker.pid, signal.SIGKILL)  # the worker and its relay
        worker.wait()
        worker = start_worker(env, tmp_path, 2)
        wait_for(progressed(0.5), timeout=300, what="half of the runs")
        server.kill()  # the second crash
        time.sleep(0.5)
        server.restart()
        for producer in producers:
            assert producer.wait(600) == 0
        expected = {f"p{p}-{n}" for p in range(producers_n) for n in range(jobs)}
        wait_for(lambda: expected <= set(runs(path)), timeout=300, what="every job to run")
        done = runs(path)
        return {
            "jobs": total,
            "runs": len(done),
            "lost": len(expected - set(done)),
            "duplicates": len(done) - len(set(done)),
            "unasked": len(set(done) - expected),
        }
    finally:
        for producer in producers:
            stop_process(producer)
        stop_process(worker)
        server.stop()


@pytest.mark.parametrize("kind", list(SERVER_KINDS))
def test_crashes_lose_no_outbox_job(kind: str, tmp_path: Path) -> None:
    counts = crash_run(kind, tmp_path, PRODUCERS, JOBS)
    print(f"\n{kind}: {counts}")  # the duplicates: at least once, reported
    assert counts["lost"] == 0 and counts["unasked"] == 0, counts
    assert counts["runs"] == counts["jobs"] + counts["duplicates"]
