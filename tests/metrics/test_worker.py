"""The engine with a real Celery worker on Redis and PostgreSQL: freshness, crashes, broker outages.

Every test here runs on a private Redis of its own (tests.processes.private_redis), never the shared
one: one test stops it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from metrics import tasks
from metrics.definitions import metric_create
from metrics.models import BillableMetric, MetricValue
from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.processes import PrivateRedis, celery_app_on_broker, celery_worker, private_redis
from usage.models import DirtyBucket, UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.celery import app

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def broker() -> Iterator[PrivateRedis]:
    """This process's enqueues, its pings and the workers it starts all use a private Redis."""
    with private_redis() as redis, celery_app_on_broker(redis.url):
        yield redis


@pytest.fixture
def not_eager() -> Iterator[None]:
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        yield
    finally:
        app.conf.task_always_eager = eager


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def setup_metric(granularity: str = "hour") -> tuple[Any, str]:
    organisation = organisation_make()
    usage_event = usage_event_make(organisation=organisation)
    secret = api_key_make(organisation=organisation, scope="full").secret
    metric_create(
        actor=system_actor(organisation=organisation),
        body={
            "name": "CPU",
            "slug": "cpu",
            "usage_event": "compute_hours",
            "aggregation": "sum",
            "field": "cpu_usage_hours",
            "granularity": granularity,
        },
    )
    return usage_event, secret


def post(secret: str, records: list[dict[str, Any]], backfill: bool = False) -> Any:
    return Client().post(
        "/usage/compute_hours" + ("?backfill=true" if backfill else ""),
        data=json.dumps(records),
        content_type="application/json",
        HTTP_X_API_KEY=secret,
    )


def total() -> str | None:
    values = [v.value for v in MetricValue.objects.filter(metric__slug="cpu")]
    return str(sum(float(v) for v in values if v is not None)) if values else None


def reconcile_clean() -> bool:
    try:
        call_command("reconcile_metrics", stdout=io.StringIO())
    except SystemExit:
        return False
    return True


def test_ingested_records_reach_the_metric_through_a_real_worker(not_eager: None) -> None:
    _, secret = setup_metric()
    now = timezone.now() - dt.timedelta(minutes=1)
    with celery_worker():
        tasks.metric_recompute_task.delay(BillableMetric.objects.get().id, 1)
        response = post(secret, [{"customer_id": "a", "timestamp": now.isoformat(), "data": {"cpu_usage_hours": 2.5}}])
        assert response.status_code == 202
        assert wait_for(lambda: total() == "2.5"), total()
        post(secret, [{"customer_id": "a", "timestamp": now.isoformat(), "data": {"cpu_usage_hours": 1}}])
        assert wait_for(lambda: total() == "3.5"), total()
    assert wait_for(lambda: not DirtyBucket.objects.exists(), 5)
    assert reconcile_clean()


def test_a_worker_killed_mid_recompute_leaves_values_correct_after_the_next_run(not_eager: None) -> None:
    usage_event, _ = setup_metric(granularity="day")
    start = timezone.now() - dt.timedelta(days=300)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            usage_event=usage_event,
            customer_id=f"c{i % 7}",
            timestamp=start + dt.timedelta(hours=6 * i),
            data={"cpu_usage_hours": (i % 13) / 4},
            content_hash="x",
            received_at=start,
        )
        for i in range(1200)
    )
    metric = BillableMetric.objects.get()
    app.control.purge()  # the creation's recompute is started below, once the worker listens
    with celery_worker(METRICS_RECOMPUTE_THROTTLE_SECONDS="0.4") as worker:
        tasks.metric_recompute_task.delay(metric.id, metric.version)
        assert wait_for(lambda: BillableMetric.objects.get().recompute_done >= 2)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    killed = BillableMetric.objects.get()
    assert killed.recompute_state == "running", (killed.recompute_done, killed.recompute_total, killed.version)
    assert 0 < killed.recompute_done < killed.recompute_total

    with celery_worker(METRICS_RECOMPUTE_STALL_SECONDS="0"):
        tasks.metrics_sweep_task.delay()  # beat's sweep restarts the stalled recompute
        assert wait_for(lambda: BillableMetric.objects.get().recompute_state == "idle", 60)
    assert reconcile_clean()
    assert MetricValue.objects.filter(metric=metric).count() > 200


def test_records_ingested_while_redis_is_down_are_reflected_once_it_is_back(
    not_eager: None, broker: PrivateRedis
) -> None:
    _, secret = setup_metric()
    tasks.metric_recompute_task.apply(args=(BillableMetric.objects.get().id, 1))  # in-process
    now = timezone.now() - dt.timedelta(minutes=1)
    broker.stop()
    try:
        response = post(secret, [{"customer_id": "a", "timestamp": now.isoformat(), "data": {"cpu_usage_hours": 4}}])
        assert response.status_code == 202  # the record is committed; only the prompt refresh is lost
        assert UsageRecord.objects.count() == 1
        assert DirtyBucket.objects.count() == 1
    finally:
        broker.start()
    assert total() is None
    with celery_worker():
        tasks.metrics_sweep_task.delay()
        assert wait_for(lambda: total() == "4.0"), total()
    assert reconcile_clean()


def test_running_every_task_twice_changes_nothing(not_eager: None) -> None:
    usage_event, secret = setup_metric()
    now = timezone.now() - dt.timedelta(minutes=1)
    post(secret, [{"customer_id": c, "timestamp": now.isoformat(), "data": {"cpu_usage_hours": 1.25}} for c in "abc"])
    metric = BillableMetric.objects.get()
    with celery_worker():
        for _ in range(2):
            tasks.metric_recompute_task.delay(metric.id, metric.version)
            tasks.metrics_refresh_task.delay(usage_event.id)
            tasks.metrics_sweep_task.delay()
        assert wait_for(lambda: total() == "3.75" and not DirtyBucket.objects.exists())
        snapshot = sorted(MetricValue.objects.values_list("customer_id", "computed_value", "metric_version"))
        # The second round keeps its results (the tasks ignore theirs), so the test waits until the
        # worker has run every one of them, rather than for a while.
        second_round = [
            task.apply_async(args, ignore_result=False)
            for _ in range(2)
            for task, args in (
                (tasks.metric_recompute_task, (metric.id, metric.version)),
                (tasks.metrics_refresh_task, (usage_event.id,)),
                (tasks.metrics_sweep_task, ()),
            )
        ]
        outcomes = [result.get(timeout=30) for result in second_round]
    assert [result.state for result in second_round] == ["SUCCESS"] * 6
    assert outcomes[0] is True  # the recompute ran again (it answers False for a stale version)
    assert sorted(MetricValue.objects.values_list("customer_id", "computed_value", "metric_version")) == snapshot
    assert connection.vendor == "postgresql"
