"""The admin's queue pages against what any client or worker can send (#14): names and client
ids with tabs, line breaks, HTML, bidi controls or bytes that are not UTF-8, and epochs no date
can hold. The pages stay up, show every other row, escape what they show, say how many rows
could not be read, and offer actions only where they can work.

Live tests run against both servers (``gearman_server``): Debian's gearmand takes such names
and ids and passes them on unescaped; our server refuses most of them at the protocol level,
and the page must be right either way. The crafted replies themselves are in
``tests/gearman/protocol/test_text_hostile.py``.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from django_gearman.admin import monitor
from django_gearman.admin.display import LAST_SHOWN_SECOND, action_problem, label
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.protocol import REQ, RES, JobInfo, PacketType, QueuedJob, WorkerInfo
from django_gearman.gearman.protocol.text import parse_status, parse_workers
from django_gearman.gearman.server.store.sqlite import SqliteStore
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

T = PacketType
OVERVIEW = "admin:django_gearman_queuestatus_changelist"
WORKERS = "admin:django_gearman_workerlist_changelist"
JOBS = "admin:django_gearman_joblist_changelist"
PAGES = [OVERVIEW, WORKERS, JOBS]
DROP = "admin:django_gearman_drop_function"
CANCEL = "admin:django_gearman_cancel_job"


def req(kind: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return REQ + struct.pack(">II", kind, len(body)) + body


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    header = _read_exactly(sock, 12)
    assert header[:4] == RES, header
    kind, size = struct.unpack(">II", header[4:])
    return kind, _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class RawPeers:
    """Raw connections that send packets as given, each then synced with an ECHO (the server
    handles a connection's packets in order); they stay open until the test ends."""

    def __init__(self, server: Any, stack: ExitStack) -> None:
        self.server = server
        self.stack = stack

    def send(self, *packets: bytes) -> socket.socket:
        sock = self.stack.enter_context(
            socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        )
        sock.sendall(b"".join(packets) + req(T.ECHO_REQ, b"sync"))
        try:
            while _read_packet(sock)[0] != T.ECHO_RES:
                pass  # our server answers a refused name with ERROR
        except ConnectionError:
            pass  # or drops the connection: handled all the same
        return sock


@pytest.fixture
def server(gearman_server: Any) -> Iterator[Any]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield gearman_server


@pytest.fixture
def peers(server: Any) -> Iterator[RawPeers]:
    with ExitStack() as stack:
        yield RawPeers(server, stack)


def _offered(server: Any) -> set[bytes]:
    """Raw ``status`` names, as the server sent them (no parsing to trust)."""
    with GearmanAdminClient(server.address) as admin:
        return {line.rsplit(b"\t", 3)[0] for line in admin.command("status")}


def _page(client: Client, page: str) -> str:
    response = client.get(reverse(page))
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def _up(html: str, server: Any) -> bool:
    return f'data-server="{server.address}" data-up="1"' in html


def _tables(html: str) -> str:
    """The page without its "rows could not be read" notes (which list those rows)."""
    return re.sub(r'<div class="errornote gearman-unreadable".*?</div>', "", html, flags=re.S)


def _worker_rows(html: str) -> list[tuple[str, str]]:
    """(client id, address) of each row of the workers table."""
    return re.findall(r'<tr data-client-id="([^"]*)">\s*<td>.*?</td><td>([^<]*)</td>', html)


def _unreadable(html: str) -> int:
    found = re.search(r'data-unreadable="(\d+)"', html)
    return int(found.group(1)) if found else 0


# -- names and ids from live servers --------------------------------------------------------

ODD_NAMES = {
    b"tab\tname": r"tab\tname",
    b"<b>adm_html</b>": "&lt;b&gt;adm_html&lt;/b&gt;",
    b"adm_bad\xffutf": r"adm_bad\xffutf",
    "adm_\u202ertl".encode(): r"adm_\u202ertl",
}


def test_odd_function_names_are_shown_escaped_and_the_server_stays_up(
    admin_client: Client, server: Any, peers: RawPeers
) -> None:
    peers.send(req(T.CAN_DO, b"adm_plain"))
    for name in ODD_NAMES:
        peers.send(req(T.CAN_DO, name))
    offered = _offered(server)
    assert b"adm_plain" in offered
    if server.kind == "gearmand":
        assert set(ODD_NAMES) <= offered  # gearmand takes them all
    for page in PAGES:
        html = _page(admin_client, page)
        assert _up(html, server) and _unreadable(html) == 0
        assert "<b>adm_html</b>" not in html  # escaped, never markup
    html = _page(admin_client, OVERVIEW)
    assert 'data-function="adm_plain"' in html and "function=adm_plain" in html  # Drop offered
    for name, shown in ODD_NAMES.items():
        row = re.search(rf'<tr data-function="{re.escape(shown)}">(.*?)</tr>', html, re.S)
        assert (row is not None) == (name in offered), name
        if row and name != b"<b>adm_html</b>":
            # Shown with escapes and marked so; no Drop button, and the reason why not.
            assert 'class="gearman-escaped"' in row.group(1)
            assert "cannot drop: it " in row.group(1) and "function=" not in row.group(1)
    workers = _page(admin_client, WORKERS)
    assert all((shown in workers) == (name in offered) for name, shown in ODD_NAMES.items())


def test_a_function_name_with_a_line_break_is_counted_not_split_in_two(
    admin_client: Client, server: Any, peers: RawPeers
) -> None:
    peers.send(req(T.CAN_DO, b"adm_plain"))
    peers.send(req(T.CAN_DO, b"adm_new\nadm_line"))
    accepted = b"adm_new" in _offered(server)
    assert accepted == (server.kind == "gearmand")
    for page in PAGES:
        html = _page(admin_client, page)
        assert _up(html, server)
        assert "adm_line" not in _tables(html)
        # gearmand: the status, prioritystatus and workers rows that hold the name.
        assert _unreadable(html) == (3 if accepted else 0)
    html = _page(admin_client, OVERVIEW)
    assert 'data-function="adm_plain"' in html
    if accepted:
        assert "3 rows could not be read" in html and r"adm_new\nadm_line" in html


def test_a_client_id_with_a_line_break_forges_no_worker(
    admin_client: Client, server: Any, peers: RawPeers
) -> None:
    peers.send(req(T.SET_CLIENT_ID, b"adm_honest"), req(T.CAN_DO, b"adm_plain"))
    peers.send(
        req(T.SET_CLIENT_ID, b"adm_evil\n1 10.0.0.1 adm_fake : adm_forged"),
        req(T.CAN_DO, b"adm_evil_fn"),
    )
    html = _page(admin_client, WORKERS)
    assert _up(html, server)
    rows = _worker_rows(html)
    assert ("adm_honest", "127.0.0.1") in rows
    assert not [row for row in rows if row[1] != "127.0.0.1" or row[0].startswith("adm_fake")]
    if server.kind == "gearmand":  # the evil worker's row is unreadable, and listed as such
        assert len(rows) == 1 and "1 row could not be read" in html
        assert r"adm_evil\n1 10.0.0.1 adm_fake : adm_forged : adm_evil_fn" in html
    else:  # ours makes the id safe: one row of its own
        assert len(rows) == 2 and _unreadable(html) == 0


# -- times no date can hold -----------------------------------------------------------------


def test_a_durable_job_with_a_far_epoch_does_not_break_the_jobs_page(
    admin_client: Client, server_factory: Callable[..., Any], tmp_path: Any
) -> None:
    db = tmp_path / "queue.sqlite"
    epoch = 10**12  # the year 33658
    if server_factory.kind == "embedded":  # type: ignore[attr-defined]
        # Ours refuses such a time now; a store written before it did still holds one.
        store = SqliteStore(db)
        store.add_nowait(b"adm_epoch", b"adm-far", 1, b"x", epoch, enqueued=epoch)
        store.close()
        server = server_factory(queue_db=db)
    else:
        server = server_factory(queue_db=db)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                req(T.SUBMIT_JOB_EPOCH, b"adm_epoch", b"adm-far", str(epoch).encode(), b"x")
            )
            assert _read_packet(sock)[0] == T.JOB_CREATED
        server.kill()
        server.restart()
    with override_settings(GEARMAN={"default": {"SERVERS": [server.address]}}):
        wait_for(lambda: b"adm_epoch" in _offered(server), what="the kept job", timeout=10)
        for page in PAGES:
            html = _page(admin_client, page)
            assert _up(html, server) and _unreadable(html) == 0
        html = _page(admin_client, JOBS)
        if server.kind == "embedded":
            assert html.count(f'not a date this page can show">{epoch}</span>') == 2
            assert "adm-far" in html


