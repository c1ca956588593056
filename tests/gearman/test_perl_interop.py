"""Perl's Gearman::Client and Gearman::Worker (Debian libgearman-client-perl 2.004.015) as a real
peer, both ways, against both servers (#14): tests/perl/worker.pl and tests/perl/client.pl.

What Perl does differently from libgearman, and what each server makes of it:

- Its worker sends WORK_COMPLETE/DATA/WARNING/EXCEPTION with the handle alone for a value of
  ``""`` or ``"0"`` (Perl truth: ``$v ? join("\\0", $handle, $v) : $handle``). Our server reads
  the missing argument as empty, so such a result arrives as ``b""`` (``"0"`` never reaches the
  wire); gearmand 1.1.20 drops the worker and requeues the job, which the worker runs again
  (for ever unless ``--job-retries`` caps it: the client never hears back).
- Its worker's ``send_work_status`` drops the denominator; ``$job->set_status`` is the one that
  works. A function that dies is sent as WORK_EXCEPTION (Storable data) and then WORK_FAIL, and
  a result after CAN_DO_TIMEOUT is late: both servers answer ERROR JOB_NOT_FOUND, which the
  worker reads as the reply to its next GRAB_JOB and dies of.
- Its client sends an argument or unique of ``"0"`` as empty, joins a ``prefix`` to function
  names with a tab (our server refuses such names), and dies on a WORK_FAIL it cannot match
  (gearmand's WORK_FAIL after an exception carries a trailing NUL).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from django_gearman.gearman import GearmanClient, Task
from django_gearman.gearman.envelope import (
    decode_call,
    decode_error,
    decode_result,
    encode_call,
    encode_result,
)
from django_gearman.gearman.errors import JobException, JobFailed, JobTimeout
from django_gearman.gearman.protocol import PacketType, Priority, RemoteProtocolError
from django_gearman.gearman.protocol.constants import HEADER, REQ, RES
from django_gearman.gearman.protocol.packets import decode_body
from tests.helpers import wait_for, worker_thread
from tests.peers import ScriptProcess, admin_command

pytestmark = pytest.mark.interop

T = PacketType


def ran(worker: ScriptProcess) -> list[dict[str, str]]:
    """The jobs worker.pl started so far: {"ran": function, "handle", "arg"} each."""
    return [json.loads(line) for line in worker.stdout.splitlines() if line.startswith("{")]


def ran_functions(worker: ScriptProcess) -> list[str]:
    return [job["ran"] for job in ran(worker)]


def exit_within(process: ScriptProcess, seconds: float) -> int | None:
    """The exit status if ``process`` ends within ``seconds``, else None (it still runs)."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def queued(server: Any, function: str) -> tuple[int, int, int] | None:
    """(total, running, workers) of ``function`` in the server's ``status``."""
    for line in admin_command(server, "status").decode().splitlines():
        name, _, counts = line.partition("\t")
        if name == function:
            total, running, workers = map(int, counts.split("\t"))
            return total, running, workers
    return None


# -- what Perl's worker sends, with no server in between ------------------------------------


def _read_frame(sock: socket.socket) -> tuple[PacketType, bytes]:
    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            assert chunk, f"the Perl worker closed the connection after {data!r}"
            data += chunk
        return data

    magic, kind, size = HEADER.unpack(exactly(HEADER.size))
    assert magic == REQ
    return PacketType(kind), exactly(size)


def _frames_until_grab(sock: socket.socket) -> list[tuple[PacketType, bytes]]:
    frames = []
    while (frame := _read_frame(sock))[0] is not T.GRAB_JOB:
        frames.append(frame)
    return frames


def _job_assign(handle: bytes, function: bytes, data: bytes) -> bytes:
    body = b"\0".join((handle, function, data))
    return HEADER.pack(RES, T.JOB_ASSIGN, len(body)) + body


