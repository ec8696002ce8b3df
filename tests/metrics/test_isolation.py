"""One failing metric fails alone: the other metrics of its usage event, and the sweep's other usage
events, still update; the failed metric is retried with backoff and comes back by itself."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, NoReturn

import pytest
from django.test import Client, TestCase
from django.utils import timezone

from metrics import tasks
from metrics.definitions import metric_create
from metrics.engine.compute import metric_compute
from metrics.engine.refresh import metric_recompute, metric_values_refresh
from metrics.models import BillableMetric, MetricValue
from metrics.sandbox import SandboxError
from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.metrics.test_worker import not_eager, wait_for  # noqa: F401 (not_eager: a fixture, used by name)
from tests.processes import celery_worker
from usage.dirty import hours_mark_dirty
from usage.models import DirtyBucket, UsageEvent, UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Organisation
from zenskar_site.celery import app

HOUR = (timezone.now() - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
SUM_PER_CUSTOMER = """
    SELECT customer_id, sum(cpu_usage_hours) AS quantity
    FROM compute_hours
    WHERE "timestamp" >= {{ period_start }} AND "timestamp" < {{ period_end }}
    GROUP BY customer_id
"""
# Every record of the period paired with every record of the usage event: quadratic, so with a few
# thousand records it runs far past a time limit of 200 ms.
PAIRS_PER_CUSTOMER = """
    SELECT a.customer_id, count(*) AS quantity
    FROM compute_hours AS a CROSS JOIN compute_hours AS b
    WHERE a."timestamp" >= {{ period_start }} AND a."timestamp" < {{ period_end }}
    GROUP BY a.customer_id
"""


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def metric_make(organisation: Organisation, slug: str, **definition: Any) -> BillableMetric:
    """A metric over `compute_hours`, hourly, with its creation's recompute run (to IDLE) here and now."""
    body = {"name": slug, "slug": slug, "granularity": "hour", **definition}
    if "sql" not in definition:
        body.update(usage_event="compute_hours", aggregation="count")
    metric = metric_create(actor=system_actor(organisation=organisation), body=body)
    assert metric_recompute(metric_id=metric.id, version=metric.version)
    return metric


