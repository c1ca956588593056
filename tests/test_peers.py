"""The peer harness itself works: gearmand, PHP worker and client, gearman CLI, durable queue."""

from __future__ import annotations

import dataclasses
import socket
import struct
import subprocess
import sys
import time

import pytest

from tests.peers import Gearmand, ScriptLanguage, admin_command, free_port, require_peer

interop = pytest.mark.interop


def _status(server: Gearmand) -> dict[str, tuple[int, int, int]]:
    lines = admin_command(server, "status").decode().splitlines()
    assert lines[-1] == "."
    rows = (line.split("\t") for line in lines[:-1])
    return {
        name: (int(total), int(running), int(workers)) for name, total, running, workers in rows
    }


@interop
def test_gearmand_answers_admin_version(gearmand) -> None:
    reply = admin_command(gearmand.address, "version")
    assert reply.startswith(b"OK 1.1.") and reply.endswith(b"\n")
    assert admin_command(gearmand, "getpid") == f"OK {gearmand.pid}\n".encode()
    assert gearmand.host == "127.0.0.1" and gearmand.address == f"127.0.0.1:{gearmand.port}"


@interop
def test_gearmand_stop_and_restart_on_the_same_port(gearmand) -> None:
    port, first_pid = gearmand.port, gearmand.pid
    gearmand.kill()
    with pytest.raises(OSError):
        admin_command(gearmand, "version", timeout=1)
    gearmand.restart()
    assert gearmand.port == port and gearmand.pid != first_pid
    assert admin_command(gearmand, "getpid") == f"OK {gearmand.pid}\n".encode()


@interop
def test_php_worker_and_client_round_trip(gearmand, php) -> None:
    worker = php.worker(gearmand.address, "--id", "php-peer")
    reply = php.client(gearmand.address, "normal", "php_reverse", "hello")
    assert reply["result"] == "olleh"
    assert reply["return_name"] == "GEARMAN_SUCCESS"
    workers = admin_command(gearmand, "workers").decode()
    assert any(" php-peer : " in line and "php_reverse" in line for line in workers.splitlines())
    assert worker.returncode is None


@interop
def test_php_fail_and_exception_reach_the_php_client(gearmand, php) -> None:
    php.worker(gearmand.address)
    fail = php.client(gearmand.address, "normal", "php_fail", "x")
    assert fail["return_name"] == "GEARMAN_WORK_FAIL" and fail["result"] == ""
    exception = php.client(gearmand.address, "exception", "php_exception", "x")
    assert exception["return_name"] == "GEARMAN_WORK_EXCEPTION"
    assert exception["task"]["results"]["0"] == {
        "state": "exception",
        "data": "Unable to add worker function",  # pecl's fixed text, not the PHP message
        "handle": exception["task"]["results"]["0"]["handle"],
    }


@interop
def test_php_worker_max_jobs_counts_failed_jobs_and_exits_zero(gearmand, php) -> None:
    worker = php.worker(gearmand.address, "--max-jobs", "3")
    fail = php.client(gearmand.address, "normal", "php_fail", "x")
    assert fail["return_name"] == "GEARMAN_WORK_FAIL"
    exception = php.client(gearmand.address, "normal", "php_exception", "x")
    assert exception["return_name"] == "GEARMAN_WORK_EXCEPTION"
    assert php.client(gearmand.address, "high", "php_upper", "abc")["result"] == "ABC"
    assert worker.wait(10) == 0
    assert "RuntimeException: boom: x" in worker.stderr


@interop
def test_php_client_tasks_background_and_status(gearmand, php) -> None:
    php.worker(gearmand.address)
    tasks = php.client(gearmand.address, "tasks", "php_status", "a")
    assert tasks["results"]["0"]["state"] == "complete" and tasks["results"]["0"]["data"] == "done"
    assert tasks["events"] == [
        ["0", "status", [1, 2]],
        ["0", "data", "chunk"],
        ["0", "warning", "careful"],
    ]
    json_reply = php.client(gearmand.address, "low", "php_json", '{"n": [1, 2]}')
    assert json_reply["result"] == '{"got":{"n":[1,2]},"lang":"php"}'

    address = gearmand.address
    queued = php.client(address, "low_background", "nobody_serves", "p", "uniq-42")
    assert queued["handle"].startswith("H:")
    assert php.client(address, "status", "-", queued["handle"])["status"] == [True, False, 0, 0]
    assert php.client(address, "status_unique", "-", "uniq-42")["status"][:2] == [True, False]
    assert php.client(address, "status", "-", "H:nope:1")["status"] == [False, False, 0, 0]


