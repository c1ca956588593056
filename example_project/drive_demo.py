"""Drive the running example project like a visitor would, over HTTP (run by ``scripts/demo``).

Waits for the job server, the web server and a worker, then signs a new user up through the
form (GET for the CSRF token, POST), waits for the welcome mail the worker sends and prints
it, and fetches ``/report/`` and prints the progress the worker reported and the result.
Exits 1 with a message saying what did not happen. Only the standard library and
django_gearman's admin client: it never imports the project's settings.

    python drive_demo.py --url http://127.0.0.1:8000/ --gearman 127.0.0.1:4730 --mail-dir sent-mail
"""

from __future__ import annotations

import argparse
import html
import http.cookiejar
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django_gearman.gearman.admin_client import GearmanAdminClient

T = TypeVar("T")
FUNCTIONS = ("signup.tasks.send_signup_mail", "signup.tasks.build_report")


class DemoError(Exception):
    """A step of the demo did not happen; the message says which."""


class Watcher:
    """Fails a wait early when one of the demo's processes (``name=pid``) has exited."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def check(self) -> None:
        for name, pid in self.pids.items():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise DemoError(f"the {name} (pid {pid}) exited") from None
            except PermissionError:
                pass
            try:  # a zombie: dead, not yet reaped by the script that started it
                if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                    raise DemoError(f"the {name} (pid {pid}) exited")
            except (OSError, IndexError):
                pass


def wait(what: str, probe: Callable[[], T | None], timeout: float, watcher: Watcher) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        watcher.check()
        try:
            value = probe()
            if value:
                return value
        except (OSError, DemoError) as error:
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.1)


def server_version(address: str) -> str:
    with GearmanAdminClient(address, timeout=2) as admin:
        return admin.version()


def worker_ready(address: str) -> bool:
    with GearmanAdminClient(address, timeout=2) as admin:
        offered = {function for row in admin.workers() for function in row.functions}
    return all(any(f.endswith(name) for f in offered) for name in FUNCTIONS)


class Browser:
    """Just enough of a browser: cookies, redirects, form posts."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str, timeout: float = 60) -> tuple[int, str]:
        return self._open(
            urllib.request.Request(urllib.parse.urljoin(self.base_url, path)), timeout
        )

    def post(self, path: str, fields: dict[str, str], timeout: float = 60) -> tuple[int, str]:
        url = urllib.parse.urljoin(self.base_url, path)
        data = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(url, data=data, headers={"Referer": url}), timeout)

    def _open(self, request: urllib.request.Request, timeout: float) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode(errors="replace")


