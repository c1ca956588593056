#!/usr/bin/env python3
"""The transactional outbox against the direct path, on the embedded server and Debian's gearmand.

Run from the repository root::

    python bench/outbox_bench.py            # a few minutes
    python bench/outbox_bench.py --quick

For each server (a fresh one on a free 127.0.0.1 port, always stopped) and a SQLite file
database (what a small site has; every commit is an fsync'ed write), one transaction per job as
a view does it (each writes one row of its own, then queues the job), with the no-op task of
bench/tasks_bench.py:

- enqueue rate: ``.background()`` inside ``atomic()`` (direct: the job goes out before the row
  commits, the hole the outbox closes) against ``.background_on_commit()`` (the outbox: an
  INSERT in the transaction, the send and a DELETE after the commit);
- the cost in the view: ``background_on_commit()`` inside the transaction (the INSERT, nothing
  sent yet) against one plain INSERT of a row of the same size, so the ratio says how many
  INSERTs the outbox costs the transaction;
- end to end: N such transactions, run by ``manage.py gearman_worker --concurrency 2`` (with its
  relay), from the first enqueue until the queue and the outbox are empty.

Medians of ``--runs`` runs, side by side, with the outbox/direct ratio (target: end to end
>= 0.5x the direct path, the view's cost <= one INSERT).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DB_DIR = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
os.environ["OUTBOX_BENCH_DB"] = str(DB_DIR / "db.sqlite3")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.outbox_settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.tasks_app.tasks import noop  # noqa: E402
from bench.tasks_bench import stop, wait_idle, wait_workers  # noqa: E402
from django_gearman.models import OutboxJob, TaskResultRecord  # noqa: E402
from tests.peers import EmbeddedServer, Gearmand  # noqa: E402

PAYLOAD = "x" * 100


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


def start_worker(address: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GEARMAN_URL": f"gearman://{address}",
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "bench.outbox_settings",
    }
    argv = [sys.executable, "-m", "django", "gearman_worker", "--noreload", "--concurrency", "2",
            "--pool", "processes", "--log-level", "WARNING"]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)


def business_row(i: int) -> None:
    """What the view's transaction is for (a signup, an order): one row of its own."""
    TaskResultRecord.objects.create(
        id=f"view-{time.monotonic_ns()}-{i}", task_path="bench.noop", backend="b",
        queue_name="default", args=[i, 2, PAYLOAD], enqueued_at=timezone.now(),
    )  # fmt: skip


def direct(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        with transaction.atomic():
            business_row(i)
            noop.background(i, 2, PAYLOAD)
    return n / (time.perf_counter() - started)


def outboxed(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        with transaction.atomic():
            business_row(i)
            noop.background_on_commit(i, 2, PAYLOAD)
    return n / (time.perf_counter() - started)


def view_cost(n: int) -> tuple[float, float]:
    """Microseconds inside the transaction: background_on_commit() and one plain INSERT
    (both rolled back, so nothing is sent and the table does not grow)."""
    on_commit, insert = [], []
    for i in range(n):
        with transaction.atomic():
            began = time.perf_counter()
            noop.background_on_commit(i, 2, PAYLOAD)
            on_commit.append(time.perf_counter() - began)
            began = time.perf_counter()
            TaskResultRecord.objects.create(
                id=f"bench-{i}", task_path="bench.noop", backend="b", queue_name="default",
                args=[i, 2, PAYLOAD], enqueued_at=timezone.now(),
            )  # fmt: skip
            insert.append(time.perf_counter() - began)
            transaction.set_rollback(True)
    return statistics.median(on_commit) * 1e6, statistics.median(insert) * 1e6


def end_to_end(address: str, n: int, enqueue: str) -> float:
    function = noop.function_name
    started = time.perf_counter()
    (direct if enqueue == "direct" else outboxed)(n)
    deadline = time.monotonic() + 300
    while OutboxJob.objects.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the outbox did not drain")
        time.sleep(0.01)
    if not wait_idle(address, function, 300):
        raise RuntimeError("the jobs did not finish")
    return n / (time.perf_counter() - started)


def measure(kind: str, cfg: dict[str, int]) -> dict[str, float]:
    server = EmbeddedServer() if kind == "embedded" else Gearmand()
    server.start()
    keys = ("direct", "outbox", "cost", "insert", "e2e_direct", "e2e_outbox")
    out: dict[str, list[float]] = {key: [] for key in keys}
    try:
        with override_settings(
            GEARMAN={"default": {"SERVERS": [server.address], "OPTIONS": {"timeout": 60}}}
        ):
            noop.background(0, 0, "")
            for run in range(cfg["runs"]):
                log(f"{kind}: enqueue, direct and outbox, run {run + 1}")
                out["direct"].append(direct(cfg["enqueue"]))
                out["outbox"].append(outboxed(cfg["enqueue"]))
                cost, insert = view_cost(cfg["cost"])
                out["cost"].append(cost)
                out["insert"].append(insert)
            worker = start_worker(server.address)
            try:
                wait_workers(server.address, noop.function_name, 2)
                wait_idle(server.address, noop.function_name, 300)
                for run in range(cfg["runs"]):
                    log(f"{kind}: end to end through gearman_worker, run {run + 1}")
                    out["e2e_direct"].append(end_to_end(server.address, cfg["e2e"], "direct"))
                    out["e2e_outbox"].append(end_to_end(server.address, cfg["e2e"], "outbox"))
            finally:
                stop(worker)
    finally:
        server.stop()
    return {key: statistics.median(values) for key, values in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--servers", default="embedded,gearmand")
    options = parser.parse_args()
    cfg = {"runs": 3, "enqueue": 2_000, "cost": 2_000, "e2e": 3_000}
    if options.quick:
        cfg = {"runs": 1, "enqueue": 500, "cost": 500, "e2e": 1_000}
    if options.runs:
        cfg["runs"] = options.runs
    call_command("migrate", verbosity=0)
    results = {kind: measure(kind, cfg) for kind in options.servers.split(",")}
    print()
    print(f"outbox vs direct, SQLite file DB, one transaction per job, {os.cpu_count()} CPUs, "
          f"median of {cfg['runs']} run(s)")  # fmt: skip
    kinds = list(results)
    header = f"{'metric':<52}" + "".join(f"{k:>12}" for k in kinds)
    print(header)
    print("-" * len(header))
    rows = [
        ("direct", "enqueue, .background() in atomic(), jobs/s", "{:,.0f}"),
        ("outbox", "enqueue, .background_on_commit(), jobs/s", "{:,.0f}"),
        ("ratio_enqueue", "  outbox / direct", "{:.2f}x"),
        ("cost", "in the transaction: background_on_commit(), us", "{:.0f}"),
        ("insert", "in the transaction: one plain INSERT, us", "{:.0f}"),
        ("ratio_cost", "  outbox cost / one INSERT (target <= 1)", "{:.2f}"),
        ("e2e_direct", "end to end, direct, jobs/s", "{:,.0f}"),
        ("e2e_outbox", "end to end, outbox, jobs/s", "{:,.0f}"),
        ("ratio_e2e", "  outbox / direct (target >= 0.5)", "{:.2f}x"),
    ]
    for r in results.values():
        r["ratio_enqueue"] = r["outbox"] / r["direct"]
        r["ratio_cost"] = r["cost"] / r["insert"]
        r["ratio_e2e"] = r["e2e_outbox"] / r["e2e_direct"]
    for key, label, fmt in rows:
        print(f"{label:<52}" + "".join(f"{fmt.format(results[k][key]):>12}" for k in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