@interop
def test_php_client_reports_an_unreachable_server(php) -> None:
    result = php.run("client.php", f"127.0.0.1:{free_port()}", "normal", "php_echo", "x")
    assert result.returncode == 1
    assert '"stage":"addServer"' in result.stdout


@interop
def test_gearman_cli_client_against_php_worker(gearmand, php, gearman_cli) -> None:
    php.worker(gearmand.address)
    result = subprocess.run(
        [gearman_cli, "-h", gearmand.host, "-p", str(gearmand.port), "-f", "php_reverse"]
        + ["--", "hello"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "olleh"


@interop
def test_gearadmin_sees_the_php_worker_functions(gearmand, php, gearadmin) -> None:
    php.worker(gearmand.address)
    result = subprocess.run(
        [gearadmin, "-h", gearmand.host, "-p", str(gearmand.port), "--status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "php_json\t0\t0\t1" in result.stdout.splitlines()


@interop
def test_queue_db_keeps_background_job_across_kill_and_restart(gearmand_factory, tmp_path) -> None:
    server = gearmand_factory(queue_db=str(tmp_path / "queue.sqlite"))
    handle = _submit_background(server, "durable_fn", b"payload")
    assert handle.startswith(b"H:")
    assert _status(server)["durable_fn"] == (1, 0, 0)
    server.kill()
    server.restart()
    assert _status(server)["durable_fn"] == (1, 0, 0)


@interop
def test_php_worker_drains_a_job_persisted_before_a_crash(gearmand_factory, php, tmp_path) -> None:
    server = gearmand_factory(queue_db=str(tmp_path / "queue.sqlite"))
    submitted = php.client(server.address, "background", "php_echo", "kept", "unique-1")
    assert submitted["return_name"] == "GEARMAN_SUCCESS" and submitted["handle"]
    server.kill()
    server.restart()
    assert php.client(server.address, "status_unique", "-", "unique-1")["status"][0] is True
    php.worker(server.address)
    deadline = time.monotonic() + 10
    while _status(server).get("php_echo", (1,))[0] != 0:
        assert time.monotonic() < deadline, "the persisted job never ran"
        time.sleep(0.05)


def test_require_peer_skips_locally_and_fails_in_ci(monkeypatch) -> None:
    assert require_peer("thing", "/bin/thing") == "/bin/thing"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="thing is not available"):
        require_peer("thing", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="thing is not available"):
        require_peer("thing", None)


def test_a_script_language_runs_and_starts_its_scripts(tmp_path, monkeypatch) -> None:
    """What the php and perl fixtures share, with Python standing in for the interpreter."""
    (tmp_path / "echo.py").write_text("import sys\nprint('ready')\nprint(*sys.argv[1:])\n")
    language = ScriptLanguage(
        directory=tmp_path,
        extension="py",
        find=lambda: sys.executable,
        requirement="python",
        options=("-u",),
    )
    assert language.command("echo.py", [1, "a"]) == [
        sys.executable,
        "-u",
        str(tmp_path / "echo.py"),
        "1",
        "a",
    ]
    assert language.command("sub/echo.py", [])[2] == "sub/echo.py"  # a path is kept as it is
    result = language.run("echo.py", "x", 2)
    assert (result.returncode, result.stdout) == (0, "ready\nx 2\n")
    process = language.start("echo.py", "y", wait_for="ready")
    try:
        assert process.wait(10) == 0
        assert process.stdout == "ready\ny\n"
        assert repr(process).startswith(f"<ScriptProcess [{str(tmp_path / 'echo.py')!r}, 'y'] ")
    finally:
        process.stop()
    monkeypatch.delenv("CI", raising=False)
    missing = dataclasses.replace(language, find=lambda: None)
    with pytest.raises(pytest.skip.Exception, match="python is not available"):
        missing.run("echo.py")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _submit_background(server: Gearmand, function: str, payload: bytes) -> bytes:
    """SUBMIT_JOB_BG over a raw socket: the harness must not depend on the package under test."""
    body = b"\0".join([function.encode(), b"unique-" + payload, payload])
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"\0REQ" + struct.pack("!II", 18, len(body)) + body)
        magic, kind, size = struct.unpack("!4sII", _recv_exactly(sock, 12))
        assert (magic, kind) == (b"\0RES", 8), (magic, kind)  # JOB_CREATED
        return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes; each recv waits at most the socket's timeout, and a close fails."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"the server closed after {data!r}, {size - len(data)} bytes short")
        data += chunk
    return data
