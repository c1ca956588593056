"""example_project/ end to end: a signup through the form queues the welcome mail, a worker
(``manage.py gearman_worker``) sends it, and /report/ shows the progress of a foreground task,
against both servers.

The example runs in subprocesses with its own settings (``demo_site.settings``, configured by
environment variables: a database, a mail directory and GEARMAN_URL under ``tmp_path``), so
nothing of it is imported into this process (its tasks would join our task registry). The
requests go through Django's test client inside ``manage.py shell`` (with CSRF checks on, as a
browser), or over HTTP to ``manage.py runserver`` with ``example_project/drive_demo.py``, the
driver ``scripts/demo`` runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import django_gearman
from django_gearman.gearman.admin_client import GearmanAdminClient
from tests.helpers import wait_for
from tests.peers import free_port, stop_process

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example_project"
WORKER_COMMAND = REPO / "django_gearman" / "management" / "commands" / "gearman_worker.py"
WORKER_ARGV = ["manage.py", "gearman_worker", "--noreload"]
FUNCTIONS = ("signup.tasks.send_signup_mail", "signup.tasks.build_report")
DAYS = 4


def needs_worker_command() -> None:
    if not WORKER_COMMAND.exists():
        missing = WORKER_COMMAND.relative_to(REPO)
        pytest.skip(f"manage.py gearman_worker is not written yet ({missing} is missing)")


def example_env(tmp_path: Path, gearman_url: str) -> dict[str, str]:
    """The environment of every example process: its settings read only these."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "GEARMAN_", "EMAIL_"))
        and key not in ("DATABASE_URL", "DEBUG", "SECRET_KEY")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="demo_site.settings",
        # The example's modules, and the django_gearman this test runs against.
        PYTHONPATH=os.pathsep.join(
            [str(EXAMPLE), str(Path(django_gearman.__file__).resolve().parent.parent)]
        ),
        PYTHONUNBUFFERED="1",
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(tmp_path / "sent-mail"),
        GEARMAN_URL=gearman_url,
    )
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """Run ``manage.py ARGS`` of the example to its end; its stdout, or fail with its output."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@contextmanager
def background(
    env: dict[str, str], argv: list[str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running example process, its output in ``log``; stopped (TERM, then KILL) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *argv], cwd=EXAMPLE, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        stop_process(process, term_timeout=15)


def alive(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is not None:
        command = " ".join(map(str, process.args))  # type: ignore[arg-type]
        output = log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{command} exited {process.returncode}:\n{output}")


def offered_functions(address: str) -> set[str]:
    with GearmanAdminClient(address, timeout=5) as admin:
        return {function for row in admin.workers() for function in row.functions}


@contextmanager
def example_worker(
    env: dict[str, str], address: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``manage.py gearman_worker --noreload``, returned once the server lists its functions."""
    log = tmp_path / "worker.log"
    with background(env, WORKER_ARGV, log) as worker:

        def ready() -> bool:
            alive(worker, log)
            return set(FUNCTIONS) <= offered_functions(address)

        wait_for(ready, timeout=60, interval=0.05, what=f"the worker to offer {FUNCTIONS}")
        yield worker


def mail_to(mail_dir: Path, email: str) -> str | None:
    """The text of the mail file addressed to ``email``, if there is one yet."""
    if not mail_dir.is_dir():
        return None
    for path in sorted(mail_dir.iterdir()):
        text = path.read_text(errors="replace")
        if re.search(rf"^To: {re.escape(email)}$", text, re.M):
            return text
    return None


# Runs inside `manage.py shell -c`: sign up through the form and fetch the report, with the test
# client (CSRF enforced: the token comes from the form, as for a browser). Prints one JSON line.
DRIVER = """
import html, json, re
from django.test import Client

browser = Client(enforce_csrf_checks=True, HTTP_HOST="localhost")
form = browser.get("/")
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode()).group(1)
posted = browser.post("/", {"csrfmiddlewaretoken": token, "username": USERNAME, "email": EMAIL})
thanks = browser.get(posted["Location"]) if posted.status_code == 302 else posted
report = browser.get("/report/", {"days": DAYS})
page = report.content.decode()
result = re.search(r'<pre id="result">(.*?)</pre>', page, re.S)
thanks_html = re.search(r'<p id="thanks">(.*?)</p>', thanks.content.decode(), re.S).group(1)
print(json.dumps({
    "form": form.status_code,
    "posted": posted.status_code,
    "location": posted.get("Location"),
    "thanks": re.sub(r"<[^>]+>", "", thanks_html),
    "report": report.status_code,
    "steps": re.findall(r'<li class="step">(\\d+/\\d+)</li>', page),
    "result": json.loads(html.unescape(result.group(1))) if result else page,
}))
"""