def test_what_perls_worker_puts_on_the_wire(perl) -> None:
    """A socket plays the server, so these are Perl's own bytes (the finding of #14)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        perl.worker(f"127.0.0.1:{port}", "wire")  # registers (connects) before "ready"
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            hello = _frames_until_grab(conn)
            assert {kind for kind, _ in hello} == {T.SET_CLIENT_ID, T.CAN_DO, T.CAN_DO_TIMEOUT}
            assert (T.CAN_DO_TIMEOUT, b"wire.timeout\x001") in hello
            sent = {}
            for number, name in enumerate(
                ["zero", "empty", "reverse", "data_zero", "progress", "status_api", "die"], 1
            ):
                handle = f"H:wire:{number}".encode()
                conn.sendall(_job_assign(handle, f"wire.{name}".encode(), b"abc"))
                sent[name] = [
                    (kind, body.replace(handle, b"H")) for kind, body in _frames_until_grab(conn)
                ]

    assert sent["zero"] == [(T.WORK_COMPLETE, b"H")]  # "0": the handle alone, no NUL
    assert sent["empty"] == [(T.WORK_COMPLETE, b"H")]
    assert sent["reverse"] == [(T.WORK_COMPLETE, b"H\0cba")]
    assert sent["data_zero"] == [(T.WORK_DATA, b"H"), (T.WORK_COMPLETE, b"H\0after")]
    assert sent["progress"] == [
        (T.WORK_STATUS, b"H\x001\x002"),  # $job->set_status(1, 2)
        (T.WORK_DATA, b"H\0chunk"),
        (T.WORK_WARNING, b"H\0careful"),
        (T.WORK_COMPLETE, b"H\0done"),
    ]
    # $worker->send_work_status($job, 1, 2): the denominator is lost.
    assert sent["status_api"] == [(T.WORK_STATUS, b"H\x001"), (T.WORK_COMPLETE, b"H\0after")]
    # die: Storable::nfreeze(\$@), then WORK_FAIL for the job it already ended.
    [(exception, frozen), fail] = sent["die"]
    assert (
        exception is T.WORK_EXCEPTION and frozen.startswith(b"H\0") and frozen.endswith(b"boom\n")
    )
    assert fail == (T.WORK_FAIL, b"H")

    # Our decoder reads the handle-only bodies as an empty value, and refuses the short status.
    assert decode_body(REQ, T.WORK_COMPLETE, b"H").args == (b"H", b"")
    assert decode_body(REQ, T.WORK_DATA, b"H").args == (b"H", b"")
    with pytest.raises(RemoteProtocolError, match="WORK_STATUS needs 3 arguments"):
        decode_body(REQ, T.WORK_STATUS, b"H\x001")


# -- our client, a Perl worker ----------------------------------------------------------------


def test_our_client_runs_jobs_on_a_perl_worker(gearman_server, perl) -> None:
    perl.worker(gearman_server.address, "perl")
    with GearmanClient([gearman_server.address], timeout=15) as client:
        for priority in (Priority.NORMAL, Priority.HIGH, Priority.LOW):
            assert client.submit("perl.reverse", b"stressed", priority=priority) == b"desserts"
        events: list[Any] = []
        result = client.submit(
            "perl.progress",
            b"x",
            on_status=events.append,
            on_data=events.append,
            on_warning=events.append,
        )
    assert result == b"done"
    assert [type(e).__name__ for e in events] == ["WorkStatus", "WorkData", "WorkWarning"]
    assert (events[0].numerator, events[0].denominator) == (1, 2)
    assert (events[1].data, events[2].data) == (b"chunk", b"careful")


def test_our_background_job_on_a_perl_worker(gearman_server, perl) -> None:
    worker = perl.worker(gearman_server.address, "perl")
    with GearmanClient([gearman_server.address], timeout=15) as client:
        handle = client.submit_background("perl.reverse", b"in the background")
        job = wait_for(lambda: next(iter(ran(worker)), None), what="the Perl worker's job")
        assert (job["ran"], job["handle"], job["arg"]) == (
            "perl.reverse",
            str(handle),
            "in the background",
        )
        wait_for(lambda: not client.get_status(handle).known, what="the job to end")


def test_one_unique_key_runs_once_on_a_perl_worker(gearman_server, perl) -> None:
    worker = perl.worker(gearman_server.address, "perl")
    tasks = [Task("perl.slow", data, unique="same-key") for data in (b"first", b"second")]
    with GearmanClient([gearman_server.address], timeout=15) as client:
        client.run_tasks(tasks)
    assert [t.result for t in tasks] == [b"first", b"first"]
    assert tasks[0].handle == tasks[1].handle
    assert ran_functions(worker) == ["perl.slow"]


@pytest.mark.parametrize("kind", ["zero", "empty", "data_zero"])
def test_a_perl_worker_sending_zero_or_empty(server_factory, perl, kind: str) -> None:
    """The finding of #14: the worker returns "0" / "", or sends WORK_DATA "0"."""
    server = server_factory(extra_args=["--job-retries=2"])
    worker = perl.worker(server.address, "perl")
    data: list[bytes] = []
    with GearmanClient([server.address], timeout=15) as client:
        if server_factory.kind == "gearmand":
            # gearmand 1.1.20 reads the handle-only frame as a body of size -1 ("realloc(char,
            # count: 18446744073709551615" in its log), drops the worker and requeues the job;
            # the worker reconnects and runs it again, here until --job-retries=2 fails it
            # (without that cap, forever: the test below).
            with pytest.raises(JobFailed):
                client.submit(f"perl.{kind}", b"x", on_data=lambda e: data.append(e.data))
            assert ran_functions(worker) == [f"perl.{kind}"] * 2
            assert "count: 18446744073709551615" in server.log_tail(100)
        else:
            result = client.submit(f"perl.{kind}", b"x", on_data=lambda e: data.append(e.data))
            # b"" for "0" too: Perl put nothing on the wire that says "0".
            assert result == (b"after" if kind == "data_zero" else b"")
            assert data == ([b""] if kind == "data_zero" else [])
            # Passed on to a Perl client with the NUL it needs (/^(.+?)\0/ in Gearman::Taskset).
            reply = perl.client(server.address, "do", f"perl.{kind}", "x")
            assert reply == {
                "result": "after" if kind == "data_zero" else "",
                "events": [["data", ""]] if kind == "data_zero" else [],
            }
            assert ran_functions(worker) == [f"perl.{kind}"] * 2  # once per client
        # Either way the worker lives on.
        assert client.submit("perl.reverse", b"ab") == b"ba"


