"""Start and stop job servers for the benchmarks: Debian's gearmand and ours, on free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A job server subprocess bound to 127.0.0.1; ``stop()`` always reaps it."""

    def __init__(self, kind: str, *, queue: str = "memory", threads: int = 0) -> None:
        self.kind = kind
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix=f"bench-{kind}-")
        if kind == "gearmand":
            binary = shutil.which("gearmand") or "/usr/sbin/gearmand"
            cmd = [binary, "-L", "127.0.0.1", "-p", str(self.port), "-t", str(threads), f"--log-file={self.dir}/log",
                   f"--pid-file={self.dir}/pid", "--config-file=/dev/null", "--verbose=WARNING"]  # fmt: skip
        elif kind == "embedded":
            cmd = [sys.executable, "-m", "django_gearman.server", self.address, "--queue", queue, "--log-level", "WARNING"]
        else:
            raise ValueError(kind)
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/stderr", "wb"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"getpid\n")
                    if sock.recv(100).strip() == f"OK {self.process.pid}".encode():
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} did not start on {self.address}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        """Resident memory in bytes (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def save(name: str, results: dict) -> Path:
    import json

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    return path


os.environ.setdefault("PYTHONPATH", str(ROOT))
