"""Settings are read from the environment strictly: a malformed value stops the start, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each test starts its own process with its own environment: the test database plays no part, so once is enough.
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_ENV = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "k" * 20 + "-a-production-secret-of-more-than-fifty-characters",
    "ALLOWED_HOSTS": "metering.example.com",
}
PRINT_SETTING = "import django; django.setup(); from django.conf import settings; print(repr(settings.{}))"


def django_setup(code: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """`django.setup()` (then `code`) in a fresh interpreter whose environment holds only `env`."""
    return subprocess.run(
        [sys.executable, "-c", code or "import django; django.setup()"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "zenskar_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def setting_read(expression: str, **env: str) -> str:
    result = django_setup(PRINT_SETTING.format(expression), **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("name", "value", "mode"),
    [
        # booleans: a typo is not False
        ("DEBUG", "ture", {}),
        ("CELERY_EAGER", "2", {}),
        ("DB_PREPARED_STATEMENTS", "maybe", {}),
        ("SECURE_SSL_REDIRECT", "enabled", PRODUCTION_ENV),
        # whole numbers
        ("INGEST_MAX_BATCH", "abc", {}),
        ("INGEST_MAX_BODY_BYTES", "1.5", {}),
        ("CONN_MAX_AGE", "forever", PRODUCTION_ENV),
        ("SECURE_HSTS_SECONDS", "1y", PRODUCTION_ENV),
        # a negative or zero number where a positive one is needed
        ("INGEST_MAX_BATCH", "0", {}),
        ("INGEST_RATE_LIMIT", "-1", {}),
        ("METRIC_SQL_TIMEOUT_MS", "0", {}),
        # seconds: garbage, negative, zero where it must be positive, not finite
        ("METRICS_SWEEP_SECONDS", "-", {}),
        ("METRICS_SWEEP_SECONDS", "-2", {}),
        ("METRICS_SWEEP_SECONDS", "0", {}),
        ("CSV_IMPORT_STALL_SECONDS", "nan", {}),
        ("METRICS_REFRESH_DEBOUNCE_SECONDS", "quarter", {}),
        # a choice
        ("LOG_LEVEL", "loud", {}),
    ],
)
def test_a_malformed_value_stops_the_start_naming_its_variable(name: str, value: str, mode: dict[str, str]) -> None:
    result = django_setup(**{**mode, name: value})

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"django.core.exceptions.ImproperlyConfigured: {name} must be "), result.stderr
    assert repr(value) in last_line


def test_a_malformed_database_url_is_named_without_echoing_the_url() -> None:
    result = django_setup(**{**PRODUCTION_ENV, "DATABASE_URL": "postgress://user:hunter2@db/metering"})

    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_well_formed_value_is_read() -> None:
    assert setting_read("INGEST_MAX_BATCH", INGEST_MAX_BATCH="7") == "7"
    assert setting_read("CELERY_TASK_ALWAYS_EAGER", CELERY_EAGER=" Yes ") == "True"
    assert setting_read("CELERY_BEAT_SCHEDULE['metrics-sweep']['schedule']", METRICS_SWEEP_SECONDS="0.5") == "0.5"
    assert setting_read("CELERY_BEAT_SCHEDULE['drafts-reconcile']['schedule']") == "3600.0"
    assert setting_read("CELERY_BEAT_SCHEDULE['drafts-reconcile']['schedule']", DRAFTS_RECONCILE_SECONDS="60") == "60.0"
    assert setting_read("METRICS_RECOMPUTE_THROTTLE_SECONDS", METRICS_RECOMPUTE_THROTTLE_SECONDS="0") == "0.0"
    assert (
        setting_read("METRICS_RECOMPUTE_STALL_SECONDS", METRICS_RECOMPUTE_STALL_SECONDS="0") == "0.0"
    )  # restart at once
    assert setting_read("ALLOWED_HOSTS", ALLOWED_HOSTS=" a.example, ,b.example ") == "['a.example', 'b.example']"
    assert setting_read("SECURE_HSTS_SECONDS", **PRODUCTION_ENV, SECURE_HSTS_SECONDS="0") == "0"


def test_an_unset_or_empty_variable_takes_its_default() -> None:
    assert setting_read("INGEST_MAX_BATCH") == "1000"
    assert setting_read("INGEST_MAX_BATCH", INGEST_MAX_BATCH="") == "1000"
    assert setting_read("DEBUG", DEBUG="") == "True"
    assert setting_read("INGEST_RATE_LIMIT", **PRODUCTION_ENV) == "1000"
    assert setting_read("DATABASES['default']['CONN_MAX_AGE']", **PRODUCTION_ENV) == "60"


def test_the_embedded_broker_keeps_its_exchange_tables_under_data_dir(tmp_path: Path) -> None:
    """Not in a `control/` folder of the working directory, which `make run` used to leave in the checkout."""
    options = setting_read("CELERY_BROKER_TRANSPORT_OPTIONS", DATA_DIR=str(tmp_path))

    assert f"'control_folder': '{tmp_path / 'broker-control'}'" in options
