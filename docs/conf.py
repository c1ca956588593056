"""Sphinx configuration: the documentation site of django-gearman-tasks.

Built by ``tox run -e docs`` (``sphinx-build -W --keep-going -n``): every warning, including an
unresolved cross-reference, fails the build. The pages are Markdown (MyST); the API reference is
autodoc, importing the checkout (not an installed copy) with the test suite's settings.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

import django
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

import django_gearman  # noqa: E402 - needs the path and settings above

project = "django-gearman-tasks"
author = "django-gearman-tasks contributors"
copyright = "django-gearman-tasks contributors"
version = release = django_gearman.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# -- MyST ---------------------------------------------------------------------------------------
# Anchors for headings down to ###, so the pages' `page.md#section` links resolve.
myst_heading_anchors = 3

# -- autodoc ------------------------------------------------------------------------------------
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
# Signatures carry the annotations; the descriptions stay as the docstrings wrote them.
autodoc_typehints = "signature"
python_use_unqualified_type_names = True

# -- nitpicky -----------------------------------------------------------------------------------
# Without intersphinx (CI reaches PyPI only) the standard library's, Django's and pytest's names
# have nowhere to link to; every name of this package must resolve.
_STDLIB = "|".join(
    sorted(sys.stdlib_module_names - {"test"}) + ["_asyncio"]  # asyncio.Future's own module
)
nitpick_ignore_regex = [
    (r"py:.*", rf"(django|asgiref|pytest|_pytest|environ|{_STDLIB})(\..*)?"),
    # Type parameters in signatures (``P``, ``R``, ``~P``, ``django_gearman.tasks.decorator.R``).
    (r"py:(class|obj)", r"(typing\.)?~?(django_gearman(\.\w+)*\.)?[A-Z]"),
    # Private base classes, shown by show-inheritance but not documented.
    (r"py:(class|obj)", r"django_gearman(\.\w+)*\._\w+"),
]

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"django-gearman-tasks {release}"
html_static_path: list[str] = []


# -- local helpers ------------------------------------------------------------------------------


def _real_name(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    return f"{module}.{qualname}"


def _lookup(target: str, module: str | None, klass: str | None) -> Any:
    """The object ``target`` names, as Python would find it from the docstring's own module:
    a dotted path, a name the module defines or imports (or its class, for a method), or a name
    of one of the module's parent packages (``protocol.ClientConnection`` from
    ``django_gearman.gearman.client``). Raises LookupError when there is none."""
    candidates = []
    if module:
        parts = module.split(".")
        if klass:
            candidates.append(f"{module}.{klass}.{target}")
        candidates += [".".join([*parts[:n], target]) for n in range(len(parts), 0, -1)]
    candidates.append(target)
    for candidate in candidates:
        names = candidate.split(".")
        for split in range(len(names) - 1, 0, -1):
            try:
                obj: Any = importlib.import_module(".".join(names[:split]))
            except ImportError:
                continue
            try:
                for attr in names[split:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return obj
    raise LookupError(target)


def resolve_reexport(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``pkg.Name`` (a name a package re-exports, e.g. ``django_gearman.gearman_task``)
    and a bare name a module imported (``:class:`Task``` in a module that imports ``Task``) to
    the object's own path, where autodoc documented it. Anything else stays unresolved (and,
    under -n, a warning)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    try:
        obj = _lookup(target, node.get("py:module"), node.get("py:class"))
    except LookupError:
        real = None
    else:
        real = obj.__name__ if inspect.ismodule(obj) else _real_name(obj)
    domain = env.get_domain("py")
    if real is None:  # not importable from here: the one documented object of that name, if any
        suffix = "." + target
        found = [name for name in domain.objects if name.endswith(suffix)]
        real = found[0] if len(found) == 1 else None
    if real is None or real == node["reftarget"]:
        return None
    for reftype in (node["reftype"], "obj"):
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, reftype, real, node, contnode
        )
        if resolved is not None:
            return resolved
    return None


class GearmanExports(SphinxDirective):
    """A table of ``django_gearman.__all__``, each name linked where it is defined:
    generated, so the list cannot drift from the package."""

    def run(self) -> list[nodes.Node]:
        # The page is MyST, so is what the directive parses.
        lines = ["| name | defined in |", "|---|---|"]
        for name in sorted(django_gearman._EXPORTS):
            real = _real_name(getattr(django_gearman, name))
            module = real.rsplit(".", 1)[0] if real else ""
            lines.append(f"| {{py:obj}}`{name} <{real}>` | {{py:mod}}`{module}` |")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="django_gearman.__all__"), 0, container)
        return container.children


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("gearman-exports", GearmanExports)
    app.connect("missing-reference", resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
