#!/usr/bin/env python3
"""Client and worker throughput: django_gearman against pygearman, on one local gearmand.

Run from the repository root::

    python bench/client_bench.py            # full run, about 2-3 minutes
    python bench/client_bench.py --quick    # smaller run, under 45 s

One invocation starts a private gearmand on a free 127.0.0.1 port, starts echo workers (always
OUR Worker, so only the client differs between the two client measurements), measures

  (a) sequential foreground round trips (100-byte payload) from one process,
  (b) background submits one at a time,
  (c) pipelined background batches,
  (d) foreground task sets (many jobs in flight),
  (e) worker drain: N queued no-op jobs, one worker process, jobs/s until the queue is empty,

for django_gearman and for pygearman side by side, prints a table with ratios and targets and
writes the raw numbers to ``bench/results/client-<timestamp>.json``. gearmand and every worker
are stopped at the end, also on Ctrl+C or an exception. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PAYLOAD = b"x" * 100
ECHO = "echo"
BG_SINK = "bg_sink"  # no worker ever offers it: background jobs pile up in gearmand
DRAIN = "drain_noop"
PYGEARMAN_TIMEOUT = 30.0  # pygearman only waits for completion when poll_timeout is a number

TARGET_FOREGROUND_RATIO = 3.0
TARGET_DRAIN_JOBS_PER_S = 10_000.0


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# child processes: workers (the script re-runs itself with --role)
# ---------------------------------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> int:

    # The parent stops workers with SIGTERM; their "warm shutdown" warning is expected noise.
    logging.getLogger("django_gearman").setLevel(logging.ERROR)
    address = f"127.0.0.1:{args.port}"
    if args.role == "echo-worker":
        from django_gearman.gearman.worker import Worker  # noqa: PLC0415 - a child's own role

        worker = Worker([address])
        worker.register(ECHO, lambda job: job.data)
        worker.work()
        return 0
    if args.role == "drain-ours":
        from django_gearman.gearman.worker import Worker  # noqa: PLC0415 - a child's own role

        worker = Worker([address])
        worker.register(DRAIN, lambda job: None)
        start = time.monotonic()
        print(json.dumps({"ready": start}), flush=True)
        jobs = worker.work(burst=True)
        end = time.monotonic()
        print(json.dumps({"jobs": jobs, "start": start, "end": end}), flush=True)
        return 0
    if args.role == "drain-pygearman":
        import gearman  # noqa: PLC0415 - pygearman, the optional reference

        worker = gearman.GearmanWorker([address])
        # pygearman 0.2.6 compares the function name of JOB_ASSIGN (bytes) with the registered
        # name, so a str name fails an assertion on the first job: register bytes.
        worker.register_task(DRAIN.encode(), lambda gearman_worker, job: b"")
        print(json.dumps({"ready": time.monotonic()}), flush=True)
        worker.work()  # no burst mode: the parent watches the queue and kills us
        return 0
    raise SystemExit(f"unknown role {args.role!r}")


def _child_preexec() -> None:
    # Die with the parent even if it is SIGKILLed (Linux only; harmless elsewhere).
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# ---------------------------------------------------------------------------------------------
# the harness: gearmand and workers, always cleaned up
# ---------------------------------------------------------------------------------------------


class Harness:
    def __init__(self, gearmand: str, workdir: Path, buckets: int) -> None:
        self.gearmand_path = gearmand
        self.buckets = buckets
        self.workdir = workdir
        self.port = 0
        self.gearmand: subprocess.Popen | None = None
        self.children: list[subprocess.Popen] = []
        self._admin = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        # A new session: a Ctrl+C in the terminal reaches only us, and we stop children in order.
        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_child_preexec, **kwargs)
        self.children.append(proc)
        return proc

    def start_gearmand(self) -> None:
        for attempt in range(5):
            port = free_port()
            log_file = self.workdir / f"gearmand-{port}.log"
            proc = self._spawn(
                [
                    self.gearmand_path,
                    "-L",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-t",
                    "0",
                    f"--log-file={log_file}",
                    "--verbose=WARNING",
                    "--config-file=/dev/null",
                    f"--hashtable-buckets={self.buckets}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                except OSError:
                    time.sleep(0.02)
                    continue
                self.gearmand, self.port = proc, port
                return
            self.stop(proc)
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            log(
                f"gearmand did not come up on port {port} (attempt {attempt + 1}); "
                f"log tail:\n{tail}"
            )
        raise RuntimeError("could not start gearmand")

    def spawn_role(self, role: str, *, stdout=None) -> subprocess.Popen:
        return self._spawn(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--role",
                role,
                "--port",
                str(self.port),
            ],
            stdout=stdout,
            text=True,
        )

    def admin(self):
        from django_gearman.gearman.admin_client import GearmanAdminClient  # noqa: PLC0415 - on first use

        if self._admin is None:
            self._admin = GearmanAdminClient(self.address, timeout=10)
        return self._admin

    def function_status(self, function: str):
        for row in self.admin().status():
            if row.function == function:
                return row
        return None

    def wait_for_workers(self, function: str, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.function_status(function)
            if row is not None and row.available_workers >= count:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{count} worker(s) for {function!r} did not register within {timeout}s")

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
        # Workers first, gearmand last (so workers don't log reconnect attempts).
        for proc in reversed(self.children):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for proc in self.children:
            if proc.stdout is not None:
                with contextlib.suppress(Exception):
                    proc.stdout.close()
        self.children.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# other load on the machine
# ---------------------------------------------------------------------------------------------


class ForeignLoad:
    """CPU the whole machine spent during the run minus what we (and our children) spent.

    Linux only (``/proc/stat``); elsewhere it reports nothing. Another process busy on a
    2-core machine distorts every row, so the summary warns when this is more than a little.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._machine()
        self.start_ours = self._ours([])
        self.wall = time.monotonic()

    @staticmethod
    def _machine() -> tuple[float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields]
        # user nice system idle iowait irq softirq steal ... Interrupt time is left out: it is
        # charged to no process, and our own loopback traffic makes plenty of softirq.
        busy = values[0] + values[1] + values[2]
        steal = values[7] if len(values) > 7 else 0
        return busy, steal

    def _ours(self, live: list[subprocess.Popen]) -> float:
        times = os.times()
        total = times.user + times.system + times.children_user + times.children_system
        for proc in live:
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        return total

    def measure(self, live: list[subprocess.Popen]) -> dict | None:
        """Call before stopping the children that are still running."""
        end = self._machine()
        if self.start is None or end is None:
            return None
        wall = time.monotonic() - self.wall
        cores = os.cpu_count() or 1
        busy = (end[0] - self.start[0]) / self.tick
        ours = self._ours(live) - self.start_ours
        foreign = max(0.0, busy - ours)
        return {
            "wall_s": wall,
            "machine_busy_core_s": busy,
            "ours_core_s": ours,
            "foreign_core_s": foreign,
            "foreign_share_of_machine": foreign / (wall * cores),
            "steal_core_s": (end[1] - self.start[1]) / self.tick,
        }


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def timed_loop(
    op: Callable[[], object], duration: float, per_op: int = 1, latencies: list | None = None
) -> dict:
    """Call ``op`` until ``duration`` seconds have passed; return rate and CPU per job."""
    perf = time.perf_counter
    ops = 0
    cpu0 = time.process_time()
    start = perf()
    stop_at = start + duration
    if latencies is None:
        while True:
            op()
            ops += 1
            if perf() >= stop_at:
                break
        end = perf()
    else:
        append = latencies.append
        end = start
        while end < stop_at:
            t0 = perf()
            op()
            end = perf()
            append(end - t0)
            ops += 1
    cpu = time.process_time() - cpu0
    jobs = ops * per_op
    return {
        "jobs": jobs,
        "seconds": end - start,
        "jobs_per_s": jobs / (end - start),
        "cpu_us_per_job": cpu / jobs * 1e6,
    }


