"""TLS for Gearman connections: the job server's ``ssl.SSLContext``, and the client's/worker's.

The server (``python -m django_gearman.server``, ``manage.py gearmand``) speaks TLS on its port
with ``--ssl-cert`` (and ``--ssl-key``, unless the key is in the certificate file); with
``--ssl-ca`` it requires a client certificate signed by that CA (``--ssl-verify-client optional``
asks for one but lets clients without one in). A file it cannot use stops it at startup with a
:class:`~.errors.StartupError` saying which and why.

A client, worker or admin client speaks TLS to a server whose address says so:
``gearmans://host:4730`` verifies the server's certificate against the system's CAs and its name;
``gearmans://host:4730?ssl_ca=/etc/gearman/ca.pem&ssl_cert=client.pem&ssl_key=client.key``
brings a CA and a client certificate (:class:`ClientTLS` lists the parameters). A TLS address
keeps its options when written out (``str(address)``), so it can be handed on as text.
:func:`client_context` turns the options into a context; a file it cannot use raises
:class:`~.errors.UsageError`, not a connection error: no retry would fix it.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from urllib.parse import quote

from .errors import StartupError, UsageError

__all__ = [
    "QUERY_KEYS",
    "SETTINGS_KEYS",
    "ClientTLS",
    "add_server_arguments",
    "client_context",
    "server_context",
]

#: ``--ssl-verify-client`` choices, as the context's ``verify_mode``.
_VERIFY_CLIENT = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


# -- the server ---------------------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ssl-cert``, ``--ssl-key``, ``--ssl-ca`` and ``--ssl-verify-client``."""
    group = parser.add_argument_group("TLS")
    group.add_argument(
        "--ssl-cert",
        metavar="PATH",
        help="speak TLS with this certificate (PEM; the chain may follow it in the file)",
    )
    group.add_argument(
        "--ssl-key",
        metavar="PATH",
        help="the certificate's private key (PEM, unencrypted; default: in --ssl-cert's file)",
    )
    group.add_argument(
        "--ssl-ca",
        metavar="PATH",
        help="verify client certificates against this CA file or directory; clients without "
        "one are refused (see --ssl-verify-client)",
    )
    group.add_argument(
        "--ssl-verify-client",
        choices=list(_VERIFY_CLIENT),
        help="client certificates: 'required' (the default with --ssl-ca), 'optional' (one that "
        "is sent must verify) or 'none' (the default without --ssl-ca)",
    )


def server_context(options: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's context from the parsed options, or None when TLS is off.

    :class:`StartupError` when an option needs another, or a file cannot be used.
    """
    cert = getattr(options, "ssl_cert", None)
    key = getattr(options, "ssl_key", None)
    ca = getattr(options, "ssl_ca", None)
    verify = getattr(options, "ssl_verify_client", None)
    if cert is None:
        given = [f"--{name}" for name, v in (("ssl-key", key), ("ssl-ca", ca)) if v is not None]
        if verify is not None:
            given.append("--ssl-verify-client")
        if given:
            raise StartupError(f"{' and '.join(given)} need --ssl-cert (the server's certificate)")
        return None
    if verify is None:
        verify = "required" if ca is not None else "none"
    if verify != "none" and ca is None:
        raise StartupError(
            f"--ssl-verify-client {verify} needs --ssl-ca (the CA that signs client certificates)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 or newer
    # Clients here never resume sessions: tickets would only wake their poll() for nothing.
    context.num_tickets = 0
    try:
        _load_cert_chain(context, cert, key, "--ssl-cert", "--ssl-key (the key's file)")
        if ca is not None:
            _load_ca(context, ca, "--ssl-ca")
    except UsageError as error:
        raise StartupError(f"TLS: {error}") from None
    context.verify_mode = _VERIFY_CLIENT[verify]
    return context


# -- clients and workers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTLS:
    """How a client, worker or admin client speaks TLS to a job server.

    ``ca``: the CA file (PEM) or directory the server's certificate must be signed by; None:
    the system's CAs (``ssl_ca=`` in a ``gearmans://`` address).
    ``cert``, ``key``: a client certificate (PEM, the chain may follow) and its private key
    (unencrypted; None: in ``cert``'s file), for servers that require one (``ssl_cert=``,
    ``ssl_key=``).
    ``verify``: check the server's certificate and name (the default). False checks nothing,
    so anyone on the path can read and change the traffic: for a test server only
    (``ssl_verify=false``).
    ``server_hostname``: the name the server's certificate must hold (and the SNI sent);
    None: the address's host (``ssl_server_hostname=``).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True
    server_hostname: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key", "server_hostname"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise UsageError(f"TLS option {name} must be a non-empty string, not {value!r}")
        if not isinstance(self.verify, bool):
            raise UsageError(f"TLS option verify must be True or False, not {self.verify!r}")
        if self.key is not None and self.cert is None:
            raise UsageError("TLS option key needs cert (the client certificate it belongs to)")
        if not self.verify and (self.ca is not None or self.server_hostname is not None):
            unused = "ca" if self.ca is not None else "server_hostname"
            raise UsageError(
                f"TLS option {unused} is not used with verify off (nothing is checked): "
                "remove one of them"
            )

    @classmethod
    def from_query(cls, pairs: Iterable[tuple[str, str]]) -> ClientTLS:
        """The options of a ``gearmans://`` address's query (``ssl_ca=...&ssl_verify=false``);
        :class:`UsageError` for another parameter or a bad value."""
        values: dict[str, object] = {}
        for name, text in pairs:
            field = QUERY_KEYS.get(name)
            if field is None:
                raise UsageError(
                    f"unknown parameter {name!r} (a server address takes {', '.join(QUERY_KEYS)})"
                )
            if field == "verify":
                flag = _FLAGS.get(text.strip().lower())
                if flag is None:
                    raise UsageError(f"ssl_verify={text!r}: use true or false")
                values[field] = flag
            else:
                values[field] = text
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Mapping[str, object]) -> ClientTLS:
        """The options of a ``GEARMAN`` alias's ``"SSL"`` dict (``CA``, ``CERT``, ``KEY``,
        ``VERIFY``, ``SERVER_HOSTNAME``); :class:`UsageError` for another key or a bad value."""
        unknown = sorted(str(k) for k in settings if k not in SETTINGS_KEYS)
        if unknown:
            raise UsageError(
                f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: "
                f"{', '.join(SETTINGS_KEYS)})"
            )
        return cls(**{SETTINGS_KEYS[k]: v for k, v in settings.items()})  # type: ignore[arg-type]

    def query(self) -> str:
        """These options as a ``gearmans://`` query (``""`` for the defaults), paths quoted."""
        parts = []
        for key, name in QUERY_KEYS.items():
            value = getattr(self, name)
            if value == _DEFAULTS[name]:
                continue
            text = ("true" if value else "false") if name == "verify" else str(value)
            parts.append(f"{key}={quote(text, safe='/:@')}")
        return "&".join(parts)


