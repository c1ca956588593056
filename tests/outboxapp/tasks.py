"""An app for the outbox tests, installed only by their multi-process runs: a task whose runs
append their key to a file, so a test counts runs across threads and processes (O_APPEND)."""

from __future__ import annotations

import os

from django_gearman import gearman_task


@gearman_task(name="tests.outbox.record")
def record(path: str, key: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, f"{key}\n".encode())
    finally:
        os.close(descriptor)


def runs(path: str) -> list[str]:
    """The keys recorded so far, in order (a missing file: none)."""
    try:
        with open(path, encoding="utf-8") as lines:
            return [line.strip() for line in lines if line.strip()]
    except FileNotFoundError:
        return []