def counted_loop(op: Callable[[], object], count: int, per_op: int = 1) -> dict:
    cpu0 = time.process_time()
    start = time.perf_counter()
    for _ in range(count):
        op()
    end = time.perf_counter()
    cpu = time.process_time() - cpu0
    jobs = count * per_op
    return {
        "jobs": jobs,
        "seconds": end - start,
        "jobs_per_s": jobs / (end - start),
        "cpu_us_per_job": cpu / jobs * 1e6,
    }


class RawClient:
    """The floor for row (a): a pre-encoded SUBMIT_JOB on a bare socket, replies only framed.

    No library could do less per job, so its rate is the most any client can reach against this
    gearmand and these workers; the ratio it gets over pygearman bounds what a client can gain.
    """

    _HEADER = struct.Struct(">4sII")

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=PYGEARMAN_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = ECHO.encode() + b"\0\0" + PAYLOAD  # SUBMIT_JOB: function, empty unique, data
        self.packet = self._HEADER.pack(b"\0REQ", 7, len(body)) + body

    def submit(self) -> None:
        self.sock.sendall(self.packet)
        buf = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("gearmand closed the raw connection")
            buf += data
            pos = 0
            while len(buf) - pos >= 12:
                _, kind, size = self._HEADER.unpack_from(buf, pos)
                if len(buf) - pos < 12 + size:
                    break
                if kind == 13:  # WORK_COMPLETE (JOB_CREATED, type 8, comes first)
                    return
                pos += 12 + size
            buf = buf[pos:]

    def close(self) -> None:
        self.sock.close()


