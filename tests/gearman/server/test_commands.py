"""Starting and stopping the server: both front ends, readable errors, signals, durability."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.protocol import Packet, PacketBuffer, PacketType
from django_gearman.gearman.server.cli import parse_addrport
from tests.helpers import wait_for, worker_thread
from tests.peers import ROOT, BackgroundProcess, admin_command, free_port

pytestmark = pytest.mark.interop

T = PacketType


def start(*args: str, django: bool = False) -> BackgroundProcess:
    if django:
        cmd = [sys.executable, "-m", "django", "gearmand", *args]
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    else:
        cmd = [sys.executable, "-m", "django_gearman.server", *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return BackgroundProcess(cmd, cwd=ROOT, env=env)


def read_banner(process: BackgroundProcess) -> str:
    """Lines up to the one that says how to quit (runserver-style banners span lines)."""
    process.wait_for_line(lambda line: "CONTROL-C" in line, timeout=30, what="its banner")
    return process.stdout


def stop(process: BackgroundProcess) -> None:
    process.stop(timeout=10)


def run_to_exit(*args: str, django: bool = False, timeout: float = 20) -> BackgroundProcess:
    """Start the server with ``args`` and wait until it exits by itself (stopped in any case)."""
    process = start(*args, django=django)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {timeout} s: {process.stdout}") from None
    finally:
        process.stop()
    return process


FRONT_ENDS = ["python-m", "manage.py"]  # python -m django_gearman.server, or manage.py gearmand


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_banner_then_serves_then_stops_on_sigterm(front_end: str, tmp_path) -> None:
    django = front_end == "manage.py"
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


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_port_in_use_is_a_readable_error(front_end: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run_to_exit(
            f"127.0.0.1:{port}", "--queue", "memory", django=front_end == "manage.py"
        )
    assert process.returncode != 0
    assert "That port is already in use." in process.stderr


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
    assert "uvloop is not installed (pip install 'django-gearman-tasks[uvloop]')" in process.stderr


def test_bad_options_fail_at_start() -> None:
    assert "is not a valid port number" in run_to_exit("not a port").stderr
    err = run_to_exit("127.0.0.1:0", "--queue", "/nonexistent-dir/q.sqlite3").stderr
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
        release = threading.Event()

        def slow(job):
            release.wait(30)  # held until the test has seen the server wait for it
            finished.append(job.data)
            return b"done"

        with (
            worker_thread(address, {"slow": slow}, reconnect_delay=5),
            GearmanClient([address], timeout=10) as client,
        ):
            try:
                handle = client.submit_background("slow", b"x")
                wait_for(lambda: client.get_status(handle).running, what="job running")
                process.send_signal(signal.SIGUSR1)
                wait_for(lambda: _refused(port), timeout=5, what="listening socket closed")
                assert process.returncode is None  # still serving the running job's worker
                assert finished == []
            finally:
                release.set()  # also when the test failed early: the worker thread can stop
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
    """Send ``packets`` and read ``expect`` replies (one per packet by default).

    ``TimeoutError`` if the server stays silent for 5 s; ``EOFError`` if it closes first.
    """
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"".join(packets))
        buffer, frames = PacketBuffer(), []
        while len(frames) < (len(packets) if expect is None else expect):
            data = sock.recv(65536)
            if not data:
                raise EOFError(f"closed after {[(f.type, f.args) for f in frames]}")
            frames += buffer.feed(data)
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
        # Seen with Debian's gearmand 1.1.20: no reply at all to SUBMIT_REDUCE_JOB_BACKGROUND,
        # and the packet after it closes the connection: the echo is never answered.
        with pytest.raises(EOFError, match=r"closed after \[\]$"):
            raw_reply(gearman_server.address, submit, Packet.request(T.ECHO_REQ, b"?").encode())
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
