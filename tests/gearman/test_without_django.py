"""The Gearman core works with Django out of reach: every module imports, and the job server,
a client and a worker do a round trip, in a Python whose import of django, environ or asgiref
fails. (The import contracts in pyproject.toml say the same of the source; this runs it.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.peers import ROOT, free_port

BLOCK = textwrap.dedent(
    """
    import sys

    class BlockDjango:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("django", "environ", "asgiref"):
                raise ImportError(f"{name} is blocked: the Gearman core must not need it")

    sys.meta_path.insert(0, BlockDjango())
    """
)


def run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
    )  # fmt: skip


def test_every_core_module_imports_without_django() -> None:
    result = run(
        """
        import importlib, pkgutil
        import django_gearman, django_gearman.gearman as core
        names = [m.name for m in pkgutil.walk_packages(core.__path__, "django_gearman.gearman.")]
        for name in names:
            importlib.import_module(name)
        import django_gearman.server
        assert not any(m.split(".")[0] in ("django", "environ", "asgiref") for m in sys.modules)
        print(len(names), "modules")
        """
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) >= 25


def test_server_client_and_worker_round_trip_without_django() -> None:
    port = free_port()
    result = run(
        f"""
        import asyncio, threading
        from django_gearman.gearman import GearmanClient, Worker
        from django_gearman.gearman.server import GearmanServer

        ready = threading.Event()
        loop = asyncio.new_event_loop()
        server = GearmanServer("127.0.0.1", {port})

        def serve():
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.start())
            ready.set()
            loop.run_until_complete(server.serve_forever())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert ready.wait(10)
        address = "127.0.0.1:{port}"
        with GearmanClient(address, timeout=10) as client:
            client.submit_background("reverse", b"olleh")
            worker = Worker(address)
            worker.register("reverse", lambda job: job.data[::-1])
            assert worker.work(burst=True, install_signals=False) == 1
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        thread.join(10)
        assert not thread.is_alive(), "the server thread did not stop"
        print("round trip ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "round trip ok"


def test_python_m_server_runs_without_django() -> None:
    result = run(
        "import runpy; runpy.run_module('django_gearman.server', run_name='__main__')", "--help"
    )
    assert result.returncode == 0, result.stderr
    assert "An embedded Gearman job server" in result.stdout
