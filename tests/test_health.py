"""The health signal: `manage.py health` and `GET /health` fail when beat's metrics sweep is overdue."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from metrics.models import SweepHeartbeat
from metrics.tasks import metrics_sweep_task

pytestmark = pytest.mark.django_db


def health(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("health", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_health_fails_until_a_sweep_has_run() -> None:
    code, report = health()
    assert code == 1
    assert "the metrics sweep has never run" in report
    assert report.strip().endswith("FAILING")
    response = Client().get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "failing"
    assert response.json()["sweep_age_seconds"] is None


def test_a_sweep_records_its_heartbeat_and_health_passes() -> None:
    before = timezone.now()
    metrics_sweep_task.apply()
    assert SweepHeartbeat.objects.get().finished_at >= before
    code, report = health()
    assert (code, report.strip().splitlines()[-1]) == (0, "OK")
    assert "database: ok" in report
    response = Client().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["problems"] == []
    assert 0 <= body["sweep_age_seconds"] < 5


def test_a_second_sweep_moves_the_heartbeat_on_and_keeps_one_row() -> None:
    metrics_sweep_task.apply()
    first = SweepHeartbeat.objects.get().finished_at
    metrics_sweep_task.apply()
    assert SweepHeartbeat.objects.count() == 1
    assert SweepHeartbeat.objects.get().finished_at >= first


def test_an_overdue_sweep_fails_health_with_its_age(settings: Any) -> None:
    settings.HEALTH_SWEEP_MAX_AGE_SECONDS = 60
    SweepHeartbeat.objects.create(finished_at=timezone.now() - dt.timedelta(seconds=125))
    code, report = health()
    assert code == 1
    assert "the metrics sweep last finished 125 s ago (limit 60 s)" in report
    response = Client().get("/health")
    assert response.status_code == 503
    assert 124 < response.json()["sweep_age_seconds"] < 130
    # A looser limit on the command line passes.
    assert health("--max-sweep-age", "300")[0] == 0
    assert health("--max-sweep-age", "0")[0] == 2


def test_health_is_not_redirected_to_https_for_a_plain_http_probe(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    metrics_sweep_task.apply()
    assert Client().get("/health").status_code == 200
    assert Client().get("/login/").status_code == 301  # the rest of the site still is
