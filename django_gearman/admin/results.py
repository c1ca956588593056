"""The task results table in the admin: failed background tasks and every Django Tasks task,
with their arguments, result and tracebacks, and a retry for managers."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from ..gearman.errors import GearmanError
from ..models import TaskResultRecord
from .pages import can_manage
from .retry import retry_result

logger = logging.getLogger("django_gearman.admin")


@admin.register(TaskResultRecord)
class TaskResultRecordAdmin(admin.ModelAdmin):
    """Task results: failed background tasks and every Django Tasks task, filterable by status
    and task; the detail shows arguments, result and each error's traceback; failed ones can be
    retried (superusers or ``manage_queues``)."""

    list_display = (
        "id",
        "task_path",
        "status",
        "queue_name",
        "priority",
        "attempts",
        "enqueued_at",
        "finished_at",
    )
    list_filter = ("status", "task_path", "queue_name", "backend")
    search_fields = ("id", "task_path", "job_handle")
    date_hierarchy = "enqueued_at"
    actions = ["retry_selected"]
    change_form_template = "admin/django_gearman/taskresultrecord/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "task_path",
                    "status",
                    "backend",
                    "queue_name",
                    "priority",
                    "job_handle",
                ]
            },
        ),
        ("Call", {"fields": ["arguments", "result"]}),
        ("Errors", {"fields": ["error_list"]}),
        (
            "Times",
            {
                "fields": [
                    "enqueued_at",
                    "run_after",
                    "started_at",
                    "last_attempted_at",
                    "finished_at",
                    "worker_ids",
                ]
            },
        ),
    ]
    readonly_fields = [
        "id",
        "task_path",
        "status",
        "backend",
        "queue_name",
        "priority",
        "job_handle",
        "arguments",
        "result",
        "error_list",
        "enqueued_at",
        "run_after",
        "started_at",
        "last_attempted_at",
        "finished_at",
        "worker_ids",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # results come from enqueued tasks, not from forms

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return can_manage(request)

    @admin.display(description="arguments")
    def arguments(self, record: TaskResultRecord) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps({"args": record.args, "kwargs": record.kwargs}, indent=2)
        )

    @admin.display(description="return value")
    def result(self, record: TaskResultRecord) -> str:
        if record.status != TaskResultRecord.Status.SUCCESSFUL:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(record.return_value, indent=2))

    @admin.display(description="errors, oldest first")
    def error_list(self, record: TaskResultRecord) -> str:
        if not record.errors:
            return "-"
        return format_html_join(
            "",
            '<p><strong>{}</strong></p><pre class="gearman-traceback">{}</pre>',
            ((e.get("exception_class_path", "?"), e.get("traceback", "")) for e in record.errors),
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="django_gearman_taskresultrecord_retry",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = {"can_retry": can_manage(request), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)

    @admin.action(description="Retry the selected failed tasks", permissions=["manage"])
    def retry_selected(
        self, request: HttpRequest, queryset: QuerySet[TaskResultRecord]
    ) -> HttpResponse | None:
        """Admin action: confirm first (like delete), then queue each failed task again."""
        failed = list(queryset.filter(status=TaskResultRecord.Status.FAILED))
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Retry failed tasks",
                "question": f"Retry {len(failed)} failed task(s)?",
                "records": failed,
                "skipped": queryset.count() - len(failed),
                "action": "retry_selected",
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "verb": "Retry",
                "back": request.get_full_path(),
            }
            return TemplateResponse(request, "admin/django_gearman/confirm.html", context)
        for record in failed:
            self._retry(request, record)
        return None

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Retry one failed task from its detail page: confirm on GET, do it on POST."""
        if not can_manage(request):
            raise PermissionDenied
        record = self.get_object(request, unquote(object_id))
        if record is None:
            raise Http404(f"no task result {object_id!r}")
        detail = reverse("admin:django_gearman_taskresultrecord_change", args=[quote(record.pk)])
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            self._retry(request, record)
            return HttpResponseRedirect(detail)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Retry a failed task",
            "question": f"Retry {record.task_path} ({record.id})?",
            "records": [record],
            "verb": "Retry",
            "back": detail,
        }
        return TemplateResponse(request, "admin/django_gearman/confirm.html", context)

    def _retry(self, request: HttpRequest, record: TaskResultRecord) -> None:
        try:
            handle = retry_result(record)
        except (GearmanError, OSError) as error:
            messages.error(request, f"{record.task_path} {record.id} was not retried: {error}")
            return
        message = f"Retried {record.task_path} as job {handle}."
        self.log_change(request, record, message)
        logger.info(
            "%s %s retried as %s (by %s)", record.task_path, record.id, handle, request.user
        )
        messages.success(request, message)
