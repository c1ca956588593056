"""The Celery side of bench/tasks_bench.py: the same no-op task on Celery with Redis.

The broker URL comes from ``BENCH_REDIS`` (``redis://127.0.0.1:PORT``): the benchmark starts a
private ``redis-server`` on a free loopback port. ``noop_counted`` adds one Redis INCR per job
so the benchmark knows when all jobs ran (tens of microseconds against Celery's per-job cost).
"""

from __future__ import annotations

import os

import redis
from celery import Celery

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")

app = Celery("bench", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
app.conf.update(
    task_ignore_result=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_counter: redis.Redis | None = None


@app.task(name="bench.noop")
def noop(a: int, b: int, text: str) -> int:
    return a + b


@app.task(name="bench.noop_counted")
def noop_counted(a: int, b: int, text: str) -> int:
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(f"{REDIS}/2")
    _counter.incr("done")
    return a + b


@app.task(name="bench.noop_result", ignore_result=False)
def noop_result(a: int, b: int, text: str) -> int:
    return a + b
