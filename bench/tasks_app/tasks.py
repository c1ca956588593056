"""The benchmark's task: the issue's no-op workload (two ints and a 100-byte string)."""

from __future__ import annotations

from django_gearman import gearman_task


@gearman_task(name="bench.noop")
def noop(a: int, b: int, text: str) -> int:
    return a + b
