"""The Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig


class GearmanConfig(AppConfig):
    name = "django_gearman"
    verbose_name = "Gearman"
