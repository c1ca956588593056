"""Django settings for bench/tasks_bench.py: only what the worker and the tasks need."""

SECRET_KEY = "bench-not-secret"
INSTALLED_APPS = ["django_gearman", "bench.tasks_app"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
DEBUG = False
