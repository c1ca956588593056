#!/usr/bin/env python3
"""The outbox under crashes, full size: 4 processes queue 10,000 ``background_on_commit`` jobs
(one transaction each) while the job server is killed with -9 and restarted twice and the
worker, with its relay, once; on the embedded server and Debian's gearmand (durable queues on).

Run from the repository root (a few minutes)::

    python bench/outbox_crash.py [--jobs 2500] [--servers embedded,gearmand]

It prints, per server, the jobs asked for, the runs, the jobs lost (must be 0) and the
duplicates (the outbox delivers at least once). ``tests/test_outbox_load.py`` runs the same
scenario with 1,000 jobs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_outbox_load import crash_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2500, help="per process (4 processes)")
    parser.add_argument("--servers", default="embedded,gearmand")
    options = parser.parse_args()
    results = {}
    for kind in options.servers.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="outbox-crash-") as tmp:
            results[kind] = crash_run(kind, Path(tmp), 4, options.jobs)
        results[kind]["seconds"] = round(time.perf_counter() - started)
        print(f"==> {kind}: {results[kind]}", flush=True)
    print()
    print(f"{'server':<10}{'jobs':>8}{'runs':>8}{'lost':>6}{'duplicates':>12}{'seconds':>9}")
    for kind, r in results.items():
        print(f"{kind:<10}{r['jobs']:>8}{r['runs']:>8}{r['lost']:>6}{r['duplicates']:>12}"
              f"{r['seconds']:>9}")  # fmt: skip
    return 1 if any(r["lost"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
