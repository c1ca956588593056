"""Nothing lost between the view and the worker, end to end in example_project/: a signup while
no job server runs answers as usual, the web process is killed with -9, and once a server and a
worker start, the welcome mail arrives, once; the same with the job server killed with -9 after
the commit. Against both servers (their durable queues on)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SERVER_KINDS
from tests.helpers import wait_for
from tests.peers import free_port, stop_process
from tests.test_example_project import EXAMPLE, example_env, example_worker, mail_to, manage

pytestmark = pytest.mark.interop


def start_web(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=EXAMPLE,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "web.log").read_text()
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    wait_for(up, timeout=60, what="runserver")
    return process, url


def sign_up(url: str, username: str, email: str) -> int:
    """GET the form, POST it with its CSRF token (as a browser): the response's status."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    with opener.open(url, timeout=30) as page:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode())
    assert token is not None
    body = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token.group(1), "username": username, "email": email}
    ).encode()
    request = urllib.request.Request(url, data=body, headers={"Referer": url})
    try:
        with opener.open(request, timeout=60) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def mails_to(mail_dir: Path, email: str) -> int:
    if not mail_dir.is_dir():
        return 0
    return sum(
        bool(re.search(rf"^To: {re.escape(email)}$", p.read_text(errors="replace"), re.M))
        for p in mail_dir.iterdir()
    )


def arrives_once(env: dict[str, str], address: str, tmp_path: Path, email: str) -> None:
    with example_worker(env, address, tmp_path):
        wait_for(lambda: mail_to(tmp_path / "sent-mail", email), timeout=60, what="the mail")
        time.sleep(2.0)  # a duplicate would come within the relay's next passes
        assert mails_to(tmp_path / "sent-mail", email) == 1


@pytest.mark.parametrize("kind", list(SERVER_KINDS))
def test_a_signup_with_no_job_server_still_gets_its_mail(kind: str, tmp_path: Path) -> None:
    port = free_port()
    env = example_env(tmp_path, f"gearman://127.0.0.1:{port}/?timeout=10&connect_timeout=1")
    manage(env, "migrate", "--no-input", "-v", "0")
    web, url = start_web(env, tmp_path)
    try:
        assert sign_up(url, "ada", "ada@example.com") == 302  # as usual: no error shown
    finally:
        os.kill(web.pid, signal.SIGKILL)
        web.wait()
    # With no server the relay cannot send: it exits 1 if it tried (the row was free) and 0 if
    # the killed web process still held the row's lease; either way the job waits.
    relay = subprocess.run(
        [sys.executable, "manage.py", "gearman_relay", "--once"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert relay.returncode in (0, 1), relay.stderr
    assert "sent 0," in relay.stdout and "waiting 1" in relay.stdout, relay.stdout
    server = SERVER_KINDS[kind](port, queue_db=tmp_path / "queue.sqlite3")
    server.start()
    try:
        arrives_once(env, server.address, tmp_path, "ada@example.com")
    finally:
        server.stop()


@pytest.mark.parametrize("kind", list(SERVER_KINDS))
def test_a_job_server_killed_after_the_commit_loses_nothing(kind: str, tmp_path: Path) -> None:
    port = free_port()
    server = SERVER_KINDS[kind](port, queue_db=tmp_path / "queue.sqlite3")
    server.start()
    try:
        env = example_env(tmp_path, f"gearman://127.0.0.1:{port}/?timeout=10&connect_timeout=1")
        manage(env, "migrate", "--no-input", "-v", "0")
        web, url = start_web(env, tmp_path)
        try:
            assert sign_up(url, "grace", "grace@example.com") == 302
            server.kill()  # -9, with the job in its queue (or, if it was not sent, the outbox)
            assert sign_up(url, "linus", "linus@example.com") == 302  # and while it is down
        finally:
            stop_process(web)
        server.restart()
        arrives_once(env, server.address, tmp_path, "grace@example.com")
        arrives_once(env, server.address, tmp_path, "linus@example.com")
    finally:
        server.stop()
