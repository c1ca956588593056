#!/usr/bin/env python3
"""Soak the job server with hostile input (#14), and see what it leaves behind.

Run from the repository root::

    python bench/server_soak.py                          # 500,000 inputs, embedded then gearmand
    python bench/server_soak.py --quick                  # 50,000 inputs
    python bench/server_soak.py --servers embedded       # one server only
    python bench/server_soak.py --scenario load          # the load test's floods, full length
    python bench/server_soak.py --scenario kinds         # each kind of input alone, a row each

For each server (a fresh one on a free 127.0.0.1 port, always stopped again: ``with`` blocks,
Ctrl+C unwinds through them) it starts a healthy client and our worker in this process
(:class:`tests.hostile.HealthyProbe`: a foreground round trip every 5 ms), then a child process
(``python -m tests.hostile``, at niceness 10) that plays the hostile input:

- ``soak``: ``--inputs`` malformed packets and text lines over many short connections (the
  whole mix of :mod:`tests.hostile`). Once the child is done, waits up to ``--settle`` seconds
  for the server to close every hostile connection, then measures. Done when (#14): no healthy
  round trip over 100 ms, no socket left beyond those the server had before, RSS within 50 MB of
  its start plus 2 KiB per job ``status`` counts;
- ``load``: ``status`` flooded over 20,000 functions and never read, SUBMIT_JOB_EPOCH flooded
  with out-of-range epochs, 1,000 connections holding half-sent 1 MiB packets, for
  ``--duration`` seconds. Done when: healthy p99 < 50 ms, none fails, RSS < 300 MB;
- ``kinds``: every kind of :data:`tests.hostile.KINDS` alone on a fresh server (``--inputs``
  divided among them): what each leaves behind, per input.

gearmand 1.1.20 exits at the first packet type of 2**31 or more (it reads the type as a signed
int), so whenever gearmand is measured the soak mix leaves those out, for both servers alike
(``--mix``).

Progress goes to stderr once a second; the table to stdout; every number to
``bench/results/soak-<timestamp>.json`` (git-ignored). Loopback only. Timings are never
asserted here: ``tests/gearman/server/test_soak.py`` and ``test_hostile_load.py`` do, at a
small size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hostile import (  # noqa: E402
    KINDS,
    MIB,
    HealthyProbe,
    RssSampler,
    create_functions,
    left_open,
    queued_jobs,
    rss_bytes,
    settle,
    socket_census,
    socket_inodes,
)
from tests.peers import EmbeddedServer, Gearmand, find_gearmand  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
SOAK_SLACK = 50 * MIB
PER_JOB = 2048
SOAK_MAX_ROUND_TRIP = 0.100
LOAD_RSS_BOUND = 300 * MIB
LOAD_P99 = 0.050
LOAD_FUNCTIONS = 20_000


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_server(kind: str, loop: str) -> Gearmand:
    if kind == "gearmand":
        return Gearmand()
    return EmbeddedServer(extra_args=["--loop", loop] if loop != "auto" else [])


def play(args: list[str], server: Gearmand, probe: HealthyProbe | None, timeout: float) -> Any:
    """Run ``python -m tests.hostile ARGS`` at niceness 10 and return its JSON result, printing
    a progress line a second: the child's count (``soak --progress``), the server's RSS and
    sockets, the healthy round trips so far."""
    command = [sys.executable, "-m", "tests.hostile", *args, "--nice", "10"]
    child = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    latest: dict[str, Any] = {}
    errors: list[str] = []

    def read_progress() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            try:
                latest.update(json.loads(line))
            except ValueError:
                errors.append(line)

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        while child.poll() is None:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{' '.join(args)} did not end within {timeout:.0f} s")
            time.sleep(1.0)
            progress(server, probe, started, latest)
        out = child.stdout.read() if child.stdout else ""
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
        reader.join(5)
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}: {''.join(errors)}")
    return json.loads(out.strip().splitlines()[-1])


def progress(
    server: Gearmand, probe: HealthyProbe | None, started: float, latest: dict[str, Any]
) -> None:
    pid = server.pid
    try:
        rss, sockets = rss_bytes(pid or 0) / MIB, len(socket_inodes(pid or 0))
    except (OSError, RuntimeError):
        rss, sockets = float("nan"), -1
    healthy = ""
    if probe is not None and probe.latencies:
        recent = probe.latencies[-200:]
        healthy = (
            f"healthy {len(probe.latencies)} rt, last-200 max {max(recent) * 1000:.0f} ms, "
            f"all max {max(probe.latencies) * 1000:.0f} ms, {len(probe.failures)} failed"
        )
    done = f"{latest.get('progress', 0):>8} inputs " if "progress" in latest else ""
    log(
        f"{server.kind:8} {time.monotonic() - started:6.1f} s {done}RSS {rss:7.0f} MB "
        f"sockets {sockets:5} {healthy}"
    )


def soak(kind: str, options: argparse.Namespace, *, kinds: str = "", inputs: int = 0) -> Any:
    """One soak run on a fresh server: the measurements, and the verdict of each criterion."""
    inputs = inputs or options.inputs
    with make_server(kind, options.loop) as server:
        pid = server.pid
        assert pid is not None
        with HealthyProbe(server.address) as probe:
            baseline = socket_census(pid)
            start_rss, start_cpu = rss_bytes(pid), cpu_seconds(pid)
            started = time.monotonic()
            with RssSampler(pid, 0.1) as rss:
                args = ["soak", str(server.port), "--inputs", str(inputs), "--progress"]
                args += ["--seed", str(options.seed), "--concurrency", str(options.concurrency)]
                args += ["--kinds", kinds] if kinds else []
                args += ["--gearmand-safe"] if gearmand_safe(options) else []
                tally = play(args, server, probe, 3600)
                hostile_seconds = time.monotonic() - started
                if not server.running:
                    return died(kind, server, tally, probe)
                census, settle_seconds = settle(pid, baseline, options.settle)
            left = left_open(census, baseline)
        end_rss, server_cpu = rss_bytes(pid), cpu_seconds(pid) - start_cpu
        try:
            jobs: int | str = queued_jobs(("127.0.0.1", server.port))
        except OSError as error:  # a server still stuck on its backlog
            log(f"{kind}: status did not answer ({error!r}); no allowance for jobs")
            jobs = "no answer"
    allowed = start_rss + SOAK_SLACK + (jobs * PER_JOB if isinstance(jobs, int) else 0)
    worst = max(probe.latencies, default=float("inf"))
    return {
        "server": kind,
        "died": False,
        "inputs": tally["inputs"],
        "connections": tally["connections"],
        "stuck_sends": tally["stuck"],
        "hostile_seconds": round(hostile_seconds, 1),
        "server_cpu_seconds": round(server_cpu, 1),
        "settle_seconds": round(settle_seconds, 1),
        "rss_start_mb": round(start_rss / MIB, 1),
        "rss_peak_mb": round(rss.peak / MIB, 1),
        "rss_end_mb": round(end_rss / MIB, 1),
        "rss_allowed_mb": round(allowed / MIB, 1),
        "jobs_counted": jobs,
        "sockets_left": left,
        "socket_census": dict(census),
        "socket_census_before": dict(baseline),
        "healthy_round_trips": len(probe.latencies),
        "healthy_p50_ms": round(probe.percentile(0.5) * 1000, 1),
        "healthy_p99_ms": round(probe.percentile(0.99) * 1000, 1),
        "healthy_max_ms": round(worst * 1000, 1),
        "healthy_failed": len(probe.failures),
        "ok_latency": worst <= SOAK_MAX_ROUND_TRIP and not probe.failures,
        "ok_sockets": left <= 0,
        "ok_rss": end_rss <= allowed,
        "by_kind": tally["by_kind"],
    }


def gearmand_safe(options: argparse.Namespace) -> bool:
    """Whether to leave out the packet types that crash gearmand 1.1.20 (see ``--mix``)."""
    if options.mix == "auto":
        return "gearmand" in options.servers.split(",")
    return bool(options.mix == "gearmand-safe")


def died(kind: str, server: Gearmand, tally: dict[str, Any], probe: HealthyProbe) -> Any:
    log(f"{kind} died during the run:\n{server.log_tail(15)}")
    return {
        "server": kind,
        "died": True,
        "inputs": tally["inputs"],
        "connections": tally["connections"],
        "healthy_round_trips": len(probe.latencies),
        "healthy_failed": len(probe.failures),
        "ok_latency": False,
        "ok_sockets": False,
        "ok_rss": False,
        "by_kind": tally["by_kind"],
    }


def load(kind: str, options: argparse.Namespace) -> Any:
    """The load test's floods on a fresh server, ``--duration`` seconds."""
    with make_server(kind, options.loop) as server:
        pid = server.pid
        assert pid is not None
        create_functions(("127.0.0.1", server.port), LOAD_FUNCTIONS)
        with HealthyProbe(server.address) as probe:
            start_rss = rss_bytes(pid)
            with RssSampler(pid, 0.05) as rss:
                args = ["load", str(server.port), "--duration", str(options.duration)]
                args += ["--floods", options.floods]
                floods = play(args, server, probe, options.duration + 120)
            probe.stop()
    p99 = probe.percentile(0.99)
    return {
        "server": kind,
        "rss_start_mb": round(start_rss / MIB, 1),
        "rss_peak_mb": round(rss.peak / MIB, 1),
        "healthy_round_trips": len(probe.latencies),
        "healthy_p50_ms": round(probe.percentile(0.5) * 1000, 1),
        "healthy_p99_ms": round(p99 * 1000, 1),
        "healthy_max_ms": round(max(probe.latencies, default=float("inf")) * 1000, 1),
        "healthy_failed": len(probe.failures),
        "floods": floods,
        "ok_latency": p99 < LOAD_P99 and not probe.failures,
        "ok_rss": rss.peak < LOAD_RSS_BOUND,
    }


