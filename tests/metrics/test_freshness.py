"""Freshness beside a SQL metric that always times out (SPEC §5: an accepted record is reflected in
every metric over its usage event within 2 seconds, p95), with real processes: gunicorn, a prefork
Celery worker with beat, PostgreSQL and Redis, and the SQL time limit at its production default.

`make bench` (bench/aggregate.py, phase b) measures the same scenario under a 500 records/s stream
with the strict 2 s target; this test keeps the behaviour: the count metrics keep up.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.utils import timezone

from metrics.definitions import metric_create
from metrics.models import BillableMetric, MetricValue
from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.metrics.test_isolation import metric_make
from tests.processes import celery_worker_with_beat, gunicorn_server, http_post
from usage.models import UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.celery import app

PROBES = 20
PROBE_EVERY = 1.0  # seconds between probes: 20 probes span the creation's recompute and the first retry
PROBE_TIMEOUT = 15.0
# Looser than SPEC's 2 s: this runs beside other suites on a shared 2-core machine, where a refresh
# waits for a core now and then. A metric that holds the count metrics back for its SQL time limit
# (5 s) still fails it; the strict 2 s figure is `make bench`'s.
P95_BOUND = 4.0
# Every record of the period paired with every pair of the usage event's records: with a few thousand
# records no SQL time limit lets it finish.
ALWAYS_TIMES_OUT = """
    SELECT a.customer_id, count(*) AS quantity
    FROM compute_hours AS a CROSS JOIN compute_hours AS b CROSS JOIN compute_hours AS c
    WHERE a."timestamp" >= {{ period_start }} AND a."timestamp" < {{ period_end }}
    GROUP BY a.customer_id
"""


@pytest.fixture
def not_eager() -> Iterator[None]:
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        yield
    finally:
        app.conf.task_always_eager = eager


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("not_eager")
def test_count_metrics_stay_fresh_beside_a_sql_metric_that_always_times_out() -> None:
    assert settings.METRIC_SQL_TIMEOUT_MS == 5000  # the production default, as the scenario needs
    # Given a usage event with a count metric and enough history that a cubic SQL metric cannot finish,
    # and another organisation's count metric
    organisation, other = organisation_make(), organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    usage_event_make(organisation=other)
    hour = (timezone.now() - dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=f"c{i % 5}",
            timestamp=hour + dt.timedelta(seconds=i),
            data={"cpu_usage_hours": 1},
            content_hash="x",
            received_at=hour,
        )
        for i in range(3000)
    )
    calls, other_calls = metric_make(organisation, "calls"), metric_make(other, "calls")
    secrets = {
        calls.id: api_key_make(organisation=organisation).secret,
        other_calls.id: api_key_make(organisation=other).secret,
    }
    app.control.purge()

    with gunicorn_server(workers=2) as url, celery_worker_with_beat():
        # When a user adds the SQL metric whose query always times out (its recompute is enqueued)
        stuck = metric_create(
            actor=system_actor(organisation=organisation),
            body={"name": "Stuck", "slug": "stuck", "granularity": "hour", "sql": ALWAYS_TIMES_OUT},
        )
        created = time.monotonic()

        # and records keep arriving for both organisations, one probe a second each
        latencies: dict[int, list[float]] = {calls.id: [], other_calls.id: []}
        pending: dict[tuple[int, str], float] = {}
        n = 0
        while n < PROBES or pending:
            if n < PROBES and time.monotonic() >= created + n * PROBE_EVERY:
                n += 1
                for metric_id, secret in secrets.items():
                    customer = f"probe{n}"
                    record = {
                        "customer_id": customer,
                        "timestamp": timezone.now().isoformat(),
                        "data": {"cpu_usage_hours": 1},
                    }
                    status, body = http_post(
                        f"{url}/usage/compute_hours",
                        json.dumps(record).encode(),
                        {"x-api-key": secret, "Content-Type": "application/json"},
                    )
                    assert status == 202, body
                    pending[(metric_id, customer)] = time.monotonic()
            landed = set(
                MetricValue.objects.filter(
                    metric_id__in=list(latencies), customer_id__in=[c for _, c in pending]
                ).values_list("metric_id", "customer_id")
            )
            now = time.monotonic()
            for key, acknowledged in list(pending.items()):
                if key in landed:
                    latencies[key[0]].append(now - acknowledged)
                elif now - acknowledged > PROBE_TIMEOUT:
                    latencies[key[0]].append(math.inf)
                else:
                    continue
                del pending[key]
            time.sleep(0.02)
        stuck.refresh_from_db()

    # Then the SQL metric has timed out and failed (the scenario happened)
    assert stuck.recompute_failures >= 1, (stuck.recompute_state, stuck.recompute_error)
    assert stuck.recompute_error == "sql: The query was stopped after 5000 ms."
    # and every probe reached the other organisation's count metric, p95 within the bound
    figures = {name: sorted(latencies[m.id]) for name, m in (("same", calls), ("other", other_calls))}
    assert not any(math.isinf(v) for v in figures["other"]), figures
    assert p95(figures["other"]) <= P95_BOUND, figures
    # and every probe reached the count metric of the same usage event, p95 within the bound: the SQL
    # metric's recompute and drains hold only its own lock, and refreshes defer it rather than wait
    print(
        f"freshness p95: same usage event {p95(figures['same']):.2f} s, other organisation {p95(figures['other']):.2f} s"
    )
    assert not any(math.isinf(v) for v in figures["same"]), figures
    assert p95(figures["same"]) <= P95_BOUND, figures
    assert BillableMetric.objects.get(id=calls.id).recompute_state == "idle"
