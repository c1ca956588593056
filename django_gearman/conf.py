"""The ``GEARMAN`` setting: aliases of job servers, read lazily, shaped like ``CACHES``.

::

    GEARMAN = {
        "default": {
            "SERVERS": ["127.0.0.1:4730"],      # or "gearman://h1:4730,h2:4730"
            "PREFIX": "",                        # namespace: prepended to every function name
            "BACKEND": "gearman",                # the client class: a dotted path, or "gearman",
                                                 # "outbox", "immediate" (django_gearman.testing)
            "OPTIONS": {"timeout": 30.0},        # GearmanClient keyword arguments
        },
    }

Without ``GEARMAN``, the ``default`` alias comes from the ``GEARMAN_URL`` environment variable
(read with django-environ), else ``127.0.0.1:4730``. :func:`gearman_url` turns such a URL into an
alias's settings for ``settings.py``: ``GEARMAN = {"default": gearman_url(env("GEARMAN_URL"))}``.

``BACKEND`` picks the client class the way ``EMAIL_BACKEND`` picks a mail backend: the real
:class:`~django_gearman.gearman.client.GearmanClient` by default, or a test double that records
(``"outbox"``) or runs in-process (``"immediate"``) the very submissions the real one would send.

Nothing here runs at import time; the settings are read on first use and again after
``override_settings(GEARMAN=...)``. :func:`check_settings` lists what is wrong, for the system
checks (``django_gearman.E001`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .gearman.base import BaseClient
from .gearman.client import GearmanClient
from .gearman.errors import GearmanError, UsageError
from .gearman.transport import ServerAddress, parse_servers

__all__ = [
    "BACKENDS",
    "DEFAULT_ALIAS",
    "AliasSettings",
    "InvalidGearmanSettings",
    "aliases",
    "check_settings",
    "get_settings",
    "gearman_url",
    "reset",
]

DEFAULT_ALIAS = "default"
DEFAULT_SERVERS = "127.0.0.1:4730"
#: Short names a ``BACKEND`` may use instead of a dotted path.
BACKENDS = {
    "gearman": "django_gearman.gearman.GearmanClient",
    "outbox": "django_gearman.testing.OutboxClient",
    "immediate": "django_gearman.testing.ImmediateClient",
}
DEFAULT_BACKEND = "gearman"
_ALIAS_KEYS = {"SERVERS", "PREFIX", "BACKEND", "OPTIONS"}
_CLIENT_OPTIONS = {
    "timeout",
    "connect_timeout",
    "client_id",
    "exceptions",
    "retry_delay",
    "max_retry_delay",
    "max_packet_size",
}


class InvalidGearmanSettings(GearmanError, ImproperlyConfigured):
    """``GEARMAN`` is malformed; the message says what to fix (also a system check error)."""


@dataclass(frozen=True)
class AliasSettings:
    """One alias of ``GEARMAN``, validated."""

    alias: str
    servers: tuple[ServerAddress, ...]
    prefix: str = ""
    backend: str = BACKENDS[DEFAULT_BACKEND]
    options: dict[str, Any] = field(default_factory=dict)

    def function_name(self, name: str) -> str:
        """The Gearman function name of task ``name`` under this alias's namespace."""
        return self.prefix + name

    def backend_class(self) -> type[BaseClient]:
        """The client class ``BACKEND`` names (checked by :func:`check_settings`)."""
        return _backend_class(self.backend)

    @property
    def reaches_servers(self) -> bool:
        """Do this alias's jobs go to job servers (False for the test doubles)?"""
        return issubclass(self.backend_class(), GearmanClient)


_cache: dict[str, AliasSettings] | None = None


def reset() -> None:
    """Forget the parsed settings (called when ``GEARMAN`` changes under ``override_settings``)."""
    global _cache
    _cache = None


def raw_settings() -> dict[str, Any]:
    """``settings.GEARMAN``, or the default alias from ``GEARMAN_URL`` / 127.0.0.1:4730."""
    from django.conf import settings  # noqa: PLC0415 - never at import time

    configured = getattr(settings, "GEARMAN", None)
    if configured is not None:
        return configured  # type: ignore[no-any-return]
    import environ  # noqa: PLC0415 - read only when GEARMAN is not set

    url = environ.Env().str("GEARMAN_URL", default="")
    return {DEFAULT_ALIAS: gearman_url(url) if url else {"SERVERS": DEFAULT_SERVERS}}


def get_settings(alias: str = DEFAULT_ALIAS) -> AliasSettings:
    """The validated settings of ``alias``; :class:`InvalidGearmanSettings` if wrong or unknown."""
    global _cache
    if _cache is None:
        problems = check_settings()
        if problems:
            raise InvalidGearmanSettings(
                "; ".join(f"{message} ({hint})" for _, message, hint in problems)
            )
        _cache = {name: _parse(name, value) for name, value in raw_settings().items()}
    try:
        return _cache[alias]
    except KeyError:
        raise InvalidGearmanSettings(
            f"no Gearman alias {alias!r} in settings.GEARMAN (aliases: "
            f"{', '.join(sorted(_cache)) or 'none'})"
        ) from None


def aliases() -> list[str]:
    """The configured alias names."""
    raw = raw_settings()
    return list(raw) if isinstance(raw, dict) else []


