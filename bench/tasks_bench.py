#!/usr/bin/env python3
"""@gearman_task throughput and latency, against the embedded server and Debian's gearmand.

Run from the repository root::

    python bench/tasks_bench.py             # about a minute
    python bench/tasks_bench.py --quick     # fewer jobs

For each server (a fresh one on a free 127.0.0.1 port, always stopped again) it measures, with
a no-op task taking two ints and a 100-byte string (the issue's workload):

- ``.background()`` one call at a time, from one process (each waits for JOB_CREATED);
- ``.background()`` inside ``batch()``, from one process (pipelined, 1000 per round trip);
- ``.submit()`` round trip, p50 and p99, through a warm ``manage.py gearman_worker``;
- end to end: N jobs enqueued with ``batch()`` and run by ``manage.py gearman_worker
  --concurrency 2`` (processes), from the first enqueue until the server's queue is empty and
  nothing is running.

Medians of ``--runs`` runs; the table gives the targets of the issue. Timings are never asserted
by tests: run this on a quiet machine and compare the two servers side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.tasks_settings")

import django  # noqa: E402

django.setup()

from django.test.utils import override_settings  # noqa: E402

from bench.tasks_app.tasks import noop  # noqa: E402
from django_gearman import batch  # noqa: E402
from django_gearman.gearman.admin_client import GearmanAdminClient  # noqa: E402
from tests.peers import EmbeddedServer, Gearmand, stop_process  # noqa: E402

PAYLOAD = "x" * 100
TARGETS = {
    "background": ("one by one", None),
    "batched": (">= 30,000/s", 30_000),
    "e2e": (">= 10,000 jobs/s", 10_000),
    "p50": ("<= 0.3 ms", 0.3),
}


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


def start_worker(address: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GEARMAN_URL": f"gearman://{address}",
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "bench.tasks_settings",
    }
    argv = [
        sys.executable,
        "-m",
        "django",
        "gearman_worker",
        "--noreload",
        "--concurrency",
        str(concurrency),
        "--pool",
        "processes",
        "--log-level",
        "WARNING",
    ]
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, term_timeout=15)


def wait_idle(address: str, function: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with GearmanAdminClient(address) as admin:
        while time.monotonic() < deadline:
            rows = {row.function: row for row in admin.status()}
            row = rows.get(function)
            if row is not None and row.total == 0:
                return True
            time.sleep(0.002)
    return False


def wait_workers(address: str, function: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with GearmanAdminClient(address) as admin:
        while time.monotonic() < deadline:
            rows = {row.function: row for row in admin.status()}
            if function in rows and rows[function].available_workers >= count:
                return
            time.sleep(0.05)
    raise RuntimeError(f"{count} workers for {function} did not come up")


def measure(server_kind: str, cfg: dict[str, int]) -> dict[str, float]:
    server = (
        EmbeddedServer()
        if server_kind == "embedded"
        else Gearmand(extra_args=["--hashtable-buckets", "1000003"])
    )
    server.start()
    out: dict[str, list[float]] = {"background": [], "batched": [], "e2e": [], "p50": [], "p99": []}
    try:
        with override_settings(
            GEARMAN={"default": {"SERVERS": [server.address], "OPTIONS": {"timeout": 60}}}
        ):
            function = noop.function_name
            noop.background(0, 0, "")  # connect, make the function known
            for run in range(cfg["runs"]):
                log(f"{server_kind}: .background() one by one, run {run + 1}")
                n = cfg["one_by_one"]
                started = time.perf_counter()
                for i in range(n):
                    noop.background(i, 2, PAYLOAD)
                out["background"].append(n / (time.perf_counter() - started))
                log(f"{server_kind}: .background() in batch(), run {run + 1}")
                n = cfg["batched"]
                started = time.perf_counter()
                with batch():
                    for i in range(n):
                        noop.background(i, 2, PAYLOAD)
                out["batched"].append(n / (time.perf_counter() - started))
            worker = start_worker(server.address, 2)
            try:
                wait_workers(server.address, function, 2)
                if not wait_idle(server.address, function, 120):
                    raise RuntimeError("the worker did not drain the queue")
                for run in range(cfg["runs"]):
                    log(
                        f"{server_kind}: end to end through gearman_worker --concurrency 2, run "
                        f"{run + 1}"
                    )
                    n = cfg["e2e"]
                    started = time.perf_counter()
                    with batch():
                        for i in range(n):
                            noop.background(i, 2, PAYLOAD)
                    if not wait_idle(server.address, function, 120):
                        raise RuntimeError("end-to-end jobs did not finish in 120 s")
                    out["e2e"].append(n / (time.perf_counter() - started))
                    log(f"{server_kind}: .submit() round trips, run {run + 1}")
                    samples = []
                    for i in range(cfg["submits"]):
                        began = time.perf_counter()
                        noop.submit(i, 2, PAYLOAD)
                        samples.append((time.perf_counter() - began) * 1000)
                    samples.sort()
                    out["p50"].append(samples[len(samples) // 2])
                    out["p99"].append(samples[int(len(samples) * 0.99)])
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
    parser.add_argument("--no-celery", action="store_true", help="leave out Celery with Redis")
    options = parser.parse_args()
    cfg = {
        "runs": 3,
        "one_by_one": 5_000,
        "batched": 50_000,
        "e2e": 50_000,
        "celery_e2e": 10_000,
        "submits": 2_000,
    }
    if options.quick:
        cfg = {
            "runs": 1,
            "one_by_one": 2_000,
            "batched": 20_000,
            "e2e": 20_000,
            "celery_e2e": 5_000,
            "submits": 500,
        }
    if options.runs:
        cfg["runs"] = options.runs
    results = {kind: measure(kind, cfg) for kind in options.servers.split(",")}
    if not options.no_celery:
        from bench import celery_peer  # noqa: PLC0415

        why_not = celery_peer.available()
        if why_not is None:
            results["celery+redis"] = celery_peer.measure(cfg, log)
        else:
            print(f"celery+redis: not measured ({why_not})")
    print()
    print(
        f"@gearman_task, {os.cpu_count()} CPUs, median of {cfg['runs']} run(s); no-op task (2 "
        "ints, 100-byte str)"
    )
    kinds = list(results)
    header = f"{'metric':<44}" + "".join(f"{k:>14}" for k in kinds) + "   target"
    print(header)
    print("-" * len(header))
    rows = [
        ("background", ".background() one by one, jobs/s", "{:,.0f}"),
        ("batched", ".background() in batch(), jobs/s", "{:,.0f}"),
        ("e2e", "end to end, worker --concurrency 2, jobs/s", "{:,.0f}"),
        ("p50", ".submit() round trip p50, ms", "{:.3f}"),
        ("p99", ".submit() round trip p99, ms", "{:.3f}"),
    ]
    for key, label, fmt in rows:
        cells = "".join(
            f"{'-' if results[k][key] != results[k][key] else fmt.format(results[k][key]):>14}"
            for k in kinds
        )
        target = TARGETS.get(key, ("", None))[0]
        print(f"{label:<44}{cells}   {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