def signup(browser: Browser, username: str, email: str) -> str:
    status, page = browser.get("/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if status != 200 or token is None:
        raise DemoError(f"GET / answered {status} without a signup form")
    status, page = browser.post(
        "/", {"csrfmiddlewaretoken": token.group(1), "username": username, "email": email}
    )
    if status != 200 or email not in page:
        raise DemoError(f"POST / answered {status}, not the thanks page:\n{text_of(page)}")
    return text_of(re.search(r'<p id="thanks">(.*?)</p>', page, re.S).group(1))  # type: ignore[union-attr]


def mail_to(mail_dir: Path, email: str, before: set[Path]) -> str | None:
    if not mail_dir.is_dir():
        return None
    for path in sorted(set(mail_dir.iterdir()) - before):
        text = path.read_text(errors="replace")
        if re.search(rf"^To: {re.escape(email)}$", text, re.M):
            return f"{path}:\n{text}"
    return None


def report(browser: Browser, days: int) -> tuple[list[str], Any]:
    status, page = browser.get(f"/report/?days={days}")
    error = re.search(r'<p id="error">(.*?)</p>', page, re.S)
    if status != 200 or error:
        raise DemoError(
            f"/report/ answered {status}: {text_of(error.group(1)) if error else text_of(page)}"
        )
    steps = re.findall(r'<li class="step">(\d+/\d+)</li>', page)
    result = re.search(r'<pre id="result">(.*?)</pre>', page, re.S)
    if result is None:
        raise DemoError("/report/ has no result")
    return steps, json.loads(html.unescape(result.group(1)))


def admin_overview(browser: Browser, username: str, password: str, address: str) -> list[str]:
    """Log in to the admin and read the queue overview: the functions listed for ``address``."""
    overview = "/admin/django_gearman/queuestatus/"
    login = f"/admin/login/?next={overview}"
    status, page = browser.get(login)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if status != 200 or token is None:
        raise DemoError(f"GET {login} answered {status} without a login form")
    fields = {
        "csrfmiddlewaretoken": token.group(1),
        "username": username,
        "password": password,
        "next": overview,
    }
    status, page = browser.post(login, fields)
    if status != 200 or f'data-server="{address}" data-up="1"' not in page:
        raise DemoError(
            f"the admin overview ({status}) does not show {address} up:\n{text_of(page)[:2000]}"
        )
    return re.findall(r'<tr data-function="([^"]+)">', page)


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000/", help="the web server (runserver)"
    )
    parser.add_argument("--gearman", default="127.0.0.1:4730", help="the job server, host:port")
    parser.add_argument(
        "--mail-dir", type=Path, required=True, help="EMAIL_FILE_PATH of the project"
    )
    parser.add_argument("--days", type=int, default=5, help="steps of the report")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each step")
    parser.add_argument(
        "--admin",
        metavar="USER:PASSWORD",
        help="also check the admin's queue overview as this user",
    )
    parser.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="fail early if this process exits",
    )
    args = parser.parse_args(argv)
    watcher = Watcher(
        {name: int(pid) for name, _, pid in (item.partition("=") for item in args.watch)}
    )
    try:
        version = wait(
            "the job server", lambda: server_version(args.gearman), args.timeout, watcher
        )
        print(f"==> job server {args.gearman} is up ({version})")
        wait(
            "the web server",
            lambda: Browser(args.url).get("/", timeout=5)[0] == 200,
            args.timeout,
            watcher,
        )
        print(f"==> web server {args.url} is up")
        wait(
            f"a worker offering {', '.join(FUNCTIONS)}",
            lambda: worker_ready(args.gearman),
            args.timeout,
            watcher,
        )
        print("==> a worker is ready")

        name = f"newcomer-{secrets.token_hex(3)}"
        email = f"{name}@example.com"
        before = set(args.mail_dir.iterdir()) if args.mail_dir.is_dir() else set()
        browser = Browser(args.url)
        print(f"==> signing up {name} <{email}> at {args.url}")
        print("   ", signup(browser, name, email))
        mail = wait(
            f"the welcome mail to {email} in {args.mail_dir}",
            lambda: mail_to(args.mail_dir, email, before),
            args.timeout,
            watcher,
        )
        print(f"==> the worker sent the welcome mail, {mail}")

        print(f"==> GET /report/?days={args.days} (a foreground task that reports progress)")
        steps, result = report(browser, args.days)
        print(f"    progress seen by the view: {' '.join(steps) or '(none)'}")
        print(f"    result: {json.dumps(result)}")
        expected = [f"{n}/{args.days}" for n in range(1, args.days + 1)]
        if steps != expected:
            raise DemoError(f"the report's progress was {steps}, expected {expected}")
        if result.get("latest_signup") != name:
            raise DemoError(
                f"the report's latest signup is {result.get('latest_signup')!r}, expected {name!r}"
            )

        if args.admin:
            user, _, password = args.admin.partition(":")
            print(
                "==> the admin's queue overview, "
                f"{urllib.parse.urljoin(args.url, '/admin/django_gearman/queuestatus/')}"
            )
            functions = admin_overview(Browser(args.url), user, password, args.gearman)
            print(f"    {args.gearman} is up; functions: {', '.join(functions) or '(none)'}")
            missing = set(FUNCTIONS) - set(functions)
            if missing:
                raise DemoError(f"the overview does not list {', '.join(sorted(missing))}")
    except DemoError as error:
        print(f"demo check failed: {error}", file=sys.stderr)
        return 1
    print("==> all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
