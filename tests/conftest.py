"""Fixtures for real peers: gearmand, PHP (pecl gearman) and the gearman CLI tools.

Each fixture checks its peer first: a missing one skips the test locally and fails it in CI.
Everything started here is stopped at teardown, whatever the test did.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.peers import (
    PERL,
    PHP,
    EmbeddedServer,
    Gearmand,
    PeerError,
    ScriptLanguage,
    ScriptProcess,
    gearadmin_path,
    gearman_cli_path,
    gearmand_path,
)


@pytest.fixture
def gearmand() -> Iterator[Gearmand]:
    """A started gearmand on 127.0.0.1:<free port> (``.address``, ``.kill()``, ``.restart()``)."""
    gearmand_path()
    server = Gearmand()
    try:
        server.start()
        yield server
    finally:
        server.stop()


SERVER_KINDS = {"embedded": EmbeddedServer, "gearmand": Gearmand}


@pytest.fixture(params=list(SERVER_KINDS))
def gearman_server(request: pytest.FixtureRequest) -> Iterator[Gearmand]:
    """Each test runs twice: against our embedded server and against Debian's gearmand.

    ``.kind`` says which; both have ``.address``, ``.pid``, ``.kill()``, ``.restart()``.
    """
    cls = SERVER_KINDS[request.param]
    if cls is Gearmand:
        gearmand_path()
    server = cls()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=list(SERVER_KINDS))
def server_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Gearmand]]:
    """Like ``gearmand_factory``, for the parametrized kind (``make.kind`` tells which)."""
    cls = SERVER_KINDS[request.param]
    if cls is Gearmand:
        gearmand_path()
    servers: list[Gearmand] = []

    def make(
        port: int | None = None,
        *,
        extra_args: Sequence[str] = (),
        queue_db: Any = None,
        start: bool = True,
    ) -> Gearmand:
        server = cls(port, extra_args=extra_args, queue_db=queue_db)
        servers.append(server)
        if start:
            server.start()
        return server

    make.kind = request.param  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def gearmand_factory() -> Iterator[Callable[..., Gearmand]]:
    """``make(port=None, *, extra_args=(), queue_db=None, threads=1, start=True) -> Gearmand``.

    Every server made is stopped at teardown.
    """
    gearmand_path()
    servers: list[Gearmand] = []

    def make(
        port: int | None = None,
        *,
        extra_args: Sequence[str] = (),
        queue_db: str | os.PathLike[str] | None = None,
        threads: int = 1,
        start: bool = True,
    ) -> Gearmand:
        server = Gearmand(port, extra_args=extra_args, queue_db=queue_db, threads=threads)
        servers.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


class ScriptPeer:
    """Runs one language's peer scripts (``worker.EXT``, ``client.EXT``, any other by name);
    what it starts is stopped by ``close()`` (or at the end of a ``with`` block)."""

    def __init__(self, language: ScriptLanguage) -> None:
        self.language = language
        self.path = language.path()  # the interpreter: skips or fails here if it is missing
        self.extension = language.extension
        self._started: list[ScriptProcess] = []

    def run(
        self, script: str, *args: object, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.CompletedProcess`` (text) of a script run to its end."""
        return self.language.run(script, *args, timeout=timeout)

    def start(
        self, script: str, *args: object, wait_for: str | None = None, timeout: float = 10.0
    ) -> ScriptProcess:
        process = self.language.start(script, *args, wait_for=wait_for, timeout=timeout)
        self._started.append(process)
        return process

    def worker(self, address: str, *args: object, timeout: float = 10.0) -> ScriptProcess:
        """``worker.EXT ADDRESS [ARGS]``, returned once it printed ``ready``."""
        return self.start(
            f"worker.{self.extension}", address, *args, wait_for="ready", timeout=timeout
        )

    def client(
        self, address: str, mode: str, function: str, *args: object, timeout: float = 30
    ) -> dict[str, Any]:
        """Run ``client.EXT ADDRESS MODE FUNCTION ARGS`` and return its JSON line."""
        script = f"client.{self.extension}"
        result = self.run(script, address, mode, function, *args, timeout=timeout)
        lines = result.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            raise PeerError(
                f"{script} {mode} {function} printed no JSON (exit {result.returncode}):\n"
                f"stdout: {result.stdout!r}\nstderr: {result.stderr}"
            ) from None

    def close(self) -> None:
        for process in self._started:
            process.stop()

    def __enter__(self) -> ScriptPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture
def php() -> Iterator[ScriptPeer]:
    """PHP with the gearman extension, the scripts in ``tests/php/``: ``.run()``, ``.start()``,
    ``.worker()``, ``.client()``."""
    with ScriptPeer(PHP) as peer:
        yield peer


@pytest.fixture
def gearman_cli() -> str:
    """Path of the ``gearman`` command-line client/worker (gearman-tools)."""
    return gearman_cli_path()


@pytest.fixture
def gearadmin() -> str:
    """Path of ``gearadmin`` (gearman-tools)."""
    return gearadmin_path()


# -- Perl (issue #14) -------------------------------------------------------------------------


@pytest.fixture
def perl() -> Iterator[ScriptPeer]:
    """Perl with Gearman::Client/Worker, the scripts in ``tests/perl/``: ``.run()``,
    ``.start()``, ``.worker(ADDRESS, PREFIX[, NAMESPACE])``, ``.client()`` (a Perl ``die`` in
    the client comes back as ``{"died": message}``)."""
    with ScriptPeer(PERL) as peer:
        yield peer
