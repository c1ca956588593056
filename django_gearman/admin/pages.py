"""The live queue pages: overview, workers, jobs, and the server actions (cancel, drop).

The queue pages hang off unmanaged models (``models.QueueStatus``, ``WorkerList``,
``JobList``), so they appear in the admin as soon as the app is installed, with no URL wiring,
and their permissions come from the auth app. Their data is asked from the job servers on each
view (:mod:`.monitor`); a page refreshes its tables in place every few seconds.

Seeing a page needs its view permission (``django_gearman.view_queuestatus``, ``view_workerlist``,
``view_joblist``). Changing anything (cancel a job, drop a function, retry a failed task) needs a
superuser or ``django_gearman.manage_queues``, goes through a confirmation page and a CSRF-checked
POST, and is written to the admin log. The task results table is :mod:`~.admin.results`.

What a server sends is shown through ``django_gearman.admin.display``: names with control
characters or bytes that are not UTF-8 are escaped, actions are offered only for names they can
carry, and rows of a reply that did not parse are counted above the server's tables ("N rows
could not be read").
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from ..gearman.admin_client import GearmanAdminClient
from ..gearman.errors import GearmanError
from ..models import JobList, QueueStatus, WorkerList
from . import monitor
from .display import action_problem, label, moment

logger = logging.getLogger("django_gearman.admin")

MANAGE_PERMISSION = "django_gearman.manage_queues"


def can_manage(request: HttpRequest) -> bool:
    """May this user cancel jobs, drop functions and retry tasks?"""
    user = request.user
    return bool(user.is_active and (user.is_superuser or user.has_perm(MANAGE_PERMISSION)))


def _log(request: HttpRequest, model: type, object_id: str, message: str) -> None:
    """One admin log line (LogEntry) for an action that changed a job server."""
    assert request.user.pk is not None  # actions are for logged-in managers only
    LogEntry.objects.create(
        user_id=request.user.pk,
        content_type=ContentType.objects.get_for_model(model, for_concrete_model=False),
        object_id=object_id[:255],
        object_repr=object_id[:200],
        action_flag=CHANGE,
        change_message=message,
    )


class LivePageAdmin(admin.ModelAdmin):
    """A read-only page of live server data in place of a model's change list."""

    #: The page template; ``fragment_template`` is the part that refreshes in place.
    page_template = "admin/django_gearman/live_page.html"
    fragment_template = ""
    #: Seconds between refreshes of the tables (0: never).
    refresh_seconds = 5
    #: Ask servers for their jobs (``show jobs``, ``show unique jobs``; ``show queue``).
    with_jobs = False
    with_queue = False
    #: How long to wait for each server.
    server_timeout = 2.0

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name="{}_{}_changelist".format(*info),
            )
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        snapshots = monitor.snapshot_all(
            timeout=self.server_timeout, with_queue=self.with_queue, with_jobs=self.with_jobs
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": str(self.opts.verbose_name_plural).capitalize(),
            "snapshots": snapshots,
            "servers": [self.server_context(s) for s in snapshots],
            "totals": _totals(snapshots),
            "can_manage": can_manage(request),
            "refresh_seconds": self.refresh_seconds,
            "fragment_template": self.fragment_template,
            "asked_at": datetime.now(timezone.utc),
            **(extra_context or {}),
        }
        template = self.fragment_template if request.GET.get("fragment") else self.page_template
        return TemplateResponse(request, template, context)

    #: How many unreadable rows a page lists (all are counted).
    unreadable_shown = 20

    def server_context(self, snapshot: monitor.ServerSnapshot) -> dict[str, Any]:
        """What the fragment template shows for one server (text from it made showable)."""
        unreadable = [
            {"command": row.command, "text": label(_clip(row.text)), "reason": row.reason}
            for row in snapshot.unreadable[: self.unreadable_shown]
        ]
        return {
            "snapshot": snapshot,
            "error": label(snapshot.error),
            "version": label(snapshot.version),
            "unreadable": unreadable,
            "unreadable_count": len(snapshot.unreadable),
        }


def _clip(text: str, size: int = 300) -> str:
    return text if len(text) <= size else text[:size] + "\u2026"


def _totals(snapshots: list[monitor.ServerSnapshot]) -> dict[str, int]:
    up = [s for s in snapshots if s.up]
    return {
        "servers": len(snapshots),
        "up": len(up),
        "high": sum(f.high for s in up for f in s.functions),
        "normal": sum(f.normal for s in up for f in s.functions),
        "low": sum(f.low for s in up for f in s.functions),
        "queued": sum(s.queued for s in up),
        "running": sum(s.running for s in up),
        "workers": sum(len(s.workers) for s in up),
        "functions": len({f.name for s in up for f in s.functions}),
    }


