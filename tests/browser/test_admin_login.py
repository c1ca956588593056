"""Smoke test of the browser setup: Debian's chromium, through Playwright, logs in to the admin.

It needs no Gearman server, so when it fails the browser plumbing is at fault, not the queue pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import admin_login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_login_shows_site_administration(
    live_server: Any, admin_user: Any, browser_page: Any, screenshot_dir: Path
) -> None:
    page = browser_page
    admin_login(page, live_server.url, admin_user.username, "password")

    assert page.url == f"{live_server.url}/admin/"
    assert "Site administration" in page.locator("#content h1").inner_text()
    assert admin_user.username.upper() in page.locator("#user-tools").inner_text().upper()
    # An ORM call after Playwright has started: needs DJANGO_ALLOW_ASYNC_UNSAFE (browser_page).
    admin_user.refresh_from_db()
    assert admin_user.last_login is not None

    path = screenshot_dir / "admin-login.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
