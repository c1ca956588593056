"""The ``GEARMAN`` setting: aliases of job servers, read lazily, shaped like ``CACHES``.

::

    GEARMAN = {
        "default": {
            "SERVERS": ["127.0.0.1:4730"],      # or "gearman://h1:4730,h2:4730"
            "PREFIX": "",                        # namespace: prepended to every function name
            "BACKEND": "gearman",                # the client class: a dotted path, or "gearman",
                                                 # "outbox", "immediate" (django_gearman.testing)
            "OPTIONS": {"timeout": 30.0},        # GearmanClient keyword arguments
            "OUTBOX": False,                     # True: .background() inside atomic() goes
                                                 # through the transactional outbox too
            "SSL": {"CA": "/etc/gearman/ca.pem"},  # TLS to every server (docs/tls.md); True:
                                                 # the system's CAs
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
checks (``django_gearman.E001`` ...): option values too (E008: a ``?timeout=abc`` would otherwise
fail at the first job), a ``GEARMAN_URL`` that is not a Gearman URL (E009), and TLS options or
files that cannot be used (E014). Messages never show a URL's ``user:password@`` (it becomes
``***@``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .gearman.base import BaseClient
from .gearman.client import GearmanClient
from .gearman.errors import GearmanError, UsageError
from .gearman.tls import QUERY_KEYS as TLS_QUERY_KEYS
from .gearman.tls import SETTINGS_KEYS as TLS_SETTINGS_KEYS
from .gearman.tls import ClientTLS, client_context
from .gearman.transport import ServerAddress, parse_servers

__all__ = [
    "BACKENDS",
    "DEFAULT_ALIAS",
    "TASKS_FRAMEWORK_HINT",
    "URL_FORM",
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
_ALIAS_KEYS = {"SERVERS", "PREFIX", "BACKEND", "OPTIONS", "OUTBOX", "SSL"}
#: The form of a Gearman URL (``GEARMAN_URL``, :func:`gearman_url`), for messages.
URL_FORM = "gearman://host:4730[,host2:4730][?option=value]"
_SERVERS_HINT = (
    'Use "host:port" strings, e.g. ["127.0.0.1:4730"], or one string '
    '"gearman://host:4730[,host2:4730]".'
)
#: What to do when neither ``django.tasks`` nor the ``django_tasks`` backport can be imported:
#: said by ``django_gearman.backends``' ImportError and by the system check E012.
TASKS_FRAMEWORK_HINT = (
    'Install the Tasks framework: pip install "django-gearman-tasks[tasks]" (it brings the '
    'django-tasks backport), and on Django < 6 add "django_tasks" to INSTALLED_APPS.'
)
#: Query parameters of a Gearman URL that are alias keys, not client options.
_URL_KEYS = ("prefix", "backend")
#: The URL schemes, and whether each speaks TLS.
_SCHEMES = {"gearman": False, "gearmans": True}
_TLS_HINT = (
    'For example "SSL": {"CA": "/etc/gearman/ca.pem", "CERT": "client.pem", "KEY": '
    '"client.key"}, or True for the system\'s CAs; in a URL, gearmans://host:4730?ssl_ca=... '
    "(see docs/tls.md)."
)
# ``user:password@`` in a URL or a server string (with the scheme, if any, kept in group 1).
_CREDENTIALS = re.compile(r"(?<![^\s'\",(\[])((?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^\s'\",(\[]*@")


def _mask(text: str) -> str:
    """``text`` with each ``user:password@`` made ``***@``: no secret reaches a message."""
    return _CREDENTIALS.sub(r"\1***@", text)


def _seconds(value: Any, *, zero: bool = False) -> float:
    """A finite number of seconds as a float, > 0 (or >= 0 when ``zero``); UsageError if not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(value)
    seconds = float(value)  # OverflowError (an ArithmeticError) for a huge int
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise UsageError(value)
    return seconds


def _delay(value: Any) -> float:
    return _seconds(value, zero=True)


def _packet_size(value: Any) -> int:
    """A packet size: an int that fits the packet header's 32-bit size field, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32:
        raise UsageError(value)
    return value


def _client_id(value: Any) -> str | None:
    """SET_CLIENT_ID's id: one word (the server's ``workers`` listing is space-separated)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.isprintable() or value.split() != [value]:
        raise UsageError(value)  # not a string, control characters, spaces, or empty
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(value)
    return value


def _float_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text  # check_settings says what is wrong with it