@admin.register(QueueStatus)
class QueueStatusAdmin(LivePageAdmin):
    """Overview: each server up or down, and per function its queues, running jobs, workers.
    Also hosts the server actions (cancel a job, drop a function) behind a confirmation page."""

    fragment_template = "admin/django_gearman/overview.html"

    def server_context(self, snapshot: monitor.ServerSnapshot) -> dict[str, Any]:
        functions = [
            {"row": f, "name": label(f.name), "drop_problem": action_problem(f.name)}
            for f in snapshot.functions
        ]
        return {**super().server_context(snapshot), "functions": functions}

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        from .outbox import outbox_warning  # noqa: PLC0415 - .outbox imports this module

        return super().changelist_view(
            request, {"outbox": outbox_warning(), **(extra_context or {})}
        )

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("cancel/", wrap(self.cancel_job_view), name="django_gearman_cancel_job"),
            path("drop/", wrap(self.drop_function_view), name="django_gearman_drop_function"),
            *super().get_urls(),
        ]

    def cancel_job_view(self, request: HttpRequest) -> HttpResponse:
        """Cancel a queued job (``cancel job <handle>``): confirm on GET, do it on POST."""
        return self._server_action(
            request,
            "handle",
            title="Cancel a job",
            verb="Cancel job",
            run=lambda admin_client, handle: admin_client.cancel_job(handle),
            done="Cancelled job {target} on {server}.",
            log_model=JobList,
            back=reverse("admin:django_gearman_joblist_changelist"),
        )

    def drop_function_view(self, request: HttpRequest) -> HttpResponse:
        """Drop a function with no workers and no running jobs (``drop function <name>``)."""
        return self._server_action(
            request,
            "function",
            title="Drop a function",
            verb="Drop function",
            run=lambda admin_client, name: admin_client.drop_function(name),
            done="Dropped function {target} on {server}.",
            log_model=QueueStatus,
            back=reverse("admin:django_gearman_queuestatus_changelist"),
        )

    def _server_action(
        self,
        request: HttpRequest,
        field: str,
        *,
        title: str,
        verb: str,
        run: Any,
        done: str,
        log_model: type,
        back: str,
    ) -> HttpResponse:
        if not can_manage(request):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        server, target = data.get("server", ""), data.get(field, "")
        if server not in monitor.configured_servers():
            raise Http404(f"{server!r} is not a configured Gearman server")
        problem = action_problem(target)
        if problem:
            raise Http404(f"no valid {field} given: {problem}")
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            try:
                with GearmanAdminClient(server, timeout=self.server_timeout) as admin_client:
                    run(admin_client, target)
            except (GearmanError, OSError) as error:
                messages.error(request, f"{verb} {target} on {server} failed: {error}")
                logger.warning("%s %s on %s failed: %s", verb, target, server, error)
            else:
                message = done.format(target=target, server=server)
                _log(request, log_model, f"{server} {target}", message)
                logger.info("%s (by %s)", message, request.user)
                messages.success(request, message)
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "question": f"{verb} {target} on {server}?",
            "fields": {"server": server, field: target},
            "verb": verb,
            "back": back,
        }
        return TemplateResponse(request, "admin/django_gearman/confirm.html", context)


@admin.register(WorkerList)
class WorkerListAdmin(LivePageAdmin):
    """Workers: each worker connection's id, address and functions, per server."""

    fragment_template = "admin/django_gearman/workers.html"

    def server_context(self, snapshot: monitor.ServerSnapshot) -> dict[str, Any]:
        workers = [
            {
                "fd": w.fd,
                "address": label(w.address),
                "client_id": label(w.client_id),
                "functions": [label(name) for name in w.functions],
            }
            for w in snapshot.workers
        ]
        return {**super().server_context(snapshot), "workers": workers}


@admin.register(JobList)
class JobListAdmin(LivePageAdmin):
    """Jobs: handles and unique keys (both servers), and on our server the job list with
    function, priority, state and times (``show queue``)."""

    fragment_template = "admin/django_gearman/jobs.html"
    with_jobs = with_queue = True

    def server_context(self, snapshot: monitor.ServerSnapshot) -> dict[str, Any]:
        limit = monitor.QUEUE_LIMIT
        queue = [
            {
                "job": job,
                "handle": label(job.handle),
                "function": label(job.function),
                "unique": label(job.unique),
                "priority": label(job.priority),
                "state": label(job.state),
                "enqueued": moment(job.enqueued),
                "run_at": moment(job.run_at),
                "cancel_problem": action_problem(job.handle),
            }
            for job in snapshot.queue or ()
        ]
        jobs = [
            {"job": job, "handle": label(job.handle), "cancel_problem": action_problem(job.handle)}
            for job in snapshot.jobs[:limit]
        ]
        return {
            **super().server_context(snapshot),
            "queue": queue,
            "limit": limit,
            "jobs": jobs,
            "queue_error": label(snapshot.queue_error),
            "unique_keys": [label(key) for key in snapshot.unique_keys[:limit]],
        }
