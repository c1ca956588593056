"""The Django app configuration: system checks, and every installed app's ``tasks.py``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class GearmanConfig(AppConfig):
    name = "django_gearman"
    verbose_name = "Gearman"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the system checks, and the receiver that re-reads GEARMAN when
        # override_settings changes it.
        from . import checks, clients  # noqa: F401, PLC0415

        # Import each installed app's tasks.py, so that its @gearman_task functions register
        # themselves and `manage.py gearman_worker` finds them.
        autodiscover_modules("tasks")