SOAK_COLUMNS = [
    ("died", "died during the run"),
    ("inputs", "inputs"),
    ("connections", "connections"),
    ("hostile_seconds", "hostile side, s"),
    ("server_cpu_seconds", "server CPU, s"),
    ("stuck_sends", "sends the server did not take"),
    ("settle_seconds", "seconds until sockets settled"),
    ("sockets_left", "sockets left open"),
    ("socket_census", "  server sockets then"),
    ("socket_census_before", "  server sockets before"),
    ("jobs_counted", "jobs `status` counts"),
    ("rss_start_mb", "RSS start, MB"),
    ("rss_peak_mb", "RSS peak, MB"),
    ("rss_end_mb", "RSS end, MB"),
    ("rss_allowed_mb", "RSS allowed (start+50 MB+2 KiB/job)"),
    ("healthy_round_trips", "healthy round trips"),
    ("healthy_p50_ms", "healthy p50, ms"),
    ("healthy_p99_ms", "healthy p99, ms"),
    ("healthy_max_ms", "healthy max, ms (<= 100)"),
    ("healthy_failed", "healthy failed"),
    ("ok_latency", "done: round trips"),
    ("ok_sockets", "done: sockets"),
    ("ok_rss", "done: RSS"),
]
LOAD_COLUMNS = [
    ("rss_start_mb", "RSS start, MB"),
    ("rss_peak_mb", "RSS peak, MB (< 300)"),
    ("healthy_round_trips", "healthy round trips"),
    ("healthy_p50_ms", "healthy p50, ms"),
    ("healthy_p99_ms", "healthy p99, ms (< 50)"),
    ("healthy_max_ms", "healthy max, ms"),
    ("healthy_failed", "healthy failed"),
    ("floods", "floods"),
    ("ok_latency", "done: round trips"),
    ("ok_rss", "done: RSS"),
]


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """One column per server, one line per measurement."""
    width = max(len(label) for _, label in columns) + 2
    lines = [f"{'':{width}}" + "".join(f"{row['server']:>22}" for row in rows)]
    for key, label in columns:
        cells = []
        for row in rows:
            value = row.get(key, "-")
            if isinstance(value, dict):
                value = json.dumps(value, separators=(",", ":"))
                cells.append(f"{value:>22}" if len(value) <= 20 else f"  {value}")
            else:
                cells.append(f"{value!s:>22}")
        lines.append(f"{label:{width}}" + "".join(cells))
    return "\n".join(lines)


