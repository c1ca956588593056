"""The examples of README.md and docs/: found, annotated, and run as a reader would run them.

A page's fenced ``python``, ``sh`` and ``php`` blocks run in page order. Python blocks share one
namespace in one process (the *kernel*, :mod:`tests.doc_kernel`), as if typed into one shell
with Django set up on ``tests.settings`` and a test database; ``sh`` lines run in a copy of
``example_project/``; ``php`` blocks run with the real ``php-gearman``. Every example talks to a
job server the test started on a free port: ``4730`` in an example stands for its port.

An HTML comment on the line before a fence says how to run the block (GitHub and Sphinx show
nothing of it)::

    <!-- doctest: file accounts/tasks.py -->   the block is that module of the page's project,
                                               written there and imported into the namespace
    <!-- doctest: settings -->                 a settings.py excerpt: run, applied, and it must
                                               pass the system checks
    <!-- doctest: interrupt 1.5 -->            Ctrl-C (SIGINT) 1.5 s after the block starts
                                               (``worker.work()`` must then return)
    <!-- doctest: background -->              (php) a peer the page's examples talk to:
                                               started first, kept running to the end
    <!-- doctest: syntax REASON -->            only parsed (``bash -n``, ``compile``): REASON
                                               says why it is not run and where it is tested
    <!-- doctest: skip REASON -->              not run at all

and a comment ``<!-- doctest-hidden`` ... ``-->`` holds Python the page runs at that point
without showing it: a worker to answer the example's jobs, or a check after it (the kernel's
``doc`` object has helpers, see :mod:`tests.doc_kernel`).

In a Python block, a top-level expression whose comment starts with a Python literal is
checked against it: ``decode_result(b"5")  # 5`` fails the page unless it returns ``5``
(a comment with ``...`` in it describes the value and is not checked).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"python", "sh", "php"}
PORT = "4730"

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<lang>[\w-]*)[^\n]*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*doctest:\s*(?P<word>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
HIDDEN_OPEN = re.compile(r"^\s*<!--\s*doctest-hidden\s*$")
MODES = {"file", "settings", "interrupt", "background", "syntax", "skip"}
# docs/tutorial.md is run by tests/test_new_user.py, as a new user's terminal session:
# "terminal" (lines typed in order, cd and . activate included), "append" (added to a file),
# "eventually" (retried until it succeeds), "background" (left running in another terminal).
TUTORIAL = ROOT / "docs" / "tutorial.md"
MODES |= {"terminal", "append", "eventually"}


@dataclass(frozen=True)
class Block:
    """One example: its language, code, where it starts (1-based line of the code) and how
    to run it (``mode`` from its directive, ``arg`` the rest of the directive)."""

    page: Path
    lang: str
    code: str
    line: int
    mode: str = ""
    arg: str = ""
    hidden: bool = False

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


class DocSyntaxError(ValueError):
    """A directive the harness does not know, or one that is not followed by a fence."""


def parse(page: Path) -> list[Block]:
    """The page's fenced and hidden blocks, in order (runnable or not)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[str, str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if (match := DIRECTIVE.match(line)) is not None:
            if match["word"] not in MODES:
                raise DocSyntaxError(f"{page}:{i + 1}: unknown doctest directive {match['word']!r}")
            pending = (match["word"], match["arg"], i + 1)
            i += 1
            continue
        if HIDDEN_OPEN.match(line):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->"), None)
            if end is None:
                raise DocSyntaxError(f"{page}:{i + 1}: doctest-hidden is never closed by -->")
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(page, "python", code, i + 2, hidden=True))
            i = end + 1
            continue
        if (match := FENCE.match(line)) is not None:
            fence, lang = match["fence"], match["lang"]
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)),
                None,
            )
            if end is None:
                raise DocSyntaxError(f"{page}:{i + 1}: the code fence is never closed")
            code = "\n".join(lines[i + 1 : end]) + "\n"
            mode, arg = ("", "")
            if pending is not None:
                mode, arg = pending[0], pending[1]
                pending = None
            blocks.append(Block(page, lang, code, i + 2, mode, arg))
            i = end + 1
            continue
        if pending is not None and line.strip():
            raise DocSyntaxError(f"{page}:{pending[2]}: a doctest directive must precede a fence")
        i += 1
    if pending is not None:
        raise DocSyntaxError(f"{page}:{pending[2]}: a doctest directive must precede a fence")
    return blocks


def runnable(page: Path) -> list[Block]:
    """The blocks of ``page`` that the harness runs or checks."""
    return [b for b in parse(page) if b.lang in RUNNABLE]


def with_port(code: str, port: int) -> str:
    """``code`` with the default Gearman port replaced by the test server's."""
    return re.sub(rf"(?<![\d.]){PORT}(?!\d)", str(port), code)


_SPLIT = re.compile(r",|;| \(| -|: | or | then ")


def expected_literal(comment: str) -> tuple[bool, object]:
    """``(True, value)`` when the comment (without ``#``) starts with a Python literal."""
    text = comment.strip()
    candidates = [text] + [text[: m.start()] for m in _SPLIT.finditer(text)]
    for candidate in candidates:
        candidate = candidate.strip()
        if not candidate or "..." in candidate:  # "[Row(...), ...]" describes, not states
            continue
        try:
            return True, ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return False, None
