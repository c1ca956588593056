"""``manage.py gearmand``: where it listens (the GEARMAN alias) and where it keeps its queue.

The subprocess tests run ``python -m django gearmand`` on the test settings (or a settings module
written to ``tmp_path`` that adds to them), bind 127.0.0.1 on a free port and are always stopped.
The in-process tests call the functions the command uses, under ``override_settings``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from django_gearman.gearman.server.store import SqliteStore
from django_gearman.management.commands import gearmand
from tests.peers import ROOT, BackgroundProcess, admin_command, free_port

BANNER_END = "Quit the server with CONTROL-C."


def command_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``manage.py gearmand`` subprocess: the test settings, none of the
    caller's DJANGO_*/GEARMAN* variables, and the XDG state folder inside ``tmp_path``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "GEARMAN", "XDG_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        XDG_STATE_HOME=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def settings_module(tmp_path: Path, body: str) -> str:
    """A settings module in ``tmp_path``: the test settings plus ``body``; its dotted name."""
    name = f"gearmand_settings_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(f"from tests.settings import *  # noqa: F403\n{body}\n")
    return name


@pytest.fixture
def start_gearmand() -> Iterator[object]:
    """``start(env, *args)`` -> a running ``manage.py gearmand``; all are stopped at the end."""
    started: list[BackgroundProcess] = []

    def start(env: dict[str, str], *args: str) -> BackgroundProcess:
        process = BackgroundProcess(
            [sys.executable, "-m", "django", "gearmand", *args], cwd=ROOT, env=env
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop(timeout=10)


def banner_of(process: BackgroundProcess) -> str:
    process.wait_for_line(lambda line: line == BANNER_END, timeout=30, what="its banner")
    return process.stdout


# -- where it listens -----------------------------------------------------------------------------


def test_listens_where_gearman_url_points(tmp_path: Path, start_gearmand) -> None:
    port = free_port()
    env = command_env(tmp_path, GEARMAN_URL=f"gearman://127.0.0.1:{port}")
    process = start_gearmand(env, "--queue", "memory")
    banner = banner_of(process)
    assert f"listening on 127.0.0.1:{port} (from GEARMAN_URL)" in banner, banner
    assert admin_command(f"127.0.0.1:{port}", "version").startswith(b"OK ")


def test_listens_where_the_gearman_setting_points(tmp_path: Path, start_gearmand) -> None:
    port, other = free_port(), free_port()
    name = settings_module(
        tmp_path,
        f'GEARMAN = {{"default": {{"SERVERS": ["10.255.0.1:4730", "127.0.0.1:{port}"]}},\n'
        f'           "other": {{"SERVERS": ["localhost:{other}"]}}}}',
    )
    env = command_env(tmp_path, DJANGO_SETTINGS_MODULE=name, GEARMAN_URL="gearman://1.2.3.4:9")
    process = start_gearmand(env, "--queue", "memory")
    banner = banner_of(process)
    # GEARMAN is set, so GEARMAN_URL is not read; the first local server of the two is used
    assert f"listening on 127.0.0.1:{port} (from GEARMAN['default']: " in banner, banner
    assert "the first local one of its 2 servers" in banner, banner
    assert admin_command(f"127.0.0.1:{port}", "version").startswith(b"OK ")
    process = start_gearmand(env, "--queue", "memory", "--alias", "other")
    banner = banner_of(process)
    assert f"listening on localhost:{other} (from GEARMAN['other'])" in banner, banner
    assert admin_command(f"127.0.0.1:{other}", "version").startswith(b"OK ")


def test_an_explicit_address_wins(tmp_path: Path, start_gearmand) -> None:
    port = free_port()
    env = command_env(tmp_path, GEARMAN_URL=f"gearman://127.0.0.1:{free_port()}")
    process = start_gearmand(env, f"127.0.0.1:{port}", "--queue", "memory")
    banner = banner_of(process)
    assert f"listening on 127.0.0.1:{port} (asyncio)" in banner or (
        f"listening on 127.0.0.1:{port} (uvloop)" in banner
    ), banner
    assert "GEARMAN" not in banner


def test_listen_address_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEARMAN_URL", raising=False)
    with override_settings(GEARMAN=None):
        listen = gearmand.listen_address("default")
    assert (listen.addrport, listen.source, listen.warning) == ("127.0.0.1:4730", "", None)
    monkeypatch.setenv("GEARMAN_URL", "gearman://0.0.0.0:4999")
    with override_settings(GEARMAN=None):
        listen = gearmand.listen_address("default")
    assert (listen.addrport, listen.source) == ("0.0.0.0:4999", "from GEARMAN_URL")
    with override_settings(GEARMAN={"default": {"SERVERS": ["[::1]:4731"]}}):
        assert gearmand.listen_address("default").addrport == "[::1]:4731"
    with override_settings(GEARMAN={"default": {"SERVERS": [f"{socket.gethostname()}:5"]}}):
        assert gearmand.listen_address("default").addrport.endswith(":5")
    with override_settings(GEARMAN={"default": {"SERVERS": ["gearman.example.com:4730"]}}):
        listen = gearmand.listen_address("default")
    assert listen.addrport == "127.0.0.1:4730"
    assert listen.warning is not None
    assert "GEARMAN['default'] points elsewhere (gearman.example.com:4730)" in listen.warning


# -- where it keeps the queue ---------------------------------------------------------------------


def test_default_queue_is_in_the_xdg_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "myproject"
    project.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    digest = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:12]
    expected = tmp_path / "state" / "django-gearman" / f"myproject-{digest}.sqlite3"
    with override_settings(BASE_DIR=project, GEARMAN_SERVER={}):
        assert gearmand.default_queue() == str(expected)
        assert gearmand.legacy_queue() is None
    with override_settings(BASE_DIR=project, GEARMAN_SERVER={"QUEUE": "/x/q.sqlite3"}):
        assert gearmand.default_queue() == "/x/q.sqlite3"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with override_settings(BASE_DIR=project, GEARMAN_SERVER={}):
        assert gearmand.default_queue() == str(
            tmp_path / "home" / ".local" / "state" / "django-gearman" / expected.name
        )


def test_sqlite_store_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be world-readable
    try:
        store = SqliteStore(tmp_path / "q.sqlite3")
        try:
            store.add_nowait(b"f", b"u", 1, b"data", 0)
            store.commit()
            files = sorted(tmp_path.iterdir())
            assert tmp_path / "q.sqlite3" in files
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, files)
        finally:
            store.close()
    finally:
        os.umask(old)


def test_the_command_makes_the_default_queue_private(tmp_path: Path, start_gearmand) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    name = settings_module(tmp_path, f"BASE_DIR = {str(project)!r}")
    port = free_port()
    env = command_env(tmp_path, DJANGO_SETTINGS_MODULE=name)
    process = start_gearmand(env, f"127.0.0.1:{port}")
    banner = banner_of(process)
    folder = tmp_path / "state" / "django-gearman"
    (queue,) = folder.glob("proj-*.sqlite3")
    assert f"Queue: {queue}" in banner, banner
    assert "Warning" not in banner, banner
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not (project / "gearman-queue.sqlite3").exists()


def test_a_legacy_queue_file_is_kept_with_a_warning(tmp_path: Path, start_gearmand) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    legacy = project / "gearman-queue.sqlite3"
    SqliteStore(legacy).close()
    name = settings_module(tmp_path, f"BASE_DIR = {str(project)!r}")
    port = free_port()
    process = start_gearmand(
        command_env(tmp_path, DJANGO_SETTINGS_MODULE=name), f"127.0.0.1:{port}"
    )
    banner = banner_of(process)
    assert f"Queue: {legacy}" in banner, banner
    warning = next(line for line in banner.splitlines() if line.startswith("Warning:"))
    assert str(tmp_path / "state" / "django-gearman" / "proj-") in warning
    assert 'GEARMAN_SERVER["QUEUE"]' in warning
    assert not (tmp_path / "state").exists()  # nothing new was made
