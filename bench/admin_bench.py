#!/usr/bin/env python3
"""How fast the admin's queue pages answer, against the embedded server and Debian's gearmand.

Run from the repository root::

    python bench/admin_bench.py             # about half a minute
    python bench/admin_bench.py --quick     # smaller queue

For each server (a fresh one on a free 127.0.0.1 port, always stopped again) it queues
``--jobs`` background jobs over ``--functions`` functions, connects one worker offering 50
functions, then times (median of ``--runs``):

- the admin commands the pages send, through ``GearmanAdminClient`` (``status``,
  ``prioritystatus``, ``show jobs``; ``show queue 500`` on ours): the servers side by side;
- ``gearadmin --status`` as a user runs it (a process per call): the reference tool;
- the overview page, its refresh fragment and the Jobs page, rendered through Django's test
  client as a logged-in superuser (everything but the network between browser and Django).

Timings are never asserted by tests: compare the columns of one run on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings, setup_test_environment  # noqa: E402

from django_gearman.gearman import GearmanClient  # noqa: E402
from django_gearman.gearman.admin_client import GearmanAdminClient  # noqa: E402
from django_gearman.gearman.protocol.constants import Priority  # noqa: E402
from tests.helpers import worker_thread  # noqa: E402
from tests.peers import EmbeddedServer, Gearmand, gearadmin_path  # noqa: E402


def log(message: str) -> None:
    print(f"[admin-bench] {message}", file=sys.stderr, flush=True)


def median_ms(action: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def fill(address: str, functions: int, jobs: int) -> None:
    priorities = (Priority.HIGH, Priority.NORMAL, Priority.LOW)
    with GearmanClient([address]) as client:
        for start in range(0, jobs, 1000):
            batch = [
                (f"bench_fn_{n % functions}", b"x" * 100)
                for n in range(start, min(start + 1000, jobs))
            ]
            client.submit_background_many(batch, priority=priorities[(start // 1000) % 3])


def measure(kind: str, args: argparse.Namespace, browser: Client) -> dict[str, float]:
    server = EmbeddedServer() if kind == "embedded" else Gearmand()
    server.start()
    try:
        log(f"{kind}: queueing {args.jobs} jobs over {args.functions} functions")
        fill(server.address, args.functions, args.jobs)
        functions = {f"bench_idle_{n}": (lambda job: b"") for n in range(50)}
        with worker_thread([server.address], functions, client_id="bench-worker"):
            return measure_pages(kind, server.address, args, browser)
    finally:
        server.stop()


def measure_pages(
    kind: str, address: str, args: argparse.Namespace, browser: Client
) -> dict[str, float]:
    host, port = address.rsplit(":", 1)
    gearadmin = gearadmin_path()
    row: dict[str, float] = {}
    with GearmanAdminClient(address) as admin:
        deadline = time.monotonic() + 10
        while not any(w.client_id == "bench-worker" for w in admin.workers()):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not connect")
            time.sleep(0.01)
        row["status"] = median_ms(admin.status, args.runs)
        row["prioritystatus"] = median_ms(admin.priority_status, args.runs)
        row["show jobs"] = median_ms(admin.show_jobs, args.runs)
        if kind == "embedded":
            row["show queue 500"] = median_ms(lambda: admin.show_queue(500), args.runs)
    row["gearadmin --status"] = median_ms(
        lambda: subprocess.run(
            [gearadmin, "-h", host, "-p", port, "--status"], capture_output=True, check=True
        ),
        args.runs,
    )
    with override_settings(GEARMAN={"default": {"SERVERS": [address]}}):
        for name, url in (
            ("overview page", "/admin/django_gearman/queuestatus/"),
            ("overview fragment", "/admin/django_gearman/queuestatus/?fragment=1"),
            ("jobs page", "/admin/django_gearman/joblist/"),
        ):
            assert browser.get(url).status_code == 200
            row[name] = median_ms(lambda url=url: browser.get(url), args.runs)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 jobs over 20 functions, 5 runs")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--functions", type=int, default=200)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.functions, args.runs = 2_000, 20, 5

    setup_test_environment()
    call_command("migrate", verbosity=0)  # tests.settings: an in-memory database
    User.objects.create_superuser("bench", password="bench")
    browser = Client()
    browser.force_login(User.objects.get(username="bench"))

    results = {kind: measure(kind, args, browser) for kind in ("embedded", "gearmand")}
    print(
        f"\n{args.jobs} queued jobs over {args.functions} functions, 1 worker with 50 functions; "
        f"median ms of {args.runs}"
    )
    print(f"{'':24} {'embedded':>10} {'gearmand':>10} {'ratio':>7}")
    for name in results["embedded"]:
        ours, theirs = results["embedded"][name], results["gearmand"].get(name)
        ratio = f"{ours / theirs:6.2f}x" if theirs else "      -"
        print(
            f"{name:24} {ours:10.2f} {theirs if theirs is not None else float('nan'):10.2f} {ratio}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