def _int_text(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


_FLAG_TEXT = {"true": True, "1": True, "yes": True, "on": True}
_FLAG_TEXT.update(dict.fromkeys(("false", "0", "no", "off"), False))


def _flag_text(text: str) -> Any:
    return _FLAG_TEXT.get(text.lower(), text)


@dataclass(frozen=True)
class _Option:
    """A GearmanClient option: its check (and conversion), its reading from URL text, and what
    the messages say it must be."""

    convert: Callable[[Any], Any]  # the value the client gets; ValueError/TypeError if bad
    from_text: Callable[[str], Any]  # a URL query value, converted (bad text is kept as is)
    must_be: str
    example: str  # as Python, for OPTIONS
    url_example: str  # as URL text


_SECONDS = "a positive number of seconds"
_DELAY = "a number of seconds, 0 or more"
#: GearmanClient's keyword arguments (``OPTIONS``), by name.
_OPTIONS: dict[str, _Option] = {
    "timeout": _Option(_seconds, _float_text, _SECONDS, "30", "30"),
    "connect_timeout": _Option(_seconds, _float_text, _SECONDS, "5", "5"),
    "retry_delay": _Option(_delay, _float_text, _DELAY, "1", "1"),
    "max_retry_delay": _Option(_delay, _float_text, _DELAY, "30", "30"),
    "max_packet_size": _Option(
        _packet_size,
        _int_text,
        "a whole number of bytes from 1 to 4294967295",
        "67108864",
        "67108864",
    ),
    "client_id": _Option(
        _client_id, str, "a string without spaces or control characters", '"web-1"', "web-1"
    ),
    "exceptions": _Option(_flag, _flag_text, "True or False", "True", "true"),
}
_CLIENT_OPTIONS = frozenset(_OPTIONS)


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
    #: ``.background()`` inside an atomic block writes to the outbox (``background_on_commit``
    #: always does, for aliases that reach job servers): see :mod:`django_gearman.outbox`.
    outbox: bool = False

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
    return _source()[0]  # type: ignore[no-any-return]


def _source() -> tuple[Any, str]:
    """``(settings, url)``: the raw ``GEARMAN`` setting and ``""``, or the default alias and the
    ``GEARMAN_URL`` it comes from. A URL that is not a Gearman URL leaves the alias empty: the
    check E009 says why, and :func:`get_settings` refuses it."""
    from django.conf import settings  # noqa: PLC0415 - never at import time

    configured = getattr(settings, "GEARMAN", None)
    if configured is not None:
        return configured, ""
    import environ  # noqa: PLC0415 - read only when GEARMAN is not set

    url = environ.Env().str("GEARMAN_URL", default="")
    if not url:
        return {DEFAULT_ALIAS: {"SERVERS": DEFAULT_SERVERS}}, ""
    try:
        return {DEFAULT_ALIAS: gearman_url(url)}, url
    except ValueError:
        return {DEFAULT_ALIAS: {}}, url


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
    """Every problem in ``GEARMAN`` (or ``GEARMAN_URL``) as ``(check id, message, hint)``; empty
    when all is well."""
    problems: list[tuple[str, str, str]] = []
    raw, url = _source()
    if url:
        try:
            _split_url(url)
        except UsageError as error:
            return [
                (
                    "E009",
                    f"GEARMAN_URL {_mask(url)!r} is not a Gearman URL: {error}.",
                    f"Use the form {URL_FORM}, e.g. gearman://127.0.0.1:4730?timeout=30.",
                )
            ]
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
        where = f"GEARMAN_URL (alias {alias!r})" if url else f"GEARMAN[{alias!r}]"
        if not isinstance(value, dict):
            problems.append(
                (
                    "E001",
                    f"{where} must be a dict, not {type(value).__name__}.",
                    f"For example: {example}",
                )
            )
            continue
        problems.extend(_check_alias(where, value, from_url=bool(url)))
    return problems


def _check_alias(
    where: str, value: dict[Any, Any], *, from_url: bool
) -> list[tuple[str, str, str]]:
    """The problems of one alias's settings (``where`` names it in the messages)."""

    def key(name: str) -> str:
        return f"{where} ?{name.lower()}=" if from_url else f"{where}[{name!r}]"

    problems: list[tuple[str, str, str]] = []
    unknown = set(value) - _ALIAS_KEYS - {"MODE"}
    if unknown:
        problems.append(
            (
                "E003",
                f"{where} has unknown key(s): {', '.join(sorted(map(str, unknown)))}.",
                f"Allowed keys: {', '.join(sorted(_ALIAS_KEYS))}.",
            )
        )
    servers = f"{where} host list" if from_url else key("SERVERS")
    problem = _check_servers(value.get("SERVERS", DEFAULT_SERVERS))
    if problem:
        problems.append(
            ("E004", f"{servers} is not a list of job servers: {problem}.", _SERVERS_HINT)
        )
    prefix = value.get("PREFIX", "")
    if not isinstance(prefix, str) or any(c in prefix for c in "\0\n\r\t "):
        problems.append(
            (
                "E005",
                f"{key('PREFIX')} must be a string without spaces or control characters, not "
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
                f"{key('BACKEND')} is not a client backend: {error}.",
                f"Use a dotted path to a BaseClient subclass, or one of: {', '.join(BACKENDS)}.",
            )
        )
    if not isinstance(value.get("OUTBOX", False), bool):
        problems.append(
            (
                "E013",
                f"{key('OUTBOX')} must be True or False, not {value['OUTBOX']!r}.",
                "True sends .background() calls made inside atomic() through the outbox.",
            )
        )
    problems.extend(_check_tls(where, value, from_url=from_url))
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
        problems.extend(_check_options(where, options, from_url=from_url))
    return problems


def _check_servers(servers: Any) -> str:
    """What is wrong with a ``SERVERS`` value (credentials masked), or ``""``."""
    specs = servers.split(",") if isinstance(servers, str) else servers
    if isinstance(specs, list | tuple):
        for spec in specs:
            if not isinstance(spec, str):
                continue
            scheme, sep, _ = spec.strip().partition("://")
            if sep and scheme.lower() not in _SCHEMES:
                return f"{_mask(spec.strip())!r} is not a gearman:// or gearmans:// address"
            if "@" in spec:
                return (
                    f"{_mask(spec.strip())!r} has a user or password, which job servers do not take"
                )
    try:
        addresses = parse_servers(servers)
    except (ValueError, TypeError) as error:
        return _mask(str(error))
    for address in addresses:
        if "/" in address.host:
            return f"{address.host!r} is not a host name"
    return ""


def _check_tls(where: str, value: dict[Any, Any], *, from_url: bool) -> list[tuple[str, str, str]]:
    """E014: an ``SSL`` value, or the TLS of a ``gearmans://`` server, that cannot be used: a
    bad option, or a CA, certificate or key file that is missing or not what it should be."""
    key = f"{where} ?ssl_..." if from_url else f"{where}['SSL']"
    try:
        tls = _alias_tls(value.get("SSL"))
    except UsageError as error:
        return [("E014", f"{key} is wrong: {error}.", _TLS_HINT)]
    try:
        servers = parse_servers(value.get("SERVERS", DEFAULT_SERVERS))
    except (ValueError, TypeError):
        servers = []  # E004 says why
    checked = {tls} if tls is not None else {s.tls for s in servers if s.tls is not None}
    problems = []
    for options in checked:
        try:
            client_context(options)
        except UsageError as error:
            what = key if tls is not None else f"{where} server TLS"
            problems.append(("E014", f"{what}: {error}.", _TLS_HINT))
    return problems


def _alias_tls(value: Any) -> ClientTLS | None:
    """An alias's ``SSL``: a dict of ClientTLS options, True (the defaults), or False/None (each
    server as its address says); UsageError if it is none of these."""
    if value is None or value is False:
        return None
    if value is True:
        return ClientTLS()
    if not isinstance(value, dict):
        raise UsageError(f"it must be a dict, True or False, not {type(value).__name__}")
    unknown = [k for k in value if k not in TLS_SETTINGS_KEYS]
    if unknown:
        guesses = [
            match[0]
            for name in unknown
            if (match := difflib.get_close_matches(str(name).upper(), TLS_SETTINGS_KEYS, n=1))
        ]
        guess = f" (did you mean {', '.join(map(repr, guesses))}?)" if guesses else ""
        raise UsageError(
            f"unknown key(s) {', '.join(map(repr, unknown))}{guess}; the keys are "
            f"{', '.join(TLS_SETTINGS_KEYS)}"
        )
    return ClientTLS.from_settings(value)


def _check_options(
    where: str, options: dict[Any, Any], *, from_url: bool
) -> list[tuple[str, str, str]]:
    """E007 for unknown GearmanClient options (with a did-you-mean), E008 for bad values."""
    problems: list[tuple[str, str, str]] = []
    bad = sorted(map(str, set(options) - _CLIENT_OPTIONS))
    if bad:
        guesses = []
        for name in bad:
            match = difflib.get_close_matches(name, [*sorted(_CLIENT_OPTIONS), *_URL_KEYS], n=1)
            if match and match[0] in _URL_KEYS and not from_url:
                guesses.append(f"the key {match[0].upper()!r} (beside OPTIONS) for {name!r}")
            elif match:
                guesses.append(f"{match[0]!r} for {name!r}")
        url_keys = " A Gearman URL also takes prefix= and backend=." if from_url else ""
        label = where if from_url else f"{where}['OPTIONS']"
        problems.append(
            (
                "E007",
                f"{label} has unknown option(s): {', '.join(bad)}.",
                (f"Did you mean {', '.join(guesses)}? " if guesses else "")
                + f"Options are GearmanClient's: {', '.join(sorted(_CLIENT_OPTIONS))}.{url_keys}",
            )
        )
    for name, option in _OPTIONS.items():
        if name not in options:
            continue
        value = options[name]
        try:
            option.convert(value)
        except (TypeError, ValueError, ArithmeticError):
            example = (
                f"gearman://host:4730?{name}={option.url_example}"
                if from_url
                else f'"OPTIONS": {{"{name}": {option.example}}}'
            )
            problems.append(
                (
                    "E008",
                    f"{where} option {name!r} is {value!r}: {name} must be {option.must_be}.",
                    f"Set {name} to {option.must_be}, e.g. {example}.",
                )
            )
    return problems


def gearman_url(url: str) -> dict[str, Any]:
    """An alias's settings from ``gearman://host1:4730,host2:4731/?prefix=app.&timeout=10``.

    The scheme may be left out (``host:4730``); ``gearmans://`` is TLS to every server (the
    alias's ``SSL``: ``True``, or the ``ssl_ca``/``ssl_cert``/``ssl_key``/``ssl_verify``/
    ``ssl_server_hostname`` parameters as its ``CA``/``CERT``/... keys). Query parameters:
    ``prefix``, ``backend``, and any GearmanClient option, converted to what the option takes
    (``timeout=5`` is 5.0, ``exceptions=false`` is False; a value that does not convert is
    kept, for the check E008 to report). :class:`UsageError` (a ValueError) if this is not a
    Gearman URL.
    """
    try:
        parts = _split_url(url)
    except UsageError as error:
        raise UsageError(f"{_mask(url)!r} is not a Gearman URL: {error}; use {URL_FORM}") from None
    result: dict[str, Any] = {"SERVERS": parts.netloc or DEFAULT_SERVERS}
    options: dict[str, Any] = {}
    tls: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in TLS_QUERY_KEYS:
            name = TLS_QUERY_KEYS[key].upper()
            tls[name] = _flag_text(value) if name == "VERIFY" else value
        elif key == "prefix":
            result["PREFIX"] = value
        elif key == "backend":
            result["BACKEND"] = value
        elif key in _OPTIONS:
            options[key] = _OPTIONS[key].from_text(value)
        else:
            options[key] = _number(value)  # another backend's option
    if options:
        result["OPTIONS"] = options
    if _SCHEMES[parts.scheme]:
        result["SSL"] = tls or True
    return result


def _split_url(url: str) -> SplitResult:
    """``url`` split, if it is a Gearman URL; else :class:`UsageError` saying why (masked)."""
    try:
        parts = urlsplit(url if "://" in url else f"gearman://{url}")
    except ValueError as error:
        raise UsageError(_mask(str(error))) from None
    if parts.scheme not in _SCHEMES:
        raise UsageError(f"the scheme is {parts.scheme!r}, not gearman (or gearmans for TLS)")
    if "@" in parts.netloc:
        raise UsageError("Gearman job servers take no user or password")
    if not _SCHEMES[parts.scheme]:
        names = sorted({k for k, _ in parse_qsl(parts.query) if k in TLS_QUERY_KEYS})
        if names:
            raise UsageError(
                f"{', '.join(names)} {'needs' if len(names) == 1 else 'need'} the gearmans:// "
                "scheme (TLS)"
            )
    return parts


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _parse(alias: str, value: dict[str, Any]) -> AliasSettings:
    backend = BACKENDS.get(value.get("BACKEND", DEFAULT_BACKEND), value.get("BACKEND", ""))
    options = dict(value.get("OPTIONS", {}))
    if _is_gearman_client(backend):  # checked already: the values GearmanClient takes (30 -> 30.0)
        options = {k: _OPTIONS[k].convert(v) if k in _OPTIONS else v for k, v in options.items()}
    servers = parse_servers(value.get("SERVERS", DEFAULT_SERVERS))
    tls = _alias_tls(value.get("SSL"))
    if tls is not None:  # SSL goes for every server of the alias
        servers = [server._replace(tls=tls) for server in servers]
    return AliasSettings(
        alias=alias,
        servers=tuple(servers),
        prefix=value.get("PREFIX", ""),
        backend=backend,
        options=options,
        outbox=value.get("OUTBOX", False) is True,
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