def refresh_and_drain(usage_event_id: int) -> int:
    """A refresh, then the drains it enqueues after its commit (a SQL metric's periods are deferred by
    the refresh and computed by its drain task), as a worker runs them: the test's own transaction
    never commits, so its commit callbacks are run here."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return metric_values_refresh(usage_event_id=usage_event_id)


def sql_fails(message: str) -> Any:
    """A stand-in for `metrics.sandbox.sql_metric_execute` that raises as a failing query does."""

    def execute(**kwargs: Any) -> NoReturn:
        raise SandboxError({"sql": [message]})

    return execute


def send(secret: str, records: list[tuple[str, float, float]]) -> None:
    """(customer, minutes after HOUR, cpu hours) through the ingestion endpoint, as a client sends them."""
    body = [
        {
            "customer_id": customer,
            "timestamp": iso(HOUR + dt.timedelta(minutes=minutes)),
            "data": {"cpu_usage_hours": hours},
        }
        for customer, minutes, hours in records
    ]
    response = Client().post(
        "/usage/compute_hours?backfill=true",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_X_API_KEY=secret,
    )
    assert response.status_code == 202, response.content


def values_of(metric: BillableMetric) -> dict[tuple[str, str, str], str | None]:
    return {
        (v.customer_id, iso(v.period_start), v.dimension_key): v.computed_value
        for v in MetricValue.objects.filter(metric=metric)
    }


def fresh_values(
    metric: BillableMetric, start: dt.datetime, end: dt.datetime
) -> dict[tuple[str, str, str], str | None]:
    return {
        (c.customer_id, iso(c.period_start), c.dimension_key): c.value
        for c in metric_compute(metric=BillableMetric.objects.get(id=metric.id), start=start, end=end)
    }


def test_a_failing_sql_metric_fails_alone_and_comes_back_once_its_cause_is_gone(
    organisation: Organisation, compute_hours: UsageEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a count metric and a SQL metric over one usage event, whose SQL starts failing
    secret = api_key_make(organisation=organisation).secret
    calls = metric_make(organisation, "calls")
    cpu = metric_make(organisation, "cpu_sql", sql=SUM_PER_CUSTOMER)
    attempts: list[dict[str, Any]] = []
    failing = sql_fails("The query failed: division by zero")

    def query_fails(**kwargs: Any) -> NoReturn:
        attempts.append(kwargs)
        failing(**kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("metrics.sandbox.sql_metric_execute", query_fails)

        # When records arrive and the usage event is refreshed (the SQL metric by its drain)
        send(secret, [("a", 5, 1.5), ("a", 10, 2.25), ("b", 65, 4)])
        refresh_and_drain(compute_hours.id)

        # Then the count metric is fresh, the hours are cleared, and the SQL metric alone has failed
        assert values_of(calls) == {("a", iso(HOUR), ""): "2", ("b", iso(HOUR + dt.timedelta(hours=1)), ""): "1"}
        assert not DirtyBucket.objects.exists()
        failed = BillableMetric.objects.get(id=cpu.id)
        assert (failed.recompute_state, failed.recompute_error, failed.recompute_failures) == (
            "failed",
            "sql: The query failed: division by zero",
            1,
        )
        assert failed.recompute_retry_at is not None
        assert 5 < (failed.recompute_retry_at - timezone.now()).total_seconds() <= 10
        assert values_of(cpu) == {}
        assert AuditEntry.objects.filter(action="metric.fail", object_id="cpu_sql").count() == 1

        # and while it waits for its retry, refreshes leave it alone and the count metric goes on
        send(secret, [("a", 20, 0.5)])
        refresh_and_drain(compute_hours.id)
        tasks.metrics_sweep_task()  # its retry time has not come
        assert values_of(calls)[("a", iso(HOUR), "")] == "3"
        assert len(attempts) == 1
        assert BillableMetric.objects.get(id=cpu.id).recompute_state == "failed"

    # When the cause is gone and the retry time has passed, the sweep retries it
    BillableMetric.objects.filter(id=cpu.id).update(recompute_retry_at=timezone.now() - dt.timedelta(seconds=1))
    tasks.metrics_sweep_task()

    # Then it is up to date again, with every value a fresh computation gives
    recovered = BillableMetric.objects.get(id=cpu.id)
    assert (
        recovered.recompute_state,
        recovered.recompute_error,
        recovered.recompute_failures,
        recovered.recompute_retry_at,
    ) == ("idle", "", 0, None)
    assert values_of(cpu) == fresh_values(cpu, HOUR, HOUR + dt.timedelta(hours=2))
    assert values_of(cpu) == {("a", iso(HOUR), ""): "4.25", ("b", iso(HOUR + dt.timedelta(hours=1)), ""): "4"}
    assert AuditEntry.objects.filter(action="metric.recover", object_id="cpu_sql").count() == 1
    assert AuditEntry.objects.filter(action="metric.fail", object_id="cpu_sql").count() == 1


def test_a_metric_that_keeps_failing_is_retried_later_each_time_and_shown_in_the_api(
    organisation: Organisation, compute_hours: UsageEvent, monkeypatch: pytest.MonkeyPatch, api: Any
) -> None:
    secret = api_key_make(organisation=organisation).secret
    cpu = metric_make(organisation, "cpu_sql", sql=SUM_PER_CUSTOMER)
    monkeypatch.setattr("metrics.sandbox.sql_metric_execute", sql_fails("The query was stopped after 5000 ms."))
    send(secret, [("a", 5, 1.5)])
    refresh_and_drain(compute_hours.id)

    waits = []
    for _ in range(8):
        BillableMetric.objects.filter(id=cpu.id).update(recompute_retry_at=timezone.now() - dt.timedelta(seconds=1))
        tasks.metrics_sweep_task()
        metric = BillableMetric.objects.get(id=cpu.id)
        assert metric.recompute_state == "failed"
        assert metric.recompute_retry_at is not None
        waits.append(round((metric.recompute_retry_at - timezone.now()).total_seconds() / 10) * 10)

    assert waits == [20, 40, 80, 160, 320, 600, 600, 600]
    assert AuditEntry.objects.filter(action="metric.fail", object_id="cpu_sql").count() == 1
    recompute = api.get("/api/v1/metrics/cpu_sql/").json()["recompute"]
    assert recompute["state"] == "failed"
    assert recompute["error"] == "sql: The query was stopped after 5000 ms."
    assert recompute["failures"] == 9
    assert recompute["retry_at"] == iso(metric.recompute_retry_at)


def test_a_definition_change_clears_a_failure(
    organisation: Organisation,
    compute_hours: UsageEvent,
    monkeypatch: pytest.MonkeyPatch,
    api: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    secret = api_key_make(organisation=organisation).secret
    metric_make(organisation, "cpu_sql", sql=SUM_PER_CUSTOMER)
    with monkeypatch.context() as patch:
        patch.setattr("metrics.sandbox.sql_metric_execute", sql_fails("The query failed: division by zero"))
        send(secret, [("a", 5, 1.5), ("b", 10, 2)])
        refresh_and_drain(compute_hours.id)
    assert BillableMetric.objects.get(slug="cpu_sql").recompute_state == "failed"

    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch("/api/v1/metrics/cpu_sql/", {"sql": SUM_PER_CUSTOMER.replace("sum", "max")}, format="json")

    assert response.status_code == 200, response.content
    fixed = BillableMetric.objects.get(slug="cpu_sql")
    assert (fixed.version, fixed.recompute_state, fixed.recompute_error, fixed.recompute_failures) == (2, "idle", "", 0)
    assert values_of(fixed) == {("a", iso(HOUR), ""): "1.5", ("b", iso(HOUR), ""): "2"}
    assert api.get("/api/v1/metrics/cpu_sql/").json()["recompute"]["retry_at"] is None
    assert AuditEntry.objects.filter(action="metric.recover", object_id="cpu_sql").count() == 1


@pytest.mark.django_db
def test_a_sweep_still_refreshes_the_next_usage_event_when_one_refresh_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two organisations, each with a count metric over its own usage event, both with new records
    first_organisation, second_organisation = organisation_make(), organisation_make()
    first, second = (usage_event_make(organisation=o) for o in (first_organisation, second_organisation))
    assert first.id < second.id  # the sweep takes usage events in id order
    metric_make(first_organisation, "calls")
    second_calls = metric_make(second_organisation, "calls")
    for organisation in (first_organisation, second_organisation):
        send(api_key_make(organisation=organisation).secret, [("a", 5, 1), ("a", 6, 1)])
    DirtyBucket.objects.update(created_at=timezone.now() - dt.timedelta(seconds=5))  # their prompt task was lost
    refresh = tasks.metric_values_refresh

    def first_raises(*, usage_event_id: int, **kwargs: Any) -> int:
        if usage_event_id == first.id:
            raise RuntimeError("server closed the connection unexpectedly")
        return refresh(usage_event_id=usage_event_id, **kwargs)

    monkeypatch.setattr(tasks, "metric_values_refresh", first_raises)

    # When the sweep runs and the first usage event's refresh raises
    processed = tasks.metrics_sweep_task()

    # Then the second one is refreshed all the same, and the first keeps its hours for the next sweep
    assert processed == 1
    assert values_of(second_calls) == {("a", iso(HOUR), ""): "2"}
    assert list(DirtyBucket.objects.values_list("usage_event_id", flat=True)) == [first.id]
    assert f"usage event {first.id}" in caplog.text
    assert "server closed the connection unexpectedly" in caplog.text


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("not_eager")
def test_a_sql_metric_that_times_out_holds_back_no_count_metric() -> None:
    # Given a usage event with a count metric and a SQL metric whose query is quadratic, and another
    # organisation's count metric
    organisation, other = organisation_make(), organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    usage_event_make(organisation=other)
    calls = metric_make(organisation, "calls")
    pairs = metric_make(organisation, "pairs", sql=PAIRS_PER_CUSTOMER)
    other_calls = metric_make(other, "calls")
    secret, other_secret = (api_key_make(organisation=o).secret for o in (organisation, other))
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=f"c{i % 5}",
            timestamp=HOUR + dt.timedelta(seconds=i / 2),
            data={"cpu_usage_hours": 1},
            content_hash="x",
            received_at=HOUR,
        )
        for i in range(4000)
    )
    hours_mark_dirty(usage_event_id=usage_event.id, moments=[HOUR])
    app.control.purge()  # the creations' recomputes ran above; the worker starts from the dirty hours

    def total(metric: BillableMetric) -> int:
        return sum(int(v or 0) for v in values_of(metric).values())

    with celery_worker(METRIC_SQL_TIMEOUT_MS="200"):
        # When records arrive for both organisations (and beat sweeps, as it does every 2 seconds)
        send(secret, [("a", 30, 1)])
        send(other_secret, [("a", 30, 1)])
        tasks.metrics_sweep_task.delay()

        # Then both count metrics reflect them within seconds, while the SQL metric has failed alone
        assert wait_for(lambda: (total(calls), total(other_calls)) == (4001, 1), 10), (total(calls), total(other_calls))
        assert wait_for(lambda: BillableMetric.objects.get(id=pairs.id).recompute_state == "failed", 10)
        assert BillableMetric.objects.get(id=pairs.id).recompute_error == "sql: The query was stopped after 200 ms."
        failure = AuditEntry.objects.get(action="metric.fail", object_id="pairs")
        assert failure.before == {"version": 1, "recompute_state": "idle"}  # it failed in a refresh

        # and records that arrive after it are reflected in both within a few seconds
        send(secret, [("b", 31, 1)])
        send(other_secret, [("b", 31, 1)])
        tasks.metrics_sweep_task.delay()
        assert wait_for(lambda: (total(calls), total(other_calls)) == (4002, 2), 5), (total(calls), total(other_calls))
    assert BillableMetric.objects.get(id=calls.id).recompute_state == "idle"