# -- pages from crafted snapshots (no server) ------------------------------------------------

ADDRESS = "127.0.0.1:4730"


def _snapshot(**fields: Any) -> monitor.ServerSnapshot:
    return monitor.ServerSnapshot(
        ADDRESS, ("default",), up=True, version="OK-ish \udcff", pid=1, **fields
    )


@pytest.fixture
def crafted(monkeypatch: pytest.MonkeyPatch) -> Callable[[monitor.ServerSnapshot], None]:
    def use(snapshot: monitor.ServerSnapshot) -> None:
        monkeypatch.setattr(monitor, "snapshot_all", lambda **kwargs: [snapshot])
        monkeypatch.setattr(monitor, "configured_servers", lambda: {ADDRESS: ("default",)})

    return use


def test_names_that_are_not_utf8_are_shown_not_a_500(
    admin_client: Client, crafted: Callable[[monitor.ServerSnapshot], None]
) -> None:
    bad = "adm_caf\udcc3"  # b"adm_caf\xc3" as our parser keeps it
    crafted(
        _snapshot(
            functions=(monitor.FunctionRow(bad, 1, 2, 3, 0, 1),),
            workers=(WorkerInfo(7, "127.0.0.1", "id\udcff", (bad, "adm_ok")),),
            jobs=(JobInfo("H:x:\udcc3", 0, ignore_job=False, job_queued=True),),
            unique_keys=("u\udcc3", "u\u202e"),
        )
    )
    overview = _page(admin_client, OVERVIEW)
    assert r'data-function="adm_caf\xc3"' in overview
    assert r"OK-ish \xff" in overview and "cannot drop: it is not UTF-8" in overview
    workers = _page(admin_client, WORKERS)
    assert r'data-client-id="id\xff"' in workers and r"adm_caf\xc3" in workers
    assert "adm_ok" in workers
    jobs = _page(admin_client, JOBS)
    assert r"OK-ish \xff" in jobs
    assert r'data-handle="H:x:\xc3"' in jobs and "cannot cancel: it is not UTF-8" in jobs
    assert r"u\xc3" in jobs and r"u\u202e" in jobs


