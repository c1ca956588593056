"""Admin replies that hostile names and client ids make (#14): parsed row by row, never trusted.

gearmand escapes nothing, so a worker's CAN_DO with a tab in the name, a client's SET_CLIENT_ID
with a line break, or a byte that is not UTF-8 reach ``status`` and ``workers`` as they are.
The replies below were captured from Debian's gearmand 1.1.20 after exactly such packets
(``tests/test_admin_hostile.py`` sends them over sockets). A row that cannot be read is kept in
``unreadable`` with ``strict=False``, and never passes for a row of its own.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_gearman.gearman.errors import RemoteProtocolError
from django_gearman.gearman.protocol import text as admin
from django_gearman.gearman.protocol.text import (
    AdminRows,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    QueuedJob,
    UnreadableRow,
    WorkerInfo,
)


def lines(reply: bytes) -> list[bytes]:
    """The lines of a list reply, as AdminReply collects them (up to the ``.`` line)."""
    collected = admin.AdminReply("status")
    for line in reply.split(b"\n"):
        if collected.add(line):
            break
    return collected.lines


# gearmand 1.1.20, after CAN_DO "tab\tname", "new\nline", "bad\xffutf", "<b>x</b>" on one
# connection, SET_CLIENT_ID "evil\n1 10.0.0.1 fake : forged" on another, and one job each of
# "epochfn" (SUBMIT_JOB_EPOCH at 10**12) and "tab\tname".
GEARMAND_STATUS = (
    b"new\nline\t0\t0\t1\n<b>x</b>\t0\t0\t1\nbad\xffutf\t0\t0\t1\nepochfn\t1\t0\t0\n"
    b"tab\tname\t1\t0\t1\n.\n"
)
GEARMAND_PRIORITY_STATUS = (
    b"new\nline\t0\t0\t0\t1\n<b>x</b>\t0\t0\t0\t1\nbad\xffutf\t0\t0\t0\t1\nepochfn\t0\t1\t0\t0\n"
    b"tab\tname\t0\t1\t0\t1\n.\n"
)
GEARMAND_WORKERS = (
    b"22 127.0.0.1 - :\n19 127.0.0.1 - : <b>x</b> bad\xffutf new\nline tab\tname\n"
    b"20 127.0.0.1 evil\n1 10.0.0.1 fake : forged :\n21 127.0.0.1 - :\n.\n"
)


# -- status and prioritystatus ------------------------------------------------------------


def test_a_tab_in_a_function_name_is_read_exactly() -> None:
    # The numbers are the last three fields, so the name is everything before them.
    assert admin.parse_status([b"tab\tname\t1\t0\t1"]) == [FunctionStatus("tab\tname", 1, 0, 1)]
    assert admin.parse_priority_status([b"a\tb\tc\t1\t2\t3\t4"]) == [
        PriorityStatus("a\tb\tc", 1, 2, 3, 4)
    ]


def test_gearmand_status_with_hostile_names_keeps_every_other_row() -> None:
    rows = admin.parse_status(lines(GEARMAND_STATUS), strict=False)
    assert rows == [
        FunctionStatus("<b>x</b>", 0, 0, 1),
        FunctionStatus("bad\udcffutf", 0, 0, 1),  # surrogateescape: byte for byte
        FunctionStatus("epochfn", 1, 0, 0),
        FunctionStatus("tab\tname", 1, 0, 1),
    ]
    # "new\nline" is one unreadable row of two lines: "line" does not pass for a function.
    assert rows.unreadable == (
        UnreadableRow(
            "status",
            b"new\nline\t0\t0\t1",
            "one row over 2 lines: a name or client id with a line break",
        ),
    )
    assert rows.unreadable[0].text == "new\nline\t0\t0\t1"


def test_gearmand_prioritystatus_with_hostile_names() -> None:
    rows = admin.parse_priority_status(lines(GEARMAND_PRIORITY_STATUS), strict=False)
    assert [row.function for row in rows] == ["<b>x</b>", "bad\udcffutf", "epochfn", "tab\tname"]
    assert [row.raw for row in rows.unreadable] == [b"new\nline\t0\t0\t0\t1"]


def test_strict_parsing_raises_at_the_first_unreadable_row() -> None:
    with pytest.raises(RemoteProtocolError, match=r"malformed status line b'new'"):
        admin.parse_status(lines(GEARMAND_STATUS))
    with pytest.raises(RemoteProtocolError, match="prioritystatus"):
        admin.parse_priority_status(lines(GEARMAND_PRIORITY_STATUS), strict=True)


@pytest.mark.parametrize(
    ("reply", "rows", "unreadable"),
    [
        # A name ending in a line break: the second line is only the numbers.
        ([b"end", b"\t0\t0\t1", b"ok\t1\t0\t1"], ["ok"], [b"end\n\t0\t0\t1"]),
        # A line break after something that looks like numbers: joined up to the next row.
        ([b"a\t1\t2\tx", b"b\t0\t0\t1", b"ok\t1\t0\t1"], ["ok"], [b"a\t1\t2\tx\nb\t0\t0\t1"]),
        # Two line breaks in one name.
        ([b"x", b"y", b"z\t0\t0\t1"], [], [b"x\ny\nz\t0\t0\t1"]),
        # A reply that ends inside a cut row.
        ([b"ok\t1\t0\t1", b"dangling"], ["ok"], [b"dangling"]),
    ],
)
def test_lines_of_a_cut_row_stay_together(
    reply: list[bytes], rows: list[str], unreadable: list[bytes]
) -> None:
    parsed = admin.parse_status(reply, strict=False)
    assert [row.function for row in parsed] == rows
    assert [row.raw for row in parsed.unreadable] == unreadable


@pytest.mark.parametrize(
    "number", [b"-1", b"+1", b" 1", b"1 ", b"1_000", "\u0661".encode(), b"0x1", b"", b"9" * 5000]
)
def test_numbers_are_ascii_digits_only(number: bytes) -> None:
    line = b"fn\t" + number + b"\t0\t1"
    with pytest.raises(RemoteProtocolError, match="malformed number"):
        admin.parse_status([line])
    parsed = admin.parse_status([line, b"ok\t1\t0\t1"], strict=False)
    assert [row.function for row in parsed] == [] and len(parsed.unreadable) == 1


def test_numbers_of_any_size_are_kept() -> None:
    huge = 10**30
    assert admin.parse_status([f"fn\t{huge}\t0\t1".encode()]) == [FunctionStatus("fn", huge, 0, 1)]


# -- workers -------------------------------------------------------------------------------


def test_a_client_id_with_a_line_break_forges_no_worker_row() -> None:
    rows = admin.parse_workers(lines(GEARMAND_WORKERS), strict=False)
    assert rows == [WorkerInfo(22, "127.0.0.1", "-", ()), WorkerInfo(21, "127.0.0.1", "-", ())]
    assert not any(row.address == "10.0.0.1" for row in rows)
    assert [(row.command, row.raw) for row in rows.unreadable] == [
        # A function name with a line break: the whole worker's row, not "new" as a function.
        ("workers", b"19 127.0.0.1 - : <b>x</b> bad\xffutf new\nline tab\tname"),
        # The client id "evil\n1 10.0.0.1 fake : forged": one row, no worker at 10.0.0.1.
        ("workers", b"20 127.0.0.1 evil\n1 10.0.0.1 fake : forged :"),
    ]


def test_function_names_in_workers_rows_end_at_spaces_only() -> None:
    assert admin.parse_workers([b"5 127.0.0.1 id : tab\tname  two"]) == [
        WorkerInfo(5, "127.0.0.1", "id", ("tab\tname", "two"))
    ]


def test_strict_workers_parsing_raises() -> None:
    with pytest.raises(RemoteProtocolError, match="malformed workers line .*line break"):
        admin.parse_workers(lines(GEARMAND_WORKERS))


@pytest.mark.parametrize("line", [b"x 127.0.0.1 - :", b"-1 a - :"])
def test_a_workers_row_that_does_not_parse_leaves_the_next(line: bytes) -> None:
    reply = [b"3 127.0.0.1 ok : fn", line, b"4 127.0.0.1 ok : fn"]
    parsed = admin.parse_workers(reply[1:], strict=False)
    assert parsed == [WorkerInfo(4, "127.0.0.1", "ok", ("fn",))]
    assert [row.raw for row in parsed.unreadable] == [line]
    # After a row, a line that does not start one is the rest of that row.
    parsed = admin.parse_workers(reply, strict=False)
    assert [row.fd for row in parsed] == [4]
    assert [row.raw for row in parsed.unreadable] == [b"\n".join(reply[:2])]


@pytest.mark.parametrize("line", [b"17 127.0.0.1", b"17 127.0.0.1 id-without-separator"])
def test_a_workers_row_without_its_separator_goes_on_in_the_next_line(line: bytes) -> None:
    # As a client id with a line break would make it: the next line, whatever it looks like,
    # is the rest of this row (up to the first " :"), and so is any line after that does not
    # start a row.
    parsed = admin.parse_workers(
        [line, b"3 127.0.0.1 forged : fn", b"tail", b"4 127.0.0.1 ok : fn"], strict=False
    )
    assert parsed == [WorkerInfo(4, "127.0.0.1", "ok", ("fn",))]
    assert [row.raw for row in parsed.unreadable] == [line + b"\n3 127.0.0.1 forged : fn\ntail"]


# -- show jobs and show queue --------------------------------------------------------------


def test_show_jobs_rows_are_checked() -> None:
    reply = [b"H:a\t4\t0\t0\t1", b"H:a:1\t0\t0\t1", b"H:a:2\t0\t2\t1", b"H:a:3\t-1\t0\t1"]
    parsed = admin.parse_jobs(reply, strict=False)
    assert parsed == [
        JobInfo("H:a\t4", 0, ignore_job=False, job_queued=True),
        JobInfo("H:a:1", 0, ignore_job=False, job_queued=True),
    ]
    # A bad flag, then a bad number: one cut row as far as anyone can tell, up to the end.
    assert [row.raw for row in parsed.unreadable] == [b"H:a:2\t0\t2\t1\nH:a:3\t-1\t0\t1"]
    assert parsed.unreadable[0].reason == "malformed flag '2'"


def test_show_queue_keeps_far_epochs_as_numbers() -> None:
    # A job kept in a durable store from before the server refused such times (10**12 s is
    # the year 33658): the parser keeps the number; the page shows it as it is.
    line = b"H:x:1\tepochfn\tu\tnormal\tscheduled\t1\t1\t1000000000000\t1000000000000"
    assert admin.parse_queue([line]) == [
        QueuedJob(
            "H:x:1",
            "epochfn",
            "u",
            "normal",
            "scheduled",
            background=True,
            durable=True,
            enqueued=10**12,
            run_at=10**12,
        )  # fmt: skip
    ]


def test_show_queue_skips_bad_rows_alone() -> None:
    # Our server escapes names, so a bad row is just that row: the next one is a row.
    good = b"H:x:2\tfn\tu\thigh\tqueued\t1\t0\t5\t0"
    bad_escape = b"H:x:1\tf\\x\tu\thigh\tqueued\t1\t1\t0\t0"
    bad_flag = b"H:x:3\tf\tu\tlow\tqueued\t2\t0\t0\t0"
    parsed = admin.parse_queue([bad_escape, good, b"H:1\tfn", bad_flag], strict=False)
    assert [row.handle for row in parsed] == ["H:x:2"]
    assert [row.reason.split(" ")[0:2] for row in parsed.unreadable] == [
        ["bad", "escape"],
        ["expected", "9"],
        ["malformed", "flag"],
    ]


# -- every reply, any bytes ----------------------------------------------------------------

_PARSERS = [
    admin.parse_status,
    admin.parse_priority_status,
    admin.parse_workers,
    admin.parse_jobs,
    admin.parse_queue,
]


@pytest.mark.parametrize("parse", _PARSERS)
def test_results_are_plain_lists_with_unreadable_rows(parse) -> None:
    rows = parse([], strict=False)
    assert isinstance(rows, AdminRows) and rows == [] and rows.unreadable == ()


@pytest.mark.parametrize("parse", _PARSERS)
@given(reply=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=12))
def test_any_reply_parses_and_every_line_is_accounted_for(parse, reply: list[bytes]) -> None:
    parsed = parse(reply, strict=False)
    unread_lines = sum(row.raw.count(b"\n") + 1 for row in parsed.unreadable)
    assert len(parsed) + unread_lines == len(reply)
    if not parsed.unreadable:
        assert parse(reply) == parsed  # strict agrees when every row is readable


@given(
    names=st.lists(
        st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=("Cs",))),
        max_size=5,
    )
)
def test_status_rows_with_any_name_but_line_breaks_round_trip(names: list[str]) -> None:
    rows = [FunctionStatus(name, 3, 1, 2) for name in names]
    assert admin.parse_status(lines(admin.format_status(rows))) == rows