def kinds_table(rows: list[dict[str, Any]]) -> str:
    """Each kind alone: what it cost and left behind."""
    head = (
        f"{'server':9} {'kind':19} {'inputs':>7} {'host s':>7} {'srv CPU':>7} "
        f"{'settle':>6} {'left':>5} {'jobs':>6} {'RSS +MB':>8} {'B/input':>8} {'max rt ms':>9}"
    )
    lines = [head]
    for row in rows:
        if row.get("died"):
            lines.append(f"{row['server']:9} {row['kind']:19} {row['inputs']:7}  server died")
            continue
        grown = row["rss_end_mb"] - row["rss_start_mb"]
        lines.append(
            f"{row['server']:9} {row['kind']:19} {row['inputs']:7} {row['hostile_seconds']:7} "
            f"{row['server_cpu_seconds']:7} {row['settle_seconds']:6} {row['sockets_left']:5} "
            f"{row['jobs_counted']:6} {grown:8.1f} {grown * MIB / max(row['inputs'], 1):8.0f} "
            f"{row['healthy_max_ms']:9}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=["soak", "load", "kinds"], default="soak")
    parser.add_argument("--servers", default="embedded,gearmand", help="comma-separated")
    parser.add_argument("--inputs", type=int, default=500_000)
    parser.add_argument("--quick", action="store_true", help="50,000 inputs; 8 s of load")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--concurrency", type=int, default=100, help="hostile connections at once")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait for sockets")
    parser.add_argument("--duration", type=float, default=30.0, help="load: seconds of floods")
    parser.add_argument("--floods", default="status,epoch,holders", help="load: which floods")
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument(
        "--mix",
        default="auto",
        choices=["auto", "full", "gearmand-safe"],
        help=(
            "soak input: full, or without the packet types of 2**31 and more that crash "
            "gearmand 1.1.20 (auto: gearmand-safe when gearmand is among --servers)"
        ),
    )
    options = parser.parse_args()
    if options.quick:
        options.inputs, options.duration = 50_000, 8.0
    servers = [s for s in options.servers.split(",") if s]
    if "gearmand" in servers and find_gearmand() is None:
        log("gearmand not found (apt-get install gearman-job-server): measuring ours alone")
        servers.remove("gearmand")

    rows: list[dict[str, Any]] = []
    for kind in servers:
        log(f"{kind}: {options.scenario}")
        if options.scenario == "soak":
            rows.append(soak(kind, options))
        elif options.scenario == "load":
            rows.append(load(kind, options))
        else:
            each = max(1000, options.inputs // len(KINDS))
            for name in KINDS:
                row = soak(kind, options, kinds=name, inputs=each)
                rows.append({**row, "kind": name})
                log(f"{kind} {name}: {json.dumps(row)}")

    if options.scenario == "soak":
        mix = "gearmand-safe" if gearmand_safe(options) else "full"
        print(f"\nsoak, {options.inputs} inputs ({mix} mix), seed {options.seed}")
    if options.scenario == "kinds":
        print(kinds_table(rows))
    else:
        print(table(rows, SOAK_COLUMNS if options.scenario == "soak" else LOAD_COLUMNS))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"soak-{options.scenario}-{stamp}.json"
    path.write_text(json.dumps({"options": vars(options), "rows": rows}, indent=2))
    log(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
