"""The transactional outbox: a job is written in the caller's transaction, sent after it
commits, kept while no job server answers and sent when one is back; a rolled-back job never
leaves, and several relays never send one row at the same time. Against both servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_gearman import conf, outbox, testing
from django_gearman.gearman import GearmanAdminClient
from django_gearman.models import OutboxJob
from django_gearman.tasks.runner import offered_functions
from tests.conftest import SERVER_KINDS
from tests.helpers import wait_for, worker_thread
from tests.outboxapp.tasks import record, runs
from tests.peers import free_port

pytestmark = [pytest.mark.interop, pytest.mark.django_db(transaction=True)]


def settings_for(address: str, **alias: Any) -> Any:
    return override_settings(
        GEARMAN={
            "default": {
                "SERVERS": [address],
                "OPTIONS": {"timeout": 10, "connect_timeout": 1, "retry_delay": 0.05},
                **alias,
            }
        }
    )


@pytest.fixture(autouse=True)
def unpaused(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a fresh process: no pause left by an earlier test's failed send,
    and no sent rows left to delete."""
    monkeypatch.setattr(outbox, "_paused_until", 0.0)
    yield
    outbox.flush_deletes()


def deleted() -> int:
    """Rows left once the rows sent at commits are deleted (a thread does it every 0.2 s)."""
    outbox.flush_deletes()
    return OutboxJob.objects.count()


@pytest.fixture
def gearman(gearman_server: Any) -> Iterator[str]:
    with settings_for(gearman_server.address):
        yield gearman_server.address


def a_worker(address: str) -> Any:
    return worker_thread([address], {o.name: o.callback for o in offered_functions("default")})


def queued(address: str, function: str) -> int:
    with GearmanAdminClient(address) as admin:
        return sum(row.total for row in admin.status() if row.function == function)


def test_a_committed_job_is_sent_and_its_row_deleted(gearman: str, tmp_path: Path) -> None:
    path = str(tmp_path / "runs")
    with transaction.atomic():
        record.background_on_commit(path, "one")
        assert OutboxJob.objects.count() == 1  # written in the transaction, not sent yet
        assert queued(gearman, "tests.outbox.record") == 0
    assert deleted() == 0  # sent at the commit and acknowledged
    assert queued(gearman, "tests.outbox.record") == 1
    with a_worker(gearman):
        wait_for(lambda: runs(path) == ["one"], what="the job to run")


def test_a_rolled_back_job_never_leaves(gearman: str, tmp_path: Path) -> None:
    path = str(tmp_path / "runs")
    with pytest.raises(RuntimeError), transaction.atomic():
        record.background_on_commit(path, "rolled back")
        raise RuntimeError("the view failed")
    record.background_on_commit(path, "committed")  # outside atomic(): sent at once
    assert deleted() == 0
    assert queued(gearman, "tests.outbox.record") == 1
    with a_worker(gearman):
        wait_for(lambda: runs(path) == ["committed"], what="the committed job")


@pytest.mark.parametrize("kind", list(SERVER_KINDS))
def test_with_no_server_the_commit_succeeds_and_the_job_waits(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "runs")
    port = free_port()
    address = f"127.0.0.1:{port}"
    with settings_for(address):
        with transaction.atomic():
            record.background_on_commit(path, "waits")
        [row] = OutboxJob.objects.all()  # the commit did not raise; the row waits
        assert row.attempts == 1 and "ServerUnavailable" in row.last_error
        assert "they wait in the outbox" in caplog.text
        with transaction.atomic():  # just after a failed send: left to the relay at once
            record.background_on_commit(path, "also waits")
        assert OutboxJob.objects.filter(attempts=0).count() == 1
        server = SERVER_KINDS[kind](port)
        server.start()
        try:
            OutboxJob.objects.update(not_before=None)  # due now (it would be in 0.5 s)
            relay = outbox.Relay(poll=0.05)
            relay.start()
            try:
                wait_for(lambda: not OutboxJob.objects.exists(), what="the relay to send it")
            finally:
                relay.stop()
            with a_worker(address):
                wait_for(lambda: sorted(runs(path)) == ["also waits", "waits"], what="the jobs")
        finally:
            server.stop()