#: The query parameters of a ``gearmans://`` address, and the ClientTLS field each sets.
QUERY_KEYS = {f"ssl_{f.name}": f.name for f in fields(ClientTLS)}
#: The keys of a ``GEARMAN`` alias's ``"SSL"`` dict, and the ClientTLS field each sets.
SETTINGS_KEYS = {f.name.upper(): f.name for f in fields(ClientTLS)}
_DEFAULTS = {f.name: f.default for f in fields(ClientTLS)}
_FLAGS = {"true": True, "1": True, "yes": True, "on": True}
_FLAGS.update(dict.fromkeys(("false", "0", "no", "off"), False))

# Contexts by options and the files' modification times: loading the system's CAs costs
# milliseconds, while a renewed certificate file is picked up by the next connection.
_contexts: dict[tuple[ClientTLS, tuple[int, ...]], ssl.SSLContext] = {}
_MAX_CONTEXTS = 32


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """The context for connecting with ``tls`` (cached while its files are unchanged).

    :class:`UsageError` when a file is missing, unreadable or not what it should be.
    """
    stamps = tuple(_mtime(path) for path in (tls.ca, tls.cert, tls.key) if path is not None)
    cached = _contexts.get((tls, stamps))
    if cached is not None:
        return cached
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None, capath=None)
    if tls.verify:
        if tls.ca is not None:
            _load_ca(context, tls.ca, "the CA file")
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert is not None:
        _load_cert_chain(
            context,
            tls.cert,
            tls.key,
            "the client certificate",
            "its key (ssl_key= in an address, KEY in the SSL setting)",
        )
    if len(_contexts) >= _MAX_CONTEXTS:
        _contexts.clear()
    _contexts[(tls, stamps)] = context
    return context


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1  # client_context says what is wrong with it


# -- loading files, with messages that say what to fix --------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except IsADirectoryError:
        raise UsageError(f"{what} {path!r} is a directory, not a file") from None
    except OSError as error:
        raise UsageError(f"cannot read {what} {path!r}: {error.strerror or error}") from None


def _load_cert_chain(
    context: ssl.SSLContext, cert: str, key: str | None, cert_what: str, key_what: str
) -> None:
    text = _read(cert, cert_what)
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"{cert_what} {cert!r} holds no PEM certificate")
    if key is None:
        if b"PRIVATE KEY-----" not in text:
            raise UsageError(f"{cert_what} {cert!r} holds no private key: give {key_what}")
        key_text = text
    else:
        key_text = _read(key, "the private key")
        if b"PRIVATE KEY-----" not in key_text:
            raise UsageError(f"the private key {key!r} holds no PEM private key")
    if b"ENCRYPTED" in key_text:
        raise UsageError(
            f"the private key in {key or cert!r} is encrypted: give an unencrypted one "
            "(openssl pkey -in KEY -out PLAIN), readable by this user only"
        )
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise UsageError(
                f"the private key {key or cert!r} does not belong to the certificate {cert!r}"
            ) from None
        raise UsageError(
            f"cannot load the certificate {cert!r} and its key: {error.reason or error}"
        ) from None
    except OSError as error:
        raise UsageError(f"cannot read {cert!r} or its key: {error.strerror or error}") from None


def _no_password() -> str:
    # Never let OpenSSL ask on the terminal (a server or worker has none to answer).
    raise UsageError("the private key is encrypted: give an unencrypted one")


def _load_ca(context: ssl.SSLContext, ca: str, what: str) -> None:
    if os.path.isdir(ca):
        if not os.access(ca, os.R_OK | os.X_OK):
            raise UsageError(f"cannot read {what} {ca!r} (a directory): permission denied")
        context.load_verify_locations(capath=ca)  # read per connection, by hashed name
        return
    text = _read(ca, what)
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"{what} {ca!r} holds no PEM CA certificate")
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as error:
        raise UsageError(
            f"cannot load the CA certificates of {what} {ca!r}: "
            f"{getattr(error, 'reason', None) or error}"
        ) from None
