"""Starting and stopping the server: both front ends, readable errors, signals, durability."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.protocol import Packet, PacketBuffer, PacketType
from django_gearman.gearman.server.cli import parse_addrport
from tests.helpers import wait_for, worker_thread
from tests.peers import ROOT, admin_command, free_port

pytestmark = pytest.mark.interop

T = PacketType


def start(*args: str, django: bool = False) -> subprocess.Popen:
    if django:
        cmd = [sys.executable, "-m", "django", "gearmand", *args]
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    else:
        cmd = [sys.executable, "-m", "django_gearman.server", *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def read_banner(process: subprocess.Popen) -> str:
    """Lines up to the one that says how to quit (runserver-style banners span lines)."""
    lines = []
    while not lines or "CONTROL-C" not in lines[-1]:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
    return "".join(lines)


def stop(process: subprocess.Popen) -> tuple[str, str]:
    if process.poll() is None:
        process.terminate()
    try:
        out, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out, err


@pytest.mark.parametrize("django", [False, True], ids=["python-m", "manage.py"])
def test_banner_then_serves_then_stops_on_sigterm(django: bool, tmp_path) -> None:
    port = free_port()
    process = start(f"127.0.0.1:{port}", "--queue", str(tmp_path / "q.sqlite3"), django=django)
    try:
        banner = read_banner(process)
        assert f"127.0.0.1:{port}" in banner and "q.sqlite3" in banner
        with GearmanClient([f"127.0.0.1:{port}"]) as client:
            client.submit_background("kept", b"1")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        stop(process)
    process = start(f"127.0.0.1:{port}", "--queue", str(tmp_path / "q.sqlite3"), django=django)
    try:
        read_banner(process)
        status = admin_command(f"127.0.0.1:{port}", "status").decode()
        assert "kept\t1\t0\t0" in status  # the background job survived the restart
    finally:
        stop(process)


@pytest.mark.parametrize("django", [False, True], ids=["python-m", "manage.py"])
def test_port_in_use_is_a_readable_error(django: bool) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(f"127.0.0.1:{port}", "--queue", "memory", django=django)
        out, err = process.communicate(timeout=20)  # it must exit by itself
    assert process.returncode != 0
    assert "That port is already in use." in err


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_serves_on_either_event_loop(loop: str) -> None:
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        if os.environ.get("CI"):
            pytest.fail("uvloop is a test dependency (tox.ini) but is not installed")
        pytest.skip("uvloop is not installed")
    port = free_port()
    process = start(f"127.0.0.1:{port}", "--queue", "memory", "--loop", loop)
    try:
        assert f"({loop})" in read_banner(process)
        with worker_thread([f"127.0.0.1:{port}"], {"upper": lambda job: job.data.upper()}):
            with GearmanClient([f"127.0.0.1:{port}"]) as client:
                results = [client.submit("upper", b"job %d" % n) for n in range(50)]
        assert results == [b"JOB %d" % n for n in range(50)]
    finally:
        stop(process)


def test_auto_loop_is_uvloop_when_installed() -> None:
    expected = "asyncio" if importlib.util.find_spec("uvloop") is None else "uvloop"
    port = free_port()
    process = start(f"127.0.0.1:{port}", "--queue", "memory")
    try:
        assert f"({expected})" in read_banner(process)
    finally:
        stop(process)


def test_loop_uvloop_without_uvloop_says_how_to_install_it() -> None:
    script = (
        "import sys; sys.modules['uvloop'] = None\n"  # makes `import uvloop` fail
        "from django_gearman.gearman.server.cli import main\n"
        "sys.exit(main(['127.0.0.1:0', '--loop', 'uvloop']))\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert process.returncode == 1
    assert "uvloop is not installed (pip install 'django-gearman[uvloop]')" in process.stderr


def test_bad_options_fail_at_start() -> None:
    out, err = start("not a port").communicate(timeout=20)
    assert "is not a valid port number" in err
    out, err = start("127.0.0.1:0", "--queue", "/nonexistent-dir/q.sqlite3").communicate(timeout=20)
    assert "cannot open the job store" in err and "does not exist" in err
    with pytest.raises(ValueError):
        parse_addrport("70000")
    assert parse_addrport("8000") == ("127.0.0.1", 8000)
    assert parse_addrport("0.0.0.0:4730") == ("0.0.0.0", 4730)
    assert parse_addrport("[::1]:4731") == ("::1", 4731)


def test_sigusr1_waits_for_the_running_job() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = start(address, "--queue", "memory")
    try:
        read_banner(process)
        finished: list[bytes] = []

        def slow(job):
            time.sleep(1.0)
            finished.append(job.data)
            return b"done"

        with worker_thread(address, {"slow": slow}, reconnect_delay=5):
            with GearmanClient([address], timeout=10) as client:
                handle = client.submit_background("slow", b"x")
                wait_for(lambda: client.get_status(handle).running, what="job running")
                process.send_signal(signal.SIGUSR1)
                wait_for(lambda: _refused(port), timeout=5, what="listening socket closed")
                assert process.poll() is None  # still serving the running job's worker
                assert process.wait(10) == 0
        assert finished == [b"x"]  # it exited only after the job finished
    finally:
        stop(process)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def raw_reply(address: str, *packets: bytes, expect: int | None = None) -> list:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"".join(packets))
        buffer, frames = PacketBuffer(), []
        while len(frames) < (len(packets) if expect is None else expect):
            frames += buffer.feed(sock.recv(65536))
    return [(f.type, f.args) for f in frames]


def test_unimplemented_packets_answered_like_gearmand(gearman_server) -> None:
    replies = raw_reply(
        gearman_server.address,
        Packet.request(T.SUBMIT_JOB_SCHED, b"f", b"", b"1", b"1", b"1", b"1", b"1", b"d").encode(),
        Packet.request(T.ALL_YOURS).encode(),
        Packet.request(T.OPTION_REQ, b"no-such-option").encode(),
        Packet.request(T.OPTION_REQ, b"EXCEPTIONS").encode(),
        Packet.request(T.ECHO_REQ, b"a\0b").encode(),
    )
    assert replies == [
        (T.ERROR, (b"INVALID_COMMAND", b"Command not expected")),
        (T.ERROR, (b"INVALID_COMMAND", b"Command not expected")),
        (T.ERROR, (b"UNKNOWN_OPTION", b"Server does not recognize given option")),
        (T.OPTION_RES, (b"EXCEPTIONS",)),
        (T.ECHO_RES, (b"a\0b",)),
    ]


def test_reduce_job_and_grab_job_all(gearman_server) -> None:
    submit = Packet.request(
        T.SUBMIT_REDUCE_JOB_BACKGROUND, b"mapper", b"u-reduce", b"reducer-fn", b"payload"
    ).encode()
    if gearman_server.kind == "gearmand":
        # Seen with Debian's gearmand 1.1.20: no reply at all to SUBMIT_REDUCE_JOB_BACKGROUND.
        with pytest.raises(TimeoutError):
            raw_reply(gearman_server.address, submit)
        return
    (created,) = raw_reply(gearman_server.address, submit)
    assert created[0] is T.JOB_CREATED
    replies = raw_reply(
        gearman_server.address,
        Packet.request(T.CAN_DO, b"mapper").encode() + Packet.request(T.GRAB_JOB_ALL).encode(),
        expect=1,
    )
    assert replies == [
        (T.JOB_ASSIGN_ALL, (created[1][0], b"mapper", b"u-reduce", b"reducer-fn", b"payload"))
    ]
