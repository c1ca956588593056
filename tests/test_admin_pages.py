"""The admin's queue pages and actions, through Django's test client, against live servers (ours
and gearmand) with real workers and queued jobs: who may see and do what, what the pages show,
and that cancel / drop / retry change the server or the results table and land in the admin log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.urls import reverse

from django_gearman.backends import worker_functions
from django_gearman.gearman import GearmanClient
from django_gearman.gearman.admin_client import GearmanAdminClient
from django_gearman.gearman.protocol.constants import Priority
from django_gearman.models import TaskResultRecord
from django_gearman.tasks.runner import job_callback
from tests.helpers import wait_for, worker_thread
from tests.peers import free_port
from tests.taskapp import framework_tasks as ft
from tests.taskapp import tasks as gt

pytestmark = pytest.mark.django_db(transaction=True)

OVERVIEW = "admin:django_gearman_queuestatus_changelist"
WORKERS = "admin:django_gearman_workerlist_changelist"
JOBS = "admin:django_gearman_joblist_changelist"
RESULTS = "admin:django_gearman_taskresultrecord_changelist"
PAGES = [OVERVIEW, WORKERS, JOBS]
VIEW_PERMISSIONS = ["view_queuestatus", "view_workerlist", "view_joblist", "view_taskresultrecord"]


def _staff(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_gearman", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def down_only() -> Iterator[str]:
    """Settings naming one server that is down: pages must still render."""
    address = f"127.0.0.1:{free_port()}"
    with override_settings(GEARMAN={"default": {"SERVERS": [address]}}):
        yield address


@pytest.fixture
def server(gearman_server) -> Iterator[Any]:
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman_server.address], "OPTIONS": {"timeout": 15}}}
    ):
        yield gearman_server


@pytest.fixture
def manager() -> Client:
    """Staff who may see the pages and act (manage_queues), but is no superuser."""
    return _staff("manager", *VIEW_PERMISSIONS, "manage_queues")


def _cell(html: str, function: str, column: str) -> int:
    row = re.search(rf'<tr data-function="{re.escape(function)}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {function}"
    value = re.search(rf'data-col="{column}">(\d+)<', row.group(1))
    assert value, f"no {column} cell for {function}"
    return int(value.group(1))


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_users_are_sent_to_the_login_page(
    client: Client, down_only: str, page: str
) -> None:
    response = client.get(reverse(page))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("page", PAGES)
def test_staff_without_the_view_permission_get_403(down_only: str, page: str) -> None:
    assert _staff("nobody").get(reverse(page)).status_code == 403


def test_viewers_see_the_pages_but_may_not_act(down_only: str) -> None:
    viewer = _staff("viewer", *VIEW_PERMISSIONS)
    for page in PAGES:
        response = viewer.get(reverse(page))
        assert response.status_code == 200 and not response.context["can_manage"]
    index = viewer.get(reverse("admin:index")).content.decode()
    assert "Queue status" in index and "Workers" in index and "Jobs" in index
    cancel = reverse("admin:django_gearman_cancel_job")
    assert viewer.get(cancel, {"server": down_only, "handle": "H:x:1"}).status_code == 403
    assert (
        viewer.post(cancel, {"server": down_only, "handle": "H:x:1", "confirm": "yes"}).status_code
        == 403
    )
    drop = reverse("admin:django_gearman_drop_function")
    assert (
        viewer.post(drop, {"server": down_only, "function": "f", "confirm": "yes"}).status_code
        == 403
    )
    assert not LogEntry.objects.exists()


def test_the_section_is_absent_for_staff_without_permissions(down_only: str) -> None:
    index = _staff("nobody").get(reverse("admin:index"))
    assert index.status_code == 200 and "Queue status" not in index.content.decode()


def test_actions_refuse_servers_that_are_not_configured(
    admin_client: Client, down_only: str
) -> None:
    elsewhere = f"127.0.0.1:{free_port()}"
    response = admin_client.post(
        reverse("admin:django_gearman_cancel_job"),
        {"server": elsewhere, "handle": "H:x:1", "confirm": "yes"},
    )
    assert response.status_code == 404


# -- the pages against live servers ---------------------------------------------------------


def test_a_down_server_shows_its_error_not_a_500(admin_client: Client, down_only: str) -> None:
    for page in PAGES:
        response = admin_client.get(reverse(page))
        html = response.content.decode()
        assert response.status_code == 200
        assert f'data-server="{down_only}" data-up="0"' in html and "Connection refused" in html


def test_overview_shows_queues_by_priority_running_jobs_and_workers(
    admin_client: Client, server: Any
) -> None:
    address = server.address
    with GearmanClient([address]) as client:
        client.submit_background("adm_a", b"1", priority=Priority.HIGH, unique="a1")
        client.submit_background("adm_a", b"2", priority=Priority.HIGH, unique="a2")
        client.submit_background("adm_a", b"3", priority=Priority.LOW, unique="a3")
        client.submit_background("adm_b", b"4", unique="b1")
    with worker_thread([address], {"adm_c": lambda job: b""}, client_id="adm-worker"):
        wait_for(
            lambda: "adm-worker" in admin_client.get(reverse(WORKERS)).content.decode(),
            what="the worker",
        )
        response = admin_client.get(reverse(OVERVIEW))
        html = response.content.decode()
        with GearmanAdminClient(address) as admin:
            status = {row.function: row for row in admin.status()}
    assert response.status_code == 200 and f'data-server="{address}" data-up="1"' in html
    assert (
        _cell(html, "adm_a", "high"),
        _cell(html, "adm_a", "normal"),
        _cell(html, "adm_a", "low"),
    ) == (2, 0, 1)
    assert _cell(html, "adm_a", "queued") == status["adm_a"].queued == 3
    assert _cell(html, "adm_b", "normal") == _cell(html, "adm_b", "queued") == 1
    assert _cell(html, "adm_c", "workers") == status["adm_c"].available_workers == 1
    totals = response.context["totals"]
    assert (totals["up"], totals["high"], totals["low"], totals["queued"]) == (1, 2, 1, 4)
    assert "django_gearman/live.js" in html and 'data-refresh-seconds="5"' in html


def test_the_fragment_is_the_tables_alone(admin_client: Client, server: Any) -> None:
    with GearmanClient([server.address]) as client:
        client.submit_background("adm_frag", b"1")
    response = admin_client.get(reverse(OVERVIEW), {"fragment": "1"})
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and "<body" not in html
    assert _cell(html, "adm_frag", "queued") == 1


def test_workers_page_lists_client_id_address_and_functions(
    admin_client: Client, server: Any
) -> None:
    with worker_thread(
        [server.address], {"adm_w1": lambda job: b"", "adm_w2": lambda job: b""}, client_id="adm-w"
    ):
        wait_for(
            lambda: "adm-w" in admin_client.get(reverse(WORKERS)).content.decode(),
            what="the worker",
        )
        html = admin_client.get(reverse(WORKERS)).content.decode()
    row = re.search(r'<tr data-client-id="adm-w">(.*?)</tr>', html, re.S)
    assert (
        row
        and "adm_w1" in row.group(1)
        and "adm_w2" in row.group(1)
        and "127.0.0.1" in row.group(1)
    )


def test_jobs_page_lists_jobs_with_what_each_server_gives(
    admin_client: Client, server: Any
) -> None:
    with GearmanClient([server.address]) as client:
        high = client.submit_background("adm_jobs", b"1", priority=Priority.HIGH, unique="j-high")
        later = client.submit_background("adm_jobs", b"2", unique="j-later", run_at=4_000_000_000)
    response = admin_client.get(reverse(JOBS))
    html = response.content.decode()
    assert response.status_code == 200 and f'data-handle="{high}"' in html
    if server.kind == "embedded":  # `show queue`: function, priority, state and times
        row = re.search(
            rf'<tr data-handle="{re.escape(str(high))}" data-state="queued">(.*?)</tr>', html, re.S
        )
        assert (
            row
            and "adm_jobs" in row.group(1)
            and "j-high" in row.group(1)
            and 'data-col="priority">high' in row.group(1)
        )
        assert re.search(r"<time datetime=\"\d{4}-\d\d-\d\dT", row.group(1))  # the enqueue time
        scheduled = re.search(
            rf'<tr data-handle="{re.escape(str(later))}" data-state="scheduled">(.*?)</tr>',
            html,
            re.S,
        )
        assert scheduled and "2096-10-02" in scheduled.group(1)  # run at 4e9 s after the epoch
    else:  # gearmand: handles from `show jobs`, and the page says what it cannot show
        assert (
            "gives only job handles" in html
            and "j-high" in html
            and f'data-handle="{later}"' in html
        )


# -- actions ---------------------------------------------------------------------------------


def test_cancel_a_job_confirms_checks_csrf_and_logs(server: Any, manager: Client) -> None:
    with GearmanClient([server.address]) as client:
        handle = str(client.submit_background("adm_cancel", b"1", unique="c1"))
    url = reverse("admin:django_gearman_cancel_job")
    params = {"server": server.address, "handle": handle}
    confirm = manager.get(url, params)
    assert (
        confirm.status_code == 200
        and f"Cancel job {handle} on {server.address}?" in confirm.content.decode()
    )
    with GearmanAdminClient(server.address) as admin:
        assert handle in {j.handle for j in admin.show_jobs()}  # nothing happened on GET

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.get(username="manager"))
    assert strict.post(url, {**params, "confirm": "yes"}).status_code == 403  # no CSRF token
    page = strict.get(url, params)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    done = strict.post(url, {**params, "confirm": "yes", "csrfmiddlewaretoken": token})
    assert done.status_code == 302 and done["Location"] == reverse(JOBS)

    with GearmanAdminClient(
        server.address
    ) as admin:  # both servers list it as ignored until dropped
        assert [(j.ignore_job, j.job_queued) for j in admin.show_jobs() if j.handle == handle] == [
            (True, False)
        ]
    entry = LogEntry.objects.get()
    assert (
        entry.user.username == "manager"
        and entry.get_change_message() == f"Cancelled job {handle} on {server.address}."
    )


def test_drop_a_function_and_a_refused_drop(server: Any, manager: Client) -> None:
    url = reverse("admin:django_gearman_drop_function")
    with GearmanAdminClient(server.address) as admin:
        admin.create_function("adm_drop")
    response = manager.post(
        url, {"server": server.address, "function": "adm_drop", "confirm": "yes"}, follow=True
    )
    assert "Dropped function adm_drop" in response.content.decode()
    with GearmanAdminClient(server.address) as admin:
        assert "adm_drop" not in {row.function for row in admin.status()}
    assert LogEntry.objects.count() == 1

    with worker_thread([server.address], {"adm_busy": lambda job: b""}, client_id="adm-busy"):
        wait_for(lambda: _has_worker(server.address, "adm-busy"), what="the worker")
        response = manager.post(
            url, {"server": server.address, "function": "adm_busy", "confirm": "yes"}, follow=True
        )
    assert (
        "Drop function adm_busy on" in response.content.decode()
        and "failed" in response.content.decode()
    )
    assert LogEntry.objects.count() == 1  # a refused drop changes nothing and is not logged


def _has_worker(address: str, client_id: str) -> bool:
    with GearmanAdminClient(address) as admin:
        return any(w.client_id == client_id for w in admin.workers())


# -- task results and retry ------------------------------------------------------------------


@pytest.fixture
def mended() -> Iterator[None]:
    yield
    ft.BROKEN.clear()
    gt.BROKEN.clear()


def test_retry_a_failed_tasks_backend_task_from_its_detail_page(
    server: Any, manager: Client, mended: None
) -> None:
    ft.BROKEN.add("k1")
    result = ft.until_mended.enqueue("k1")
    with worker_thread([server.address], worker_functions()):
        wait_for(
            lambda: TaskResultRecord.objects.get(pk=result.id).status == "FAILED",
            what="the failure",
        )
        record = TaskResultRecord.objects.get(pk=result.id)
        detail = manager.get(
            reverse("admin:django_gearman_taskresultrecord_change", args=[quote(record.pk)])
        )
        html = detail.content.decode()
        assert (
            "RuntimeError: k1 is broken" in html
            and "&quot;k1&quot;" in html
            and ">Retry</a>" in html
        )

        ft.BROKEN.discard("k1")
        retry = reverse("admin:django_gearman_taskresultrecord_retry", args=[quote(record.pk)])
        assert "Retry" in manager.get(retry).content.decode()
        assert TaskResultRecord.objects.get(pk=result.id).status == "FAILED"  # GET only asks
        assert manager.post(retry, {"confirm": "yes"}).status_code == 302
        wait_for(
            lambda: TaskResultRecord.objects.get(pk=result.id).status == "SUCCESSFUL",
            what="the retry",
        )
    record = TaskResultRecord.objects.get(pk=result.id)
    assert record.return_value == "k1 mended" and len(record.errors) == 1 and record.attempts == 2
    assert ft.until_mended.get_result(result.id).return_value == "k1 mended"
    entry = LogEntry.objects.get()
    assert entry.object_id == result.id and "Retried" in entry.get_change_message()


def test_retry_failed_gearman_tasks_with_the_admin_action(
    server: Any, manager: Client, mended: None
) -> None:
    gt.BROKEN.update({"g1", "g2"})
    with worker_thread(
        [server.address], {gt.until_mended.function_name: job_callback(gt.until_mended)}
    ):
        gt.until_mended.background("g1")
        gt.until_mended.background("g2")
        failed = TaskResultRecord.objects.filter(task_path="tests.until_mended", status="FAILED")
        wait_for(lambda: failed.count() == 2, what="two failures")
        ids = sorted(failed.values_list("pk", flat=True))
        changelist = reverse(RESULTS)
        listing = manager.get(
            changelist, {"status__exact": "FAILED", "task_path": "tests.until_mended"}
        )
        assert listing.status_code == 200 and listing.context["cl"].result_count == 2
        gt.BROKEN.discard("g1")  # g2 stays broken: its retry fails again
        form = {"action": "retry_selected", "_selected_action": ids}
        confirm = manager.post(changelist, form)
        assert confirm.status_code == 200 and "Retry 2 failed task(s)?" in confirm.content.decode()
        assert failed.count() == 2  # not yet
        done = manager.post(changelist, {**form, "confirm": "yes"})
        assert done.status_code == 302
        wait_for(
            lambda: (
                sorted(TaskResultRecord.objects.filter(pk__in=ids).values_list("status", flat=True))
                == ["FAILED", "SUCCESSFUL"]
                and all(r.finished_at for r in TaskResultRecord.objects.filter(pk__in=ids))
            ),
            what="the retried jobs",
        )
    by_key = {r.args[0]: r for r in TaskResultRecord.objects.filter(pk__in=ids)}
    assert by_key["g1"].status == "SUCCESSFUL" and by_key["g1"].return_value == "g1 mended"
    assert by_key["g2"].status == "FAILED" and len(by_key["g2"].errors) == 2  # both failures kept
    assert TaskResultRecord.objects.count() == 2  # the retries wrote into the same rows
    assert LogEntry.objects.count() == 2


def test_only_failed_tasks_are_retried(admin_client: Client, down_only: str) -> None:
    record = TaskResultRecord.objects.create(
        id="r-ok", task_path="x.y", backend="default", queue_name="default", status="SUCCESSFUL"
    )
    response = admin_client.post(
        reverse("admin:django_gearman_taskresultrecord_retry", args=[record.pk]),
        {"confirm": "yes"},
        follow=True,
    )
    assert (
        "was not retried" in response.content.decode()
        and "SUCCESSFUL, not FAILED" in response.content.decode()
    )
    assert (
        TaskResultRecord.objects.get(pk="r-ok").status == "SUCCESSFUL"
        and not LogEntry.objects.exists()
    )


def test_viewers_cannot_retry(down_only: str) -> None:
    record = TaskResultRecord.objects.create(
        id="r-f", task_path="x.y", backend="default", queue_name="default", status="FAILED"
    )
    viewer = _staff("viewer", *VIEW_PERMISSIONS)
    retry = reverse("admin:django_gearman_taskresultrecord_retry", args=[record.pk])
    assert viewer.post(retry, {"confirm": "yes"}).status_code == 403
    detail = viewer.get(
        reverse("admin:django_gearman_taskresultrecord_change", args=[record.pk])
    ).content.decode()
    assert ">Retry</a>" not in detail
    listing = viewer.get(reverse(RESULTS))
    assert "retry_selected" not in listing.content.decode()
