"""Real-browser fixtures: Playwright driving Debian's ``chromium`` (not Playwright's own
browser download: ``scripts/test`` installs the Debian package, as root, in CI).

A missing chromium skips the browser tests locally and fails them in CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    if path is None:
        message = (
            "Debian's chromium is not installed "
            "(apt-get install chromium; scripts/test installs it)"
        )
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def screenshot_dir() -> Path:
    """Where browser tests save screenshots: ``$SCREENSHOT_DIR``, else ``build/screenshots``."""
    path = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "build" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser_page(chromium_path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A page of a headless chromium, closed with its browser at the end of the test."""
    if _in_ci():
        import playwright.sync_api as sync_api  # noqa: PLC0415 - a test dependency: CI has it
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls from a thread with a running loop (SynchronousOnlyOperation). The test's own ORM
    # calls are plain blocking calls, so allow them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: chromium's sandbox refuses to run as root, which CI is.
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=["--no-sandbox"]
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
            context.close()
        finally:
            browser.close()


def admin_login(page: Any, base_url: str, username: str, password: str) -> None:
    """Log in through the admin's login form."""
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
