"""Every Python, shell and PHP example of README.md and docs/ runs here (see tests/doc_examples.py
for how a page says how its examples run), so the docs cannot drift from the code."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.doc_examples import (
    PAGES,
    ROOT,
    TUTORIAL,
    Block,
    DocSyntaxError,
    parse,
    runnable,
    with_port,
)
from tests.peers import EmbeddedServer, free_port, php_path

pytestmark = pytest.mark.interop

RUN_PAGES = [page for page in PAGES if runnable(page) and page != TUTORIAL]


class Kernel:
    """``python -m tests.doc_kernel``: one page's namespace, fed one block at a time."""

    def __init__(self, address: str, project: Path) -> None:
        read, write = os.pipe()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "GEARMAN_URL": f"gearman://{address}",
            "DOC_PROJECT": str(project),
            "DOC_RESULTS_FD": str(write),
            "PYTHONPATH": str(ROOT),
        }
        self.output = (project / "kernel.log").open("w+b")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.doc_kernel"],
            stdin=subprocess.PIPE,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            pass_fds=(write,),
        )
        os.close(write)
        self.results: IO[str] = os.fdopen(read, encoding="utf-8")
        self._reply(60.0, "start")

    def _reply(self, timeout: float, what: str) -> dict[str, Any]:
        ready, _, _ = select.select([self.results], [], [], timeout)
        line = self.results.readline() if ready else ""
        if not line:
            self.close()
            raise AssertionError(
                f"the kernel did not answer {what} within {timeout} s:\n{self.log}"
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    @property
    def log(self) -> str:
        self.output.flush()
        self.output.seek(0)
        return self.output.read().decode(errors="replace")[-4000:]

    def run(self, block: Block, code: str) -> None:
        assert self.process.stdin is not None
        request = {
            "code": code,
            "line": block.line,
            "page": block.where.rsplit(":", 1)[0],
            "mode": block.mode,
            "arg": block.arg,
        }
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        reply = self._reply(90.0, block.where)
        if not reply["ok"]:
            raise AssertionError(f"{block.where} failed:\n{reply['error']}\noutput:\n{self.log}")

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.results.close()
        self.output.close()


class Shell:
    """Runs ``sh`` lines as a reader would, from a copy of example_project/."""

    def __init__(self, address: str, tmp: Path) -> None:
        self.project = tmp / "example_project"
        self.address = address
        self.tmp = tmp
        self._migrated = False

    def env(self, gearman_url: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        return {
            **inherited,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "GEARMAN_URL": gearman_url,
            "DATABASE_URL": f"sqlite:///{self.tmp / 'db.sqlite3'}",
            "EMAIL_FILE_PATH": str(self.tmp / "sent-mail"),
            "XDG_STATE_HOME": str(self.tmp / "state"),
            "DEBUG": "false",
            "SECRET_KEY": "doc-examples-not-secret",
            "PYTHONPATH": str(ROOT),
        }

    def prepare(self) -> None:
        if self._migrated:
            return
        shutil.copytree(
            ROOT / "example_project",
            self.project,
            ignore=shutil.ignore_patterns("db.sqlite3", "sent-mail", "__pycache__", ".env"),
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=self.project,
            env=self.env(f"gearman://{self.address}"),
            check=True,
            timeout=120,
        )
        self._migrated = True

    def run_line(self, command: str, where: str) -> None:
        """Start ``command``; a long-running one (a server, a worker) gets Ctrl-C once it has
        printed its banner. Either way it must end with exit status 0 and no traceback."""
        self.prepare()
        serves = bool(re.search(r"manage\.py gearmand|-m django_gearman\.server", command))
        port = free_port() if serves else int(self.address.rsplit(":", 1)[1])
        command = with_port(command, port)
        url = f"gearman://127.0.0.1:{port}"
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.project,
            env=self.env(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=_read_lines, args=(process, lines), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while process.poll() is None and not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupted = False
        if process.poll() is None:
            time.sleep(1.0)  # the banner is out: give it a moment to finish starting
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                interrupted = True
        try:
            status = process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"{where}: {command!r} did not stop on Ctrl-C") from None
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
        output = "".join(lines)
        how = " after Ctrl-C" if interrupted else ""
        assert status == 0, f"{where}: {command!r} exited {status}{how}:\n{output}"
        assert "Traceback" not in output, f"{where}: {command!r} printed a traceback:\n{output}"


def _read_lines(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in iter(process.stdout.readline, b""):
        lines.append(line.decode(errors="replace"))


def shell_commands(code: str) -> list[str]:
    """The commands of an ``sh`` block: one per line, ``\\`` continuations joined."""
    commands: list[str] = []
    current = ""
    for line in code.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip() and not current.lstrip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def check_syntax(block: Block) -> None:
    assert block.arg, f"{block.where}: say why the example is only parsed, and where it is tested"
    if block.lang == "python":
        compile(block.code, block.where, "exec")
    elif block.lang == "sh":
        result = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
        assert result.returncode == 0, f"{block.where}: {result.stderr}"
        for script in re.findall(r"\bscripts/[\w.-]+", block.code):
            assert (ROOT / script).is_file(), f"{block.where}: {script} does not exist"
    else:
        result = subprocess.run(
            [php_path(), "-l"], input=block.code, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{block.where}: {result.stdout}{result.stderr}"


class Page:
    """What one page's examples share: the job server, the kernel, the shell, PHP peers."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = EmbeddedServer()
        self.server.start()
        self.kernel: Kernel | None = None
        self.shell = Shell(self.server.address, tmp)
        self.background: list[subprocess.Popen[bytes]] = []

    def run(self, block: Block) -> None:
        if block.mode == "skip":
            assert block.arg, f"{block.where}: say why the example is not run"
            return
        if block.mode == "syntax":
            check_syntax(block)
            return
        code = with_port(block.code, self.server.port)
        if block.lang == "python":
            if self.kernel is None:
                project = self.tmp / "project"
                project.mkdir()
                self.kernel = Kernel(self.server.address, project)
            self.kernel.run(block, code)
        elif block.lang == "sh":  # the shell gives servers their own port
            for command in shell_commands(block.code):
                self.shell.run_line(command, block.where)
        else:
            self.run_php(block, code)

    def run_php(self, block: Block, code: str) -> None:
        script = self.tmp / f"example-{block.line}.php"
        script.write_text(code, encoding="utf-8")
        command = [php_path(), "-d", "display_errors=stderr", str(script)]
        if block.mode == "background":
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.background.append(process)
            time.sleep(0.5)
            assert process.poll() is None, f"{block.where}: {process.stderr.read()!r}"  # type: ignore[union-attr]
            return
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and not result.stderr, (
            f"{block.where}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        )

    def close(self) -> None:
        try:
            if self.kernel is not None:
                self.kernel.close()
        finally:
            for process in self.background:
                process.kill()
                process.wait()
                if process.stderr is not None:
                    process.stderr.close()
            self.server.stop()


@pytest.fixture
def page_env(tmp_path: Path) -> Iterator[Page]:
    page = Page(tmp_path)
    try:
        yield page
    finally:
        page.close()


def test_every_page_parses_and_says_why_an_example_is_not_run() -> None:
    found = 0
    for page in PAGES:
        for block in parse(page):
            found += block.lang in {"python", "sh", "php"}
            if block.mode in {"skip", "syntax"}:
                assert block.arg, f"{block.where}: {block.mode} needs a reason"
    assert found > 30  # the docs do have examples: the harness must be finding them


def test_a_directive_without_a_fence_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- doctest: skip no reason -->\nsome prose\n")
    with pytest.raises(DocSyntaxError, match="must precede a fence"):
        parse(page)
    page.write_text("<!-- doctest: sometimes -->\n```python\n1\n```\n")
    with pytest.raises(DocSyntaxError, match="unknown doctest directive"):
        parse(page)


def test_a_wrong_result_in_an_example_fails_its_page(tmp_path: Path, page_env: Page) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nfrom django_gearman.gearman.envelope import decode_result\n"
        'decode_result(b"5")  # 6\n```\n'
    )
    [block] = runnable(page)
    with pytest.raises(AssertionError, match="the example says 6, it gave 5"):
        page_env.run(block)


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_the_examples_of(page: Path, page_env: Page) -> None:
    blocks = runnable(page)
    # The page's peers (a PHP worker) first: the other examples talk to them.
    for block in sorted(blocks, key=lambda block: block.mode != "background"):
        page_env.run(block)


def test_ci_runs_the_readme_test_command() -> None:
    """README.md's Quick start gives two commands, the demo and the tests; .ci/run must run
    exactly the second, and the first must be the demo script."""
    quick_start = next(b for b in parse(ROOT / "README.md") if b.lang == "sh")
    demo, tests = shell_commands(quick_start.code)
    assert demo == "bash scripts/demo"
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert ci == [f"exec {tests}"]


def test_the_readme_demo_command_runs_the_signup_flow() -> None:
    """README.md's first command, in its --check mode: it makes .venv, starts the example
    project's job server, worker and web server, signs a user up over HTTP and finds the mail."""
    result = subprocess.run(
        ["bash", "scripts/demo", "--check", "--port", str(free_port())],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GEARMAN_"))},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "thanks for signing up. This mail was sent by a Gearman worker" in output
    assert "==> all checks passed" in output
