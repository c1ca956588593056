"""Every ``gearadmin`` flag gives the same output against our server as against gearmand.

Both servers are started side by side and brought into the same state (the same queued jobs,
an idle worker with a client id); then each flag's output is compared line for line, after
replacing what legitimately differs: job handles (they name the host and a counter), file
descriptors, process ids and version strings.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.protocol.constants import Priority
from tests.helpers import wait_for, worker_thread
from tests.peers import EmbeddedServer, Gearmand, gearadmin_path, gearmand_path

pytestmark = pytest.mark.interop

JOBS = [  # function, data, priority, unique
    ("ga_a", b"1", Priority.HIGH, "ua1"),
    ("ga_a", b"2", Priority.LOW, "ua2"),
    ("ga_a", b"3", Priority.NORMAL, "ua3"),
    ("ga_b", b"4", Priority.NORMAL, "ub1"),
]


@pytest.fixture
def both() -> Iterator[dict[str, Gearmand]]:
    """Our server and gearmand, each with the jobs above queued and an idle worker attached."""
    gearmand_path()
    servers = {"embedded": EmbeddedServer(), "gearmand": Gearmand()}
    try:
        for server in servers.values():
            server.start()
            with GearmanClient([server.address]) as client:
                for function, data, priority, unique in JOBS:
                    client.submit_background(function, data, priority=priority, unique=unique)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def gearadmin(server: Gearmand, *args: str) -> str:
    process = subprocess.run(
        [gearadmin_path(), "-h", server.host, "-p", str(server.port), *args],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return process.stdout + process.stderr


def normalized(text: str, server: Gearmand) -> list[str]:
    """Lines with handles, fds, pids and versions replaced, sorted where order is a hash's."""
    text = re.sub(r"H:[^\t\s]+:\d+", "H:<host>:<n>", text)
    text = text.replace(str(server.pid), "<pid>")
    text = re.sub(r"^\d+ 127\.0\.0\.1", "<fd> 127.0.0.1", text, flags=re.M)
    return sorted(text.splitlines())


def compare(servers: dict[str, Gearmand], *args: str) -> list[str]:
    outputs = {
        kind: normalized(gearadmin(server, *args), server) for kind, server in servers.items()
    }
    assert outputs["embedded"] == outputs["gearmand"], f"gearadmin {' '.join(args)}"
    return outputs["embedded"]


def test_read_only_flags_match(both: dict[str, Gearmand]) -> None:
    workers = [
        worker_thread([server.address], {"ga_c": lambda job: job.data}, client_id="ga-worker")
        for server in both.values()
    ]
    for worker in workers:
        worker.__enter__()
    try:
        for server in both.values():
            with GearmanAdminClient(server.address) as admin:
                wait_for(
                    lambda admin=admin: any(w.client_id == "ga-worker" for w in admin.workers())
                )
        status = compare(both, "--status")
        assert status == [".", "ga_a\t3\t0\t0", "ga_b\t1\t0\t0", "ga_c\t0\t0\t1"]
        priority = compare(both, "--priority-status")
        assert "ga_a\t1\t1\t1\t0" in priority and "ga_b\t0\t1\t0\t0" in priority
        workers_out = compare(both, "--workers")
        assert any(line.endswith("ga-worker : ga_c") for line in workers_out)
        jobs = compare(both, "--show-jobs")
        assert jobs.count("H:<host>:<n>\t0\t0\t1") == len(JOBS)
        uniques = compare(both, "--show-unique-jobs")
        assert [u for u in uniques if u.startswith("u")] == sorted(u for *_, u in JOBS)
        assert compare(both, "--getpid") == ["<pid>"]
        assert compare(both, "--server-verbose") == normalized(
            gearadmin(both["gearmand"], "--server-verbose"), both["gearmand"]
        )
        for kind, server in both.items():  # the version differs in its text, not its shape
            version = gearadmin(server, "--server-version").strip()
            assert re.fullmatch(r"1\.1\.\d+[\w.+-]*", version), (kind, version)
    finally:
        for worker in workers:
            worker.__exit__(None, None, None)


def test_cancel_drop_and_create_match(both: dict[str, Gearmand]) -> None:
    for server in both.values():
        with GearmanAdminClient(server.address) as admin:
            server.first_job = sorted(job.handle for job in admin.show_jobs())[0]  # type: ignore[attr-defined]

    def each(*args: str) -> list[str]:
        """Run gearadmin with a per-server argument (``{job}``) and compare the outputs."""
        outputs = {
            kind: normalized(
                gearadmin(server, *(a.format(job=server.first_job) for a in args)), server
            )  # type: ignore[attr-defined]
            for kind, server in both.items()
        }
        assert outputs["embedded"] == outputs["gearmand"], f"gearadmin {' '.join(args)}"
        return outputs["embedded"]

    assert each("--cancel-job", "{job}") == ["OK"]
    assert each("--cancel-job", "{job}") == ["OK"]  # again: still OK on gearmand
    jobs = compare(both, "--show-jobs")
    assert "H:<host>:<n>\t0\t1\t0" in jobs  # the cancelled job stays listed, ignored
    assert compare(both, "--cancel-job", "H:nope:1") == ["Error: UNKNOWN_JOB"]
    assert compare(both, "--drop-function", "never_existed") == ["Error: function not found"]
    with worker_thread([s.address for s in both.values()], {"ga_busy": lambda job: b""}):
        for server in both.values():
            with GearmanAdminClient(server.address) as admin:
                wait_for(
                    lambda admin=admin: any(
                        r.function == "ga_busy" and r.available_workers for r in admin.status()
                    )
                )
        assert compare(both, "--drop-function", "ga_busy") == [
            "Error: there are still connected workers or executing clients"
        ]
    # gearmand keeps a function its last worker left; ours forgets it (nothing refers to it):
    # drop it on gearmand so both list the same.
    gearadmin(both["gearmand"], "--drop-function", "ga_busy")
    assert compare(both, "--drop-function", "GA_B") == ["OK"]  # queued jobs do not stop a drop
    assert compare(both, "--create-function", "ga_new") == ["OK"]
    status = compare(both, "--status")
    assert "ga_new\t0\t0\t0" in status and not any(line.startswith("ga_b\t") for line in status)
    assert compare(both, "--drop-function", "ga_new") == ["OK"]