class Clients:
    """The operations each benchmark row runs, for both libraries."""

    def __init__(self, address: str, batch: int, taskset: int) -> None:
        import gearman  # noqa: PLC0415 - pygearman, the optional reference

        from django_gearman.gearman import GearmanClient, Task  # noqa: PLC0415 - beside pygearman's

        self.gearman = gearman
        self.Task = Task
        self.ours = GearmanClient([address], timeout=30)
        self.pyg = gearman.GearmanClient([address])
        self.raw = RawClient(address)
        self.batch = batch
        self.taskset = taskset
        self._bg_batch_ours = [(BG_SINK, PAYLOAD)] * batch
        self._bg_batch_pyg = [{"task": BG_SINK, "data": PAYLOAD} for _ in range(batch)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ours.close()
        with contextlib.suppress(Exception):
            self.pyg.shutdown()
        self.raw.close()

    # (a) foreground, sequential
    def fg_ours(self) -> None:
        self.ours.submit(ECHO, PAYLOAD)

    def fg_pyg(self) -> None:
        request = self.pyg.submit_job(ECHO, PAYLOAD, poll_timeout=PYGEARMAN_TIMEOUT)
        if request.state != self.gearman.constants.JOB_COMPLETE:
            raise RuntimeError(f"pygearman job did not complete: {request.state}")

    def fg_raw(self) -> None:
        self.raw.submit()

    # (b) background, one at a time
    def bg_ours(self) -> None:
        self.ours.submit_background(BG_SINK, PAYLOAD)

    def bg_pyg(self) -> None:
        self.pyg.submit_job(
            BG_SINK,
            PAYLOAD,
            background=True,
            wait_until_complete=False,
            poll_timeout=PYGEARMAN_TIMEOUT,
        )

    # (c) background, pipelined batch
    def bg_many_ours(self) -> None:
        self.ours.submit_background_many(self._bg_batch_ours)

    def bg_many_pyg(self) -> None:
        requests = self.pyg.submit_multiple_jobs(
            self._bg_batch_pyg,
            background=True,
            wait_until_complete=False,
            poll_timeout=PYGEARMAN_TIMEOUT,
        )
        if any(r.timed_out for r in requests):
            raise RuntimeError("pygearman batch timed out")

    # (d) foreground task set
    def taskset_ours(self) -> None:
        tasks = self.ours.run_tasks([self.Task(ECHO, PAYLOAD) for _ in range(self.taskset)])
        if any(task.result is None for task in tasks):
            raise RuntimeError("a task of the set did not complete")

    def taskset_pyg(self) -> None:
        jobs = [{"task": ECHO, "data": PAYLOAD} for _ in range(self.taskset)]
        requests = self.pyg.submit_multiple_jobs(jobs, poll_timeout=PYGEARMAN_TIMEOUT)
        if any(r.state != self.gearman.constants.JOB_COMPLETE for r in requests):
            raise RuntimeError("a pygearman task of the set did not complete")

    def check(self) -> None:
        """Both clients really round-trip through the echo workers."""
        assert self.ours.submit(ECHO, PAYLOAD) == PAYLOAD
        request = self.pyg.submit_job(ECHO, PAYLOAD, poll_timeout=PYGEARMAN_TIMEOUT)
        assert request.result == PAYLOAD, request


def alternate(
    runs: int,
    label: str,
    measure: Callable[[str, int], dict],
    libs: tuple[str, ...] = ("ours", "pygearman"),
) -> dict[str, list[dict]]:
    """Run each of ``libs`` ``runs`` times, rotating who goes first (drift cancels)."""
    results: dict[str, list[dict]] = {lib: [] for lib in libs}
    for run in range(runs):
        order = libs[run % len(libs) :] + libs[: run % len(libs)]
        for lib in order:
            log(f"{label}: {lib} run {run + 1}/{runs} ...")
            result = measure(lib, run)
            results[lib].append(result)
            print(
                f"    {result['jobs_per_s']:>10,.0f} jobs/s  ({result['jobs']:,} jobs in "
                f"{result['seconds']:.2f}s, client CPU {result['cpu_us_per_job']:.1f} us/job)",
                flush=True,
            )
    return results


def measure_drain(h: Harness, clients: Clients, lib: str, jobs: int, run: int, runs: int) -> dict:
    log(f"drain: queueing {jobs:,} {DRAIN} jobs for {lib} run {run + 1}/{runs} ...")
    chunk = 5000
    for offset in range(0, jobs, chunk):
        clients.ours.submit_background_many([(DRAIN, b"")] * min(chunk, jobs - offset))
    row = h.function_status(DRAIN)
    queued = row.total if row else 0
    if queued != jobs:
        raise RuntimeError(f"expected {jobs} queued {DRAIN} jobs, gearmand reports {queued}")
    log(f"drain: {lib} worker draining {jobs:,} jobs ...")
    proc = h.spawn_role(
        "drain-ours" if lib == "ours" else "drain-pygearman", stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"{lib} drain worker exited early (rc={proc.wait()})")
        start = json.loads(ready)["ready"]
        # Watch the queue (both libraries alike): the end is when gearmand holds no job.
        deadline = time.monotonic() + max(120.0, jobs / 500)
        while True:
            row = h.function_status(DRAIN)
            polled_end = time.monotonic()
            if row is None or row.total == 0:
                break
            if proc.poll() is not None and lib != "ours":
                raise RuntimeError(f"{lib} drain worker died (rc={proc.returncode})")
            if polled_end > deadline:
                raise RuntimeError(f"{lib} drain did not finish in time ({row.total} jobs left)")
            time.sleep(0.005)
        result = {"jobs": jobs, "seconds": polled_end - start, "method": "queue polled empty"}
        if lib == "ours":
            line = proc.stdout.readline()
            proc.wait(30)
            if line:
                done = json.loads(line)
                if done["jobs"] != jobs:
                    raise RuntimeError(f"our worker ran {done['jobs']} jobs, expected {jobs}")
                # Burst mode's own exit time: includes noticing the queue is empty (NO_JOB).
                result = {
                    "jobs": jobs,
                    "seconds": done["end"] - done["start"],
                    "method": "burst exit",
                    "seconds_queue_polled_empty": polled_end - start,
                }
    finally:
        Harness.stop(proc)
    result["jobs_per_s"] = jobs / result["seconds"]
    print(
        f"    {result['jobs_per_s']:>10,.0f} jobs/s  ({jobs:,} jobs in {result['seconds']:.2f}s)",
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------


def med(runs: list[dict], key: str = "jobs_per_s") -> float:
    return statistics.median(r[key] for r in runs)


def build_rows(results: dict) -> list[dict]:
    rows = []

    def add(
        name: str,
        ours: float,
        pyg: float,
        unit: str,
        target: str = "",
        *,
        higher_better: bool = True,
        ok: bool | None = None,
    ):
        rows.append(
            {
                "metric": name,
                "unit": unit,
                "ours": ours,
                "pygearman": pyg,
                "ratio": ours / pyg if pyg else float("nan"),
                "higher_is_better": higher_better,
                "target": target,
                "target_met": ok,
            }
        )

    fg = results["foreground"]
    ratio = med(fg["ours"]) / med(fg["pygearman"])
    add(
        "(a) foreground submit, sequential",
        med(fg["ours"]),
        med(fg["pygearman"]),
        "jobs/s",
        f">= {TARGET_FOREGROUND_RATIO:g}x pygearman",
        ok=ratio >= TARGET_FOREGROUND_RATIO,
    )
    for q in ("p50", "p99"):
        add(
            f"    latency {q}",
            fg["latency_us"]["ours"][q],
            fg["latency_us"]["pygearman"][q],
            "us",
            higher_better=False,
        )
    add(
        "    client CPU per job",
        med(fg["ours"], "cpu_us_per_job"),
        med(fg["pygearman"], "cpu_us_per_job"),
        "us",
        higher_better=False,
    )
    floor = med(fg["raw-socket floor"])
    add(
        "    raw-socket floor [in 'ours' column]",
        floor,
        med(fg["pygearman"]),
        "jobs/s",
        f"ours = {med(fg['ours']) / floor:.0%} of floor",
    )
    for key, name in (
        ("background", "(b) background submit, one at a time"),
        ("background_batch", "(c) background batch, pipelined"),
        ("taskset", "(d) foreground task set"),
    ):
        r = results[key]
        add(name, med(r["ours"]), med(r["pygearman"]), "jobs/s")
        add(
            "    client CPU per job",
            med(r["ours"], "cpu_us_per_job"),
            med(r["pygearman"], "cpu_us_per_job"),
            "us",
            higher_better=False,
        )
    dr = results["drain"]
    ours_drain = med(dr["ours"])
    add(
        "(e) worker drain, 1 process",
        ours_drain,
        med(dr["pygearman"]),
        "jobs/s",
        f">= {TARGET_DRAIN_JOBS_PER_S:,.0f} jobs/s (ours)",
        ok=ours_drain >= TARGET_DRAIN_JOBS_PER_S,
    )
    return rows


def print_table(rows: list[dict]) -> None:
    header = f"{'metric':<40} {'unit':>6} {'ours':>12} {'pygearman':>12} {'ours/pyg':>9}  target"
    print()
    print(header)
    print("-" * len(header) + "-" * 24)
    for row in rows:
        ratio = f"{row['ratio']:.2f}x"
        if not row["higher_is_better"]:
            ratio += "*"
        target = row["target"]
        if row["target_met"] is not None:
            target += "  " + ("MET" if row["target_met"] else "MISSED")
        print(
            f"{row['metric']:<40} {row['unit']:>6} {row['ours']:>12,.1f} "
            f"{row['pygearman']:>12,.1f} {ratio:>9}  {target}"
        )
    print("(* lower is better for latency and CPU rows: a ratio below 1 means ours is cheaper)")
    print(
        "(raw-socket floor: a pre-encoded SUBMIT_JOB on a bare socket, no library; its ratio over"
    )
    print(
        " pygearman is the most any client can gain on row (a) with this gearmand and these"
        " workers)"
    )


def environment(args: argparse.Namespace, gearmand: str) -> dict:
    def run(argv: list[str]) -> str:
        with contextlib.suppress(Exception):
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT
            ).stdout.strip()
        return ""

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "gearmand": run([gearmand, "--version"]),
        "pygearman": importlib.metadata.version("pygearman"),
        "git_commit": run(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(run(["git", "status", "--porcelain", "--", "django_gearman"])),
        "settings": {k: v for k, v in vars(args).items() if k not in ("role", "port")},
    }


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer/shorter runs and 20,000 drain jobs (< 45 s)"
    )
    parser.add_argument("--runs", type=int, help="runs per client and row (default 5, quick 3)")
    parser.add_argument(
        "--duration", type=float, help="seconds per timed run (default 1.5, quick 0.6)"
    )
    parser.add_argument("--workers", type=int, default=2, help="echo worker processes (default 2)")
    parser.add_argument(
        "--drain-jobs",
        type=int,
        help="jobs queued for the drain test (default 100000, quick 20000)",
    )
    parser.add_argument("--drain-runs", type=int, help="drain runs per worker library (default 3)")
    parser.add_argument(
        "--batch", type=int, default=1000, help="jobs per background batch (default 1000)"
    )
    parser.add_argument(
        "--taskset", type=int, default=200, help="jobs per foreground task set (default 200)"
    )
    parser.add_argument(
        "--gearmand",
        default=shutil.which("gearmand") or "/usr/sbin/gearmand",
        help="gearmand binary",
    )
    parser.add_argument(
        "--hashtable-buckets",
        type=int,
        default=1_000_003,
        help="gearmand --hashtable-buckets (default 1000003; gearmand's own 991 makes every submit "
        "slower as bg_sink grows, which would swamp the client differences)",
    )
    parser.add_argument(
        "--output", type=Path, help="JSON file (default bench/results/client-<timestamp>.json)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (3 if quick else 5)
    args.duration = args.duration or (0.6 if quick else 1.5)
    args.drain_jobs = args.drain_jobs or (20_000 if quick else 100_000)
    args.drain_runs = args.drain_runs or 3
    # Background rows run a fixed number of jobs (the bg_sink queue only grows).
    args.bg_jobs = 5_000 if quick else 15_000
    args.bg_batches = 10 if quick else 30
    return args


def _raise_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return child_main(args)
    try:
        import gearman  # noqa: F401, PLC0415 - is the reference installed?
    except ImportError:
        print("pygearman is not installed: pip install pygearman==0.2.6", file=sys.stderr)
        return 2
    if not (Path(args.gearmand).exists() or shutil.which(args.gearmand)):
        print(
            f"gearmand not found at {args.gearmand} (apt-get install gearman-job-server)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _raise_on_signal)
    with contextlib.suppress(AttributeError):
        signal.signal(signal.SIGHUP, _raise_on_signal)

    started = time.monotonic()
    load = ForeignLoad()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="client-bench-"))
    harness = Harness(args.gearmand, workdir, args.hashtable_buckets)
    clients: Clients | None = None
    results: dict = {}
    try:
        env = environment(args, args.gearmand)
        log(f"starting gearmand ({env['gearmand'] or args.gearmand}) ...")
        harness.start_gearmand()
        log(
            f"gearmand on {harness.address}; starting {args.workers} echo worker "
            "process(es) (django_gearman Worker) ..."
        )
        for _ in range(args.workers):
            harness.spawn_role("echo-worker")
        harness.wait_for_workers(ECHO, args.workers)
        clients = Clients(harness.address, args.batch, args.taskset)
        clients.check()

        # Order: the rows that leave nothing queued first, the background rows last. No worker
        # offers bg_sink, so (b) and (c) leave hundreds of thousands of jobs in gearmand; with
        # its default 991 hash buckets every later submit and lookup would slow down (hence
        # --hashtable-buckets), and this order keeps even the residue out of rows a, d and e.
        # (a) foreground round trips -------------------------------------------------------
        log("foreground: warm-up ...")
        warm = min(1.0, args.duration / 2)
        timed_loop(clients.fg_ours, warm)
        timed_loop(clients.fg_pyg, warm)
        timed_loop(clients.fg_raw, warm / 2)
        latencies: dict[str, list[float]] = {"ours": [], "pygearman": [], "raw-socket floor": []}
        fg_ops = {
            "ours": clients.fg_ours,
            "pygearman": clients.fg_pyg,
            "raw-socket floor": clients.fg_raw,
        }
        fg = alternate(
            args.runs,
            "foreground",
            lambda lib, run: timed_loop(fg_ops[lib], args.duration, latencies=latencies[lib]),
            libs=("ours", "pygearman", "raw-socket floor"),
        )
        fg["latency_us"] = {}
        for lib, values in latencies.items():
            values.sort()
            fg["latency_us"][lib] = {
                "p50": percentile(values, 0.50) * 1e6,
                "p90": percentile(values, 0.90) * 1e6,
                "p99": percentile(values, 0.99) * 1e6,
                "max": values[-1] * 1e6,
                "samples": len(values),
            }
        results["foreground"] = fg

        # (d) foreground task sets ------------------------------------------------------------
        log(f"task set: warm-up ({args.taskset} jobs per set, {args.workers} echo workers) ...")
        timed_loop(clients.taskset_ours, warm, args.taskset)
        timed_loop(clients.taskset_pyg, warm, args.taskset)
        ts_ops = {"ours": clients.taskset_ours, "pygearman": clients.taskset_pyg}
        results["taskset"] = alternate(
            args.runs,
            "task set",
            lambda lib, run: timed_loop(ts_ops[lib], args.duration, args.taskset),
        )

        # (e) worker drain ---------------------------------------------------------------------
        drain: dict[str, list[dict]] = {"ours": [], "pygearman": []}
        for run in range(args.drain_runs):
            order = ("ours", "pygearman") if run % 2 == 0 else ("pygearman", "ours")
            for lib in order:
                drain[lib].append(
                    measure_drain(harness, clients, lib, args.drain_jobs, run, args.drain_runs)
                )
        results["drain"] = drain

        # (b) background, one at a time ----------------------------------------------------
        log(f"background: warm-up (function {BG_SINK!r} has no worker: its queue grows) ...")
        counted_loop(clients.bg_ours, 200)
        counted_loop(clients.bg_pyg, 200)
        bg_ops = {"ours": clients.bg_ours, "pygearman": clients.bg_pyg}
        results["background"] = alternate(
            args.runs, "background", lambda lib, run: counted_loop(bg_ops[lib], args.bg_jobs)
        )

        # (c) background, pipelined batches -------------------------------------------------
        log(f"background batch: warm-up ({args.batch} jobs per batch) ...")
        counted_loop(clients.bg_many_ours, 1, args.batch)
        counted_loop(clients.bg_many_pyg, 1, args.batch)
        bm_ops = {"ours": clients.bg_many_ours, "pygearman": clients.bg_many_pyg}
        results["background_batch"] = alternate(
            args.runs,
            "background batch",
            lambda lib, run: counted_loop(bm_ops[lib], args.bg_batches, args.batch),
        )
        row = harness.function_status(BG_SINK)
        results["bg_sink_queued_at_end"] = row.total if row else None
        log(f"{BG_SINK} queue now holds {results['bg_sink_queued_at_end']:,} jobs")

        results["foreign_load"] = foreign = load.measure(
            [p for p in harness.children if p.poll() is None]
        )
        rows = build_rows(results)
        print_table(rows)
        elapsed = time.monotonic() - started
        output = args.output or BENCH_DIR / "results" / f"client-{stamp}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "client_bench",
            "timestamp": stamp,
            "elapsed_s": elapsed,
            "environment": env,
            "targets": {
                "foreground_ratio": TARGET_FOREGROUND_RATIO,
                "drain_jobs_per_s": TARGET_DRAIN_JOBS_PER_S,
            },
            "summary": rows,
            "runs": results,
        }
        output.write_text(json.dumps(document, indent=2) + "\n")
        shown = output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output
        print(f"\nresults written to {shown}")
        print(f"total time {elapsed:.1f}s")
        if foreign is not None:
            share = foreign["foreign_share_of_machine"]
            core_seconds = foreign["wall_s"] * (os.cpu_count() or 1)
            print(
                f"other processes used {share:.0%} of the machine's CPU during the run "
                f"({foreign['foreign_core_s']:.1f} of {core_seconds:.0f} core-seconds)"
            )
            if share > 0.05:
                print(
                    "WARNING: the machine was not idle; these numbers are distorted. "
                    "Rerun when it is."
                )
        missed = [row["metric"].strip() for row in rows if row["target_met"] is False]
        return 1 if (args.strict and missed) else 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping workers and gearmand", file=sys.stderr)
        return 130
    finally:
        if clients is not None:
            clients.close()
        harness.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
