"""The kernel of :mod:`tests.doc_examples`: one page's Python examples, in one namespace.

Started by the test as ``python -m tests.doc_kernel`` with ``DJANGO_SETTINGS_MODULE``,
``GEARMAN_URL`` (the test's server), ``DOC_PROJECT`` (a folder on ``sys.path`` where ``file``
blocks are written) and ``DOC_RESULTS_FD``. It sets Django up with a test database and the
locmem mail backend, then reads one JSON request per line on stdin (``code``, ``line``, ``page``,
``mode``, ``arg``) and answers one JSON line on the results pipe: ``{"ok": true}`` or
``{"ok": false, "error": traceback}``. The example's own output goes to stdout/stderr.

The namespace has ``doc``, a :class:`Doc`, for hidden blocks only.
"""

# Django and the app are imported only once the kernel has set Django up, inside functions:
# ruff: noqa: PLC0415
from __future__ import annotations

import ast
import importlib
import io
import json
import os
import signal
import sys
import threading
import time
import tokenize
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.doc_examples import expected_literal


class Doc:
    """Helpers for hidden blocks: a worker to answer the examples' jobs, waiting, cleanup."""

    def __init__(self, address: str, project: Path) -> None:
        self.address = address
        self.project = project
        self.root = Path(__file__).resolve().parent.parent  # the repository
        self._stops: list[Callable[[], None]] = []

    def start_worker(self, functions: dict[str, Callable[..., Any]] | None = None) -> None:
        """A worker thread offering what ``manage.py gearman_worker`` offers, plus
        ``functions`` (name -> callback(job)); it runs until the page ends."""
        from django_gearman.gearman import Worker
        from django_gearman.tasks.runner import offered_functions

        worker = Worker([self.address], reconnect_delay=0.05)
        for offered in offered_functions("default"):
            worker.register(offered.name, offered.callback)
        for name, callback in (functions or {}).items():
            worker.register(name, callback)
        thread = threading.Thread(
            target=worker.work, kwargs={"install_signals": False}, daemon=True
        )
        thread.start()

        def stop() -> None:
            worker.request_stop()
            thread.join(10)

        self._stops.append(stop)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Poll ``predicate`` until it is truthy; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
            time.sleep(0.02)
        return value

    def close(self) -> None:
        for stop in reversed(self._stops):
            stop()


def comments_by_line(code: str) -> dict[int, str]:
    """Line number (1-based, in ``code``) -> the text of the comment ending that line."""
    found: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string[1:]
    return found


def run_python(code: str, first_line: int, filename: str, namespace: dict[str, Any]) -> None:
    """Run ``code`` statement by statement in ``namespace``; tracebacks name the page's lines.
    A top-level expression with a literal comment must equal that literal."""
    tree = ast.parse(code, filename)
    ast.increment_lineno(tree, first_line - 1)
    comments = {line + first_line - 1: text for line, text in comments_by_line(code).items()}
    for statement in tree.body:
        if isinstance(statement, ast.Expr):
            value = eval(compile(ast.Expression(statement.value), filename, "eval"), namespace)
            found, expected = expected_literal(comments.get(statement.end_lineno or 0, ""))
            if found and value != expected:
                raise AssertionError(
                    f"{filename}:{statement.lineno}: the example says {expected!r}, "
                    f"it gave {value!r}"
                )
        else:
            module = ast.Module(body=[statement], type_ignores=[])
            exec(compile(module, filename, "exec"), namespace)


def write_module(project: Path, relative: str, code: str) -> str:
    """Write ``code`` at ``project/relative`` (packages get an ``__init__.py``); its module name."""
    path = project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(project).parents:
        if str(parent) != ".":
            (project / parent / "__init__.py").touch(exist_ok=True)
    path.write_text(code, encoding="utf-8")
    return ".".join(Path(relative).with_suffix("").parts)


def apply_settings(code: str, filename: str, first_line: int) -> None:
    """Run a settings excerpt in its own namespace, apply its upper-case names (but
    INSTALLED_APPS, which examples abbreviate with ``...``) and run the system checks."""
    from django.core import checks
    from django.test.utils import override_settings

    scope: dict[str, Any] = {"__name__": "settings"}
    run_python(code, first_line, filename, scope)
    values = {
        k: v for k, v in scope.items() if k.isupper() and k not in {"INSTALLED_APPS", "BASE_DIR"}
    }
    assert values, f"{filename}:{first_line}: a settings example that sets nothing"
    with override_settings(**values):
        errors = [m for m in checks.run_checks() if m.is_serious()]
    if errors:
        raise AssertionError(f"{filename}:{first_line}: the system checks fail: {errors}")


def handle(request: dict[str, Any], namespace: dict[str, Any], doc: Doc) -> None:
    code, line, filename = request["code"], request["line"], request["page"]
    mode, arg = request["mode"], request["arg"]
    if mode == "file":
        name = write_module(doc.project, arg, code)
        module = importlib.import_module(name)
        namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
        return
    if mode == "settings":
        apply_settings(code, filename, line)
        return
    if mode == "interrupt":
        timer = threading.Timer(float(arg), os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            run_python(code, line, filename, namespace)
        finally:
            timer.cancel()
        return
    run_python(code, line, filename, namespace)


def main() -> int:
    results = os.fdopen(int(os.environ["DOC_RESULTS_FD"]), "w", encoding="utf-8")
    project = Path(os.environ["DOC_PROJECT"])
    sys.path.insert(0, str(project))

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    database = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    address = os.environ["GEARMAN_URL"].removeprefix("gearman://")
    doc = Doc(address, project)
    namespace: dict[str, Any] = {"__name__": "docs_example", "doc": doc}
    results.write(json.dumps({"ok": True, "ready": True}) + "\n")
    results.flush()
    try:
        for raw in sys.stdin:
            request = json.loads(raw)
            try:
                handle(request, namespace, doc)
                reply: dict[str, Any] = {"ok": True}
            except BaseException:  # noqa: BLE001 - every failure goes back to the test
                reply = {"ok": False, "error": traceback.format_exc()}
            sys.stdout.flush()
            sys.stderr.flush()
            results.write(json.dumps(reply) + "\n")
            results.flush()
    finally:
        doc.close()
        connection.creation.destroy_test_db(database, verbosity=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
