"""One error root: every exception class the package raises derives from GearmanError, but for
the errors of Python's own protocols and of the frameworks it plugs into (listed below)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import django_gearman
from django_gearman.conf import InvalidGearmanSettings
from django_gearman.gearman import errors
from django_gearman.gearman.errors import GearmanError

PACKAGE = Path(django_gearman.__file__).parent

#: Raised on purpose, and why: Python's protocols, and the frameworks' own control flow.
ALLOWED = {
    "TypeError": "a value of the wrong type, as Python does",
    "KeyError": "a missing key, as a mapping does",
    "AttributeError": "a missing module attribute (module __getattr__)",
    "AssertionError": "unreachable code",
    "SystemExit": "a command's exit status, a cold shutdown",
    "CommandError": "Django: a management command failed",
    "PermissionDenied": "Django: an admin view refused",
    "Http404": "Django: an admin view found nothing",
    "TaskResultDoesNotExist": "Django Tasks: the contract of get_result()",
    "ArgumentTypeError": "argparse: a bad option value",
    "ModuleNotFoundError": "an optional framework is not installed (the import protocol)",
}


def raised_names() -> dict[str, set[str]]:
    """Module -> the class names its ``raise`` statements name (re-raises of variables aside)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                if name[:1].isupper():
                    found.setdefault(module, set()).add(name)
    return found


def test_every_raised_class_is_a_gearman_error_or_allowed() -> None:
    offenders = []
    checked = 0
    for module_name, names in raised_names().items():
        module = importlib.import_module(module_name)
        for name in sorted(names - ALLOWED.keys()):
            cls = getattr(module, name, None)
            checked += 1
            if not (isinstance(cls, type) and issubclass(cls, GearmanError)):
                offenders.append(f"{module_name}: raise {name}")
    assert offenders == []
    assert checked >= 20  # the scan does see the package's raises


def test_the_tree_has_one_root_and_no_two_classes_share_a_name() -> None:
    tree = [
        cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, Exception)
    ]
    assert all(issubclass(cls, GearmanError) for cls in tree)
    for layer_error in (
        InvalidGearmanSettings,
        django_gearman.TaskError,
        django_gearman.BatchError,
    ):
        assert issubclass(layer_error, GearmanError)
    names = [cls.__name__ for cls in tree] + [
        "InvalidGearmanSettings",
        "TaskError",
        "BatchError",
        "RetryError",
    ]
    assert len(names) == len(set(names))


def test_builtin_bases_keep_old_except_clauses_working() -> None:
    assert issubclass(errors.EnvelopeError, ValueError) and issubclass(errors.StoreError, OSError)
    assert issubclass(errors.ServerUnavailable, ConnectionError)
    assert issubclass(errors.ServerTimeout, TimeoutError)
    assert issubclass(InvalidGearmanSettings, django_gearman.conf.ImproperlyConfigured)