@pytest.mark.parametrize("kind", ["zero", "empty"])
def test_gearmand_without_job_retries_never_answers_a_perl_zero_or_empty(
    gearmand, perl, kind: str
) -> None:
    """With no --job-retries cap, gearmand 1.1.20 drops the worker and requeues the job on each
    handle-only WORK_COMPLETE, again and again: the client never hears back."""
    worker = perl.worker(gearmand.address, "perl")
    with GearmanClient([gearmand.address], timeout=5) as client:
        with pytest.raises(JobTimeout):
            client.submit(f"perl.{kind}", b"x")
    assert ran_functions(worker).count(f"perl.{kind}") >= 2, worker.stderr  # run again


def test_perls_send_work_status_fails_on_both_servers(server_factory, perl) -> None:
    """``$worker->send_work_status`` sends WORK_STATUS without its denominator: both servers
    drop the worker (gearmand misreads the stream until Perl's 0.5 s GRAB_JOB wait gives up),
    so the job is retried until --job-retries. ``$job->set_status`` works (the test above)."""
    server = server_factory(extra_args=["--job-retries=2"])
    worker = perl.worker(server.address, "perl")
    with GearmanClient([server.address], timeout=15) as client:
        with pytest.raises(JobFailed):
            client.submit("perl.status_api", b"x")
        assert client.submit("perl.reverse", b"ab") == b"ba"
    assert ran_functions(worker) == ["perl.status_api"] * 2 + ["perl.reverse"]


