"""Django settings for bench/outbox_bench.py: a SQLite file database (the bench and its worker
share the outbox), the app and the no-op task."""

import os

SECRET_KEY = "bench-not-secret"
INSTALLED_APPS = ["django_gearman", "bench.tasks_app"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["OUTBOX_BENCH_DB"],
        "OPTIONS": {"timeout": 60},
    }
}
USE_TZ = True
DEBUG = False
