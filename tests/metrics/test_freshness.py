"""Freshness beside a SQL metric that always times out (SPEC §5: an accepted record is reflected in
every metric over its usage event within 2 seconds, p95), with real processes: gunicorn, a prefork
Celery worker with beat, PostgreSQL and Redis, and the SQL time limit at its production default.

It loads the deployment as `make bench` (bench/aggregate.py, phase b) does: a steady stream of records
into the usage event with the timing-out SQL metric while probes measure, from each 202, the time
until the record's value is in the count metric of that usage event and in another organisation's
count metric. A probe not reflected after PROBE_TIMEOUT counts as infinitely late, so the p95
includes it. Every refresh of the streamed usage event defers the SQL metric's periods; if each of
them enqueued its own drain (up to a SQL time limit each), the drains would fill both worker
processes and the other organisation's refreshes would wait in the queue behind them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
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

PROBES = 40
PROBE_EVERY = 0.5  # seconds between probes: 20 s span the creation's recompute and the first retries
PROBE_TIMEOUT = 10.0
# The stream into the usage event with the SQL metric: a batch every STREAM_EVERY seconds.
STREAM_BATCH = 20
STREAM_EVERY = 0.1
# SPEC's target, for the other organisation: nothing of another tenant may hold its metrics back.
P95_OTHER = 2.0
# The count metric beside the SQL metric shares its usage event's refreshes with the stream's records;
# on a shared 2-core machine a refresh waits for a core now and then. A SQL metric that held it back
# for its time limit (5 s) would still fail this.
P95_SAME = 3.0
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
            # by day: its recompute reaches the period that times out after a month's 31 queries, not 720
            body={"name": "Stuck", "slug": "stuck", "granularity": "day", "sql": ALWAYS_TIMES_OUT},
        )
        created = time.monotonic()
        # and records stream into its usage event,
        stop, streamed, refused = threading.Event(), [0], [0]

        def stream() -> None:
            i = 0
            while not stop.is_set():
                now = timezone.now().isoformat()
                batch = [
                    {"customer_id": f"s{(i + n) % 50}", "timestamp": now, "data": {"cpu_usage_hours": 1}}
                    for n in range(STREAM_BATCH)
                ]
                status, _ = http_post(
                    f"{url}/usage/compute_hours",
                    json.dumps(batch).encode(),
                    {"x-api-key": secrets[calls.id], "Content-Type": "application/json"},
                )
                if status == 202:
                    streamed[0] += STREAM_BATCH
                else:
                    refused[0] += 1
                i += STREAM_BATCH
                stop.wait(STREAM_EVERY)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()

        # while probe records arrive for both organisations, one each every PROBE_EVERY seconds
        latencies: dict[int, list[float]] = {calls.id: [], other_calls.id: []}
        timeline: dict[int, list[str]] = {calls.id: [], other_calls.id: []}  # sent at: latency, for the record
        pending: dict[tuple[int, str], float] = {}
        n = 0
        try:
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
                    timeline[key[0]].append(f"{acknowledged - created:.1f}:{latencies[key[0]][-1]:.1f}")
                    del pending[key]
                time.sleep(0.02)
        finally:
            stop.set()
            streamer.join(15)
        stuck.refresh_from_db()

    figures = {name: sorted(latencies[m.id]) for name, m in (("same", calls), ("other", other_calls))}
    print(
        f"freshness p95 under a stream of {streamed[0]} records: other organisation {p95(figures['other']):.2f} s, "
        f"same usage event {p95(figures['same']):.2f} s; timed out: "
        f"{sum(map(math.isinf, figures['other']))} and {sum(map(math.isinf, figures['same']))} of {PROBES}; "
        f"(sent at: latency) other {timeline[other_calls.id]}, same {timeline[calls.id]}"
    )
    # Then the SQL metric has timed out and failed (the scenario happened), and the stream was accepted
    assert stuck.recompute_failures >= 1, (stuck.recompute_state, stuck.recompute_error)
    assert stuck.recompute_error == "sql: The query was stopped after 5000 ms."
    assert refused[0] == 0, refused
    assert streamed[0] >= 1000, streamed
    # and the other organisation's count metric kept SPEC's target, a probe that timed out counting as
    # infinitely late
    assert p95(figures["other"]) <= P95_OTHER, figures
    # and so did the count metric of the same usage event, within the looser bound: the SQL metric's
    # recompute and drains hold only its own lock, and refreshes defer it rather than wait
    assert p95(figures["same"]) <= P95_SAME, figures
    assert BillableMetric.objects.get(id=calls.id).recompute_state == "idle"
