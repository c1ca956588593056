"""A round trip through a real Gearman job server: our worker serves, our client submits.

Run by ``scripts/demo``. Starts our embedded job server (``python -m django_gearman.server``;
``--gearmand`` uses Debian's C gearmand instead) on a free loopback port, a worker process
offering ``demo.reverse``, ``demo.send_signup_mail`` and ``demo.count``, then submits a
foreground job, a background job, a task set and a job that reports progress, and stops
everything.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_gearman.gearman import GearmanClient, Job, Task, Worker  # noqa: E402  # noqa: E402
from django_gearman.gearman.admin_client import GearmanAdminClient  # noqa: E402

log = logging.getLogger("django_gearman.demo")


def reverse(job: Job) -> bytes:
    return job.data[::-1]


def send_signup_mail(job: Job) -> str:
    outbox = Path(tempfile.gettempdir()) / "django_gearman_demo_outbox.txt"
    with outbox.open("a") as f:
        f.write(f"To: {job.data.decode()}\nSubject: Welcome!\n\n")
    return str(outbox)


def count_to_three(job: Job) -> str:
    for n in range(1, 4):
        job.send_status(n, 3)
        time.sleep(0.1)
    return "counted"


def run_worker(address: str) -> None:
    worker = Worker([address], client_id="demo-worker")
    for name, function in [
        ("demo.reverse", reverse),
        ("demo.send_signup_mail", send_signup_mail),
        ("demo.count", count_to_three),
    ]:
        worker.register(name, function)
    worker.work()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2])
        return 0
    port = free_port()
    address = f"127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile(suffix=".log") as server_log:
        if "--gearmand" in sys.argv:
            gearmand = shutil.which("gearmand") or "/usr/sbin/gearmand"
            command = [
                gearmand,
                "-L",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                "0",
                f"--log-file={server_log.name}",
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "django_gearman.server",
                address,
                "--log-level",
                "WARNING",
            ]
        server = subprocess.Popen(command, cwd=ROOT)
        worker = None
        try:
            admin = GearmanAdminClient(address)
            deadline = time.monotonic() + 10
            while True:
                try:
                    log.info("job server %s is up (version %s)", address, admin.version())
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            worker = subprocess.Popen([sys.executable, __file__, "--worker", address])
            with GearmanClient([address], timeout=10) as client:
                print(
                    "foreground  demo.reverse('hello') ->", client.submit("demo.reverse", b"hello")
                )
                handle = client.submit_background("demo.send_signup_mail", b"newcomer@example.com")
                print("background  demo.send_signup_mail ->", handle)
                tasks = client.run_tasks(
                    [Task("demo.reverse", w.encode()) for w in ("one", "two", "three")]
                )
                print("task set    ->", [t.result for t in tasks])
                for event in client.stream("demo.count"):
                    print("progress    ->", event)
                deadline = time.monotonic() + 10
                while client.get_status(handle).known and time.monotonic() < deadline:
                    time.sleep(0.05)
                print(
                    "signup mail written to",
                    Path(tempfile.gettempdir()) / "django_gearman_demo_outbox.txt",
                )
            print("status      ->", admin.status())
            print("workers     ->", [w for w in admin.workers() if w.functions])
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(10)
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
