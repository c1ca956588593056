"""System checks: bad ``GEARMAN`` settings and clashing task names fail ``manage.py check``
(and every command that runs checks) with an id and a hint, instead of at the first job."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register

from . import conf
from .tasks import registry

__all__ = ["check_gearman_settings", "check_tasks", "check_tasks_framework"]

#: The Tasks backend of this app, as ``settings.TASKS`` names it.
GEARMAN_BACKEND = "django_gearman.backends.GearmanBackend"


@register(Tags.compatibility, "django_gearman")
def check_gearman_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001-E009: the ``GEARMAN`` setting and ``GEARMAN_URL`` (see
    :func:`django_gearman.conf.check_settings`)."""
    return [
        Error(message, hint=hint, id=f"django_gearman.{code}")
        for code, message, hint in conf.check_settings()
    ]


@register(Tags.compatibility, "django_gearman")
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E010: two functions registered under one task name; E011: a task on an unknown alias."""
    errors: list[CheckMessage] = []
    for name, origins in sorted(registry.duplicates.items()):
        errors.append(
            Error(
                f"Task name {name!r} is used by more than one function: {'; '.join(origins)}.",
                hint="Give one of them another name with @gearman_task(name=...).",
                id="django_gearman.E010",
            )
        )
    configured = set(conf.aliases())
    for task in registry.values():
        if configured and task.options.alias not in configured:
            errors.append(
                Error(
                    f"Task {task.name!r} uses the Gearman alias {task.options.alias!r}, which is "
                    "not in settings.GEARMAN.",
                    hint=f"Add it to GEARMAN or use one of: {', '.join(sorted(configured))}.",
                    id="django_gearman.E011",
                )
            )
    return errors


@register(Tags.compatibility, "django_gearman")
def check_tasks_framework(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E012: ``TASKS`` uses the Gearman backend, but no Tasks framework is installed, so nothing
    would read ``TASKS`` at all (and importing the backend fails)."""
    tasks = getattr(settings, "TASKS", None)
    if not isinstance(tasks, dict):
        return []
    aliases = [
        alias
        for alias, config in tasks.items()
        if isinstance(config, dict) and config.get("BACKEND") == GEARMAN_BACKEND
    ]
    if not aliases or _tasks_framework():
        return []
    return [
        Error(
            f"settings.TASKS[{alias!r}] uses {GEARMAN_BACKEND}, but no Tasks framework is "
            "installed: neither django.tasks (Django 6) nor django_tasks (the backport) can be "
            "imported.",
            hint=conf.TASKS_FRAMEWORK_HINT,
            id="django_gearman.E012",
        )
        for alias in aliases
    ]


def _tasks_framework() -> str:
    """The importable Tasks framework, ``django.tasks`` or ``django_tasks``; ``""`` if neither."""
    for name in ("django.tasks", "django_tasks"):
        try:
            import_module(name)
        except ImportError:
            continue
        return name
    return ""