def test_a_perl_worker_whose_function_dies(gearman_server, perl, request) -> None:
    worker = perl.worker(gearman_server.address, "perl")
    with GearmanClient([gearman_server.address], timeout=15) as client:
        with pytest.raises(JobException) as info:
            client.submit("perl.die", b"x")
    # The exception data is Perl's Storable::nfreeze(\"boom\n"), not text or JSON.
    assert info.value.data.endswith(b"boom\n") and not info.value.data.startswith(b"boom")
    code = exit_within(worker, 3)
    if gearman_server.kind == "gearmand":
        assert code == 255
        assert "unexpected packet type: error [JOB_NOT_FOUND" in worker.stderr
    else:
        assert code is None, worker.stderr  # we send a worker no JOB_NOT_FOUND: it lives on


def test_a_perl_worker_past_its_can_do_timeout(gearman_server, perl, request) -> None:
    # perl.timeout is registered with CAN_DO_TIMEOUT 1 s and takes 2 s: the server takes the
    # job back after 1 s and answers the result that comes 1 s later with JOB_NOT_FOUND.
    worker = perl.worker(gearman_server.address, "perl")
    with GearmanClient([gearman_server.address], timeout=15) as client:
        client.submit_background("perl.timeout", b"x")
    code = exit_within(worker, 5)
    if gearman_server.kind == "gearmand":
        assert code == 255
        assert "unexpected packet type: error [JOB_NOT_FOUND" in worker.stderr
        assert queued(gearman_server, "perl.timeout") == (1, 0, 0)  # requeued, nobody left
    else:
        assert code is None, worker.stderr  # we send a worker no JOB_NOT_FOUND: it lives on


def test_perls_prefix_option_joins_names_with_a_tab(gearman_server, perl) -> None:
    # Gearman::Objects->func: "NAMESPACE\tNAME". gearmand takes it (its "status" line then has
    # one tab too many); our server refuses names with control bytes: the worker's CAN_DO is
    # ignored (logged), and the client's SUBMIT_JOB gets ERROR INVALID_FUNCTION_NAME, which
    # Gearman::Client has no handler for.
    worker = perl.worker(gearman_server.address, "perl", "app")
    reply = perl.client(
        gearman_server.address, "do", "perl.reverse", "ab", "--prefix=app", "--timeout=5"
    )
    if gearman_server.kind == "gearmand":
        assert reply == {"result": "ba", "events": []}
        assert ran_functions(worker) == ["app\tperl.reverse"]
    else:
        assert reply["died"].startswith(
            "Unimplemented packet type: error [INVALID_FUNCTION_NAME\0Function names are"
        ), reply
        assert worker.returncode is None and ran(worker) == []


def test_our_envelope_on_a_perl_worker(gearman_server, perl) -> None:
    """The JSON envelope (``envelope.encode_call``, as ``remote_task`` sends it) read by JSON::PP;
    the Perl worker answers JSON, or a {"type", "message"} WORK_EXCEPTION of its own."""
    worker = perl.worker(gearman_server.address, "perl")
    meta = {"id": "0" * 32, "enqueued_at": 1764000000.5}
    with GearmanClient([gearman_server.address], timeout=15) as client:
        reply = client.submit("perl.add", encode_call([2, 3], meta=meta))
        assert decode_result(reply) == {"sum": 5, "meta": ["enqueued_at", "id"]}
        reply = client.submit("perl.add", encode_call([1.5, 1], {"scale": 2}))
        assert decode_result(reply) == {"sum": 5, "meta": []}
        with pytest.raises(JobException) as info:
            client.submit("perl.add", encode_call([1, "x"]))
        assert decode_error(info.value.data) == (
            "InvalidArgument",
            'argument 1 is not a number: "x"',
        )
        with pytest.raises(JobException) as info:
            client.submit("perl.add", b"not json")
        assert decode_error(info.value.data)[0] == "EnvelopeError"
        handle = client.submit_background(
            "perl.add", encode_call([7, 8], meta={"background": True})
        )
        job = wait_for(
            lambda: next((j for j in ran(worker) if j["handle"] == str(handle)), None),
            what="the background job",
        )
        assert decode_call(job["arg"].encode("latin-1")).meta == {"background": True}
        assert decode_result(client.submit("perl.add", encode_call([1, 1])))["sum"] == 2


