"""GEARMAN option values, GEARMAN_URL forms and credentials, and a missing Tasks framework:
each is a system check error with an id and a hint, never a crash at the first job."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core import checks
from django.core.checks import CheckMessage
from django.test import override_settings

from django_gearman import conf
from django_gearman.clients import clients
from django_gearman.gearman.client import GearmanClient

EXPECTED_FORM = "gearman://host:4730[,host2:4730][?option=value]"
GEARMAN_BACKEND = "django_gearman.backends.GearmanBackend"


def gearman_checks() -> list[CheckMessage]:
    return checks.run_checks(tags=["django_gearman"])


def with_id(messages: list[CheckMessage], code: str) -> list[CheckMessage]:
    found = [m for m in messages if m.id == f"django_gearman.{code}"]
    assert found, f"no {code} in {[(m.id, m.msg) for m in messages]}"
    return found


def printed(messages: list[CheckMessage]) -> str:
    return "\n".join(f"{m.msg} {m.hint}" for m in messages)


@pytest.fixture
def gearman_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No ``GEARMAN`` setting, so the default alias comes from ``GEARMAN_URL``."""
    with override_settings(GEARMAN=None):
        conf.reset()
        yield monkeypatch
        monkeypatch.delenv("GEARMAN_URL", raising=False)
    conf.reset()