def drive(env: dict[str, str], username: str, email: str) -> dict[str, Any]:
    code = f"USERNAME, EMAIL, DAYS = {username!r}, {email!r}, {DAYS}\n" + DRIVER
    output = manage(env, "shell", "--no-startup", "-c", code, timeout=90)
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def check_report(seen: dict[str, Any], username: str, *, steps: list[str]) -> None:
    assert seen["report"] == 200, seen
    assert seen["steps"] == steps
    result = seen["result"]
    assert result["days"] == DAYS and len(result["per_day"]) == DAYS
    assert result["latest_signup"] == username and result["total_users"] == 1
    assert result["per_day"][0]["signups"] == 1  # today's, the user just made


def test_the_example_project_passes_its_checks_and_serves_gearman(tmp_path: Path) -> None:
    """From example_project/: system checks pass, and ``manage.py gearmand`` (as scripts/demo
    starts it) serves on the port it is given."""
    port = free_port()
    env = example_env(tmp_path, f"gearman://127.0.0.1:{port}")
    manage(env, "check")
    log = tmp_path / "gearmand.log"
    with background(
        env, ["manage.py", "gearmand", f"127.0.0.1:{port}", "--queue", "memory"], log
    ) as server:

        def version() -> str | None:
            alive(server, log)
            try:
                with GearmanAdminClient(f"127.0.0.1:{port}", timeout=2) as admin:
                    return admin.version()
            except OSError:
                return None

        assert "django-gearman" in wait_for(
            version, timeout=30, what="manage.py gearmand to listen"
        )


def test_immediate_mode_runs_the_example_without_a_server(tmp_path: Path) -> None:
    """GEARMAN_URL=...?backend=immediate: the tasks run in the web process (no server, no
    worker), so the same flow works in a project's own tests."""
    env = example_env(tmp_path, "gearman://127.0.0.1:1/?backend=immediate")
    manage(env, "migrate", "--no-input", "-v", "0")
    seen = drive(env, "ada", "ada@example.com")
    assert (seen["form"], seen["posted"]) == (200, 302), seen
    assert "ada@example.com" in seen["thanks"]
    mail = mail_to(tmp_path / "sent-mail", "ada@example.com")
    assert mail is not None and "Subject: Welcome, ada!" in mail
    check_report(
        seen, "ada", steps=["1/4", "2/4", "3/4", "4/4"]
    )  # progress reaches the page as from a worker


def test_signup_mail_and_report_through_the_worker(gearman_server: Any, tmp_path: Path) -> None:
    """The signup view queues the mail on commit; ``manage.py gearman_worker`` sends it; the
    report view sees every progress step of its foreground task, then the result."""
    needs_worker_command()
    env = example_env(tmp_path, f"gearman://{gearman_server.address}/?timeout=30")
    manage(env, "migrate", "--no-input", "-v", "0")
    with example_worker(env, gearman_server.address, tmp_path) as worker:
        seen = drive(env, "grace", "grace@example.com")
        assert (seen["form"], seen["posted"]) == (200, 302), seen
        assert re.fullmatch(r"/thanks/\d+/", seen["location"]), seen
        assert "grace@example.com" in seen["thanks"]

        def mail() -> str | None:
            alive(worker, tmp_path / "worker.log")
            return mail_to(tmp_path / "sent-mail", "grace@example.com")

        text = wait_for(mail, timeout=30, what="the welcome mail")
        assert "Subject: Welcome, grace!" in text and "sent by a Gearman worker" in text
        check_report(seen, "grace", steps=[f"{n}/{DAYS}" for n in range(1, DAYS + 1)])
        alive(worker, tmp_path / "worker.log")


def test_the_demo_driver_over_http(gearman_server: Any, tmp_path: Path) -> None:
    """What ``scripts/demo --check`` does after starting its processes: runserver, a worker, and
    example_project/drive_demo.py signing up and reading the report over HTTP."""
    needs_worker_command()
    env = example_env(tmp_path, f"gearman://{gearman_server.address}/?timeout=30")
    manage(env, "migrate", "--no-input", "-v", "0")
    port = free_port()
    web_log = tmp_path / "runserver.log"
    with (
        example_worker(env, gearman_server.address, tmp_path) as worker,
        background(
            env, ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], web_log
        ) as web,
    ):
        result = subprocess.run(
            [
                sys.executable, "drive_demo.py", "--url", f"http://127.0.0.1:{port}/",
                "--gearman", gearman_server.address, "--mail-dir", str(tmp_path / "sent-mail"),
                "--days", "3", "--timeout", "30",
                "--watch", f"worker={worker.pid}", "--watch", f"web server={web.pid}",
            ],
            # Under the test's own limit (pytest-timeout), so a stuck driver fails with output.
            cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert result.returncode == 0, (
            f"{result.stdout}\n{result.stderr}\n{web_log.read_text(errors='replace')[-3000:]}"
        )
    assert "progress seen by the view: 1/3 2/3 3/3" in result.stdout
    assert re.search(r"^To: newcomer-[0-9a-f]+@example\.com$", result.stdout, re.M)
    assert "==> all checks passed" in result.stdout
