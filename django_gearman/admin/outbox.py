"""The transactional outbox in the admin: the background jobs that wait to be sent (a job server
was down, or no relay runs), read-only, with a "send now" action for managers; the queue
overview warns when the outbox grows (:func:`outbox_warning`)."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest

from ..models import OutboxJob
from ..outbox import Backlog, backlog, send_waiting
from .pages import can_manage

__all__ = ["OutboxJobAdmin", "outbox_warning"]

logger = logging.getLogger("django_gearman.admin")

#: The overview warns when a job has waited longer than this (seconds): a relay sends within a
#: second or two, so a job this old means no server answers or no relay runs.
WARN_AFTER = 60.0


def outbox_warning() -> dict[str, Any] | None:
    """What the overview says of the outbox: None when nothing waits (or it cannot be read)."""
    try:
        waiting: Backlog = backlog()
    except DatabaseError:  # no table (migrate not run): the overview still works
        return None
    if not waiting.waiting:
        return None
    stale = (waiting.oldest_age or 0) > WARN_AFTER or waiting.failing > 0
    return {"backlog": waiting, "stale": stale, "oldest": round(waiting.oldest_age or 0)}


@admin.register(OutboxJob)
class OutboxJobAdmin(admin.ModelAdmin):
    """Jobs waiting in the outbox: task, alias, age, failed sends and the last error."""

    list_display = ("id", "task_name", "alias", "created_at", "attempts", "not_before", "error")
    list_filter = ("task_name", "alias")
    search_fields = ("task_name", "unique", "last_error")
    readonly_fields = [f.name for f in OutboxJob._meta.fields if f.name != "data"]
    exclude = ("data",)
    actions = ["send_now"]

    @admin.display(description="last error")
    def error(self, row: OutboxJob) -> str:
        return row.last_error[:120]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_manage(request)  # a job nobody wants any more

    @admin.action(description="Send the selected jobs now")
    def send_now(self, request: HttpRequest, queryset: QuerySet[OutboxJob]) -> None:
        if not can_manage(request):
            self.message_user(request, "Only queue managers can send jobs.", messages.ERROR)
            return
        ids = list(queryset.values_list("id", flat=True))
        queryset.update(not_before=None)
        sent, failed = send_waiting(ids=ids, relay="admin")
        logger.info(
            "%s sent %d outbox job(s) from the admin (%d failed)", request.user, sent, failed
        )
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(request, f"Sent {sent} job(s); {failed} could not be sent.", level)