@override_settings(TIME_ZONE="Pacific/Kiritimati")  # UTC+14: the last day of 9999 overflows
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (10**12, "1000000000000"),
        (253_402_300_799, "253402300799"),
        (2**64, str(2**64)),
        (LAST_SHOWN_SECOND, "9999-12-31 13:59:59"),
        (1_800_000_000, "2027-01-15 22:00:00"),
    ],
)
def test_times_past_any_date_are_shown_as_numbers(
    admin_client: Client,
    crafted: Callable[[monitor.ServerSnapshot], None],
    seconds: int,
    shown: str,
) -> None:
    job = QueuedJob(
        "H:x:1", "adm_far", "", "low", "scheduled",
        background=True, durable=True, enqueued=seconds, run_at=seconds,
    )  # fmt: skip
    crafted(_snapshot(queue=(job,)))
    html = _page(admin_client, JOBS)
    assert html.count(shown) == 2, shown  # enqueued and runs at


def test_unreadable_rows_are_counted_and_listed(
    admin_client: Client, crafted: Callable[[monitor.ServerSnapshot], None]
) -> None:
    status = parse_status([b"a\t1\t0\t1", b"<i>x", b"y\t0\t0\t1", b"\xff"], strict=False)
    workers = parse_workers([b"1 127.0.0.1 id", b"2 10.0.0.1 x : fn"], strict=False)
    crafted(_snapshot(unreadable=(*status.unreadable, *workers.unreadable)))
    for page in PAGES:
        html = _page(admin_client, page)
        assert "3 rows could not be read" in html and _unreadable(html) == 3
        assert r"&lt;i&gt;x\ny\t0\t0\t1" in html and r"\xff" in html and "<i>" not in html
        assert r"1 127.0.0.1 id\n2 10.0.0.1 x : fn" in html


# -- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "field"), [(DROP, "function"), (CANCEL, "handle")], ids=["drop", "cancel"]
)
@pytest.mark.parametrize("target", ["tab\tname", "ctl\x01", "bidi\u202e", "two words", ""])
def test_actions_refuse_names_an_admin_command_cannot_carry(
    admin_client: Client,
    crafted: Callable[[monitor.ServerSnapshot], None],
    view: str,
    field: str,
    target: str,
) -> None:
    crafted(_snapshot())
    url = reverse(view)
    assert admin_client.get(url, {"server": ADDRESS, field: target}).status_code == 404
    response = admin_client.post(url, {"server": ADDRESS, field: target, "confirm": "yes"})
    assert response.status_code == 404


def test_actions_on_odd_but_printable_names_are_confirmed_escaped(
    admin_client: Client, crafted: Callable[[monitor.ServerSnapshot], None]
) -> None:
    crafted(_snapshot())
    response = admin_client.get(reverse(DROP), {"server": ADDRESS, "function": "<b>x</b>"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Drop function &lt;b&gt;x&lt;/b&gt; on" in html and "<b>x</b>" not in html


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("plain.fn:1", ""),
        ("<b>x</b>", ""),
        ("caf\u00e9", ""),
        ("tab\tname", "whitespace or control"),
        ("no\u00a0break", "whitespace or control"),
        ("bad\udcff", "not UTF-8"),
        ("", "empty"),
    ],
)
def test_action_problem_and_label(name: str, problem: str) -> None:
    assert (problem in action_problem(name)) and (bool(action_problem(name)) == bool(problem))
    shown = label(name)
    shown.text.encode("utf-8")  # always encodable
    assert shown.escaped == (name != "" and not name.isprintable())
