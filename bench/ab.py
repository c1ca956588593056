#!/usr/bin/env python3
"""A/B: run one benchmark in an earlier commit and in this checkout, in turns, in one run.

::

    python bench/ab.py --baseline <commit> --rounds 3 server_bench.py --quick
    python bench/ab.py --baseline <commit> client_bench.py --quick
    python bench/ab.py --baseline <commit> tasks_bench.py --quick --no-celery

The baseline is checked out into a temporary git worktree (removed at the end). Each round runs
the benchmark script once in each tree, the order alternating, with ``PYTHONPATH`` and the
working directory set to that tree, so the benchmark and every server or worker it starts run
that tree's code. Every benchmark already measures its reference (gearmand, pygearman) in the
same run, so its own "ours/reference" ratio cancels most of the machine's noise; this prints,
per row, the median over the rounds of each tree's value, and the change, after/before. Rows
are read from the JSON file a benchmark writes (``summary``), else from its printed table.
Nothing from this is committed: the output is for a closing note.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_RESULTS = re.compile(r"^results(?: written to|:) (\S+\.json)\s*$", re.M)
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def run_once(tree: Path, script: str, args: list[str]) -> dict[str, float]:
    """Run ``bench/<script>`` in ``tree``; its rows as {label: value}."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(tree / "bench" / script), *args]
    print(f"==> {tree.name}: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{script} failed in {tree} (exit {done.returncode})")
    found = _RESULTS.search(done.stdout)
    if found:
        path = Path(found.group(1))
        document = json.loads((path if path.is_absolute() else tree / path).read_text())
        return dict(_flatten(document.get("summary", {})))
    return _table(done.stdout)


def _flatten(value: object, prefix: str = "") -> list[tuple[str, float]]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [(prefix, float(value))]
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _flatten(sub, f"{prefix}/{key}")]
    if isinstance(value, list):
        rows = []
        for index, sub in enumerate(value):
            name = (sub.get("metric") or sub.get("name")) if isinstance(sub, dict) else None
            rows += _flatten(sub, f"{prefix}/{name or index}")
        return rows
    return []


def _table(text: str) -> dict[str, float]:
    """Rows of a printed table: a label, then numbers in columns (the first of them per column)."""
    rows: dict[str, float] = {}
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith("metric"):
            header = line.split()[1:]
            continue
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 2 or not header:
            continue
        label, numbers = cells[0], [c for c in cells[1:] if _NUMBER.fullmatch(c)]
        for column, number in zip(header, numbers, strict=False):
            rows[f"{label} [{column}]"] = float(number.replace(",", ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree (default 3)")
    parser.add_argument("script", help="a benchmark under bench/, e.g. server_bench.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ab-") as temp:
        before = Path(temp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), options.baseline],
            cwd=REPO,
            check=True,
        )
        try:
            values: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
            for round_ in range(options.rounds):
                order = [("before", before), ("after", REPO)]
                for name, tree in order if round_ % 2 == 0 else order[::-1]:
                    for label, value in run_once(tree, options.script, options.args).items():
                        values[name].setdefault(label, []).append(value)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=REPO, check=False
            )
    print(f"\n{options.script} {' '.join(options.args)}: median of {options.rounds} round(s)")
    print(f"{'row':<70}{'before':>14}{'after':>14}{'after/before':>14}")
    for label in values["before"]:
        if label not in values["after"]:
            continue
        a, b = statistics.median(values["before"][label]), statistics.median(values["after"][label])
        ratio = f"{b / a:.2f}x" if a else "-"
        print(f"{label[:69]:<70}{a:>14,.3f}{b:>14,.3f}{ratio:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
