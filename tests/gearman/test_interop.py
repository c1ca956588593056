"""Both directions with the real peers: PHP (pecl gearman) and the gearman CLI.

Our client served by a PHP worker; PHP clients and ``gearman -f`` served by our worker;
``gearadmin`` and our admin client reading the same gearman_server.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from django_gearman.gearman import GearmanClient, Priority, Task
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import JobException, JobFailed
from django_gearman.gearman.worker import Job
from tests.helpers import wait_for, worker_thread

pytestmark = pytest.mark.interop


# -- our client, PHP worker ---------------------------------------------------------------


def test_our_client_php_worker(gearman_server, php) -> None:
    php.worker(gearman_server.address, "--id", "php-worker")
    with GearmanClient([gearman_server.address], timeout=15) as client:
        assert client.submit("php_reverse", b"hello") == b"olleh"
        assert client.submit("php_upper", b"abc", priority=Priority.HIGH) == b"ABC"
        payload = json.dumps({"args": [1, "two"], "kwargs": {"x": None}}).encode()
        assert json.loads(client.submit("php_json", payload)) == {
            "got": {"args": [1, "two"], "kwargs": {"x": None}},
            "lang": "php",
        }
        events = list(client.stream("php_status"))
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["WorkStatus", "WorkData", "WorkWarning", "WorkComplete"]
        assert (events[0].numerator, events[0].denominator) == (1, 2)
        assert (
            events[1].data == b"chunk"
            and events[2].data == b"careful"
            and events[3].result == b"done"
        )
        with pytest.raises(JobFailed):
            client.submit("php_fail", b"x")
        with pytest.raises(JobException) as info:
            client.submit("php_exception", b"x")
        assert info.value.data == b"Unable to add worker function"  # what pecl always sends
        # the PHP worker keeps serving after the exception
        assert client.submit("php_echo", b"still here") == b"still here"


def test_our_task_set_and_background_php_worker(gearman_server, php) -> None:
    php.worker(gearman_server.address)
    with GearmanClient([gearman_server.address], timeout=15) as client:
        tasks = client.run_tasks([Task("php_reverse", str(n).encode() + b"!") for n in range(20)])
        assert [t.result for t in tasks] == [b"!" + str(n).encode()[::-1] for n in range(20)]
        handle = client.submit_background("php_echo", b"bg")
        wait_for(lambda: not client.get_status(handle).known, what="background job done")


# -- PHP client, our worker ---------------------------------------------------------------


def py_reverse(job: Job) -> bytes:
    return job.data[::-1]


def py_progress(job: Job) -> str:
    job.send_status(1, 4)
    job.send_data(b"piece")
    return "finished"


def py_explode(job: Job) -> None:
    raise RuntimeError("python says no")


def py_fail(job: Job) -> None:
    raise JobFailed("refused")


PY_FUNCTIONS = {
    "py_reverse": py_reverse,
    "py_progress": py_progress,
    "py_explode": py_explode,
    "py_fail": py_fail,
}


def test_php_client_foreground_our_worker(gearman_server, php) -> None:
    with worker_thread(gearman_server.address, PY_FUNCTIONS):
        for mode in ("normal", "high", "low"):
            reply = php.client(gearman_server.address, mode, "py_reverse", "from php")
            assert (reply["result"], reply["return_name"]) == ("php morf", "GEARMAN_SUCCESS"), reply
        progress = php.client(gearman_server.address, "normal", "py_progress", "x")
        assert (
            progress["result"] == "piecefinished"
        )  # pecl's doNormal joins WORK_DATA into the result
        assert progress["return_name"] == "GEARMAN_SUCCESS", progress
        failed = php.client(gearman_server.address, "normal", "py_fail", "x")
        assert failed["return_name"] == "GEARMAN_WORK_FAIL", failed
        exploded = php.client(gearman_server.address, "exception", "py_explode", "x")
        assert "RuntimeError" in json.dumps(exploded), (
            exploded
        )  # our JSON error payload reached PHP


def test_php_client_background_and_status_our_worker(gearman_server, php) -> None:
    done: list[bytes] = []
    with worker_thread(gearman_server.address, {"py_record": lambda job: done.append(job.data)}):
        for mode in ("background", "high_background", "low_background"):
            reply = php.client(gearman_server.address, mode, "py_record", mode)
            assert reply["handle"].startswith("H:"), reply
        wait_for(lambda: len(done) == 3, what="three background jobs")
        status = php.client(gearman_server.address, "status", "-", reply["handle"])
        assert status["status"][:2] == [False, False]  # finished, so unknown again
    assert sorted(done) == [b"background", b"high_background", b"low_background"]


def test_php_job_status_sees_queued_job(gearman_server, php) -> None:
    reply = php.client(gearman_server.address, "background", "py_later", "x", "php-unique-1")
    status = php.client(gearman_server.address, "status", "-", reply["handle"])
    assert status["status"] == [True, False, 0, 0], status
    by_unique = php.client(gearman_server.address, "status_unique", "-", "php-unique-1")
    assert by_unique["status"][0] is True, by_unique
    with GearmanClient([gearman_server.address]) as client:  # ours agrees with PHP's view
        ours = client.get_status_unique("php-unique-1")
        assert ours.known and not ours.running


def test_php_task_set_our_worker(gearman_server, php) -> None:
    with worker_thread(gearman_server.address, PY_FUNCTIONS):
        reply = php.client(gearman_server.address, "tasks", "py_reverse", "one", "two", "three")
    results = reply["results"]
    assert {index: r["state"] for index, r in results.items()} == {
        "0": "complete",
        "1": "complete",
        "2": "complete",
    }
    assert sorted(r["data"] for r in results.values()) == ["eerht", "eno", "owt"]


# -- gearman CLI, our worker; gearadmin and our admin client --------------------------------


def test_gearman_cli_client_our_worker(gearman_server, gearman_cli) -> None:
    host, port = gearman_server.address.split(":")
    with worker_thread(gearman_server.address, PY_FUNCTIONS):
        out = subprocess.run(
            [gearman_cli, "-h", host, "-p", port, "-f", "py_reverse", "--", "from the cli"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == "ilc eht morf"
        background = subprocess.run(
            [gearman_cli, "-h", host, "-p", port, "-b", "-f", "py_reverse", "--", "bg"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert background.returncode == 0, background.stderr


def test_gearman_cli_worker_our_client(gearman_server, gearman_cli) -> None:
    host, port = gearman_server.address.split(":")
    worker = subprocess.Popen(
        [gearman_cli, "-h", host, "-p", port, "-w", "-f", "cli_wc", "--", "wc", "-c"]
    )
    try:
        with GearmanClient([gearman_server.address], timeout=15) as client:
            assert client.submit("cli_wc", b"12345").strip() == b"5"
    finally:
        worker.kill()
        worker.wait(10)


def _gearadmin(gearadmin: str, address: str, *args: str) -> str:
    host, port = address.split(":")
    return subprocess.run(
        [gearadmin, "-h", host, "-p", port, *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout


def test_admin_client_agrees_with_gearadmin(gearman_server, gearadmin) -> None:
    with GearmanClient([gearman_server.address]) as client:
        client.submit_background("adm_a", b"1", priority=Priority.HIGH, unique="ua")
        client.submit_background("adm_a", b"2", priority=Priority.LOW, unique="ub")
        client.submit_background("adm_b", b"3", unique="uc")
    with (
        worker_thread(gearman_server.address, {"adm_c": py_reverse}, client_id="adm-worker"),
        GearmanAdminClient(gearman_server.address) as admin,
    ):
        wait_for(lambda: any(w.client_id == "adm-worker" for w in admin.workers()))
        status = {r.function: r for r in admin.status()}
        assert (
            status["adm_a"].total,
            status["adm_a"].running,
            status["adm_a"].available_workers,
        ) == (2, 0, 0)
        assert status["adm_c"].available_workers == 1
        cli_status = {
            line.split("\t")[0]: line.split("\t")[1:]
            for line in _gearadmin(gearadmin, gearman_server.address, "--status").splitlines()
            if "\t" in line
        }
        assert {
            fn: [str(r.total), str(r.running), str(r.available_workers)] for fn, r in status.items()
        } == cli_status
        prio = {r.function: (r.high, r.normal, r.low) for r in admin.priority_status()}
        assert prio["adm_a"] == (1, 0, 1) and prio["adm_b"] == (0, 1, 0)
        assert sorted(admin.show_unique_jobs()) == ["ua", "ub", "uc"]
        jobs = admin.show_jobs()
        assert len(jobs) == 3 and all(j.job_queued and not j.ignore_job for j in jobs)
        cli_jobs = _gearadmin(gearadmin, gearman_server.address, "--show-jobs")
        assert sorted(j.handle for j in jobs) == sorted(
            line.split("\t")[0] for line in cli_jobs.splitlines() if "\t" in line
        )
        (worker_row,) = [w for w in admin.workers() if w.client_id == "adm-worker"]
        assert worker_row.functions == ("adm_c",)
        assert (
            admin.getpid()
            == gearman_server.pid
            == int(_gearadmin(gearadmin, gearman_server.address, "--getpid").split()[-1])
        )
        assert admin.version() in _gearadmin(gearadmin, gearman_server.address, "--server-version")
        admin.cancel_job(jobs[0].handle)
        # gearmand keeps a cancelled job listed, marked ignored and no longer queued
        cancelled = {j.handle: j for j in admin.show_jobs()}[jobs[0].handle]
        assert (cancelled.ignore_job, cancelled.job_queued) == (True, False)
        with pytest.raises(Exception, match="UNKNOWN_JOB"):
            admin.cancel_job("H:nope:1")
        with pytest.raises(Exception, match="function not found"):
            admin.drop_function("never_existed")
        assert admin.verbose()
