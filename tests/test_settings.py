"""GEARMAN settings: lazy, override_settings-aware, GEARMAN_URL, and system checks with ids."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import override_settings

from django_gearman import conf, gearman_task
from django_gearman.clients import clients
from django_gearman.gearman.transport import ServerAddress
from django_gearman.tasks import registry


def check_ids() -> list[str]:
    return [message.id for message in checks.run_checks(tags=["django_gearman"])]


def test_without_gearman_the_default_alias_comes_from_gearman_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEARMAN_URL", "gearman://h1:4731,h2/?prefix=site.&timeout=7")
    conf.reset()
    try:
        config = conf.get_settings()
        assert config.servers == (ServerAddress("h1", 4731), ServerAddress("h2", 4730))
        assert config.prefix == "site." and config.options == {"timeout": 7}
    finally:
        monkeypatch.delenv("GEARMAN_URL")
        conf.reset()
    assert conf.get_settings().servers == (ServerAddress("127.0.0.1", 4730),)


def test_override_settings_is_seen_and_undone() -> None:
    with override_settings(GEARMAN={"default": {"SERVERS": "gearman://a:1,b:2", "PREFIX": "p."}}):
        assert conf.get_settings().servers == (ServerAddress("a", 1), ServerAddress("b", 2))
        assert [str(a) for a in clients["default"].servers] == ["a:1", "b:2"]
    assert conf.get_settings().prefix == ""
    assert [str(a) for a in clients["default"].servers] == ["127.0.0.1:4730"]


def test_gearman_url_parses_options_and_refuses_other_schemes() -> None:
    assert conf.gearman_url("gearman://h:1/?backend=outbox&exceptions=false&retry_delay=0.5") == {
        "SERVERS": "h:1", "BACKEND": "outbox", "OPTIONS": {"exceptions": False, "retry_delay": 0.5},
    }  # fmt: skip
    assert conf.gearman_url("h:1") == {"SERVERS": "h:1"}
    with pytest.raises(ValueError, match="gearman://"):
        conf.gearman_url("redis://h:1")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (["127.0.0.1:4730"], "django_gearman.E001"),
        ({"other": {"SERVERS": ["h:1"]}}, "django_gearman.E002"),
        ({"default": {"SERVER": ["h:1"]}}, "django_gearman.E003"),
        ({"default": {"SERVERS": ["h:notaport"]}}, "django_gearman.E004"),
        ({"default": {"SERVERS": []}}, "django_gearman.E004"),
        ({"default": {"PREFIX": "has space"}}, "django_gearman.E005"),
        ({"default": {"BACKEND": "eager"}}, "django_gearman.E006"),
        ({"default": {"BACKEND": "django_gearman.conf.AliasSettings"}}, "django_gearman.E006"),
        ({"default": {"MODE": "outbox"}}, "django_gearman.E006"),
        ({"default": {"OPTIONS": {"timout": 3}}}, "django_gearman.E007"),
    ],
)
def test_bad_settings_are_system_check_errors_with_hints(setting: object, expected: str) -> None:
    with override_settings(GEARMAN=setting):
        messages = checks.run_checks(tags=["django_gearman"])
        assert expected in [m.id for m in messages]
        assert all(m.hint for m in messages)
        with pytest.raises(conf.InvalidGearmanSettings):
            conf.get_settings()


def test_good_settings_pass_the_checks() -> None:
    with override_settings(
        GEARMAN={
            "default": {
                "SERVERS": ["h:1"],
                "PREFIX": "x.",
                "BACKEND": "django_gearman.testing.OutboxClient",
                "OPTIONS": {"timeout": 1},
            }
        }
    ):
        assert check_ids() == []


def test_two_functions_under_one_task_name_are_a_check_error() -> None:
    def first() -> None: ...

    def second() -> None: ...

    first.__qualname__ = second.__qualname__ = (
        "clash"  # module-level names, as a real clash would have
    )
    try:
        gearman_task(name="tests.clash")(first)
        gearman_task(name="tests.clash")(second)
        assert "django_gearman.E010" in check_ids()
    finally:
        registry.pop("tests.clash", None)
        registry.duplicates.pop("tests.clash", None)


def test_a_task_on_an_unknown_alias_is_a_check_error() -> None:
    def orphan() -> None: ...

    orphan.__qualname__ = "orphan"
    gearman_task(name="tests.orphan", alias="reports")(orphan)
    try:
        assert "django_gearman.E011" in check_ids()
        with override_settings(GEARMAN={"default": {}, "reports": {"SERVERS": ["h:1"]}}):
            assert "django_gearman.E011" not in check_ids()
    finally:
        registry.pop("tests.orphan", None)


def test_task_options_are_validated_at_decoration() -> None:
    def f() -> None: ...

    with pytest.raises(TypeError, match="unknown option"):
        gearman_task(retires=3)(f)
    with pytest.raises(ValueError, match="priority"):
        gearman_task(name="tests.f", priority="urgent")(f)
    with pytest.raises(ValueError, match="inside a function"):
        gearman_task(f)
