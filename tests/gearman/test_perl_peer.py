"""Perl's Gearman::Client and Gearman::Worker (Debian libgearman-client-perl) as a fourth real
peer: Perl worker with our client, Perl client with our worker, against both servers (#14).

Perl's worker sends WORK_COMPLETE with the handle alone for a result of ``"0"`` or ``""``;
our server takes the missing argument as empty, so the job completes (with ``b""``: Perl put
nothing on the wire that tells ``"0"`` apart) and the worker lives on. gearmand 1.1.20 drops
that worker's connection and the client never hears back (asserted below as what it does).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.errors import JobTimeout
from tests.helpers import wait_for, worker_thread
from tests.peers import BackgroundProcess, require_peer

pytestmark = pytest.mark.interop

PERL_DIR = Path(__file__).resolve().parent.parent / "perl"


def _perl_with_gearman() -> str | None:
    perl = shutil.which("perl")
    if perl is None:
        return None
    found = subprocess.run(
        [perl, "-MGearman::Client", "-MGearman::Worker", "-e", "1"], capture_output=True
    )
    return perl if found.returncode == 0 else None


@pytest.fixture
def perl() -> str:
    return require_peer("perl Gearman::Client", _perl_with_gearman())


@pytest.fixture
def perl_worker(perl, gearman_server) -> Iterator[str]:
    """A Perl worker on the server; yields the prefix of its function names."""
    prefix = f"perl{uuid.uuid4().hex[:8]}"
    process = BackgroundProcess(
        [perl, str(PERL_DIR / "worker_peer.pl"), gearman_server.address, prefix]
    )
    try:
        process.wait_for("ready")
        yield prefix
    finally:
        process.stop()


def perl_client(perl: str, server, *args: str) -> str:
    result = subprocess.run(
        [perl, str(PERL_DIR / "client_peer.pl"), server.address, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_our_client_runs_jobs_on_a_perl_worker(gearman_server, perl_worker) -> None:
    with GearmanClient([gearman_server.address], timeout=20) as client:
        assert client.submit(f"{perl_worker}.reverse", b"stressed") == b"desserts"
        statuses = []
        result = client.submit(
            f"{perl_worker}.progress", b"done", on_status=lambda s: statuses.append(s)
        )
        assert result == b"done"
        assert [(s.numerator, s.denominator) for s in statuses] == [(1, 2)]


@pytest.mark.parametrize("kind", ["zero", "empty"])
def test_a_perl_worker_returning_zero_or_empty(gearman_server, perl_worker, kind: str) -> None:
    # Perl sends no data argument for either (its test is Perl truth, and "0" is false), so
    # nothing on the wire tells "0" from "": the client gets b"" for both.
    expected = b""
    with GearmanClient([gearman_server.address], timeout=5) as client:
        if gearman_server.kind == "gearmand":
            # gearmand 1.1.20 drops the worker on the handle-only WORK_COMPLETE: no result.
            with pytest.raises(JobTimeout):
                client.submit(f"{perl_worker}.{kind}", b"x")
            return
        assert client.submit(f"{perl_worker}.{kind}", b"x") == expected
        # The worker is still there for the next job (it was not dropped or killed).
        assert client.submit(f"{perl_worker}.reverse", b"ab") == b"ba"


def test_a_perl_client_runs_jobs_on_our_worker(gearman_server, perl) -> None:
    name = f"py{uuid.uuid4().hex[:8]}.upper"
    with worker_thread(gearman_server.address, {name: lambda job: job.data.upper()}):
        assert perl_client(perl, gearman_server, "do", name, "hello") == "result:HELLO"


def test_a_perl_client_background_job_and_unique_coalescing(gearman_server, perl) -> None:
    name = f"py{uuid.uuid4().hex[:8]}.record"
    first = perl_client(perl, gearman_server, "background", name, "a", "same-key")
    second = perl_client(perl, gearman_server, "background", name, "b", "same-key")
    assert first.startswith("handle:") and first == second  # coalesced on the unique key
    seen: list[bytes] = []
    with worker_thread(gearman_server.address, {name: lambda job: seen.append(job.data)}) as w:
        wait_for(lambda: w.jobs_done >= 1, timeout=15, what="the background job")
    assert seen == [b"a"]