@contextmanager
def no_tasks_framework() -> Iterator[None]:
    """Neither ``django.tasks`` nor ``django_tasks`` can be imported (as on Django 5.2 without
    the backport). Enter it inside ``override_settings(TASKS=...)``: the frameworks' own
    receivers of setting_changed import them."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(sys.modules):
            if name.startswith(("django.tasks.", "django_tasks.")):
                patch.delitem(sys.modules, name)
        patch.setitem(sys.modules, "django.tasks", None)
        patch.setitem(sys.modules, "django_tasks", None)
        patch.delitem(sys.modules, "django_gearman.backends", raising=False)
        yield


# -- point 5: the Tasks framework ---------------------------------------------------------------


def test_importing_the_backend_without_a_tasks_framework_says_what_to_install() -> None:
    with no_tasks_framework(), pytest.raises(ImportError) as caught:
        importlib.import_module("django_gearman.backends")
    message = str(caught.value)
    assert 'pip install "django-gearman-tasks[tasks]"' in message
    assert '"django_tasks"' in message and "INSTALLED_APPS" in message


def test_tasks_on_gearman_without_a_tasks_framework_is_a_check_error() -> None:
    tasks = {"default": {"BACKEND": "x.Other"}, "jobs": {"BACKEND": GEARMAN_BACKEND}}
    with override_settings(TASKS=tasks), no_tasks_framework():
        (error,) = with_id(gearman_checks(), "E012")
    assert "'jobs'" in error.msg and GEARMAN_BACKEND in error.msg
    assert 'pip install "django-gearman-tasks[tasks]"' in (error.hint or "")
    assert "INSTALLED_APPS" in (error.hint or "")
    with override_settings(TASKS={"default": {"BACKEND": "x.Other"}}), no_tasks_framework():
        assert "django_gearman.E012" not in [m.id for m in gearman_checks()]


def test_tasks_on_gearman_with_a_tasks_framework_passes() -> None:
    with override_settings(TASKS={"default": {"BACKEND": GEARMAN_BACKEND}}):
        assert "django_gearman.E012" not in [m.id for m in gearman_checks()]


# -- point 6: option values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("timeout", "abc", "positive number of seconds"),
        ("timeout", -1, "positive number of seconds"),
        ("timeout", 0, "positive number of seconds"),
        ("timeout", math.nan, "positive number of seconds"),
        ("timeout", math.inf, "positive number of seconds"),
        ("timeout", True, "positive number of seconds"),
        ("timeout", None, "positive number of seconds"),
        ("connect_timeout", -0.5, "positive number of seconds"),
        ("retry_delay", -1, "seconds, 0 or more"),
        ("max_retry_delay", "30", "seconds, 0 or more"),
        ("max_packet_size", 0, "whole number of bytes"),
        ("max_packet_size", 1.5, "whole number of bytes"),
        ("max_packet_size", 2**32, "whole number of bytes"),
        ("client_id", 123, "string"),
        ("client_id", "two words", "string"),
        ("exceptions", "false", "True or False"),
    ],
)
def test_a_bad_option_value_is_a_check_error_naming_alias_key_value_and_fix(
    key: str, value: object, fix: str
) -> None:
    with override_settings(GEARMAN={"default": {}, "jobs": {"OPTIONS": {key: value}}}):
        (error,) = with_id(gearman_checks(), "E008")
        assert "'jobs'" in error.msg and repr(key) in error.msg and repr(value) in error.msg
        assert fix in error.msg and error.hint and key in error.hint
        with pytest.raises(conf.InvalidGearmanSettings, match=key):
            conf.get_settings("jobs")


def test_good_option_values_pass_and_reach_the_client_converted() -> None:
    options = {
        "timeout": 2,
        "connect_timeout": 0.5,
        "client_id": "web-1",
        "exceptions": False,
        "retry_delay": 0,
        "max_retry_delay": 10,
        "max_packet_size": 1024,
    }
    with override_settings(GEARMAN={"default": {"OPTIONS": options}}):
        assert gearman_checks() == []
        client = clients["default"]
        assert isinstance(client, GearmanClient)
        assert type(client.timeout) is float and client.timeout == 2.0


@pytest.mark.parametrize("query", ["timeout=abc", "timeout=-1", "timeout=nan", "timeout=inf"])
def test_a_bad_timeout_in_gearman_url_is_a_check_error(
    gearman_env: pytest.MonkeyPatch, query: str
) -> None:
    gearman_env.setenv("GEARMAN_URL", f"gearman://127.0.0.1:4730?{query}")
    (error,) = with_id(gearman_checks(), "E008")
    value = query.partition("=")[2]
    assert "GEARMAN_URL" in error.msg and "'default'" in error.msg and "'timeout'" in error.msg
    assert value in error.msg and "positive number of seconds" in error.msg
    assert "?timeout=" in (error.hint or "")
    with pytest.raises(conf.InvalidGearmanSettings):
        clients["default"]


def test_gearman_url_numbers_and_strings_are_converted(gearman_env: pytest.MonkeyPatch) -> None:
    gearman_env.setenv(
        "GEARMAN_URL",
        "gearman://127.0.0.1:4730?timeout=5&client_id=123&max_packet_size=1048576"
        "&exceptions=false&retry_delay=0",
    )
    assert gearman_checks() == []
    options = conf.get_settings().options
    assert options == {
        "timeout": 5.0, "client_id": "123", "max_packet_size": 1048576,
        "exceptions": False, "retry_delay": 0.0,
    }  # fmt: skip
    assert type(options["timeout"]) is float and type(options["max_packet_size"]) is int
    client = clients["default"]
    assert isinstance(client, GearmanClient)
    assert client.timeout == 5.0 and type(client.timeout) is float and client.client_id == "123"


def test_gearman_url_keeps_the_forms_it_took() -> None:
    assert conf.gearman_url("gearman://h1:4730,h2:4731/?prefix=a.&timeout=7") == {
        "SERVERS": "h1:4730,h2:4731", "PREFIX": "a.", "OPTIONS": {"timeout": 7.0},
    }  # fmt: skip
    assert conf.gearman_url("gearman://h:1?timeout=7")["OPTIONS"] == {"timeout": 7.0}
    assert conf.gearman_url("h1:1,h2:2") == {"SERVERS": "h1:1,h2:2"}
    assert conf.gearman_url("gearman://") == {"SERVERS": "127.0.0.1:4730"}
    assert conf.gearman_url("gearman://[::1]:4730") == {"SERVERS": "[::1]:4730"}
    assert conf.gearman_url("GEARMAN://h:1") == {"SERVERS": "h:1"}
    assert conf.gearman_url("gearman://h:1?custom=3") == {
        "SERVERS": "h:1",
        "OPTIONS": {"custom": 3},
    }


# -- point 6: option names ------------------------------------------------------------------------


def test_a_misspelt_option_gets_a_did_you_mean_and_the_valid_names() -> None:
    with override_settings(GEARMAN={"default": {"OPTIONS": {"timout": 3}}}):
        (error,) = with_id(gearman_checks(), "E007")
    assert "timout" in error.msg
    assert "Did you mean 'timeout'" in (error.hint or "")
    assert "connect_timeout" in (error.hint or "") and "max_packet_size" in (error.hint or "")


def test_a_misspelt_url_parameter_gets_a_did_you_mean(gearman_env: pytest.MonkeyPatch) -> None:
    gearman_env.setenv("GEARMAN_URL", "gearman://127.0.0.1:4730?prefx=app.")
    (error,) = with_id(gearman_checks(), "E007")
    assert "prefx" in error.msg and "'prefix'" in (error.hint or "")
    assert "timeout" in (error.hint or "")


# -- point 6: GEARMAN_URL and credentials ----------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:4730", "redis://h:6379/0"])
def test_a_gearman_url_of_another_scheme_is_a_check_error(
    gearman_env: pytest.MonkeyPatch, url: str
) -> None:
    gearman_env.setenv("GEARMAN_URL", url)
    messages = gearman_checks()  # no ValueError
    (error,) = with_id(messages, "E009")
    assert "GEARMAN_URL" in error.msg and url in error.msg
    assert EXPECTED_FORM in (error.hint or "")
    assert conf.aliases() == ["default"]
    with pytest.raises(conf.InvalidGearmanSettings, match="GEARMAN_URL"):
        conf.get_settings()


@pytest.mark.parametrize(
    "url", ["gearman://user:secret@h:4730", "http://user:secret@h:4730", "user:secret@h:4730"]
)
def test_credentials_in_gearman_url_are_never_printed(
    gearman_env: pytest.MonkeyPatch, url: str
) -> None:
    gearman_env.setenv("GEARMAN_URL", url)
    messages = gearman_checks()
    with_id(messages, "E009")
    assert "secret" not in printed(messages) and "user:" not in printed(messages)
    assert "***@h:4730" in printed(messages)
    with pytest.raises(conf.InvalidGearmanSettings) as caught:
        conf.get_settings()
    assert "secret" not in str(caught.value)


def test_gearman_url_refuses_other_schemes_and_credentials_without_printing_them() -> None:
    for url in ("redis://user:secret@h:1", "gearman://user:secret@h:1"):
        with pytest.raises(ValueError, match="gearman://") as caught:
            conf.gearman_url(url)
        assert "secret" not in str(caught.value) and "***@h:1" in str(caught.value)


@pytest.mark.parametrize(
    "servers",
    [
        "http://h:4730",
        ["gearman://user:secret@h:4730"],
        "user:secret@h:4730",
        ["h:1", "user:secret@h:notaport"],
    ],
)
def test_servers_of_another_scheme_or_with_credentials_are_check_errors(servers: object) -> None:
    with override_settings(GEARMAN={"default": {"SERVERS": servers}}):
        messages = gearman_checks()
        (error,) = with_id(messages, "E004")
        assert "secret" not in printed(messages)
        assert "gearman://host:4730[,host2:4730]" in (error.hint or "")
        with pytest.raises(conf.InvalidGearmanSettings) as caught:
            conf.get_settings()
        assert "secret" not in str(caught.value)
