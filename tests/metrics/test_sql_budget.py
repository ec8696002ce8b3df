"""Each organisation's SQL metrics share a budget of evaluation time per minute: past it they are
deferred, not failed, while other organisations' metrics and its own builder metrics go on
(issue 10, item 1)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from metrics import tasks
from metrics.definitions import metric_create
from metrics.engine.budget import sql_budget_window
from metrics.engine.refresh import metric_recompute, metric_values_refresh
from metrics.models import BillableMetric, MetricValue, SqlBudgetCharge
from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.metrics.test_isolation import refresh_and_drain
from tests.metrics.test_worker import not_eager  # noqa: F401 (a fixture, used by name)
from usage.dirty import hours_mark_dirty
from usage.models import DirtyBucket, UsageEvent, UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation

HOUR = (timezone.now() - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
SUM_PER_CUSTOMER = """
    SELECT customer_id, sum(cpu_usage_hours) AS quantity
    FROM compute_hours
    WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }}
    GROUP BY customer_id
"""
# A three-way cross join of the whole event: with a few hundred records, far past 250 ms in every period.
ALWAYS_TIMES_OUT = """
    SELECT a.customer_id, count(*) AS quantity
    FROM compute_hours AS a CROSS JOIN compute_hours AS b CROSS JOIN compute_hours AS c
    WHERE a."timestamp" >= {{ period_start }} AND a."timestamp" < {{ period_end }}
    GROUP BY a.customer_id
"""


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def metric_make(organisation: Organisation, slug: str, **definition: Any) -> BillableMetric:
    """An hourly metric over `compute_hours`, its creation's recompute run here (before any record)."""
    body = {"name": slug, "slug": slug, "granularity": "hour", **definition}
    if "sql" not in definition:
        body.update(usage_event="compute_hours", aggregation="count")
    metric = metric_create(actor=system_actor(organisation=organisation), body=body)
    assert metric_recompute(metric_id=metric.id, version=metric.version)
    return metric


def records_add(usage_event: UsageEvent, count: int) -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=f"c{i % 3}",
            timestamp=HOUR + dt.timedelta(seconds=i),
            data={"cpu_usage_hours": 1},
            content_hash="x",
            received_at=HOUR,
        )
        for i in range(count)
    )
    hours_mark_dirty(usage_event_id=usage_event.id, moments=[HOUR])


def values_of(metric: BillableMetric) -> dict[str, str | None]:
    return {v.customer_id: v.value for v in MetricValue.objects.filter(metric=metric)}


def charged_ms(organisation: Organisation) -> int:
    return SqlBudgetCharge.objects.filter(organisation=organisation).aggregate(total=Sum("milliseconds"))["total"] or 0


