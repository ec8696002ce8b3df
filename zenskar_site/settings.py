"""One environment-driven settings module.

Embedded default (no environment variables): SQLite under ``.data/``, a filesystem Celery broker
that ``manage.py runembedded`` drains with an in-process-started worker, DEBUG on.

Production mode (``DATABASE_URL`` and ``REDIS_URL`` set): PostgreSQL, Redis as the Celery broker,
DEBUG off unless asked for, and no secret defaults: ``SECRET_KEY`` and ``ALLOWED_HOSTS`` must be set.

Every variable is read strictly: a value that does not parse or is out of range (``DEBUG=ture``,
``INGEST_MAX_BATCH=abc``, ``METRICS_SWEEP_SECONDS=-``) stops the start with ImproperlyConfigured naming
the variable, instead of quietly becoming False or the default. Unset or empty means the default.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from pathlib import Path

import dj_database_url
import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

django_stubs_ext.monkeypatch()


# django-environ reads the variables; the helpers below add what it leaves out: its bool and float
# casts accept malformed text, its errors do not name the variable, and nothing checks a range.
# (environ also reads a value starting with "$" as the name of another variable to read.)
env = environ.Env()


def _malformed(name: str, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name} must be {expected}; got {os.environ.get(name)!r}.")


def env_bool(name: str, *, default: bool) -> bool:
    # Not env.bool: it reads every word it does not know (a typo such as "ture") as False.
    text = env.str(name, default=None)
    if text is None:
        return default
    word = text.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise _malformed(name, "one of 1/0, true/false, yes/no, on/off")


def env_int(name: str, *, default: int, allow_zero: bool) -> int:
    expected = "a whole number, 0 or more" if allow_zero else "a whole number, 1 or more"
    try:
        value = env.int(name, default=None)
    except ValueError:
        raise _malformed(name, expected) from None
    if value is None:
        return default
    if value < 0 or (value == 0 and not allow_zero):
        raise _malformed(name, expected)
    return int(value)


def env_seconds(name: str, *, default: float, allow_zero: bool) -> float:
    expected = "a number of seconds, 0 or more" if allow_zero else "a number of seconds above 0"
    # Not env.float: it drops every character but digits, "," "." and "-" first ("1e3" reads as 13).
    text = env.str(name, default=None)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise _malformed(name, expected) from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise _malformed(name, expected)
    return value


def env_list(name: str) -> list[str]:
    return [item.strip() for item in env.list(name, default=[]) if item.strip()]


def env_choice(name: str, *, default: str, choices: set[str]) -> str:
    text = env.str(name, default=None)
    if text is None:
        return default
    if text not in choices:
        raise _malformed(name, "one of " + ", ".join(sorted(choices)))
    return str(text)


DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED = not DATABASE_URL
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / ".data")))

DEBUG = env_bool("DEBUG", default=EMBEDDED)

_INSECURE_KEY = "django-insecure-embedded-mode-only-never-use-in-production"
# As it is, not through environ: a key Django generates may start with "$", which environ would follow.
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
    "axes",
    "zenskar_site",
    "zenskar_site.accounts",
    "usage",
    "metrics",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "zenskar_site.lib.middleware.NulRejectMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a sign-in refused for too many failures into the lockout page.
    "axes.middleware.AxesMiddleware",
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
    conn_max_age = env_int("CONN_MAX_AGE", default=60, allow_zero=True)
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=conn_max_age)}
    except ValueError as exc:
        # Not the URL itself in the message: it holds the password.
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django can use: {exc}") from None
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str("SQLITE_PATH", default=str(DATA_DIR / "db.sqlite3")),
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

# Sign-in attempts (django-axes): after LOGIN_FAILURE_LIMIT failures for one account from one address,
# that account is locked for that address for LOGIN_LOCKOUT_SECONDS (each attempt meanwhile starts the
# wait again), on the dashboard's sign-in page and the admin's alike. The same account from elsewhere,
# and other accounts from that address, still sign in. Attempts are kept in the database, both modes.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out attempt before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", default=5, allow_zero=False)
AXES_COOLOFF_TIME = dt.timedelta(seconds=env_seconds("LOGIN_LOCKOUT_SECONDS", default=15 * 60.0, allow_zero=False))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"  # answered with status 429
# How many proxies in front of the web processes append the client's address to X-Forwarded-For:
# production mode sits behind one TLS-terminating proxy, so the header's last entry is the address
# that proxy saw; anything left of it was written by the client. 0 (embedded): the connection's
# address. Not django-axes' AXES_IPWARE_* settings: they need django-ipware (an optional extra), whose
# strict default refuses a header with a client-written entry, and this one rule is all one proxy needs.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", default=0 if EMBEDDED else 1, allow_zero=True)
AXES_CLIENT_IP_CALLABLE = "zenskar_site.accounts.throttling.client_ip_address"

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
# So is /health, for a load balancer's or monitor's plain-HTTP probe (it reads, and tells only ages).
SECURE_REDIRECT_EXEMPT = [r"^usage/[^/]+/?$", r"^health/?$"]
USE_X_FORWARDED_HOST = env_bool("USE_X_FORWARDED_HOST", default=False)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", default=31536000, allow_zero=True)
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
    # JSON in (SPEC §4): a form-encoded body would reach the views as lists of strings; it is a 415.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # Pagination and every error answer documented for all operations (zenskar_site/lib/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "zenskar_site.lib.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "zenskar_site.lib.exceptions.exception_handler",
    # API_RATE_LIMIT per organisation; the OpenAPI document and docs have no actor and are not counted.
    "DEFAULT_THROTTLE_CLASSES": ["zenskar_site.accounts.throttling.OrganisationRateThrottle"],
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
    # The ingestion endpoint is a plain Django view: its operation is added after generation.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "usage.ingestion.openapi.ingestion_document",
    ],
    "ENUM_NAME_OVERRIDES": {
        "PeriodEnum": "usage.models.Period",
        "UsageEventKindEnum": "usage.models.UsageEventKind",
        "MetricKindEnum": "metrics.models.MetricKind",
        "AggregationEnum": "metrics.models.Aggregation",
        "ApiKeyScopeEnum": "zenskar_site.accounts.models.ApiKeyScope",
        "ContractStatusEnum": "billing.models.ContractStatus",
        "PlanStatusEnum": "billing.models.PlanStatus",
        "InvoiceStatusEnum": "billing.invoicing.models.InvoiceStatus",
        "InvoiceKindEnum": "billing.invoicing.models.InvoiceKind",
    },
}

# Celery: Redis in production mode; in embedded mode a filesystem broker under DATA_DIR, drained by
# the worker that `manage.py runembedded` starts, so no broker server is needed.
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # kombu's Redis transport with the fix that keeps a worker alive through a Redis outage.
    CELERY_BROKER_TRANSPORT: str | None = "zenskar_site.broker:Transport"
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
        # The exchange tables (kombu's default is "control" in the working directory).
        "control_folder": str(DATA_DIR / "broker-control"),
    }
    CELERY_BROKER_TRANSPORT = None
    CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_EAGER", default=False)
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker keeps trying to reach the broker, at start and after losing it, for as long as it takes
# (celery's default gives up after 100 attempts and exits); process supervision covers the rest.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A task running when the broker connection drops finishes (it needs only the database) and acks once
# Redis is back (zenskar_site/broker.py); if it cannot, the message is delivered again after kombu's
# visibility timeout, which every task here tolerates (safe to run twice). Cancelling it instead would
# only delay the work: the sweep would restart it after METRICS_RECOMPUTE_STALL_SECONDS.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "ingestion-errors-prune": {"task": "usage.tasks.ingestion_errors_prune_task", "schedule": 3600.0},
    # Picks up dirty hours whose prompt refresh task was lost (broker down at commit, worker killed).
    "metrics-sweep": {
        "task": "metrics.tasks.metrics_sweep_task",
        "schedule": env_seconds("METRICS_SWEEP_SECONDS", default=2.0, allow_zero=False),
    },
    # Enqueues again the CSV imports whose task was lost.
    "csv-imports-resume": {"task": "usage.tasks.csv_imports_resume_task", "schedule": 60.0},
    # Drafts for the billing periods that closed (periods close at UTC midnight; catches up after downtime).
    "invoices-generate-due": {
        "task": "billing.tasks.invoices_generate_due_task",
        "schedule": env_seconds("INVOICES_GENERATE_SECONDS", default=300.0, allow_zero=False),
    },
    # Recomputes the drafts that a lost or too early refresh left behind their usage (every draft is read).
    "drafts-reconcile": {
        "task": "billing.tasks.drafts_reconcile_task",
        "schedule": env_seconds("DRAFTS_RECONCILE_SECONDS", default=3600.0, allow_zero=False),
    },
}
# `manage.py health` and `/health` fail when beat's metrics sweep last finished longer ago than this
# (beat or every worker is missing, or the broker is unreachable).
HEALTH_SWEEP_MAX_AGE_SECONDS = env_seconds("HEALTH_SWEEP_MAX_AGE_SECONDS", default=60.0, allow_zero=False)
# A CSV import that has stored no batch for this long while importing lost its task; the sweep resumes it.
CSV_IMPORT_STALL_SECONDS = env_seconds("CSV_IMPORT_STALL_SECONDS", default=600.0, allow_zero=True)

# The metric engine: a refresh is enqueued at most this often per usage event and web process;
# the sweep covers the rest.
METRICS_REFRESH_DEBOUNCE_SECONDS = env_seconds("METRICS_REFRESH_DEBOUNCE_SECONDS", default=0.25, allow_zero=True)
METRIC_SQL_TIMEOUT_MS = env_int("METRIC_SQL_TIMEOUT_MS", default=5000, allow_zero=False)
# Each organisation may spend this many milliseconds per minute evaluating its SQL metrics (timeouts
# included); past it their periods are deferred to the next minute, so one organisation's heavy queries
# cannot take the workers every organisation shares. 0 turns the budget off.
METRIC_SQL_BUDGET_MS_PER_MINUTE = env_int("METRIC_SQL_BUDGET_MS_PER_MINUTE", default=20000, allow_zero=True)
# A metric preview (API or dashboard) has this much time in all: checking the definition, compiling it and
# computing every period. Past it the preview is a 400 and the web worker is free again, well inside
# gunicorn's 30-second worker timeout.
METRIC_PREVIEW_BUDGET_MS = env_int("METRIC_PREVIEW_BUDGET_MS", default=10000, allow_zero=False)
# A recompute with no progress for this long is restarted by the sweep (its worker died).
METRICS_RECOMPUTE_STALL_SECONDS = env_seconds("METRICS_RECOMPUTE_STALL_SECONDS", default=120.0, allow_zero=True)
# Pause between the month chunks of a history recompute, to spare a busy database.
METRICS_RECOMPUTE_THROTTLE_SECONDS = env_seconds("METRICS_RECOMPUTE_THROTTLE_SECONDS", default=0.0, allow_zero=True)

# Ingestion limits (SPEC §3).
INGEST_MAX_BATCH = env_int("INGEST_MAX_BATCH", default=1000, allow_zero=False)
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", default=1024 * 1024, allow_zero=False)
INGEST_MAX_FUTURE_SECONDS = env_int("INGEST_MAX_FUTURE_SECONDS", default=5 * 60, allow_zero=True)
INGEST_MAX_AGE_SECONDS = env_int("INGEST_MAX_AGE_SECONDS", default=35 * 24 * 3600, allow_zero=True)
# Requests per organisation per second; 0 turns the limit off (the embedded default).
INGEST_RATE_LIMIT = env_int("INGEST_RATE_LIMIT", default=0 if EMBEDDED else 1000, allow_zero=True)
# The management API (/api/v1/): requests per organisation per second, a budget of its own; 0: off.
API_RATE_LIMIT = env_int("API_RATE_LIMIT", default=0 if EMBEDDED else 50, allow_zero=True)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(INGEST_MAX_BODY_BYTES * 2, 2621440)

# Request bodies under gunicorn are read before dispatch, under a deadline (zenskar_site/lib/bodies.py):
# REQUEST_BODY_GRACE_SECONDS plus the length at REQUEST_BODY_MIN_BYTES_PER_SECOND, at most
# REQUEST_BODY_TIMEOUT_SECONDS (under gunicorn's 30-second worker timeout). Later is a 408; a body over
# REQUEST_BODY_MAX_BYTES is a 413 unread (the largest upload, a CSV import, is 50 MiB).
REQUEST_BODY_GRACE_SECONDS = env_seconds("REQUEST_BODY_GRACE_SECONDS", default=2.0, allow_zero=True)
REQUEST_BODY_MIN_BYTES_PER_SECOND = env_int("REQUEST_BODY_MIN_BYTES_PER_SECOND", default=16384, allow_zero=False)
REQUEST_BODY_TIMEOUT_SECONDS = env_seconds("REQUEST_BODY_TIMEOUT_SECONDS", default=20.0, allow_zero=False)
REQUEST_BODY_MAX_BYTES = env_int("REQUEST_BODY_MAX_BYTES", default=64 * 1024 * 1024, allow_zero=False)

# The ingestion error log keeps this many days of rejected records.
INGEST_ERROR_RETENTION_DAYS = env_int("INGEST_ERROR_RETENTION_DAYS", default=30, allow_zero=True)

# The ingestion hot path prepares its fixed statements on the server. Turn off behind a pooler in
# transaction mode (PgBouncer), where a prepared statement may not exist on the next connection.
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", default=True)

# API keys: last_used_at is written at most this often per key, keeping auth off the write path.
API_KEY_TOUCH_SECONDS = env_int("API_KEY_TOUCH_SECONDS", default=60, allow_zero=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", default="WARNING", choices=set(logging.getLevelNamesMapping())),
    },
}
