"""Real Gearman peers as subprocesses: Debian's gearmand, the gearman CLI, PHP (pecl gearman)
and Perl (Gearman::Client/Worker).

Every server binds 127.0.0.1 on a free port, and every process started here is stopped by its
owner (the fixtures in ``conftest.py`` do it at teardown). A missing peer skips the test locally
and fails it in CI (``CI`` set), where ``scripts/test`` has installed them all.
"""

from __future__ import annotations

import functools
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

HOST = "127.0.0.1"
PHP_DIR = Path(__file__).resolve().parent / "php"
INSTALL_HINT = (
    "install the Debian packages gearman-job-server gearman-tools php-cli php-gearman "
    "(bash scripts/test does it)"
)


class PeerError(RuntimeError):
    """A peer process did not start or behave as expected."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_peer(name: str, path: str | None) -> str:
    """Return ``path``; when it is None, fail the test in CI and skip it elsewhere."""
    if path:
        return path
    message = f"{name} is not available: {INSTALL_HINT}"
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@functools.cache
def find_gearmand() -> str | None:
    if os.access("/usr/sbin/gearmand", os.X_OK):
        return "/usr/sbin/gearmand"
    return shutil.which("gearmand")


def _probe(program: str, *args: str) -> subprocess.CompletedProcess[str] | None:
    """``program ARGS`` run to its end (30 s at most, output captured as text), or None when
    ``program`` is not on PATH or does not finish; ``.args[0]`` is its path."""
    path = shutil.which(program)
    if path is None:
        return None
    try:
        return subprocess.run(
            [path, *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


@functools.cache
def find_php_with_gearman() -> str | None:
    """``php`` if its ``php -m`` lists the gearman extension."""
    probe = _probe("php", "-m")
    return probe.args[0] if probe is not None and "gearman" in probe.stdout.split() else None


def gearmand_path() -> str:
    return require_peer("gearmand", find_gearmand())


def gearman_cli_path() -> str:
    return require_peer("gearman (CLI)", shutil.which("gearman"))


def gearadmin_path() -> str:
    return require_peer("gearadmin", shutil.which("gearadmin"))


def _split_address(address: Any) -> tuple[str, int]:
    if hasattr(address, "address"):
        address = address.address
    if isinstance(address, tuple):
        return address[0], int(address[1])
    host, _, port = str(address).rpartition(":")
    return host or HOST, int(port)


def admin_command(
    address: Any, command: str, *, multiline: bool | None = None, timeout: float = 5.0
) -> bytes:
    """Send one text admin line (``status``, ``version``...) and return the raw reply.

    ``address`` is ``"host:port"``, a ``(host, port)`` tuple or anything with ``.address``.
    A reply starting with ``OK``/``ERR`` is one line; anything else is read up to the closing
    ``.`` line. Pass ``multiline`` to force either reading. ``timeout`` bounds the whole exchange
    (``TimeoutError`` after it); a peer that closes early gives what it sent so far.
    """
    host, port = _split_address(address)
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        reply = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{host}:{port} did not finish its {command!r} reply: {reply!r}")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                return reply
            reply += chunk
            single = multiline is False or (multiline is None and reply.startswith((b"OK", b"ERR")))
            if single:
                if b"\n" in reply:
                    return reply
            elif reply == b".\n" or reply.endswith(b"\n.\n"):
                return reply


def stop_process(
    process: subprocess.Popen[Any], *, term_timeout: float = 5.0, kill_timeout: float = 10.0
) -> None:
    """SIGTERM, wait up to ``term_timeout``, then SIGKILL; reaps the process.

    A process that SIGKILL does not end within ``kill_timeout`` (stuck in the kernel) raises
    ``subprocess.TimeoutExpired`` rather than hanging the test run.
    """
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(term_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(kill_timeout)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Gearmand:
    """Debian's gearmand on 127.0.0.1, started in the foreground with everything in a temp dir.

    ``gearmand`` never daemonizes without ``-d``, but as root it writes ``/var/gearmand.pid``
    unless told otherwise, and it reads ``/etc/gearmand.conf`` if present: both are pointed away.
    With ``queue_db`` it keeps background jobs in that sqlite file (``-q libsqlite3``), which
    survives ``kill()`` + ``restart()``.

    ``threads`` is ``-t``: 1 I/O thread by default, not 0. With ``-t 0`` (no I/O threads)
    gearmand 1.1.20 never fires CAN_DO_TIMEOUT timers: a timed-out job just runs on.
    """

    kind = "gearmand"
    start_timeout = 10.0

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_args: Sequence[str] = (),
        queue_db: str | os.PathLike[str] | None = None,
        threads: int = 1,
    ) -> None:
        self.host = HOST
        self.threads = threads
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.extra_args = tuple(extra_args)
        self.queue_db = os.fspath(queue_db) if queue_db is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_file(self) -> Path | None:
        return self._dir / "gearmand.log" if self._dir is not None else None

    def command(self) -> list[str]:
        assert self._dir is not None
        cmd = [
            find_gearmand() or "gearmand",
            "-L",
            self.host,
            "-p",
            str(self.port),
            "-t",
            str(self.threads),
            f"--log-file={self._dir / 'gearmand.log'}",
            "--verbose=WARNING",
            f"--pid-file={self._dir / 'gearmand.pid'}",
            "--config-file=/dev/null",
        ]
        if self.queue_db is not None:
            cmd += ["-q", "libsqlite3", f"--libsqlite3-db={self.queue_db}"]
        return cmd + list(self.extra_args)

    def log_tail(self, lines: int = 30) -> str:
        if self._dir is None:
            return ""
        return "\n".join(
            part
            for part in (
                _tail(self._dir / "stderr.log", lines),
                _tail(self._dir / "gearmand.log", lines),
            )
            if part
        )

    def start(self) -> Gearmand:
        """Start and wait until this very process answers ``getpid`` on its port."""
        if self.running:
            raise PeerError(f"gearmand on {self.address} is already running")
        self._require()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()  # lost a race for the port: take another
            try:
                self._spawn_and_wait()
                return self
            except _PortTaken:
                self._cleanup()
            except BaseException:
                self.kill()  # reap it and remove its temp dir; the error has the log tail
                raise
        raise PeerError(f"gearmand could not bind a free port (last {self.address})")

    def _spawn_and_wait(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="gearmand-"))
        with open(self._dir / "stderr.log", "wb") as stderr:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, cwd=ROOT
            )
        deadline = time.monotonic() + self.start_timeout
        expected = f"OK {self._process.pid}".encode()
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise PeerError(
                    f"gearmand exited with {code} while starting on {self.address}:\n"
                    f"{' '.join(self.command())}\n{self.log_tail()}"
                )
            try:
                reply = admin_command(self.address, "getpid", timeout=1.0)
            except OSError:
                reply = None
            if reply is not None:
                if reply.strip() == expected:
                    return
                # Something else answers on this port while ours keeps retrying bind().
                stop_process(self._process)
                if not self._fixed_port:
                    raise _PortTaken
                raise PeerError(f"port {self.port} is taken by another process (it said {reply!r})")
            if time.monotonic() > deadline:
                stop_process(self._process)
                raise PeerError(
                    f"gearmand did not accept connections on {self.address} within "
                    f"{self.start_timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit status (None if never started)."""
        process = self._process
        if process is not None:
            stop_process(process, term_timeout=timeout)
        self._cleanup()
        return process.returncode if process is not None else None

    def kill(self) -> int | None:
        """SIGKILL and wait: a crash, nothing flushed."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait(10)  # SIGKILL cannot be refused: only a process stuck in the kernel waits
        self._cleanup()
        return process.returncode if process is not None else None

    def restart(self) -> Gearmand:
        """Start again on the same port (stopping first if it still runs)."""
        if self.running:
            self.stop()
        self._fixed_port = True
        return self.start()

    def _require(self) -> None:
        require_peer("gearmand", find_gearmand())

    def _cleanup(self) -> None:
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Gearmand:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Gearmand {self.address} {state}>"


class _PortTaken(Exception):
    pass


ROOT = Path(__file__).resolve().parent.parent


class EmbeddedServer(Gearmand):
    """Our server, ``python -m django_gearman.server``, driven exactly like :class:`Gearmand`.

    gearmand-style ``extra_args`` that our command shares (``--job-retries=N``,
    ``--worker-wakeup=N``) pass through; ``queue_db`` becomes ``--queue PATH``.
    """

    kind = "embedded"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "django_gearman.server",
            self.address,
            "--log-level",
            "WARNING",
        ]
        cmd += ["--queue", self.queue_db or "memory"]
        return cmd + list(self.extra_args)

    def _require(self) -> None:
        pass

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedServer {self.address} {state}>"


class BackgroundProcess:
    """A process running in the background whose output is read with deadlines, never blocking.

    stdout is a pipe read through a selector (``wait_for``/``wait_for_line`` wait at most their
    ``timeout``); stderr goes to a temporary file, so it can never fill a pipe. ``stop()``
    always reaps the process and closes both.
    """

    def __init__(
        self,
        command: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = command
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                cwd=cwd,
            )
        except BaseException:
            self._stderr.close()
            raise
        self._stdout = b""
        self._stderr_text = ""

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def send_signal(self, sig: int) -> None:
        self._process.send_signal(sig)

    def _read_available(self, timeout: float) -> bytes | None:
        """Read what stdout has within ``timeout``: None if nothing came, b"" at EOF."""
        stdout = self._process.stdout
        if stdout is None or stdout.closed:
            return b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return None
        chunk = os.read(stdout.fileno(), 65536)
        self._stdout += chunk
        return chunk

    def _matching_line(self, match: Callable[[str], bool]) -> str | None:
        lines = self._stdout.decode(errors="replace").splitlines()
        return next((line for line in lines if match(line)), None)

    def wait_for_line(
        self, match: Callable[[str], bool], timeout: float = 10.0, *, what: str = "the line"
    ) -> str:
        """The first stdout line for which ``match(line)`` is true, waiting up to ``timeout``.

        On timeout, or if stdout ends first, the process is stopped and :class:`PeerError`
        says what it printed.
        """
        deadline = time.monotonic() + timeout
        while (line := self._matching_line(match)) is None:
            remaining = deadline - time.monotonic()
            eof = remaining > 0 and self._read_available(min(remaining, 0.5)) == b""
            if remaining <= 0 or eof:
                line = self._matching_line(match)
                if line is not None:
                    return line
                self.stop()
                raise PeerError(
                    f"{' '.join(self.args)} did not print {what} within {timeout:.0f} s "
                    f"(exit {self.returncode}); stdout={self._stdout!r}; stderr:\n{self.stderr}"
                )
        return line

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        """Wait until stdout has a line equal to ``text`` (e.g. the worker's ``ready``)."""
        self.wait_for_line(lambda line: line == text, timeout, what=repr(text))

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for a process that ends by itself (``--max-jobs``); ``TimeoutExpired`` if not."""
        return self._process.wait(timeout)

    @property
    def stdout(self) -> str:
        """What it printed so far (read without blocking)."""
        while self._read_available(0):
            pass  # None (nothing more now) and b"" (EOF) both end the loop
        return self._stdout.decode(errors="replace")

    @property
    def stderr(self) -> str:
        if self._stderr.closed:
            return self._stderr_text
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait, then SIGKILL; closes the pipes. Safe to call twice."""
        stop_process(self._process, term_timeout=timeout)
        if self._process.stdout is not None and not self._process.stdout.closed:
            try:
                self.stdout  # noqa: B018 - keep what is left for error messages
            finally:
                self._process.stdout.close()
        if not self._stderr.closed:
            self._stderr_text = self.stderr
            self._stderr.close()
        return self._process.returncode

    def __enter__(self) -> BackgroundProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.args} pid {self.pid} exit {self.returncode}>"


