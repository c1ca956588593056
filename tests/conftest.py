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
    BackgroundProcess,
    EmbeddedServer,
    Gearmand,
    PeerError,
    gearadmin_path,
    gearman_cli_path,
    gearmand_path,
    perl_path,
    php_path,
    run_perl,
    run_php,
    start_perl,
    start_php,
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
    """Runs one language's peer scripts (``worker.EXT``, ``client.EXT``); what it starts is
    stopped at teardown. Subclasses name the interpreter and its run/start helpers."""

    extension = ""
    run_script: Callable[..., subprocess.CompletedProcess[str]]
    start_script: Callable[..., BackgroundProcess]

    def __init__(self, path: str) -> None:
        self.path = path
        self._started: list[BackgroundProcess] = []

    def run(
        self, script: str, *args: object, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.CompletedProcess`` (text) of a script run to its end."""
        return type(self).run_script(script, *args, timeout=timeout)

    def start(
        self, script: str, *args: object, wait_for: str | None = None, timeout: float = 10.0
    ) -> Any:
        process = type(self).start_script(script, *args, wait_for=wait_for, timeout=timeout)
        self._started.append(process)
        return process

    def worker(self, address: str, *args: object, timeout: float = 10.0) -> Any:
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


class PhpPeer(ScriptPeer):
    """The scripts in ``tests/php/`` (php-gearman)."""

    extension = "php"
    run_script = staticmethod(run_php)
    start_script = staticmethod(start_php)

    def __init__(self) -> None:
        super().__init__(php_path())


@pytest.fixture
def php() -> Iterator[PhpPeer]:
    """PHP with the gearman extension: ``.run()``, ``.start()``, ``.worker()``, ``.client()``."""
    peer = PhpPeer()
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def gearman_cli() -> str:
    """Path of the ``gearman`` command-line client/worker (gearman-tools)."""
    return gearman_cli_path()


@pytest.fixture
def gearadmin() -> str:
    """Path of ``gearadmin`` (gearman-tools)."""
    return gearadmin_path()


# -- Perl (issue #14) -------------------------------------------------------------------------


class PerlPeer(ScriptPeer):
    """The scripts in ``tests/perl/`` (Gearman::Client/Worker); ``worker(ADDRESS, PREFIX
    [, NAMESPACE])``; a Perl ``die`` in the client comes back as ``{"died": message}``."""

    extension = "pl"
    run_script = staticmethod(run_perl)
    start_script = staticmethod(start_perl)

    def __init__(self) -> None:
        super().__init__(perl_path())


@pytest.fixture
def perl() -> Iterator[PerlPeer]:
    """Perl with Gearman::Client/Worker: ``.run()``, ``.start()``, ``.worker()``, ``.client()``."""
    peer = PerlPeer()
    try:
        yield peer
    finally:
        peer.close()