def test_two_relays_send_each_row_once(gearman: str, tmp_path: Path) -> None:
    path = str(tmp_path / "runs")
    with settings_for("127.0.0.1:1"):  # nothing listens: every row waits
        with transaction.atomic():
            for n in range(300):
                record.background_on_commit(path, str(n))
    assert OutboxJob.objects.count() == 300
    OutboxJob.objects.update(not_before=None)
    results: list[tuple[int, int]] = []

    def relay() -> None:
        results.append(outbox.send_waiting(limit=100, relay="r"))

    for _ in range(2):  # rounds: two relays at once, claiming 100 rows each at most
        threads = [threading.Thread(target=relay) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    while OutboxJob.objects.exists():
        results.append(outbox.send_waiting(limit=100, relay="r"))
    assert sum(sent for sent, _ in results) == 300
    assert sum(failed for _, failed in results) == 0
    assert queued(gearman, "tests.outbox.record") == 300
    with a_worker(gearman):
        wait_for(lambda: len(runs(path)) == 300, what="300 runs")
    assert sorted(runs(path), key=int) == [str(n) for n in range(300)]  # each once


def test_background_inside_atomic_uses_the_outbox_when_the_alias_says_so(
    gearman_server: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "runs")
    with settings_for(gearman_server.address, OUTBOX=True):
        with transaction.atomic():
            handle = record.background(path, "in atomic")
            assert handle == "" and OutboxJob.objects.count() == 1
        assert deleted() == 0
        handle = record.background(path, "outside")  # not in a transaction: sent directly
        assert handle.startswith("H:")
        assert queued(gearman_server.address, "tests.outbox.record") == 2


def test_the_test_doubles_still_get_the_job_at_the_commit(tmp_path: Path) -> None:
    with override_settings(GEARMAN={"default": {"BACKEND": "outbox"}}):
        testing.clear()
        with transaction.atomic():
            record.background_on_commit(str(tmp_path / "runs"), "double")
            assert testing.outbox == []
        assert [s.task for s in testing.outbox] == ["tests.outbox.record"]
        assert deleted() == 0


def test_the_admin_shows_the_outbox_and_the_overview_warns(admin_client: Any) -> None:
    with settings_for("127.0.0.1:1"):  # nothing listens: the job waits
        record.background_on_commit("/dev/null", "waits")
        OutboxJob.objects.update(created_at=timezone.now() - timedelta(minutes=5))
        overview = admin_client.get("/admin/django_gearman/queuestatus/", {"fragment": "1"})
        assert overview.status_code == 200
        text = " ".join(overview.content.decode().split())
        assert "1 job waits in the" in text and "the oldest for 300 s" in text, text
        assert "1 could not be sent yet" in text and 'class="errornote gearman-outbox"' in text
        listing = admin_client.get("/admin/django_gearman/outboxjob/")
        assert listing.status_code == 200
        assert "tests.outbox.record" in listing.content.decode()
        assert "ServerUnavailable" in listing.content.decode()
    OutboxJob.objects.all().delete()
    overview = admin_client.get("/admin/django_gearman/queuestatus/", {"fragment": "1"})
    assert "gearman-outbox" not in overview.content.decode()


def test_outbox_must_be_true_or_false() -> None:
    with override_settings(GEARMAN={"default": {"OUTBOX": "yes"}}):
        conf.reset()
        [(code, message, hint)] = conf.check_settings()
    assert code == "E013" and "'yes'" in message and "True" in hint
    with override_settings(GEARMAN={"default": {"OUTBOX": True}}):
        assert conf.check_settings() == [] and conf.get_settings().outbox is True