def check_settings() -> list[tuple[str, str, str]]:
    """Every problem in ``GEARMAN`` as ``(check id, message, hint)``; empty when all is well."""
    problems: list[tuple[str, str, str]] = []
    raw = raw_settings()
    example = 'GEARMAN = {"default": {"SERVERS": ["127.0.0.1:4730"]}}'
    if not isinstance(raw, dict):
        return [
            (
                "E001",
                f"GEARMAN must be a dict of aliases, not {type(raw).__name__}.",
                f"For example: {example}",
            )
        ]
    if DEFAULT_ALIAS not in raw:
        problems.append(("E002", 'GEARMAN has no "default" alias.', f"Add one, e.g. {example}"))
    for alias, value in raw.items():
        where = f"GEARMAN[{alias!r}]"
        if not isinstance(value, dict):
            problems.append(
                (
                    "E001",
                    f"{where} must be a dict, not {type(value).__name__}.",
                    f"For example: {example}",
                )
            )
            continue
        unknown = set(value) - _ALIAS_KEYS - {"MODE"}
        if unknown:
            problems.append(
                (
                    "E003",
                    f"{where} has unknown key(s): {', '.join(sorted(map(str, unknown)))}.",
                    f"Allowed keys: {', '.join(sorted(_ALIAS_KEYS))}.",
                )
            )
        try:
            parse_servers(value.get("SERVERS", DEFAULT_SERVERS))
        except (ValueError, TypeError) as error:
            problems.append(
                (
                    "E004",
                    f"{where}['SERVERS'] is not a list of job servers: {error}.",
                    'Use "host:port" strings, e.g. ["127.0.0.1:4730"], or "gearman://h1:4730,h2:4730".',
                )
            )
        prefix = value.get("PREFIX", "")
        if not isinstance(prefix, str) or any(c in prefix for c in "\0\n\r\t "):
            problems.append(
                (
                    "E005",
                    f"{where}['PREFIX'] must be a string without spaces or control characters, not "
                    f"{prefix!r}.",
                    'Use a short name and a separator, e.g. "myproject.".',
                )
            )
        if "MODE" in value:
            problems.append(
                (
                    "E006",
                    f"{where} has MODE, which BACKEND replaced.",
                    f'Use "BACKEND": {value["MODE"] if value["MODE"] in BACKENDS else "gearman"!r} '
                    f"(one of {', '.join(BACKENDS)}, or a dotted path).",
                )
            )
        backend = value.get("BACKEND", DEFAULT_BACKEND)
        try:
            _backend_class(backend)
        except (ImportError, TypeError, ValueError, UsageError) as error:
            problems.append(
                (
                    "E006",
                    f"{where}['BACKEND'] is not a client backend: {error}.",
                    "Use a dotted path to a BaseClient subclass, or one of: "
                    f"{', '.join(BACKENDS)}.",
                )
            )
        options = value.get("OPTIONS", {})
        if not isinstance(options, dict):
            problems.append(
                (
                    "E007",
                    f"{where}['OPTIONS'] must be a dict, not {type(options).__name__}.",
                    'For example: {"timeout": 30}.',
                )
            )
        elif _is_gearman_client(backend):  # other backends take options of their own
            bad = set(options) - _CLIENT_OPTIONS
            if bad:
                problems.append(
                    (
                        "E007",
                        f"{where}['OPTIONS'] has unknown option(s): "
                        f"{', '.join(sorted(map(str, bad)))}.",
                        f"Options are GearmanClient's: {', '.join(sorted(_CLIENT_OPTIONS))}.",
                    )
                )
    return problems


def gearman_url(url: str) -> dict[str, Any]:
    """An alias's settings from ``gearman://host1:4730,host2:4731/?prefix=app.&timeout=10``.

    Query parameters: ``prefix``, ``backend``, and any GearmanClient option (numbers are
    converted).
    """
    parts = urlsplit(url if "://" in url else f"gearman://{url}")
    if parts.scheme != "gearman":
        raise UsageError(f"{url!r}: a Gearman URL starts with gearman://")
    result: dict[str, Any] = {"SERVERS": parts.netloc or DEFAULT_SERVERS}
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "prefix":
            result["PREFIX"] = value
        elif key == "backend":
            result["BACKEND"] = value
        else:
            options[key] = _number(value)
    if options:
        result["OPTIONS"] = options
    return result


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _parse(alias: str, value: dict[str, Any]) -> AliasSettings:
    return AliasSettings(
        alias=alias,
        servers=tuple(parse_servers(value.get("SERVERS", DEFAULT_SERVERS))),
        prefix=value.get("PREFIX", ""),
        backend=BACKENDS.get(value.get("BACKEND", DEFAULT_BACKEND), value.get("BACKEND", "")),
        options=dict(value.get("OPTIONS", {})),
    )


def _is_gearman_client(backend: Any) -> bool:
    try:
        return issubclass(_backend_class(backend), GearmanClient)
    except (ImportError, TypeError, ValueError, UsageError):
        return False  # E006 says what is wrong with it


def _backend_class(backend: Any) -> type[BaseClient]:
    if not isinstance(backend, str) or not backend:
        raise UsageError(f"{backend!r} is not a name or dotted path")
    cls = import_string(BACKENDS.get(backend, backend))
    if not (isinstance(cls, type) and issubclass(cls, BaseClient)):
        raise UsageError(f"{backend!r} is not a BaseClient subclass")
    return cls
