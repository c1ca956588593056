"""Minimal Django settings for the test suite."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "django-gearman-tests-not-secret"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_gearman",
    "tests.taskapp",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        # A file, not shared-cache memory: worker threads write task results while the test
        # reads them, and only a file database waits for a lock (SQLite's busy timeout)
        # instead of failing at once with "database table is locked".
        "TEST": {
            "NAME": os.path.join(
                tempfile.gettempdir(), f"django-gearman-tests-{os.getpid()}.sqlite3"
            )
        },
    }
}

USE_TZ = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The Django Tasks framework on Gearman: django.tasks on Django 6, the backport on 5.2.
TASKS = {
    "default": {
        "BACKEND": "django_gearman.backends.GearmanBackend",
        "QUEUES": ["default", "reports"],
    }
}
try:
    import django.tasks  # noqa: F401
except ImportError:
    INSTALLED_APPS.append("django_tasks")

ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