class ScriptProcess(BackgroundProcess):
    """A peer script (PHP, Perl) running in the background; ``stop()`` always reaps it."""

    def __init__(self, command: list[str], *, script_at: int) -> None:
        super().__init__(command)
        self.script_at = script_at  # where the script's path stands in ``command``

    def __repr__(self) -> str:
        args = self.args[self.script_at :]
        return f"<{type(self).__name__} {args} pid {self.pid} exit {self.returncode}>"


@dataclass(frozen=True)
class ScriptLanguage:
    """One language's peer scripts (``NAME.<extension>`` in ``directory``), run by the
    interpreter ``find()`` returns (None: missing, which :func:`require_peer` reports with
    ``requirement``), with ``options`` before the script."""

    directory: Path
    extension: str
    find: Callable[[], str | None]
    requirement: str
    options: tuple[str, ...] = ()

    def path(self) -> str:
        """The interpreter; skips the test locally and fails it in CI when it is missing."""
        return require_peer(self.requirement, self.find())

    def command(self, script: str | os.PathLike[str], args: Sequence[object]) -> list[str]:
        """A bare file name is taken from ``directory``; any other path as it is."""
        path = Path(script)
        if not path.is_absolute() and path.parent == Path("."):
            path = self.directory / path
        return [self.path(), *self.options, str(path), *map(str, args)]

    def run(
        self, script: str | os.PathLike[str], *args: object, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run the script to completion and capture its output (text)."""
        return subprocess.run(
            self.command(script, args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(
        self,
        script: str | os.PathLike[str],
        *args: object,
        wait_for: str | None = None,
        timeout: float = 10.0,
    ) -> ScriptProcess:
        """Start the script; with ``wait_for``, return once it printed that line."""
        process = ScriptProcess(self.command(script, args), script_at=1 + len(self.options))
        if wait_for is not None:
            process.wait_for(wait_for, timeout)
        return process


PHP = ScriptLanguage(
    directory=PHP_DIR,
    extension="php",
    find=find_php_with_gearman,
    requirement="php with the gearman extension",
    options=("-d", "display_errors=stderr"),  # so stdout stays one JSON line / "ready"
)


def php_path() -> str:
    return PHP.path()


# -- TLS (issue #14) ------------------------------------------------------------------------------


def tls_admin_command(address: Any, command: str, context: Any, *, timeout: float = 5.0) -> bytes:
    """One single-line admin command (``getpid``, ``version``) over TLS with ``context`` (an
    ``ssl.SSLContext``); the reply up to its newline, or what came before the peer closed."""
    host, port = _split_address(address)
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as sock:
            sock.sendall(command.encode() + b"\n")
            reply = b""
            while b"\n" not in reply:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{host}:{port} did not answer {command!r} over TLS")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply


class TLSEmbeddedServer(EmbeddedServer):
    """:class:`EmbeddedServer` speaking TLS: ``extra_args`` carry ``--ssl-cert`` ...; start()
    waits for ``getpid`` over TLS with ``context`` (a client ``ssl.SSLContext`` that the server
    accepts: with its client certificate if it requires one)."""

    kind = "embedded-tls"

    def __init__(self, *, context: Any, extra_args: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(extra_args=extra_args, **kwargs)
        self.context = context

    def _spawn_and_wait(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="gearmand-"))
        with open(self._dir / "stderr.log", "wb") as stderr:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, cwd=ROOT
            )
        deadline = time.monotonic() + self.start_timeout
        expected = f"OK {self._process.pid}".encode()
        while self._process.poll() is None:
            try:
                reply = tls_admin_command(self.address, "getpid", self.context, timeout=1.0)
            except OSError:  # not listening yet (an ssl.SSLError too: someone else's port)
                reply = None
            if reply is not None and reply.strip() == expected:
                return
            if time.monotonic() > deadline:
                stop_process(self._process)
                raise PeerError(
                    f"{self.kind} did not answer getpid over TLS on {self.address} within "
                    f"{self.start_timeout:.0f} s (last reply {reply!r}):\n{self.log_tail()}"
                )
            time.sleep(0.02)
        raise PeerError(
            f"{self.kind} exited with {self._process.returncode} while starting on "
            f"{self.address}:\n{' '.join(self.command())}\n{self.log_tail()}"
        )

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<TLSEmbeddedServer {self.address} {state}>"


# -- Perl: Gearman::Client and Gearman::Worker (issue #14) ----------------------------------------

PERL_DIR = Path(__file__).resolve().parent / "perl"


@functools.cache
def find_perl_gearman() -> str | None:
    """``perl`` if it loads Gearman::Client, Gearman::Worker and JSON::PP (Debian's
    libgearman-client-perl; JSON::PP is core Perl)."""
    probe = _probe("perl", "-MGearman::Client", "-MGearman::Worker", "-MJSON::PP", "-e", "1")
    return probe.args[0] if probe is not None and probe.returncode == 0 else None


PERL = ScriptLanguage(
    directory=PERL_DIR,
    extension="pl",
    find=find_perl_gearman,
    requirement="perl with Gearman::Client and Gearman::Worker (Debian libgearman-client-perl)",
)


def perl_path() -> str:
    return PERL.path()
