"""Django admin: the Tasks backend's results, per task, read-only (the queue pages come later)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import TaskResultRecord


@admin.register(TaskResultRecord)
class TaskResultRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Results written by workers: filter by task and status, read the error's traceback."""

    list_display = ("id", "task_path", "status", "queue_name", "priority", "attempts", "enqueued_at", "finished_at")
    list_filter = ("status", "task_path", "queue_name", "backend")
    search_fields = ("id", "task_path", "job_handle")
    date_hierarchy = "enqueued_at"
    readonly_fields = [field.name for field in TaskResultRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # results come from enqueued tasks, not from forms

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
