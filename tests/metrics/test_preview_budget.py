"""A metric preview is bounded: one time budget for checking, compiling and every period, and queries
too large to check cheaply are refused before any work (issue 10, item 2)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from metrics.models import BillableMetric
from usage.models import UsageEvent, UsageRecord

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

# Heavy in every period whatever the period holds: a three-way cross join of the whole event.
HEAVY_EVERY_PERIOD = """
    SELECT a.customer_id, count(*) AS quantity
    FROM compute_hours AS a CROSS JOIN compute_hours AS b CROSS JOIN compute_hours AS c
    WHERE b."timestamp" < {{ period_end }}
    GROUP BY a.customer_id
"""


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def records_make(usage_event: UsageEvent, count: int) -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=f"cus_{i % 7}",
            timestamp=START + dt.timedelta(minutes=i),
            data={"cpu_usage_hours": 1.0},
            content_hash="x",
            received_at=START,
        )
        for i in range(count)
    )


def many_with_queries(count: int) -> str:
    chain = ["q0 AS (SELECT customer_id, cpu_usage_hours AS quantity FROM compute_hours)"]
    chain += [f"q{i} AS (SELECT * FROM q{i - 1})" for i in range(1, count)]
    return "WITH " + ", ".join(chain) + f" SELECT customer_id, sum(quantity) AS quantity FROM q{count - 1} GROUP BY 1"


@pytest.mark.django_db
@override_settings(METRIC_PREVIEW_BUDGET_MS=1500, METRIC_SQL_TIMEOUT_MS=20000)
def test_a_preview_heavy_in_every_period_stops_at_its_budget_with_a_400(
    api: APIClient, compute_hours: UsageEvent
) -> None:
    # Given records that make the query take a noticeable time in each of 60 daily periods (each period
    # well inside the per-statement limit, so only a budget for the whole preview can stop it)
    records_make(compute_hours, 120)
    body = {
        "sql": HEAVY_EVERY_PERIOD,
        "granularity": "day",
        "start": iso(START),
        "end": iso(START + dt.timedelta(days=60)),
    }

    # When the unsaved definition is previewed
    began = time.monotonic()
    response = api.post("/api/v1/metrics/preview/", body, format="json")
    elapsed = time.monotonic() - began

    # Then it is refused with the budget named, soon after the budget ran out, and nothing was stored
    assert response.status_code == 400, (response.status_code, elapsed)
    message = response.json()["errors"]["end"][0]
    assert message.startswith("The preview took longer than its budget of 1500 ms and was stopped after "), message
    assert message.endswith(" of 60 day periods: preview a shorter window, or make the query cheaper."), message
    assert elapsed < 1.5 + 1.5, elapsed
    assert not BillableMetric.objects.exists()


@pytest.mark.django_db
@override_settings(METRIC_PREVIEW_BUDGET_MS=1500, METRIC_SQL_TIMEOUT_MS=20000)
def test_a_saved_metric_preview_has_the_same_budget(api: APIClient, compute_hours: UsageEvent) -> None:
    records_make(compute_hours, 120)
    created = api.post(
        "/api/v1/metrics/",
        {"name": "Heavy", "slug": "heavy", "sql": HEAVY_EVERY_PERIOD, "granularity": "day"},
        format="json",
    )
    assert created.status_code == 201, created.json()

    began = time.monotonic()
    response = api.post(
        "/api/v1/metrics/heavy/preview/",
        {"start": iso(START), "end": iso(START + dt.timedelta(days=60))},
        format="json",
    )

    assert response.status_code == 400, response.status_code
    assert "longer than its budget of 1500 ms" in response.json()["errors"]["end"][0]
    assert time.monotonic() - began < 3


@pytest.mark.django_db
def test_a_preview_within_its_budget_answers_every_period(api: APIClient, compute_hours: UsageEvent) -> None:
    records_make(compute_hours, 3)
    body = {
        "sql": "SELECT customer_id, count(*) AS quantity FROM compute_hours "
        'WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }} GROUP BY customer_id',
        "granularity": "day",
        "start": iso(START),
        "end": iso(START + dt.timedelta(days=14)),
    }

    response = api.post("/api/v1/metrics/preview/", body, format="json")

    assert response.status_code == 200, response.json()
    assert [(v["customer_id"], v["value"]) for v in response.json()["values"]] == [
        ("cus_0", "1"),
        ("cus_1", "1"),
        ("cus_2", "1"),
    ]


@pytest.mark.django_db
def test_a_query_of_five_hundred_with_queries_is_refused_before_it_is_checked(
    api: APIClient, compute_hours: UsageEvent
) -> None:
    sql = many_with_queries(500)
    assert len(sql) < 20_000  # within the length limit: only the size checks refuse it
    body = {"sql": sql, "granularity": "day", "start": iso(START), "end": iso(START + dt.timedelta(days=14))}

    began = time.monotonic()
    preview = api.post("/api/v1/metrics/preview/", body, format="json")
    created = api.post("/api/v1/metrics/", {"name": "Chain", "slug": "chain", "sql": sql}, format="json")

    assert preview.status_code == 400
    assert preview.json()["errors"]["sql"] == ["The query is too large: more than 3000 syntax elements."]
    assert created.status_code == 400
    assert created.json()["errors"]["sql"] == ["The query is too large: more than 3000 syntax elements."]
    assert time.monotonic() - began < 2
    assert not BillableMetric.objects.exists()


@pytest.mark.django_db
def test_more_with_queries_than_the_limit_are_refused_with_their_count(
    api: APIClient, compute_hours: UsageEvent
) -> None:
    response = api.post(
        "/api/v1/metrics/", {"name": "Chain", "slug": "chain", "sql": many_with_queries(31)}, format="json"
    )
    within = api.post(
        "/api/v1/metrics/", {"name": "Chain", "slug": "chain", "sql": many_with_queries(30)}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["errors"]["sql"] == ["The query defines 31 WITH queries; at most 30 are allowed."]
    assert within.status_code == 201, within.json()


@pytest.mark.django_db
def test_more_table_references_than_the_limit_are_refused(api: APIClient, compute_hours: UsageEvent) -> None:
    sql = " UNION ALL ".join("SELECT customer_id, 1 AS quantity FROM compute_hours" for _ in range(61))

    response = api.post("/api/v1/metrics/", {"name": "Wide", "slug": "wide", "sql": sql}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"]["sql"] == ["The query reads 61 tables; at most 60 table references are allowed."]
