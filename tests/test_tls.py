"""TLS (issue #14): the server's ``--ssl-*`` options, ``gearmans://`` addresses, the alias's
``SSL`` setting, and real peers on both ends.

Certificates are made once per session with the ``openssl`` CLI in a temporary directory: a CA,
a server certificate for ``127.0.0.1``/``localhost``, a client certificate, and a second CA with
a client certificate of its own (the "wrong CA"). The servers are ``python -m
django_gearman.server`` subprocesses (:class:`tests.peers.TLSEmbeddedServer`); the peers are
Perl's ``Gearman::Client`` (IO::Socket::SSL, so OpenSSL through Net::SSLeay), Debian's gearmand
1.1.20 and the ``gearman`` CLI of gearman-tools 1.1.20. Those two are built without TLS: their
``--ssl``/``-S`` are accepted and do nothing (their tests say so, and fail if that changes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from django_gearman import conf
from django_gearman.clients import clients
from django_gearman.gearman import GearmanClient, Task
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.errors import ServerUnavailable, StartupError, UsageError
from django_gearman.gearman.tls import ClientTLS, client_context, server_context
from django_gearman.gearman.transport import ServerAddress, parse_server, parse_servers
from tests.helpers import wait_for, worker_thread
from tests.peers import (
    HOST,
    ROOT,
    BackgroundProcess,
    EmbeddedServer,
    Gearmand,
    TLSEmbeddedServer,
    admin_command,
    free_port,
    gearman_cli_path,
    gearmand_path,
    require_peer,
    tls_admin_command,
)

PERL_DIR = Path(__file__).resolve().parent / "perl"


# -- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    dir: Path

    def __getattr__(self, name: str) -> str:
        # ca_pem -> <dir>/ca.pem, client_key -> <dir>/client.key ...
        stem, _, ext = name.rpartition("_")
        return str(self.dir / f"{stem}.{ext}")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [require_peer("openssl", shutil.which("openssl")), *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


def _make_ca(name: str, cwd: Path) -> None:
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2"),
        *("-subj", f"/CN={name} test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=cwd,
    )


def _make_leaf(name: str, ca: str, extensions: str, cwd: Path) -> None:
    _openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"),
        cwd=cwd,
    )
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions
    )
    _openssl(
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key"),
        *("-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext"),
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    cwd = tmp_path_factory.mktemp("tls")
    _make_ca("ca", cwd)
    _make_ca("otherca", cwd)
    server_ext = "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    _make_leaf("server", "ca", server_ext, cwd)
    _make_leaf("client", "ca", "extendedKeyUsage=clientAuth\n", cwd)
    _make_leaf("stranger", "otherca", "extendedKeyUsage=clientAuth\n", cwd)
    (cwd / "combined.pem").write_bytes(
        (cwd / "server.pem").read_bytes() + (cwd / "server.key").read_bytes()
    )
    _openssl(
        *("pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret"),
        *("-out", "encrypted.key"),
        cwd=cwd,
    )
    (cwd / "notpem.pem").write_text("this is not a certificate\n")
    return Certs(cwd)


def client_ssl_context(certs: Certs, *, cert: str = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca_pem)
    context.load_cert_chain(str(certs.dir / f"{cert}.pem"), str(certs.dir / f"{cert}.key"))
    return context


def address(server: EmbeddedServer | Gearmand, certs: Certs, *, cert: str | None = "client") -> str:
    """A ``gearmans://`` address of ``server`` verified against our CA, with ``cert``'s
    client certificate (None: without one)."""
    spec = f"gearmans://{server.address}?ssl_ca={certs.ca_pem}"
    if cert is not None:
        spec += f"&ssl_cert={certs.dir / f'{cert}.pem'}&ssl_key={certs.dir / f'{cert}.key'}"
    return spec


@contextmanager
def tls_server(certs: Certs, *args: str, ca: bool = True) -> Iterator[EmbeddedServer]:
    """Our server on TLS with the test CA's server certificate; with ``ca``, requiring client
    certificates of that CA (``args``: more server options)."""
    extra = ["--ssl-cert", certs.server_pem, "--ssl-key", certs.server_key, *args]
    if ca:
        extra += ["--ssl-ca", certs.ca_pem]
    server = TLSEmbeddedServer(context=client_ssl_context(certs), extra_args=extra)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mutual(certs: Certs) -> Iterator[EmbeddedServer]:
    """Our server requiring client certificates signed by our CA."""
    with tls_server(certs) as server:
        yield server


def reverse(job: object) -> bytes:
    return job.data[::-1]  # type: ignore[attr-defined]


# -- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gearmans://h:1", ServerAddress("h", 1, ClientTLS())),
        ("GEARMANS://h", ServerAddress("h", 4730, ClientTLS())),
        (
            "gearmans://h:1/?ssl_ca=/etc/a,b.pem&ssl_verify=true",
            ServerAddress("h", 1, ClientTLS(ca="/etc/a,b.pem")),
        ),
        (
            "gearmans://[::1]:5?ssl_cert=/c.pem&ssl_key=/k.pem&ssl_server_hostname=gm.example",
            ServerAddress(
                "::1", 5, ClientTLS(cert="/c.pem", key="/k.pem", server_hostname="gm.example")
            ),
        ),
        ("gearmans://h?ssl_verify=false", ServerAddress("h", 4730, ClientTLS(verify=False))),
        ("gearman://h:1", ServerAddress("h", 1)),
    ],
)
def test_a_tls_address_comes_back_from_its_text(spec: str, expected: ServerAddress) -> None:
    address = parse_server(spec)
    assert address == expected
    assert parse_server(str(address)) == address  # handed on as text, it stays TLS
    assert parse_servers([address]) == [address] == parse_servers(address)


def test_a_list_shares_its_first_scheme_and_its_query() -> None:
    tls = ClientTLS(ca="/ca.pem")
    assert parse_servers("gearmans://h1:1, h2:2?ssl_ca=/ca.pem") == [
        ServerAddress("h1", 1, tls),
        ServerAddress("h2", 2, tls),
    ]
    assert parse_servers("a:1,gearmans://b:2") == [
        ServerAddress("a", 1),
        ServerAddress("b", 2, ClientTLS()),
    ]
    assert str(ServerAddress("h", 1)) == "h:1"  # plain addresses print as before


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("redis://h", "the scheme must be gearman:// or gearmans://"),
        ("h:1?ssl_ca=/ca.pem", "TLS parameters need the gearmans:// scheme"),
        ("gearman://h?ssl_ca=/ca.pem", "TLS parameters need the gearmans:// scheme"),
        ("gearman://h?timeout=3", "a plain TCP address takes no parameters"),
        ("gearmans://h?ssl_cafile=x", "unknown parameter 'ssl_cafile'"),
        ("gearmans://h?ssl_verify=maybe", "ssl_verify='maybe': use true or false"),
        ("gearmans://h?ssl_key=/k.pem", "key needs cert"),
        ("gearmans://h?ssl_verify=no&ssl_ca=/ca.pem", "ca is not used with verify off"),
        ("gearmans://h?ssl_ca=", "ca must be a non-empty string"),
    ],
)
def test_a_bad_tls_address_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match="invalid server") as caught:
        parse_servers(spec)
    assert message in str(caught.value)


# -- the server's options -----------------------------------------------------------------------


def server_options(**values: str | None) -> argparse.Namespace:
    names = ("ssl_cert", "ssl_key", "ssl_ca", "ssl_verify_client")
    return argparse.Namespace(**{name: values.get(name) for name in names})


def test_the_server_speaks_tls_only_when_asked(certs: Certs) -> None:
    assert server_context(server_options()) is None
    context = server_context(server_options(ssl_cert=certs.server_pem, ssl_key=certs.server_key))
    assert context is not None and context.verify_mode is ssl.CERT_NONE
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    both = server_context(server_options(ssl_cert=certs.combined_pem))  # key in the cert file
    assert both is not None
    required = server_context(server_options(ssl_cert=certs.combined_pem, ssl_ca=certs.ca_pem))
    assert required is not None and required.verify_mode is ssl.CERT_REQUIRED
    optional = server_context(
        server_options(
            ssl_cert=certs.combined_pem, ssl_ca=certs.ca_pem, ssl_verify_client="optional"
        )
    )
    assert optional is not None and optional.verify_mode is ssl.CERT_OPTIONAL
    by_directory = server_context(
        server_options(ssl_cert=certs.combined_pem, ssl_ca=str(certs.dir))
    )
    assert by_directory is not None and by_directory.verify_mode is ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ssl_key": "server_key"}, "--ssl-key need --ssl-cert"),
        ({"ssl_ca": "ca_pem"}, "--ssl-ca need --ssl-cert"),
        ({"ssl_cert": "missing_pem"}, "cannot read --ssl-cert '{missing_pem}': No such file"),
        ({"ssl_cert": "dir"}, "--ssl-cert '{dir}' is a directory"),
        ({"ssl_cert": "notpem_pem"}, "--ssl-cert '{notpem_pem}' holds no PEM certificate"),
        ({"ssl_cert": "server_pem"}, "holds no private key: give --ssl-key"),
        ({"ssl_cert": "server_pem", "ssl_key": "server_pem"}, "holds no PEM private key"),
        (
            {"ssl_cert": "server_pem", "ssl_key": "client_key"},
            "the private key '{client_key}' does not belong to the certificate '{server_pem}'",
        ),
        ({"ssl_cert": "server_pem", "ssl_key": "encrypted_key"}, "is encrypted"),
        ({"ssl_cert": "combined_pem", "ssl_ca": "missing_pem"}, "cannot read --ssl-ca"),
        ({"ssl_cert": "combined_pem", "ssl_ca": "notpem_pem"}, "holds no PEM CA certificate"),
        (
            {"ssl_cert": "combined_pem", "ssl_verify_client": "required"},
            "--ssl-verify-client required needs --ssl-ca",
        ),
    ],
)
def test_a_bad_server_option_stops_the_start_with_what_to_fix(
    certs: Certs, values: dict[str, str], message: str
) -> None:
    paths = {name: getattr(certs, name) for name in ("ca_pem", "server_pem", "server_key")}
    paths |= {name: getattr(certs, name) for name in ("client_key", "combined_pem")}
    paths |= {"notpem_pem": certs.notpem_pem, "encrypted_key": certs.encrypted_key}
    paths |= {"missing_pem": str(certs.dir / "missing.pem"), "dir": str(certs.dir)}
    options = {k: v if k == "ssl_verify_client" else paths[v] for k, v in values.items()}
    with pytest.raises(StartupError) as caught:
        server_context(server_options(**options))
    assert message.format(**paths) in str(caught.value)


def test_a_bad_certificate_path_fails_the_server_command_at_start(certs: Certs) -> None:
    missing = certs.dir / "nope.pem"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "django_gearman.server", f"{HOST}:0", "--ssl-cert", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1, result
    assert f"TLS: cannot read --ssl-cert '{missing}': No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 30
    usage = subprocess.run(
        [sys.executable, "-m", "django_gearman.server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert "--ssl-cert PATH" in usage.stdout and "--ssl-verify-client" in usage.stdout


# -- the client's context -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"ca": "missing_pem"}, "cannot read the CA file '{missing_pem}': No such file"),
        ({"ca": "notpem_pem"}, "holds no PEM CA certificate"),
        ({"cert": "client_pem"}, "holds no private key: give its key (ssl_key="),
        ({"cert": "client_pem", "key": "server_key"}, "does not belong to the certificate"),
        ({"cert": "client_pem", "key": "encrypted_key"}, "is encrypted"),
    ],
)
def test_unusable_client_files_are_a_usage_error_not_a_connection_error(
    certs: Certs, tls: dict[str, str], message: str
) -> None:
    paths = {
        "missing_pem": str(certs.dir / "missing.pem"),
        "notpem_pem": certs.notpem_pem,
        "client_pem": certs.client_pem,
        "server_key": certs.server_key,
        "encrypted_key": certs.encrypted_key,
    }
    options = ClientTLS(**{k: paths[v] for k, v in tls.items()})
    with pytest.raises(UsageError) as caught:
        client_context(options)
    assert message.format(**paths) in str(caught.value)
    assert not isinstance(caught.value, OSError)  # no reconnect loop for a wrong path
    client = GearmanClient([ServerAddress(HOST, free_port(), options)], timeout=2)
    with client, pytest.raises(UsageError):
        client.submit("anything", b"")


def test_client_contexts_are_reused_until_a_file_changes(certs: Certs, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    shutil.copy(certs.ca_pem, ca)
    options = ClientTLS(ca=str(ca))
    first = client_context(options)
    assert client_context(ClientTLS(ca=str(ca))) is first
    os.utime(ca, ns=(time.time_ns(), time.time_ns() + 10**9))  # a renewed file
    renewed = client_context(options)
    assert renewed is not first and client_context(options) is renewed
    loose = client_context(ClientTLS(verify=False))
    assert loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname
    strict = client_context(ClientTLS())
    assert strict.verify_mode is ssl.CERT_REQUIRED and strict.check_hostname


# -- our client, worker and admin client against our server --------------------------------------


def test_client_worker_and_admin_client_over_mutual_tls(
    mutual: EmbeddedServer, certs: Certs
) -> None:
    spec = address(mutual, certs)
    with worker_thread(spec, {"tls_reverse": reverse, "tls_big": lambda job: job.data * 4}):
        with GearmanClient(spec, timeout=15) as client:
            assert client.submit("tls_reverse", b"hello") == b"olleh"
            # Many TLS records for one packet, and packets split across records.
            big = os.urandom(3 * 1024 * 1024 + 17)
            assert client.submit("tls_big", big) == big * 4
            tasks = client.run_tasks([Task("tls_reverse", b"%d" % n) for n in range(200)])
            assert [t.result for t in tasks] == [(b"%d" % n)[::-1] for n in range(200)]
            assert client.echo(b"ping over tls") == b"ping over tls"
        with GearmanAdminClient(spec, timeout=5) as admin:
            rows = {row.function: row for row in admin.status()}
            assert rows["tls_reverse"].available_workers == 1
            assert admin.version()


@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_a_result_larger_than_the_socket_buffers_goes_out_whole(
    mutual: EmbeddedServer, certs: Certs, kind: str
) -> None:
    """The worker reads without blocking after poll(), then writes the result: the write must
    wait for room (it used to fail with BlockingIOError, or SSLWantWriteError over TLS, and the
    job went round the queue for ever)."""
    size = 40 * 1024 * 1024
    with contextlib.ExitStack() as stack:
        tls = kind == "tls"
        server = mutual if tls else stack.enter_context(EmbeddedServer())
        spec = address(server, certs) if tls else server.address
        stack.enter_context(worker_thread(spec, {"tls_huge": lambda job: b"r" * size}))
        with GearmanClient(spec, timeout=60) as client:
            assert client.submit("tls_huge", b"") == b"r" * size


def test_a_prefetching_worker_and_a_client_of_two_tls_servers(certs: Certs) -> None:
    """Two servers: the client waits on both with poll() and reads what is ready without
    blocking, where TLS can leave a partial record (or decrypted bytes) behind."""
    with tls_server(certs) as first, tls_server(certs) as second:
        specs = [address(first, certs), address(second, certs)]
        with worker_thread(specs, {"tls_reverse": reverse}, prefetch=4):
            with GearmanClient(specs, timeout=30) as client:
                tasks = [Task("tls_reverse", b"x" * n) for n in range(1, 400)]
                done = client.run_tasks(tasks)
                assert [t.result for t in done] == [b"x" * n for n in range(1, 400)]
                assert {t.handle.server for t in done} == set(map(parse_server, specs))


def test_a_client_without_a_certificate_is_refused_and_the_server_serves_on(
    mutual: EmbeddedServer, certs: Certs
) -> None:
    with worker_thread(address(mutual, certs), {"tls_reverse": reverse}):
        with GearmanClient(address(mutual, certs, cert=None), timeout=5) as anonymous:
            with pytest.raises(ServerUnavailable) as caught:
                anonymous.submit("tls_reverse", b"x")
        assert "it may require a client certificate" in str(caught.value)
        with GearmanClient(address(mutual, certs, cert="stranger"), timeout=5) as stranger:
            with pytest.raises(ServerUnavailable):  # a certificate of another CA
                stranger.submit("tls_reverse", b"x")
        with pytest.raises(ServerUnavailable):
            with GearmanAdminClient(address(mutual, certs, cert=None), timeout=5) as admin:
                admin.version()
        with GearmanClient(address(mutual, certs), timeout=10) as client:
            assert client.submit("tls_reverse", b"still here") == b"ereh llits"


def test_a_server_certificate_of_another_ca_or_name_is_refused(
    mutual: EmbeddedServer, certs: Certs
) -> None:
    client_cert = f"ssl_cert={certs.client_pem}&ssl_key={certs.client_key}"
    wrong_ca = f"gearmans://{mutual.address}?ssl_ca={certs.otherca_pem}&{client_cert}"
    with GearmanClient(wrong_ca, timeout=5) as client, pytest.raises(ServerUnavailable) as caught:
        client.submit("tls_reverse", b"x")
    assert "certificate verify failed" in str(caught.value)
    system_cas = f"gearmans://{mutual.address}?{client_cert}"  # our test CA is not among them
    with GearmanClient(system_cas, timeout=5) as client, pytest.raises(ServerUnavailable) as caught:
        client.submit("tls_reverse", b"x")
    assert "certificate verify failed" in str(caught.value)
    wrong_name = f"{address(mutual, certs)}&ssl_server_hostname=gearman.example"
    with GearmanClient(wrong_name, timeout=5) as client, pytest.raises(ServerUnavailable) as caught:
        client.submit("tls_reverse", b"x")
    assert "Hostname mismatch" in str(caught.value) or "hostname" in str(caught.value).lower()
    by_name = f"{address(mutual, certs)}&ssl_server_hostname=localhost"  # in the certificate
    unchecked = f"gearmans://{mutual.address}?ssl_verify=false&{client_cert}"
    with worker_thread(address(mutual, certs), {"tls_reverse": reverse}):
        for spec in (by_name, unchecked):
            with GearmanClient(spec, timeout=10) as client:
                assert client.submit("tls_reverse", b"ok") == b"ko"


def test_optional_client_certificates(certs: Certs) -> None:
    with tls_server(certs, "--ssl-verify-client", "optional") as server:
        with worker_thread(address(server, certs, cert=None), {"tls_reverse": reverse}):
            for cert in (None, "client"):
                with GearmanClient(address(server, certs, cert=cert), timeout=10) as client:
                    assert client.submit("tls_reverse", b"ab") == b"ba"
            with GearmanClient(address(server, certs, cert="stranger"), timeout=5) as stranger:
                with pytest.raises(ServerUnavailable):  # one that is sent must verify
                    stranger.submit("tls_reverse", b"x")


def _open_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:  # closed meanwhile
            pass
    return count


def test_plaintext_on_the_tls_port_is_closed_at_once_without_a_leak(
    mutual: EmbeddedServer, certs: Certs
) -> None:
    assert mutual.pid is not None
    before = _open_sockets(mutual.pid)
    silent = socket.create_connection((mutual.host, mutual.port), timeout=5)  # says nothing
    try:
        started = time.monotonic()
        for _ in range(20):
            assert admin_command(mutual.address, "getpid", timeout=5) == b""  # closed
        with GearmanClient(mutual.address, timeout=5) as plain:  # binary, no TLS
            with pytest.raises(ServerUnavailable):
                plain.submit("tls_reverse", b"x")
        assert time.monotonic() - started < 10
        # A silent plaintext connection holds nothing up (it would be dropped after the
        # handshake timeout), and TLS clients are served meanwhile.
        reply = tls_admin_command(mutual.address, "getpid", client_ssl_context(certs))
        assert reply.strip() == f"OK {mutual.pid}".encode()
    finally:
        silent.close()
    wait_for(lambda: _open_sockets(mutual.pid) <= before, what="the refused sockets closed")


def test_a_tls_client_of_a_plain_server_fails_fast_saying_why(certs: Certs) -> None:
    with EmbeddedServer() as plain:
        started = time.monotonic()
        with GearmanClient(f"gearmans://{plain.address}?ssl_ca={certs.ca_pem}", timeout=5) as c:
            with pytest.raises(ServerUnavailable) as caught:
                c.submit("anything", b"x")
        assert "answered the TLS handshake in plain text: does that port speak TLS?" in str(
            caught.value
        )
        assert time.monotonic() - started < 5
        assert admin_command(plain.address, "getpid").startswith(b"OK ")  # it serves on


# -- the Django settings ------------------------------------------------------------------------


def tls_checks() -> list[tuple[str, str]]:
    return [(m.id or "", m.msg) for m in checks.run_checks(tags=["django_gearman"]) if m.id]


def test_the_ssl_setting_makes_every_server_of_the_alias_tls(
    mutual: EmbeddedServer, certs: Certs
) -> None:
    ssl_setting = {"CA": certs.ca_pem, "CERT": certs.client_pem, "KEY": certs.client_key}
    setting = {"default": {"SERVERS": [mutual.address], "SSL": ssl_setting}}
    with override_settings(GEARMAN=setting):
        assert tls_checks() == []
        (server,) = conf.get_settings().servers
        assert server == ServerAddress(
            HOST,
            mutual.port,
            ClientTLS(ca=certs.ca_pem, cert=certs.client_pem, key=certs.client_key),
        )
        with worker_thread(str(server), {"tls_reverse": reverse}):
            client = clients["default"]
            assert isinstance(client, GearmanClient)
            assert client.submit("tls_reverse", b"django") == b"ognajd"
    with override_settings(GEARMAN={"default": {"SERVERS": "h:1", "SSL": True}}):
        assert conf.get_settings().servers == (ServerAddress("h", 1, ClientTLS()),)


@pytest.mark.parametrize(
    ("ssl_setting", "message"),
    [
        ({"CA": "/nonexistent/ca.pem"}, "cannot read the CA file '/nonexistent/ca.pem'"),
        ({"CERTFILE": "x"}, "unknown key(s) 'CERTFILE' (did you mean 'CERT'?)"),
        ({"KEY": "x"}, "key needs cert"),
        ({"VERIFY": "yes"}, "verify must be True or False, not 'yes'"),
        ("on", "it must be a dict, True or False, not str"),
    ],
)
def test_a_bad_ssl_setting_is_a_check_error(ssl_setting: object, message: str) -> None:
    with override_settings(GEARMAN={"default": {"SERVERS": ["h:1"], "SSL": ssl_setting}}):
        problems = tls_checks()
        assert [code for code, _ in problems] == ["django_gearman.E014"], problems
        assert problems[0][1].startswith("GEARMAN['default']['SSL']")
        assert message in problems[0][1]
        with pytest.raises(conf.InvalidGearmanSettings, match="E014|SSL"):
            conf.get_settings()


def test_a_server_address_with_unusable_tls_files_is_a_check_error(certs: Certs) -> None:
    servers = [f"gearmans://h:1?ssl_cert={certs.client_pem}"]  # no key
    with override_settings(GEARMAN={"default": {"SERVERS": servers}}):
        ((code, message),) = tls_checks()
        assert code == "django_gearman.E014"
        assert "server TLS" in message and "holds no private key" in message


@pytest.fixture
def gearman_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    with override_settings(GEARMAN=None):
        conf.reset()
        yield monkeypatch
        monkeypatch.delenv("GEARMAN_URL", raising=False)
    conf.reset()


def test_gearman_url_with_the_gearmans_scheme(
    gearman_url: pytest.MonkeyPatch, certs: Certs
) -> None:
    gearman_url.setenv("GEARMAN_URL", f"gearmans://h1:4730,h2:4731?ssl_ca={certs.ca_pem}&timeout=5")
    conf.reset()
    assert tls_checks() == []
    tls = ClientTLS(ca=certs.ca_pem)
    settings = conf.get_settings()
    assert settings.servers == (ServerAddress("h1", 4730, tls), ServerAddress("h2", 4731, tls))
    assert settings.options == {"timeout": 5.0}
    assert conf.gearman_url("gearmans://h") == {"SERVERS": "h", "SSL": True}
    assert conf.gearman_url("gearmans://h?ssl_verify=false")["SSL"] == {"VERIFY": False}


def test_tls_parameters_on_a_plain_gearman_url_are_a_check_error(
    gearman_url: pytest.MonkeyPatch,
) -> None:
    gearman_url.setenv("GEARMAN_URL", "gearman://h:4730?ssl_ca=/ca.pem")
    conf.reset()
    ((code, message),) = tls_checks()
    assert code == "django_gearman.E009"
    assert "ssl_ca needs the gearmans:// scheme (TLS)" in message
    with pytest.raises(ValueError, match="gearmans://"):
        conf.gearman_url("gearman://h:4730?ssl_ca=/ca.pem")


# -- real peers ---------------------------------------------------------------------------------


def perl_path() -> str:
    perl = shutil.which("perl")
    if perl is not None:
        found = subprocess.run(
            [perl, "-MGearman::Client", "-MIO::Socket::SSL", "-e", "1"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        perl = perl if found.returncode == 0 else None
    return require_peer("perl with Gearman::Client and IO::Socket::SSL", perl)


def run_perl_client(
    server: EmbeddedServer, certs: Certs, cert: str
) -> subprocess.CompletedProcess[str]:
    """``tests/perl/tls_client.pl`` against ``server`` with ``cert``'s client certificate
    ("-": none)."""
    args = [certs.ca_pem, "-", "-"]
    if cert != "-":
        args = [certs.ca_pem, str(certs.dir / f"{cert}.pem"), str(certs.dir / f"{cert}.key")]
    return subprocess.run(
        [
            perl_path(),
            str(PERL_DIR / "tls_client.pl"),
            server.host,
            str(server.port),
            *args,
            "tls_reverse",
            "from perl",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.interop
def test_perl_client_over_tls_to_our_server_and_our_tls_worker(
    mutual: EmbeddedServer, certs: Certs
) -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def record(job: object) -> bytes:
        with lock:
            seen.append(job.data)  # type: ignore[attr-defined]
        return reverse(job)

    with worker_thread(address(mutual, certs), {"tls_reverse": record}):
        result = run_perl_client(mutual, certs, "client")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "result lrep morf"
        assert lines[1].startswith(f"background {mutual.host}:{mutual.port}//H:")
        wait_for(lambda: b"bg-from perl" in seen, what="the Perl background job ran")
        # Without a client certificate, IO::Socket::SSL is refused (TLS 1.3: after its side of
        # the handshake, so Gearman::Client sees a dead connection and gives up).
        refused = run_perl_client(mutual, certs, "-")
        assert refused.returncode == 1 and refused.stdout.startswith("error "), refused
        stranger = run_perl_client(mutual, certs, "stranger")
        assert stranger.returncode == 1 and stranger.stdout.startswith("error "), stranger
        assert run_perl_client(mutual, certs, "client").stdout.startswith("result lrep morf")
    assert seen.count(b"from perl") == 2


@pytest.mark.interop
def test_perl_worker_over_tls_does_our_clients_jobs(mutual: EmbeddedServer, certs: Certs) -> None:
    command = [perl_path(), str(PERL_DIR / "tls_worker.pl"), mutual.host, str(mutual.port)]
    command += [certs.ca_pem, certs.client_pem, certs.client_key, "3"]
    with BackgroundProcess(command) as perl:
        perl.wait_for("ready", timeout=30)
        with GearmanClient(address(mutual, certs), timeout=15) as client:
            assert client.submit("perl_tls_upper", b"perl over tls") == b"PERL OVER TLS"
            tasks = client.run_tasks([Task("perl_tls_upper", b"a"), Task("perl_tls_upper", b"b")])
            assert [t.result for t in tasks] == [b"A", b"B"]
        assert perl.wait(30) == 0
        assert "done 3" in perl.stdout


@pytest.mark.interop
def test_debian_gearmand_ssl_serves_plaintext_so_our_tls_client_is_refused_fast(
    certs: Certs,
) -> None:
    """gearmand 1.1.20 from Debian takes ``--ssl --ssl-ca-file --ssl-certificate --ssl-key``
    and logs "with SSL: true", but it is built without TLS (no libssl): the port speaks plain
    Gearman. Our gearmans:// client then gets a prompt, clear refusal (gearmand reads the TLS
    ClientHello as a bad magic and hangs up), and a plain one works. If this test fails,
    gearmand gained TLS: test our client and worker against it for real."""
    gearmand_path()
    tls_args = [
        "--ssl",
        f"--ssl-ca-file={certs.ca_pem}",
        f"--ssl-certificate={certs.server_pem}",
        f"--ssl-key={certs.server_key}",
    ]
    with Gearmand(extra_args=tls_args) as gearmand:
        assert admin_command(gearmand.address, "getpid").startswith(b"OK ")  # plaintext
        started = time.monotonic()
        with GearmanClient(address(gearmand, certs), timeout=5) as client:
            with pytest.raises(ServerUnavailable) as caught:
                client.submit("tls_reverse", b"x")
        assert "during the TLS handshake: does that port speak TLS?" in str(caught.value)
        assert time.monotonic() - started < 5
        with worker_thread(gearmand.address, {"tls_reverse": reverse}):
            with GearmanClient(gearmand.address, timeout=10) as client:
                assert client.submit("tls_reverse", b"plain") == b"nialp"
        log = gearmand.log_tail(200)
    assert "invalid magic value" in log


@pytest.mark.interop
def test_the_gearman_cli_ssl_flag_speaks_plaintext_and_our_tls_server_hangs_up(
    certs: Certs,
) -> None:
    """``gearman -S`` (gearman-tools 1.1.20, Debian) is accepted, but libgearman is built
    without TLS, so it sends plain packets: our TLS server closes that connection at once and
    serves TLS clients on."""
    cli = gearman_cli_path()
    with tls_server(certs) as server:
        with worker_thread(address(server, certs), {"tls_reverse": reverse}):
            env = dict(
                os.environ,
                GEARMAND_CA_CERTIFICATE=certs.ca_pem,
                GEARMAN_CLIENT_PEM=certs.client_pem,
                GEARMAN_CLIENT_KEY=certs.client_key,
            )
            command = [cli, "-S", "-h", server.host, "-p", str(server.port), "-t", "5000"]
            result = subprocess.run(
                [*command, "-f", "tls_reverse", "hello"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert result.stdout == "", result
            assert "lost connection to server" in result.stderr, result
            with GearmanClient(address(server, certs), timeout=10) as client:
                assert client.submit("tls_reverse", b"served on") == b"no devres"
