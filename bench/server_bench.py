#!/usr/bin/env python3
"""Job server throughput: the embedded asyncio server against Debian's C gearmand, side by side.

Run from the repository root::

    python bench/server_bench.py                      # full run, about 2-3 minutes
    python bench/server_bench.py --quick              # smaller run, about 30-40 seconds
    python bench/server_bench.py --servers gearmand   # only one server

Load comes from ``bench/loadgen.c``, a small C load generator (epoll, binary protocol, no
libgearman) compiled here with ``cc -O2`` into ``bench/.build/``. For each server in turn this
starts a fresh server on a free 127.0.0.1 port for every measurement and always stops it again
(also on Ctrl+C), then prints a table with the ratio embedded/gearmand and the targets, and
writes the raw numbers to ``bench/results/server-<timestamp>.json``. See bench/SERVER.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / ".build"
RESULTS_DIR = BENCH_DIR / "results"
LOADGEN_SRC = BENCH_DIR / "loadgen.c"
LOADGEN = BUILD_DIR / "loadgen"
HOST = "127.0.0.1"  # all traffic stays on the loopback interface
SERVERS = ("gearmand", "embedded")
CLK_TCK = os.sysconf("SC_CLK_TCK")

FG_CLIENTS = 8
FG_WORKERS = 4
DRAIN_WORKERS = 4
BG_CONNS = 4
BG_WINDOW = 1000
PAYLOAD = 100

FULL = {
    "runs": 3,
    "fg_warmup": 1.0,
    "fg_duration": 5.0,
    "bg_count": 200_000,
    "bg_runs": 5,
    "drain_count": 100_000,
    "mem_count": 1_000_000,
    "deep_count": 1_000_000,
    "deep_time_limit": 40.0,
    "time_limit": 30.0,
}
QUICK = {
    "runs": 1,
    "fg_warmup": 0.5,
    "fg_duration": 2.0,
    "bg_count": 200_000,
    "bg_runs": 1,
    "drain_count": 100_000,
    "mem_count": 100_000,
    "deep_count": 200_000,
    "deep_time_limit": 10.0,
    "time_limit": 15.0,
}

# Targets from the issue, as ratios embedded/gearmand (memory: bytes per queued job).
TARGETS = {
    "fg_jobs_per_s": (">=", 0.5),
    "bg_submits_per_s": (">=", 0.25),
    "drain_jobs_per_s": (">=", 0.5),
    "rss_bytes_per_job": ("<=", 1.0),
}
# Ratios within one server: the deep drain within 2x of the 100k drain rate, and durable
# background submits at least half the in-memory rate.
OWN_RATIOS = {"deep_vs_drain": 0.5, "durable_vs_memory": 0.5}
# Ratios within one server shown for information (no target).
INFO_RATIOS = {"fsync_vs_durable"}
NOISY_CORES = 0.15  # other processes using more than this make a row suspect


class Unavailable(Exception):
    """The server under test cannot be started here."""


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


# ---- loadgen -------------------------------------------------------------------------------


def build_loadgen() -> Path:
    """Compile bench/loadgen.c unless the binary is newer than the source."""
    BUILD_DIR.mkdir(exist_ok=True)
    ignore = BUILD_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# build output of bench/server_bench.py\n*\n")
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return LOADGEN
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("server_bench: no C compiler (cc) found; install gcc")
    log(f"building {LOADGEN.relative_to(REPO_ROOT)}")
    tmp = LOADGEN.with_suffix(".tmp")
    subprocess.run([compiler, "-O2", "-o", str(tmp), str(LOADGEN_SRC)], check=True, timeout=120)
    tmp.replace(LOADGEN)
    return LOADGEN


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child if this benchmark process dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def loadgen(mode: str, server: Server, *, timeout: float, **options: object) -> dict:
    """Run one loadgen measurement against ``server``; return its JSON line plus CPU accounting.

    ``options`` become loadgen flags: ``time_limit=5`` is ``--time-limit 5``, ``x=True`` is ``--x``.
    """
    server_pid = server.pid
    argv = [str(LOADGEN), mode, "--port", str(server.port), "--server-pid", str(server_pid)]
    for key, value in options.items():
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    before = _cpu_snapshot(server_pid)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = _cpu_snapshot(server_pid)
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(
            f"loadgen {mode} printed no result (exit {proc.returncode}): "
            f"{err.decode(errors='replace')[-500:]}"
        ) from None
    if "error" in result:
        raise RuntimeError(f"loadgen {mode}: {result['error']}")
    wall = after["wall"] - before["wall"]
    server = after["server"] - before["server"]
    load = after["children"] - before["children"]
    busy = after["busy"] - before["busy"]
    others = other_processes_cpu(before["procs"], after["procs"], exclude={server_pid, proc.pid})
    # Whole run, in cores: the server, loadgen, other user-space processes on the machine, and
    # everything else that kept a CPU busy (mostly the kernel's loopback networking in softirq).
    result["run"] = {
        "wall_s": round(wall, 3),
        "server_cores": round(server / wall, 3),
        "loadgen_cores": round(load / wall, 3),
        "other_processes_cores": round(others / wall, 3),
        "kernel_cores": round(max(0.0, busy - server - load - others) / wall, 3),
    }
    return result


def _cpu_snapshot(pid: int) -> dict:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall": time.monotonic(),
        "server": proc_cpu(pid),
        "children": usage.ru_utime + usage.ru_stime,
        "busy": system_busy(),
        "procs": user_processes(),
    }


def user_processes() -> dict[int, tuple[str, float]]:
    """CPU seconds of every user-space process: pid -> (start time, utime + stime)."""
    procs = {}
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            text = Path(entry.path, "stat").read_text()
            if not Path(entry.path, "cmdline").read_bytes():
                continue  # a kernel thread
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        procs[int(entry.name)] = (fields[19], (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return procs


def other_processes_cpu(before: dict, after: dict, exclude: set[int]) -> float:
    """CPU seconds that processes other than ours used between two snapshots."""
    total = 0.0
    for pid, (start, cpu) in after.items():
        if pid in exclude:
            continue
        old = before.get(pid)
        total += cpu - old[1] if old and old[0] == start else cpu
    return total


def machine_load(seconds: float = 1.0) -> float:
    """Cores that other user-space processes are using right now."""
    before = user_processes()
    time.sleep(seconds)
    return other_processes_cpu(before, user_processes(), exclude=set()) / seconds


def proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy() -> float:
    """CPU seconds all processes on this machine spent not idle, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK


