"""Admin replies: parsed from gearmand 1.1.20's exact bytes, and formatted back byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_gearman.gearman.errors import AdminError, LocalProtocolError, RemoteProtocolError
from django_gearman.gearman.protocol import AdminReply, PacketBuffer
from django_gearman.gearman.protocol import text as admin

# Captured from Debian's gearmand 1.1.20 (a worker with id "my worker" offering fn1 and fn2,
# two background jobs on fn1 and one on fn3 without a unique).
GEARMAND = {
    "status": b"fn1\t2\t0\t1\nfn3\t1\t0\t0\nfn2\t0\t0\t1\n.\n",
    "prioritystatus": b"fn1\t1\t1\t0\t1\nfn3\t0\t0\t1\t0\nfn2\t0\t0\t0\t1\n.\n",
    "workers": b"18 127.0.0.1 - :\n17 127.0.0.1 my worker : fn2 fn1\n16 127.0.0.1 - :\n.\n",
    "show jobs": b"H:vm:1\t0\t0\t1\nH:vm:2\t0\t0\t1\nH:vm:3\t0\t0\t1\n.\n",
    "show unique jobs": b"\nu1\nu2\n.\n",
}


def reply_lines(command: str, wire: bytes) -> list[bytes]:
    reply = AdminReply(command)
    done = [reply.add(frame.line) for frame in PacketBuffer().feed(wire)]  # type: ignore[union-attr]
    assert done[-1] is True and not any(done[:-1])
    reply.raise_for_error()
    return reply.lines


def test_status() -> None:
    rows = admin.parse_status(reply_lines("status", GEARMAND["status"]))
    assert rows[0] == admin.FunctionStatus("fn1", 2, 0, 1)
    assert rows[0].queued == 2
    assert admin.format_status(rows) == GEARMAND["status"]


def test_priority_status() -> None:
    rows = admin.parse_priority_status(reply_lines("prioritystatus", GEARMAND["prioritystatus"]))
    assert rows[1] == admin.PriorityStatus("fn3", 0, 0, 1, 0)
    assert admin.format_priority_status(rows) == GEARMAND["prioritystatus"]


def test_workers_with_spaces_in_client_id() -> None:
    rows = admin.parse_workers(reply_lines("workers", GEARMAND["workers"]))
    assert rows[1] == admin.WorkerInfo(17, "127.0.0.1", "my worker", ("fn2", "fn1"))
    assert rows[0].functions == ()
    assert admin.format_workers(rows) == GEARMAND["workers"]


def test_show_jobs() -> None:
    rows = admin.parse_jobs(reply_lines("show jobs", GEARMAND["show jobs"]))
    assert rows[0] == admin.JobInfo("H:vm:1", retries=0, ignore_job=False, job_queued=True)
    assert admin.format_jobs(rows) == GEARMAND["show jobs"]


def test_show_unique_jobs_keeps_the_empty_unique() -> None:
    uniques = admin.parse_unique_jobs(reply_lines("show unique jobs", GEARMAND["show unique jobs"]))
    assert uniques == ["", "u1", "u2"]
    assert admin.format_unique_jobs(uniques) == GEARMAND["show unique jobs"]


@pytest.mark.parametrize(
    ("command", "wire", "code", "message"),
    [
        ("show foo", b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n", "UNKNOWN_SHOW_ARGUMENTS", ""),
        ("cancel job x", b"ERR UNKNOWN_JOB\r\n", "UNKNOWN_JOB", ""),
        (
            "bogus",
            b"ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n",
            "UNKNOWN_COMMAND",
            "Unknown+server+commandbogus",
        ),
        ("status", b"ERR UNKNOWN_ERROR\r\n", "UNKNOWN_ERROR", ""),
    ],
)
def test_err_replies_raise_admin_error(command: str, wire: bytes, code: str, message: str) -> None:
    reply = AdminReply(command)
    assert reply.add(PacketBuffer().feed(wire)[0].line)  # type: ignore[union-attr]
    with pytest.raises(AdminError) as info:
        reply.raise_for_error()
    assert (info.value.code, info.value.message) == (code, message)
    assert admin.format_error(code, message) == wire


def test_single_line_values() -> None:
    assert admin.parse_value([b"OK 1.1.20+ds"]) == "1.1.20+ds"
    admin.parse_ok([b"OK"])
    with pytest.raises(RemoteProtocolError):
        admin.parse_ok([b"OK 12"])
    with pytest.raises(RemoteProtocolError):
        admin.parse_value([b"OK"])


def test_malformed_rows_are_remote_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="status"):
        admin.parse_status([b"fn1\t2\t0"])
    with pytest.raises(RemoteProtocolError, match="number"):
        admin.parse_status([b"fn1\tx\t0\t1"])
    with pytest.raises(RemoteProtocolError, match="workers"):
        admin.parse_workers([b"17 127.0.0.1 id-without-separator"])


def test_command_line() -> None:
    assert admin.command_line("maxqueue", "fn", "1", "2", "3") == b"maxqueue fn 1 2 3\r\n"
    with pytest.raises(LocalProtocolError):
        admin.command_line("cancel job", "two words")


_names = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20
)


@given(
    handle=_names.filter(bool),
    function=_names,
    unique=_names,
    priority=st.sampled_from(["high", "normal", "low"]),
    state=st.sampled_from(["running", "queued", "scheduled"]),
    flags=st.tuples(st.booleans(), st.booleans()),
    times=st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)),
)
def test_show_queue_rows_round_trip_with_tabs_and_newlines_escaped(
    handle: str,
    function: str,
    unique: str,
    priority: str,
    state: str,
    flags: tuple[bool, bool],
    times: tuple[int, int],
) -> None:
    row = admin.QueuedJob(handle, function, unique, priority, state, *flags, *times)
    wire = admin.format_queue([row, row])
    lines = wire.split(b"\n")
    assert lines[-2:] == [b".", b""] and len(lines) == 4  # one line per row: nothing unescaped
    reply = admin.AdminReply("show queue 10")
    assert [reply.add(line) for line in lines[:3]] == [False, False, True]
    assert admin.parse_queue(reply.lines) == [row, row]


def test_show_queue_rejects_bad_rows() -> None:
    with pytest.raises(RemoteProtocolError, match="9 tab-separated"):
        admin.parse_queue([b"H:1\tfn"])
    with pytest.raises(RemoteProtocolError, match="bad escape"):
        admin.parse_queue([b"H:1\tf\\x\tu\thigh\tqueued\t1\t1\t0\t0"])
    assert admin.is_list_command("SHOW  QUEUE") and admin.is_list_command("show queue 5")
    assert not admin.is_list_command("show queued") and not admin.is_list_command("version")


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("plain", b"plain"),
        ("a\tb", b"a\\tb"),
        ("line\r\nbreak", b"line\\r\\nbreak"),
        ("back\\slash", b"back\\\\slash"),
        ("\\t is not a tab", b"\\\\t is not a tab"),
        ("trailing\\", b"trailing\\\\"),
        ("caf\udcc3", b"caf\xc3"),  # not UTF-8: surrogateescape, byte for byte
    ],
)
def test_show_queue_escapes_exactly_these_characters(name: str, wire: bytes) -> None:
    row = admin.QueuedJob(
        "H:x:1", name, name, "low", "scheduled",
        background=False, durable=True, enqueued=1_795_000_000, run_at=1_900_000_000,
    )  # fmt: skip
    line = b"H:x:1\t" + wire + b"\t" + wire + b"\tlow\tscheduled\t0\t1\t1795000000\t1900000000"
    assert admin.format_queue([row]) == line + b"\n.\n"
    assert reply_lines("show queue", line + b"\n.\n") == [line]
    assert admin.parse_queue([line]) == [row]


def test_show_queue_errors_end_the_reply() -> None:
    with pytest.raises(AdminError) as caught:  # gearmand's answer
        reply_lines("show queue 1000", b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n")
    assert caught.value.code == "UNKNOWN_SHOW_ARGUMENTS"
    with pytest.raises(RemoteProtocolError, match="bad escape"):
        admin.parse_queue([b"H:1\tends\\\tu\thigh\tqueued\t1\t1\t0\t0"])
    with pytest.raises(RemoteProtocolError, match="malformed number"):
        admin.parse_queue([b"H:1\tfn\tu\thigh\tqueued\t1\t1\tsoon\t0"])
