"""One environment-driven settings module.

Embedded default (no environment variables): SQLite under ``.data/``, a filesystem Celery broker
that ``manage.py runembedded`` drains with an in-process-started worker, DEBUG on.

Production mode (``DATABASE_URL`` and ``REDIS_URL`` set): PostgreSQL, Redis as the Celery broker,
DEBUG off unless asked for, and no secret defaults: ``SECRET_KEY`` and ``ALLOWED_HOSTS`` must be set.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

django_stubs_ext.monkeypatch()


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED = not DATABASE_URL
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))

DEBUG = env_bool("DEBUG", default=EMBEDDED)

_INSECURE_KEY = "django-insecure-embedded-mode-only-never-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", "" if not DEBUG else _INSECURE_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or (["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [])
if not DEBUG:
    if not SECRET_KEY or SECRET_KEY == _INSECURE_KEY or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("Production mode needs SECRET_KEY: a random secret of at least 50 characters.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("Production mode needs ALLOWED_HOSTS: a comma-separated list of host names.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "zenskar_site",
    "zenskar_site.accounts",
    "usage",
    "metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "zenskar_site.urls"
WSGI_APPLICATION = "zenskar_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "zenskar_site.accounts.context_processors.organisation",
            ],
        },
    },
]

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("CONN_MAX_AGE", 60))}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(DATA_DIR / "db.sqlite3")),
            # WAL lets the web server and the embedded worker read while the other writes;
            # IMMEDIATE takes the write lock at BEGIN so two writers queue instead of failing.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the apps' static folders too, so a deployment that skipped collectstatic
# still has its CSS, JS and the offline API docs.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# Behind a TLS-terminating proxy in production mode.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Usage is not redirected to HTTPS (a client would resend its POST as a GET): plain HTTP gets a 403.
SECURE_REDIRECT_EXEMPT = [r"^usage/[^/]+/?$"]
USE_X_FORWARDED_HOST = env_bool("USE_X_FORWARDED_HOST", default=False)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "zenskar_site.accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["zenskar_site.accounts.permissions.ManagementAccess"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "zenskar_site.lib.pagination.CursorPagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "zenskar_site.lib.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Usage metering API",
    "DESCRIPTION": "Usage events, ingestion, billable metrics and corrections.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PeriodEnum": "usage.models.Period",
        "UsageEventKindEnum": "usage.models.UsageEventKind",
        "MetricKindEnum": "metrics.models.MetricKind",
        "AggregationEnum": "metrics.models.Aggregation",
        "ApiKeyScopeEnum": "zenskar_site.accounts.models.ApiKeyScope",
    },
}

# Celery: Redis in production mode; in embedded mode a filesystem broker under DATA_DIR, drained by
# the worker that `manage.py runembedded` starts, so no broker server is needed.
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND: str | None = REDIS_URL
    # Publishing must fail fast when Redis is down: ingestion has committed, the sweep catches up.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "socket_connect_timeout": 1,
        "socket_timeout": 2,
        "max_retries": 0,
    }
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(DATA_DIR / "broker"),
        "data_folder_out": str(DATA_DIR / "broker"),
        "processed_folder": str(DATA_DIR / "broker-processed"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_EAGER", default=False)
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "ingestion-errors-prune": {"task": "usage.tasks.ingestion_errors_prune_task", "schedule": 3600.0},
    # Picks up dirty hours whose prompt refresh task was lost (broker down at commit, worker killed).
    "metrics-sweep": {
        "task": "metrics.tasks.metrics_sweep_task",
        "schedule": float(os.environ.get("METRICS_SWEEP_SECONDS", "2")),
    },
    # Enqueues again the CSV imports whose task was lost.
    "csv-imports-resume": {"task": "usage.tasks.csv_imports_resume_task", "schedule": 60.0},
}
# A CSV import that has stored no batch for this long while importing lost its task; the sweep resumes it.
CSV_IMPORT_STALL_SECONDS = float(os.environ.get("CSV_IMPORT_STALL_SECONDS", "600"))

# The metric engine: a refresh is enqueued at most this often per usage event and web process;
# the sweep covers the rest.
METRICS_REFRESH_DEBOUNCE_SECONDS = float(os.environ.get("METRICS_REFRESH_DEBOUNCE_SECONDS", "0.25"))
METRIC_SQL_TIMEOUT_MS = env_int("METRIC_SQL_TIMEOUT_MS", 5000)
# A recompute with no progress for this long is restarted by the sweep (its worker died).
METRICS_RECOMPUTE_STALL_SECONDS = float(os.environ.get("METRICS_RECOMPUTE_STALL_SECONDS", "120"))
# Pause between the month chunks of a history recompute, to spare a busy database.
METRICS_RECOMPUTE_THROTTLE_SECONDS = float(os.environ.get("METRICS_RECOMPUTE_THROTTLE_SECONDS", "0"))

# Ingestion limits (SPEC §3).
INGEST_MAX_BATCH = env_int("INGEST_MAX_BATCH", 1000)
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 1024 * 1024)
INGEST_MAX_FUTURE_SECONDS = env_int("INGEST_MAX_FUTURE_SECONDS", 5 * 60)
INGEST_MAX_AGE_SECONDS = env_int("INGEST_MAX_AGE_SECONDS", 35 * 24 * 3600)
# Requests per organisation per second; 0 turns the limit off (the embedded default).
INGEST_RATE_LIMIT = env_int("INGEST_RATE_LIMIT", 0 if EMBEDDED else 1000)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(INGEST_MAX_BODY_BYTES * 2, 2621440)

# The ingestion error log keeps this many days of rejected records.
INGEST_ERROR_RETENTION_DAYS = env_int("INGEST_ERROR_RETENTION_DAYS", 30)

# The ingestion hot path prepares its fixed statements on the server. Turn off behind a pooler in
# transaction mode (PgBouncer), where a prepared statement may not exist on the next connection.
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", default=True)

# API keys: last_used_at is written at most this often per key, keeping auth off the write path.
API_KEY_TOUCH_SECONDS = env_int("API_KEY_TOUCH_SECONDS", 60)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
