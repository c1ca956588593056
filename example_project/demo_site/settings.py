"""Settings of the example project, read from the environment (django-environ).

Everything has a default for a laptop; set any of these (or put them in example_project/.env):

- ``DEBUG`` (default on) and ``SECRET_KEY`` (a development key, only while DEBUG is on);
- ``ALLOWED_HOSTS`` (comma-separated, default localhost);
- ``DATABASE_URL`` (default: SQLite in example_project/db.sqlite3);
- ``GEARMAN_URL`` (default gearman://127.0.0.1:4730, where ``manage.py gearmand`` listens);
- ``EMAIL_BACKEND`` (default: the file backend) and ``EMAIL_FILE_PATH`` (default
  example_project/sent-mail/): each mail sent is a file there.
"""

from __future__ import annotations

from pathlib import Path

import environ

from django_gearman.conf import gearman_url

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str(
    "SECRET_KEY",
    default="django-insecure-example-project-only-for-development" if DEBUG else environ.Env.NOTSET,
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",  # /admin/: the Gearman queue pages and task results
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_gearman",  # manage.py gearmand and manage.py gearman_worker
    "signup",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
USE_TZ = True
TIME_ZONE = "UTC"

# The job server(s): gearman://host:4730, several with gearman://h1:4730,h2:4730, options as
# query parameters (gearman://127.0.0.1:4730/?timeout=10&prefix=demo.).
GEARMAN = {"default": gearman_url(env.str("GEARMAN_URL", default="gearman://127.0.0.1:4730"))}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = str(env.path("EMAIL_FILE_PATH", default=str(BASE_DIR / "sent-mail")))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Example project <welcome@example.com>")
