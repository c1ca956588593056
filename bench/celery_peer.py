"""Measure Celery 5 with Redis the way bench/tasks_bench.py measures @gearman_task.

Starts a private redis-server on a free 127.0.0.1 port and ``celery worker --concurrency 2
--pool prefork``, and always stops both. Rows: ``.delay()`` one by one (a publish, no
confirmation), end to end (N jobs enqueued and run by the warm worker), and an awaited job's
round trip (``.delay().get()`` with the Redis result backend).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.peers import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = "x" * 100


def available() -> str | None:
    """None if Celery can be measured here, else why not."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import celery  # noqa: F401, PLC0415
        import redis  # noqa: F401, PLC0415
    except ImportError:
        return "celery[redis] is not installed (pip install 'celery[redis]')"
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, term_timeout=20)


def measure(cfg: dict[str, int], log: Any) -> dict[str, float]:
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["BENCH_REDIS"] = url
    sys.path.insert(0, str(REPO))
    import redis  # noqa: PLC0415

    from bench import celery_app  # noqa: PLC0415

    celery_app.REDIS = url
    celery_app.app.conf.broker_url = f"{url}/0"
    celery_app.app.conf.result_backend = f"{url}/1"
    celery_app.app.conf.result_backend_transport_options = {
        "retry_policy": {"max_retries": 1, "timeout": 1.0}
    }
    counter = redis.Redis.from_url(f"{url}/2")
    worker = None
    out: dict[str, list[float]] = {"background": [], "e2e": [], "p50": [], "p99": []}
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                counter.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_REDIS": url}
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.celery_app",
                "worker",
                "--concurrency",
                "2",
                "--pool",
                "prefork",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        celery_app.noop_result.delay(0, 0, "").get(timeout=60)  # the worker is up
        for run in range(cfg["runs"]):
            log(f"celery: .delay() one by one, run {run + 1}")
            n = cfg["one_by_one"]
            started = time.perf_counter()
            for i in range(n):
                celery_app.noop.delay(i, 2, PAYLOAD)
            out["background"].append(n / (time.perf_counter() - started))
            _wait_drained(counter, celery_app, 120)
            log(f"celery: end to end through celery worker --concurrency 2, run {run + 1}")
            n = cfg["celery_e2e"]
            counter.set("done", 0)
            started = time.perf_counter()
            for i in range(n):
                celery_app.noop_counted.delay(i, 2, PAYLOAD)
            deadline = time.monotonic() + 300
            while int(counter.get("done") or 0) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("celery end-to-end jobs did not finish in 300 s")
                time.sleep(0.002)
            out["e2e"].append(n / (time.perf_counter() - started))
            log(f"celery: .delay().get() round trips, run {run + 1}")
            samples = []
            for i in range(cfg["submits"]):
                began = time.perf_counter()
                celery_app.noop_result.delay(i, 2, PAYLOAD).get(timeout=30)
                samples.append((time.perf_counter() - began) * 1000)
            samples.sort()
            out["p50"].append(samples[len(samples) // 2])
            out["p99"].append(samples[int(len(samples) * 0.99)])
    finally:
        if worker is not None:
            _stop(worker)
        # AsyncResult objects left in reference cycles unsubscribe from Redis when collected:
        # collect them while Redis still answers, or their retries outlive the benchmark.
        import gc  # noqa: PLC0415

        gc.collect()
        _stop(server)
    result = {key: statistics.median(values) for key, values in out.items()}
    result["batched"] = float("nan")  # no pipelined enqueue API to compare with
    return result


def _wait_drained(counter: Any, celery_app: Any, timeout: float) -> None:
    """Wait until the broker's queue is empty (the one-by-one row's jobs ran)."""
    deadline = time.monotonic() + timeout
    broker = counter.connection_pool.connection_kwargs
    import redis  # noqa: PLC0415

    queue = redis.Redis(host=broker["host"], port=broker["port"], db=0)
    while queue.llen("celery") > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("celery did not drain its queue")
        time.sleep(0.01)