@pytest.mark.django_db
@override_settings(METRIC_SQL_BUDGET_MS_PER_MINUTE=1000, METRIC_SQL_TIMEOUT_MS=250)
def test_an_organisation_past_its_sql_budget_is_deferred_and_others_refresh() -> None:
    # Given an organisation with twelve SQL metrics that always time out (3 s of statements unbudgeted)
    # and a builder metric, and another organisation with a SQL metric and a builder metric
    heavy_org, other_org = organisation_make(), organisation_make()
    heavy_event, other_event = usage_event_make(organisation=heavy_org), usage_event_make(organisation=other_org)
    heavy = [metric_make(heavy_org, f"heavy{i}", sql=ALWAYS_TIMES_OUT) for i in range(12)]
    heavy_calls = metric_make(heavy_org, "calls")
    other_sql, other_calls = metric_make(other_org, "cpu", sql=SUM_PER_CUSTOMER), metric_make(other_org, "calls")
    records_add(heavy_event, 300)
    records_add(other_event, 3)

    # When both usage events are refreshed, the heavy one first (and the drains of their SQL metrics run)
    began = time.monotonic()
    refresh_and_drain(heavy_event.id)
    heavy_seconds = time.monotonic() - began
    refresh_and_drain(other_event.id)

    # Then the heavy organisation spent about its budget, not twelve timeouts
    assert charged_ms(heavy_org) <= 1000 + 250, charged_ms(heavy_org)
    assert heavy_seconds < 2.0, heavy_seconds
    # its metrics that ran into their own limit failed, the rest are deferred (not failed) to the next minute
    states = {
        m.slug: (m.recompute_state, m.deferred_until)
        for m in BillableMetric.objects.filter(id__in=[m.id for m in heavy])
    }
    failed = [slug for slug, (state, _) in states.items() if state == "failed"]
    deferred = [slug for slug, (state, until) in states.items() if state == "idle" and until is not None]
    assert 1 <= len(failed) <= 4, states
    assert len(failed) + len(deferred) == 12, states
    _, window_end = sql_budget_window(timezone.now())
    assert {states[slug][1] for slug in deferred} <= {window_end, window_end - dt.timedelta(minutes=1)}
    one_deferred = BillableMetric.objects.get(slug=deferred[-1], organisation=heavy_org)
    assert one_deferred.deferred_ranges == [[iso(HOUR), iso(HOUR + dt.timedelta(hours=1))]]
    assert one_deferred.recompute_error == ""
    # its builder metric and the other organisation's metrics all refreshed
    assert values_of(heavy_calls) == {"c0": "100", "c1": "100", "c2": "100"}
    assert values_of(other_sql) == {"c0": "1", "c1": "1", "c2": "1"}
    assert values_of(other_calls) == {"c0": "1", "c1": "1", "c2": "1"}


@pytest.mark.django_db
@override_settings(METRIC_SQL_BUDGET_MS_PER_MINUTE=1000)
def test_deferred_periods_are_computed_by_the_sweep_once_the_budget_allows(
    organisation: Organisation, compute_hours: UsageEvent, api: APIClient
) -> None:
    # Given an organisation that has used its budget for this minute, with a SQL and a builder metric
    cpu, calls = metric_make(organisation, "cpu", sql=SUM_PER_CUSTOMER), metric_make(organisation, "calls")
    SqlBudgetCharge.objects.create(organisation=organisation, charged_at=timezone.now(), milliseconds=1000)
    records_add(compute_hours, 3)

    # When records arrive: the builder metric refreshes and the SQL metric is deferred, visibly
    metric_values_refresh(usage_event_id=compute_hours.id)
    assert values_of(calls) == {"c0": "1", "c1": "1", "c2": "1"}
    assert values_of(cpu) == {}
    recompute = api.get("/api/v1/metrics/cpu/").json()["recompute"]
    _, window_end = sql_budget_window(timezone.now())
    assert recompute["state"] == "idle"
    assert recompute["deferred_ranges"] == [[iso(HOUR), iso(HOUR + dt.timedelta(hours=1))]]
    assert recompute["deferred_until"] in {iso(window_end), iso(window_end - dt.timedelta(minutes=1))}
    assert not DirtyBucket.objects.exists()  # the hours are consumed: the metric keeps what it owes

    # and a sweep within the same minute leaves it deferred
    tasks.metrics_sweep_task()
    assert values_of(cpu) == {}

    # When the minute has passed (the charge is older than the window, the deferral due)
    SqlBudgetCharge.objects.update(charged_at=timezone.now() - dt.timedelta(minutes=2))
    BillableMetric.objects.filter(id=cpu.id).update(deferred_until=timezone.now() - dt.timedelta(seconds=1))
    tasks.metrics_sweep_task()

    # Then the sweep computes the deferred period, clears the deferral and charges the time
    assert values_of(cpu) == {"c0": "1", "c1": "1", "c2": "1"}
    cleared = BillableMetric.objects.get(id=cpu.id)
    assert (cleared.deferred_ranges, cleared.deferred_until, cleared.recompute_state) == ([], None, "idle")
    assert SqlBudgetCharge.objects.filter(charged_at__gte=timezone.now() - dt.timedelta(minutes=1)).count() == 1