def test_a_perl_worker_result_of_zero_needs_a_newline(server_factory, perl) -> None:
    """docs/wire-format.md: a Perl worker's JSON ``0`` is false in Perl, so Gearman::Worker
    sends no result at all (read as null); ``encode(...) . "\\n"`` gets ``0`` through. On
    gearmand the bare ``0`` makes it drop the worker (see the zero/empty tests), so only the
    newline is asked of it."""
    server = server_factory(extra_args=["--job-retries=2"])
    perl.worker(server.address, "perl")
    with GearmanClient([server.address], timeout=15) as client:
        kwargs = {"bare": True, "newline": True}
        assert decode_result(client.submit("perl.add", encode_call([0], kwargs))) == 0
        assert decode_result(client.submit("perl.add", encode_call([2, 3], kwargs))) == 5
        if server_factory.kind == "embedded":
            zero = client.submit("perl.add", encode_call([0], {"bare": True}))
            assert zero == b"" and decode_result(zero) is None
            assert decode_result(client.submit("perl.add", encode_call([4], {"bare": True}))) == 4


# -- a Perl client, our worker ------------------------------------------------------------------


def _progress(job: Any) -> bytes:
    job.send_status(1, 2)
    job.send_data("chunk")
    job.send_warning("careful")
    return b"done"


def _boom(job: Any) -> bytes:
    raise ValueError("boom")


def _slow(job: Any) -> bytes:
    time.sleep(0.3)
    return job.data


def _add(job: Any) -> bytes:
    call = decode_call(job.data)
    return encode_result(sum(call.args) * call.kwargs.get("scale", 1))


OUR_FUNCTIONS: dict[str, Callable[[Any], bytes]] = {
    "py.upper": lambda job: job.data.upper(),
    "py.echo": lambda job: job.data,
    "py.zero": lambda job: b"0",
    "py.empty": lambda job: b"",
    "py.progress": _progress,
    "py.boom": _boom,
    "py.slow": _slow,
    "py.add": _add,
}


def test_a_perl_client_runs_jobs_on_our_worker(gearman_server, perl) -> None:
    address = gearman_server.address
    with worker_thread(address, OUR_FUNCTIONS):
        for priority in ("normal", "high", "low"):
            reply = perl.client(address, "do", "py.upper", "hello", f"--priority={priority}")
            assert reply == {"result": "HELLO", "events": []}
        assert perl.client(address, "do", "py.progress", "x") == {
            "result": "done",
            "events": [["status", ["1", "2"]], ["data", "chunk"], ["warning", "careful"]],
        }
        # Our worker sends "0" and "" with their NUL, so Perl gets them as they are.
        assert perl.client(address, "do", "py.zero", "x")["result"] == "0"
        assert perl.client(address, "do", "py.empty", "x")["result"] == ""
        # Perl's client sends an argument of "0" as nothing (${ $argref } || '').
        assert perl.client(address, "do", "py.echo", "0")["result"] == ""
        assert perl.client(address, "do", "py.echo", "00")["result"] == "00"


