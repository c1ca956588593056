"""The queue overview in a real browser (Debian's chromium through Playwright), against both
servers: the numbers on the page are the ones `gearadmin --status` prints for the same server,
they refresh in place when the queue changes, and a screenshot is saved."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from django_gearman.gearman import GearmanClient
from django_gearman.gearman.protocol.constants import Priority
from tests.helpers import wait_for, worker_thread

from .conftest import admin_login

pytestmark = [pytest.mark.browser, pytest.mark.interop, pytest.mark.django_db(transaction=True)]

OVERVIEW = "/admin/django_gearman/queuestatus/"


def gearadmin_status(gearadmin: str, address: str) -> dict[str, tuple[int, int, int]]:
    """`gearadmin --status` as {function: (queued, running, workers)}."""
    host, port = address.rsplit(":", 1)
    output = subprocess.run(
        [gearadmin, "-h", host, "-p", port, "--status"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    rows = {}
    for line in output.splitlines():
        if line == ".":
            break
        function, total, running, workers = line.split("\t")
        rows[function] = (int(total) - int(running), int(running), int(workers))
    return rows


def page_status(page: Any, address: str) -> dict[str, tuple[int, int, int]]:
    """The overview's rows for one server as {function: (queued, running, workers)}."""
    rows = {}
    for row in page.locator(f'section[data-server="{address}"] tr[data-function]').all():
        cells = [
            int(row.locator(f'td[data-col="{col}"]').inner_text())
            for col in ("queued", "running", "workers")
        ]
        rows[row.get_attribute("data-function")] = tuple(cells)
    return rows


@pytest.fixture
def gearman(gearman_server: Any) -> Iterator[Any]:
    with override_settings(GEARMAN={"default": {"SERVERS": [gearman_server.address]}}):
        yield gearman_server


def test_overview_matches_gearadmin_and_refreshes_in_place(
    gearman: Any,
    gearadmin: str,
    live_server: Any,
    admin_user: Any,
    browser_page: Any,
    screenshot_dir: Path,
) -> None:
    address = gearman.address
    with GearmanClient([address]) as client:
        for n in range(3):
            client.submit_background(
                "browser_mail", str(n).encode(), priority=Priority.HIGH, unique=f"bm{n}"
            )
        client.submit_background("browser_mail", b"low", priority=Priority.LOW, unique="bm-low")
        client.submit_background("browser_report", b"r", unique="br")
    page = browser_page
    with worker_thread([address], {"browser_idle": lambda job: b""}, client_id="browser-worker"):
        wait_for(
            lambda: gearadmin_status(gearadmin, address).get("browser_idle", (0, 0, 0))[2] == 1,
            what="the worker",
        )
        admin_login(page, live_server.url, "admin", "password")
        page.goto(live_server.url + OVERVIEW)
        assert page.locator(f'section[data-server="{address}"] .gearman-up').is_visible()

        shown = page_status(page, address)
        expected = gearadmin_status(gearadmin, address)
        assert shown == expected
        assert shown["browser_mail"] == (4, 0, 0) and shown["browser_idle"] == (0, 0, 1)
        row = page.locator('tr[data-function="browser_mail"]')
        assert [
            row.locator(f'td[data-col="{c}"]').inner_text() for c in ("high", "normal", "low")
        ] == ["3", "0", "1"]
        path = screenshot_dir / f"admin-overview-{gearman.kind}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # The queue grows while the page is open: the numbers follow without a page load.
        page.evaluate("window.__not_reloaded = true")
        with GearmanClient([address]) as client:
            client.submit_background("browser_report", b"r2", unique="br2")
            client.submit_background("browser_new", b"n", unique="bn")
        queued = page.locator('tr[data-function="browser_report"] td[data-col="queued"]')
        page.wait_for_function(
            "() => document.querySelector('tr[data-function=\"browser_new\"]') !== null"
            " && document.querySelector("
            "'tr[data-function=\"browser_report\"] td[data-col=\"queued\"]').innerText === '2'",
            timeout=15_000,
        )
        assert queued.inner_text() == "2" and page.evaluate("window.__not_reloaded") is True
        assert page_status(page, address) == gearadmin_status(gearadmin, address)
        assert "Updated" in page.locator("#gearman-refresh-state").inner_text()