@pytest.mark.django_db
@override_settings(METRIC_SQL_BUDGET_MS_PER_MINUTE=0)
def test_a_budget_of_zero_turns_it_off(organisation: Organisation, compute_hours: UsageEvent) -> None:
    cpu = metric_make(organisation, "cpu", sql=SUM_PER_CUSTOMER)
    SqlBudgetCharge.objects.create(organisation=organisation, charged_at=timezone.now(), milliseconds=10**6)
    records_add(compute_hours, 3)

    refresh_and_drain(compute_hours.id)

    assert values_of(cpu) == {"c0": "1", "c1": "1", "c2": "1"}
    assert SqlBudgetCharge.objects.count() == 1  # nothing charged either


@pytest.mark.django_db
def test_a_deferred_metric_shows_as_deferred_on_the_dashboard(
    organisation: Organisation, compute_hours: UsageEvent, client: Any
) -> None:
    from tests.factories import organisation_admin

    metric = metric_make(organisation, "cpu", sql=SUM_PER_CUSTOMER)
    until = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=30)
    BillableMetric.objects.filter(id=metric.id).update(deferred_until=until, deferred_ranges=[["a", "b"]])
    client.force_login(organisation_admin(organisation))

    page = client.get("/metrics/").content.decode()

    assert "Deferred" in page
    assert f"computed from {until.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" in page


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("not_eager")
def test_on_a_real_worker_an_organisation_with_heavy_sql_metrics_cannot_hold_back_another() -> None:
    from django.test import Client

    from tests.metrics.test_worker import wait_for
    from tests.processes import celery_worker
    from zenskar_site.celery import app

    # Given one worker, an organisation with five SQL metrics that each run far past the budget of a
    # minute (10 s of statements unbudgeted, 2 s each), and another organisation with a count metric
    heavy_org, other_org = organisation_make(), organisation_make()
    heavy_event = usage_event_make(organisation=heavy_org)
    usage_event_make(organisation=other_org)
    heavy = [metric_make(heavy_org, f"heavy{i}", sql=ALWAYS_TIMES_OUT) for i in range(5)]
    other_calls = metric_make(other_org, "calls")
    other_secret = api_key_make(organisation=other_org).secret
    records_add(heavy_event, 300)
    app.control.purge()

    with celery_worker(METRIC_SQL_BUDGET_MS_PER_MINUTE="1000", METRIC_SQL_TIMEOUT_MS="2000"):
        # When the heavy organisation's refresh is queued first, then a record of the other arrives
        tasks.metrics_refresh_task.delay(heavy_event.id)
        time.sleep(0.5)  # the worker has taken the heavy refresh
        began = time.monotonic()
        moment = iso(timezone.now() - dt.timedelta(minutes=5))
        response = Client().post(
            "/usage/compute_hours",
            data=f'{{"customer_id": "x", "timestamp": "{moment}", "data": {{"cpu_usage_hours": 1}}}}',
            content_type="application/json",
            HTTP_X_API_KEY=other_secret,
        )
        assert response.status_code == 202

        # Then the other organisation's value is stored within about the heavy one's budget
        assert wait_for(lambda: values_of(other_calls) == {"x": "1"}, 5), values_of(other_calls)
        waited = time.monotonic() - began
        # and the heavy organisation's metrics are deferred, none failed, its spending held to the budget
        assert wait_for(
            lambda: (
                BillableMetric.objects.filter(id__in=[m.id for m in heavy], deferred_until__isnull=False).count() == 5
            ),
            5,
        )
    assert waited < 4, waited
    assert not BillableMetric.objects.filter(recompute_state="failed").exists()
    assert charged_ms(heavy_org) <= 1000 + 300, charged_ms(heavy_org)