def test_a_perl_client_background_jobs_coalesce_on_uniq(gearman_server, perl) -> None:
    address = gearman_server.address
    name = "py.echo"
    handles = [
        perl.client(address, "background", name, data, f"--uniq={uniq}")["handle"]
        for data, uniq in [
            ("a", "key"),
            ("b", "key"),
            ("x", "-"),
            ("x", "-"),
            ("y", "-"),
            ("c", "0"),
            ("d", "0"),
        ]
    ]
    # "HOST:PORT//H:...": one job per unique key; "-" means "the data is the key". A uniq of
    # "0" is sent as no unique at all ($self->{uniq} || ''), so those two do not coalesce.
    assert handles[0].startswith(f"{address}//H:")
    assert handles[0] == handles[1] and handles[2] == handles[3]
    assert len(set(handles)) == 5
    status = perl.client(address, "status", "-", handles[0])
    assert (status["known"], status["running"]) == (1, 0)  # queued, no worker yet
    seen: list[bytes] = []
    functions = {name: lambda job: seen.append(job.data) or job.data}
    with worker_thread(address, functions) as worker:
        wait_for(lambda: worker.jobs_done >= 5, what="the Perl client's background jobs")
    assert seen == [b"a", b"x", b"y", b"c", b"d"]
    assert perl.client(address, "status", "-", handles[0])["known"] == 0


def test_perl_background_jobs_without_uniq_survive_a_restart(
    server_factory, perl, tmp_path
) -> None:
    # Gearman::Client sends an empty unique unless told one (its docs warn about gearmand's
    # issue #87). Our durable store keeps every such job; gearmand's libsqlite3 queue keeps one.
    server = server_factory(queue_db=tmp_path / "queue.db")
    for data in ("a", "b", "a"):
        assert perl.client(server.address, "background", "py.nouniq", data)["handle"]
    assert queued(server, "py.nouniq") == (3, 0, 0)
    server.kill()
    server.restart()
    kept = 1 if server_factory.kind == "gearmand" else 3
    assert queued(server, "py.nouniq") == (kept, 0, 0)


def test_a_perl_task_set_coalesces_foreground_jobs(gearman_server, perl) -> None:
    seen: list[bytes] = []
    functions = {"py.slow": lambda job: seen.append(job.data) or _slow(job)}
    with worker_thread(gearman_server.address, functions):
        reply = perl.client(gearman_server.address, "tasks", "py.slow", "a", "b", "--uniq=same")
    # One job; the server sends its WORK_COMPLETE once per submit, so both tasks end.
    assert reply == {"results": ["a", "a"], "events": []}
    assert seen == [b"a"]


def test_a_perl_client_and_our_workers_exceptions(gearman_server, perl) -> None:
    address = gearman_server.address
    with worker_thread(address, OUR_FUNCTIONS):
        # With OPTION_REQ exceptions: our {"type", "message"} reaches on_exception, and the
        # task simply ends (Gearman::Task sends no on_fail after an exception).
        reply = perl.client(address, "do", "py.boom", "x", "--exceptions=1")
        [[kind, data]] = reply["events"]
        assert kind == "exception" and json.loads(data) == {"type": "ValueError", "message": "boom"}
        assert reply["result"] is None
        reply = perl.client(address, "do", "py.boom", "x")  # without the option
        if gearman_server.kind == "gearmand":
            # gearmand 1.1.20 turns the exception into a WORK_FAIL whose body is "HANDLE\0": Perl
            # takes the whole body as the handle, finds no such task and dies.
            assert reply["died"].startswith("Job server failure: Got work_fail for unknown handle")
            assert "\0" in reply["died"]
        else:
            assert reply == {"result": None, "events": [["fail", "jshandle fail"]]}


def test_a_perl_client_calls_our_worker_through_the_envelope(gearman_server, perl) -> None:
    address = gearman_server.address
    with worker_thread(address, OUR_FUNCTIONS):
        reply = perl.client(address, "call", "py.add", "[2, 3]")
        assert reply["workload"] == '{"args":[2,3],"kwargs":{}}'  # what decode_call takes
        assert reply["result"] == 5
        reply = perl.client(address, "call", "py.add", "[1.5, 1]", '{"scale": 2}')
        assert reply["result"] == 5
        reply = perl.client(address, "call", "py.add", '[1, "x"]', "--exceptions=1")
        [[kind, data]] = reply["events"]
        assert kind == "exception"
        assert decode_error(data.encode("latin-1"))[0] == "TypeError"
