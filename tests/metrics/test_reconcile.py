"""reconcile_metrics reports a metric it could not compute and goes on with the others (issue 10, finding 8)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from rest_framework.test import APIClient

from usage.models import UsageEvent, UsageRecord

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
CROSS_JOIN = """
    SELECT a.customer_id, count(*) AS quantity
    FROM compute_hours AS a CROSS JOIN compute_hours AS b CROSS JOIN compute_hours AS c
    GROUP BY a.customer_id
"""


@pytest.mark.django_db
def test_a_metric_past_its_time_limit_is_reported_and_the_others_are_still_checked(
    api: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a SQL metric whose query takes seconds, created before a builder metric whose values are stored
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=compute_hours,
            customer_id=f"cus_{i % 3}",
            timestamp=START + dt.timedelta(seconds=i),
            data={"cpu_usage_hours": 1.0},
            content_hash="x",
            received_at=START,
        )
        for i in range(250)
    )
    heavy = {"name": "Heavy", "slug": "heavy", "sql": CROSS_JOIN, "granularity": "day"}
    assert api.post("/api/v1/metrics/", heavy, format="json").status_code == 201
    builder = {"name": "CPU", "slug": "cpu", "usage_event": "compute_hours", "aggregation": "count"}
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/metrics/", {**builder, "granularity": "day"}, format="json").status_code == 201
    out = io.StringIO()

    # When the values are reconciled with a time limit the heavy query cannot meet
    with override_settings(METRIC_SQL_TIMEOUT_MS=200), pytest.raises(SystemExit) as exited:
        call_command("reconcile_metrics", stdout=out)

    # Then the heavy metric is reported as not computed, the builder metric is still checked, and it exits 1
    assert exited.value.code == 1
    assert out.getvalue().splitlines() == [
        "[1/2] heavy: could not compute: sql: The query was stopped after 200 ms.",
        "[2/2] cpu: 3 values checked",  # one per customer,
        "0 difference(s)",
        "1 metric(s) could not be computed",
    ]