# ---- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def embedded_importable() -> bool:
    """Whether ``django_gearman.server`` imports (checked in a child: it may be half-written)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import django_gearman.server"],
        cwd=REPO_ROOT,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class Server:
    """One job server subprocess on a free 127.0.0.1 port; ``stop()`` always reaps it."""

    def __init__(
        self, kind: str, *, durable: bool = False, fsync: bool = False, loop: str = "asyncio"
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"server-bench-{kind}-"))
        self.banner = ""
        self.version = ""
        if kind == "gearmand":
            binary = shutil.which("gearmand") or "/usr/sbin/gearmand"
            if not os.access(binary, os.X_OK):
                raise Unavailable("gearmand is not installed (apt-get install gearman-job-server)")
            argv = [
                binary,
                "-L",
                HOST,
                "-p",
                str(self.port),
                "-t",
                "0",
                f"--log-file={self.dir / 'log'}",
                f"--pid-file={self.dir / 'pid'}",
                "--config-file=/dev/null",
                "--verbose=WARNING",
            ]
            if durable:
                argv += ["-q", "libsqlite3", f"--libsqlite3-db={self.dir / 'queue.sqlite3'}"]
        elif kind == "embedded":
            argv = [
                sys.executable,
                "-m",
                "django_gearman.server",
                f"{HOST}:{self.port}",
                "--queue",
                str(self.dir / "queue.sqlite3") if durable else "memory",
                "--loop",
                loop,
                "--log-level",
                "WARNING",
            ]
            if fsync:
                argv.append("--fsync")  # synchronous=FULL: the WAL is fsynced at every commit
        else:
            raise ValueError(kind)
        env = server_env()
        self.stdout = open(self.dir / "stdout", "wb")
        self.stderr = open(self.dir / "stderr", "wb")
        self.process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=self.stderr,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready(timeout=20.0)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise Unavailable(
                    f"{self.kind} exited with {self.process.returncode}: {self.tail()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                    sock.sendall(b"version\n")
                    reply = sock.recv(200)
                    if reply.startswith(b"OK"):
                        self.version = reply[2:].decode(errors="replace").strip()
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"{self.kind} did not answer on {HOST}:{self.port}: {self.tail()}"
                )
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.banner = (self.dir / "stdout").read_text().strip()

    def tail(self) -> str:
        text = ""
        for name in ("stderr", "log"):
            with contextlib.suppress(OSError):
                text += (self.dir / name).read_text(errors="replace")
        return text.strip()[-600:] or "(no output)"

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        """Resident set size in bytes (VmRSS from /proc/PID/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                # gearmand can miss a SIGTERM that arrives while it is still starting up: retry,
                # then SIGKILL.
                for _ in range(3):
                    self.process.terminate()
                    try:
                        self.process.wait(2.0)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                else:
                    self.process.kill()
                    self.process.wait()
        finally:
            self.stdout.close()
            self.stderr.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- measurements --------------------------------------------------------------------------


def bench_server(kind: str, cfg: dict) -> dict:
    """All measurements for one server; a fresh server for each run."""
    runs = cfg["runs"]
    limit = cfg["time_limit"]
    out: dict = {
        "fg": [],
        "bg": [],
        "bg_durable": [],
        "bg_fsync": [],
        "drain": [],
        "drain_prefill": [],
    }
    loop = cfg["loop"]

    for i in range(runs):
        log(f"{kind}: foreground run {i + 1}/{runs}")
        with Server(kind, loop=loop) as server:
            out.setdefault("version", server.version)
            out.setdefault("banner", server.banner)
            fg_time = cfg["fg_warmup"] + cfg["fg_duration"]
            fg = loadgen(
                "fg",
                server,
                timeout=fg_time + 60,
                clients=FG_CLIENTS,
                workers=FG_WORKERS,
                payload=PAYLOAD,
                warmup=cfg["fg_warmup"],
                duration=cfg["fg_duration"],
                function="bench_fg",
            )
            out["fg"].append(fg)

    bg_runs = max(runs, cfg["bg_runs"])  # about a second each, and the noisiest row: more runs
    for i in range(bg_runs):
        log(f"{kind}: background submit run {i + 1}/{bg_runs} ({cfg['bg_count']:,} jobs)")
        with Server(kind, loop=loop) as server:
            out["bg"].append(submit(server, cfg, cfg["bg_count"], "bench_bg", f"bg{i}", limit))

    for i in range(bg_runs):
        log(
            f"{kind}: durable background submit run {i + 1}/{bg_runs} ({cfg['bg_count']:,} jobs, "
            "SQLite)"
        )
        with Server(kind, durable=True, loop=loop) as server:
            # gearmand's libsqlite3 queue commits every job on its own (about 1,300/s here):
            # a short limit keeps its five runs from taking minutes.
            out["bg_durable"].append(
                submit(server, cfg, cfg["bg_count"], "bench_bg", f"bgd{i}", min(limit, 8.0))
            )

    # gearmand has no such switch: its libsqlite3 queue fsyncs every job already (SQLite's
    # default synchronous=FULL, rollback journal: 4 fdatasyncs per job), so its durable runs
    # stand for this row too.
    for i in range(bg_runs if kind == "embedded" else 0):
        log(
            f"{kind}: durable background submit run with --fsync {i + 1}/{bg_runs} "
            f"({cfg['bg_count']:,} jobs, SQLite)"
        )
        with Server(kind, durable=True, fsync=True, loop=loop) as server:
            out["bg_fsync"].append(
                submit(server, cfg, cfg["bg_count"], "bench_bg", f"bgf{i}", limit)
            )

    for i in range(runs):
        log(f"{kind}: drain run {i + 1}/{runs} ({cfg['drain_count']:,} queued)")
        with Server(kind, loop=loop) as server:
            prefill = submit(server, cfg, cfg["drain_count"], "bench_drain", f"d{i}", limit)
            out["drain_prefill"].append(prefill)
            out["drain"].append(drain(server, prefill["acked"], "bench_drain", limit))

    mem, deep = cfg["mem_count"], cfg["deep_count"]
    log(f"{kind}: memory with {mem:,} queued, then drain from {deep:,} queued")
    with Server(kind) as server:
        time.sleep(0.2)
        before = server.rss()
        fill = submit(server, cfg, mem, "bench_deep", "m", cfg["fill_time_limit"])
        time.sleep(0.5)
        after = server.rss()
        out["memory"] = {
            "queued": fill["acked"],
            "rss_before": before,
            "rss_after": after,
            "bytes_per_job": (after - before) / max(1, fill["acked"]),
            "submit": fill,
        }
        queued = fill["acked"]
        if deep > queued:
            top = submit(server, cfg, deep - queued, "bench_deep", "m2", cfg["fill_time_limit"])
            queued += top["acked"]
        out["deep_drain"] = drain(server, queued, "bench_deep", cfg["deep_time_limit"])
    return out


def submit(server: Server, cfg: dict, count: int, function: str, prefix: str, limit: float) -> dict:
    """Pipeline ``count`` background jobs into ``server`` (no workers)."""
    uniques = {"unique_prefix": prefix} if cfg["uniques"] == "distinct" else {"empty_unique": True}
    return loadgen(
        "bg-submit",
        server,
        timeout=limit + 60,
        conns=BG_CONNS,
        window=BG_WINDOW,
        payload=PAYLOAD,
        count=count,
        function=function,
        time_limit=limit,
        **uniques,
    )


def drain(server: Server, count: int, function: str, limit: float) -> dict:
    """Drain ``count`` queued jobs of ``function`` with DRAIN_WORKERS echo workers."""
    return loadgen(
        "drain",
        server,
        timeout=limit + 60,
        workers=DRAIN_WORKERS,
        payload=PAYLOAD,
        count=count,
        function=function,
        time_limit=limit,
    )


def summarize(raw: dict) -> dict:
    """Medians of the runs, one number per table row."""
    med = statistics.median

    def cpu(rows: list[dict]) -> dict:
        return {
            "server_cores": med(r["server_cpu"] for r in rows),
            "loadgen_cores": med(
                r["loadgen_cpu"] + r.get("loadgen_worker_process_cpu", 0) for r in rows
            ),
            "other_processes_cores": med(r["run"]["other_processes_cores"] for r in rows),
            "kernel_cores": med(r["run"]["kernel_cores"] for r in rows),
        }

    deep = raw["deep_drain"]
    drain_rate = med(r["jobs_per_s"] for r in raw["drain"])
    memory = med(r["submits_per_s"] for r in raw["bg"])
    durable = med(r["submits_per_s"] for r in raw["bg_durable"])
    fsync_runs = raw.get("bg_fsync") or []
    fsync = med(r["submits_per_s"] for r in fsync_runs) if fsync_runs else None
    return {
        "fg_jobs_per_s": med(r["jobs_per_s"] for r in raw["fg"]),
        "fg_p50_ms": med(r["p50_ms"] for r in raw["fg"]),
        "fg_p99_ms": med(r["p99_ms"] for r in raw["fg"]),
        "bg_submits_per_s": med(r["submits_per_s"] for r in raw["bg"]),
        "bg_durable_submits_per_s": med(r["submits_per_s"] for r in raw["bg_durable"]),
        "drain_jobs_per_s": drain_rate,
        "rss_bytes_per_job": raw["memory"]["bytes_per_job"],
        "deep_drain_jobs_per_s": deep["jobs_per_s"],
        "deep_drain_complete": deep["complete"],
        "deep_drain_jobs": deep["jobs"],
        "deep_drain_seconds": deep["seconds"],
        "deep_vs_drain": deep["jobs_per_s"] / drain_rate if drain_rate else None,
        "durable_vs_memory": durable / memory if memory else None,
        # Without runs of its own (gearmand: it always fsyncs), the durable rate stands in.
        "bg_fsync_submits_per_s": fsync if fsync is not None else durable,
        "fsync_vs_durable": fsync / durable if fsync is not None and durable else None,
        "cpu": {
            "fg": cpu(raw["fg"]),
            "bg": cpu(raw["bg"]),
            "bg_durable": cpu(raw["bg_durable"]),
            **({"bg_fsync": cpu(fsync_runs)} if fsync_runs else {}),
            "drain": cpu(raw["drain"]),
            "deep_drain": cpu([deep]),
        },
    }


# ---- report --------------------------------------------------------------------------------


def short(count: int) -> str:
    """1_000_000 -> "1M", 200_000 -> "200k"."""
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count % 1000 == 0:
        return f"{count // 1000}k"
    return f"{count:,}"


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{value:,.0f}/s"
    if kind == "ms":
        return f"{value:.3f} ms"
    if kind == "bytes":
        return f"{value:,.0f} B"
    if kind == "ratio":
        return f"{value:.2f}x"
    return str(value)


def report(summary: dict, raw: dict, cfg: dict) -> list[str]:
    """The comparison table, notes on partial runs, and where the CPU went."""
    g, e = summary.get("gearmand"), summary.get("embedded")
    drain_n, mem_n, deep_n = (short(cfg[k]) for k in ("drain_count", "mem_count", "deep_count"))
    workers = f"{DRAIN_WORKERS} workers"
    fg = f"{FG_CLIENTS} clients, {FG_WORKERS} workers"
    rows = [
        ("fg_jobs_per_s", "rate", f"foreground jobs/s ({fg})"),
        ("fg_p50_ms", "ms", "foreground p50 round trip"),
        ("fg_p99_ms", "ms", "foreground p99 round trip"),
        ("bg_submits_per_s", "rate", f"background submits/s (pipelined, {BG_CONNS}x{BG_WINDOW})"),
        ("bg_durable_submits_per_s", "rate", "  the same, durable (SQLite queue)"),
        ("durable_vs_memory", "ratio", "  durable rate / in-memory rate"),
        ("bg_fsync_submits_per_s", "rate", "  the same, durable with --fsync"),
        ("fsync_vs_durable", "ratio", "  --fsync rate / durable rate"),
        ("drain_jobs_per_s", "rate", f"drain jobs/s, {drain_n} queued, {workers}"),
        ("rss_bytes_per_job", "bytes", f"server RSS per queued job ({mem_n} queued)"),
        ("deep_drain_jobs_per_s", "rate", f"drain jobs/s, {deep_n} queued, {workers}"),
        ("deep_vs_drain", "ratio", f"  {deep_n} drain rate / {drain_n} drain rate"),
    ]
    table = [("metric", "gearmand", "embedded", "embedded/gearmand", "target", "")]
    for key, kind, label in rows:
        gv = g[key] if g else None
        ev = e[key] if e else None
        own = key in OWN_RATIOS or key in INFO_RATIOS
        ratio = ev / gv if gv and ev is not None and not own else None
        target, verdict = "", ""
        if key in TARGETS:
            op, bound = TARGETS[key]
            target = f"{op} {bound}x"
            if ratio is not None:
                verdict = "ok" if (ratio >= bound if op == ">=" else ratio <= bound) else "MISSED"
        elif key in OWN_RATIOS:
            target = f">= {OWN_RATIOS[key]}x (embedded)"
            if ev is not None:
                verdict = "ok" if ev >= OWN_RATIOS[key] else "MISSED"
        table.append((label, fmt(gv, kind), fmt(ev, kind), fmt(ratio, "ratio"), target, verdict))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(" | ".join(cells).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))

    for name, runs in raw.items():
        partial = [
            r
            for phase in ("bg", "bg_durable", "bg_fsync", "drain_prefill", "drain")
            for r in runs.get(phase, [])
        ]
        partial += [runs["memory"]["submit"], runs["deep_drain"]]
        for r in partial:
            if not r["complete"]:
                done = r.get("acked", r.get("jobs"))
                lines.append(
                    f"note: {name} {r['mode']} stopped at its time limit after {done:,} of "
                    f"{r.get('count', r.get('expected')):,} jobs ({r['seconds']:.0f} s); "
                    "its rate is over that part"
                )

    if g and "gearmand" in raw and not raw["gearmand"].get("bg_fsync"):
        lines.append(
            "note: gearmand has no --fsync: its libsqlite3 queue fsyncs every job already, so its "
            "--fsync row is its durable row"
        )

    lines.append("")
    lines.append(f"CPU use in cores, of {os.cpu_count()} (medians). server, loadgen: over the")
    lines.append("measured window; kernel (CPU time charged to no process) and other processes:")
    lines.append("over the whole loadgen run.")
    lines.append("  server     phase        server  loadgen   kernel  other processes")
    noisy = False
    for name, s in summary.items():
        for phase, c in s["cpu"].items():
            flag = ""
            if c["other_processes_cores"] > NOISY_CORES:
                flag, noisy = "  <- machine busy", True
            lines.append(
                f"  {name:<10} {phase:<10} {c['server_cores']:8.2f} {c['loadgen_cores']:8.2f} "
                f"{c['kernel_cores']:8.2f} {c['other_processes_cores']:16.2f}{flag}"
            )
    if noisy:
        lines.append("warning: other processes used CPU during some measurements; rerun when quiet")
    return lines


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one run per row, smaller queues (about 30-40 s)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers to measure: gearmand, embedded (default: both)",
    )
    parser.add_argument("--runs", type=int, help="runs per throughput row (default 3, --quick 1)")
    parser.add_argument(
        "--uniques",
        choices=["empty", "distinct"],
        default="empty",
        help="unique keys of the background jobs: empty (default; what most clients "
        "send) or distinct per job (gearmand's default 991-bucket unique hash makes "
        "that quadratic: its 1M rows then stop at their time limits)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the embedded server (default asyncio; uvloop if installed)",
    )
    options = parser.parse_args(argv)
    kinds = [k.strip() for k in options.servers.split(",") if k.strip()]
    for k in kinds:
        if k not in SERVERS:
            parser.error(f"unknown server {k!r}; choose from {', '.join(SERVERS)}")
    cfg = dict(QUICK if options.quick else FULL)
    if options.runs:
        cfg["runs"] = max(1, min(options.runs, 9))
    cfg["uniques"] = options.uniques
    cfg["loop"] = options.loop
    cfg["fill_time_limit"] = 60.0

    # SIGTERM unwinds like Ctrl+C, so every finally/with below stops its server.
    signal.signal(signal.SIGTERM, _interrupt)
    build_loadgen()
    busy = machine_load()
    if busy > NOISY_CORES:
        print(
            f"warning: other processes are using {busy:.2f} cores right now; numbers will be noisy",
            flush=True,
        )
    started = time.monotonic()
    raw: dict = {}
    summary: dict = {}
    try:
        for kind in kinds:
            if kind == "embedded" and not embedded_importable():
                print("embedded: not available", flush=True)
                continue
            try:
                raw[kind] = bench_server(kind, cfg)
            except Unavailable as error:
                print(f"{kind}: not available ({error})", flush=True)
                continue
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                print(f"{kind}: failed, left out of the table ({error})", flush=True)
                continue
            summary[kind] = summarize(raw[kind])
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    if not summary:
        print("no server could be measured", file=sys.stderr)
        return 1

    elapsed = time.monotonic() - started
    print()
    print(
        f"Job servers, {'quick' if options.quick else 'full'} run "
        f"({'median of ' + str(cfg['runs']) if cfg['runs'] > 1 else '1 run'} per throughput row), "
        f"{os.cpu_count()} CPUs, {elapsed:.0f} s"
    )
    for name in summary:
        banner = raw[name].get("banner") or ""
        print(f"  {name} {raw[name].get('version', '')}{': ' + banner if banner else ''}")
    print(f"  background jobs' unique keys: {cfg['uniques']}")
    print()
    for line in report(summary, raw, cfg):
        print(line)

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"server-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "quick": options.quick,
                "config": cfg,
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                },
                "summary": summary,
                "raw": raw,
            },
            indent=2,
        )
    )
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
