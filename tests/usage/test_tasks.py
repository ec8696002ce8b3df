"""The error-log prune task: its batches, run inline (eager), and one run by a real Celery worker on Redis
(PostgreSQL pass)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from django.utils import timezone

from tests.factories import organisation_make, usage_event_make
from tests.processes import celery_worker
from usage import tasks
from usage.models import IngestionError
from zenskar_site.celery import app


def _errors(usage_event_id: int, *, days_ago: float, count: int) -> None:
    IngestionError.objects.bulk_create(
        IngestionError(
            usage_event_id=usage_event_id,
            received_at=timezone.now() - dt.timedelta(days=days_ago),
            payload={"n": n},
            errors={"data.x": ["Expected Int64, got string."]},
        )
        for n in range(count)
    )


def test_prune_removes_only_rows_past_retention_and_is_safe_to_run_twice(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage_event = usage_event_make(organisation=organisation_make())
    _errors(usage_event.id, days_ago=40, count=7)
    _errors(usage_event.id, days_ago=1, count=3)
    monkeypatch.setattr(tasks, "PRUNE_BATCH", 3)

    tasks.ingestion_errors_prune_task.apply()  # eager here: re-enqueues itself until done
    tasks.ingestion_errors_prune_task.apply()

    assert IngestionError.objects.count() == 3
    assert not IngestionError.objects.filter(received_at__lt=timezone.now() - dt.timedelta(days=30)).exists()


@pytest.fixture
def live_celery() -> Iterator[None]:
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        with celery_worker():
            yield
    finally:
        app.conf.task_always_eager = eager


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_prunes_the_error_log(live_celery: None) -> None:
    usage_event = usage_event_make(organisation=organisation_make())
    _errors(usage_event.id, days_ago=40, count=5)
    _errors(usage_event.id, days_ago=2, count=2)

    tasks.ingestion_errors_prune_task.delay()

    deadline = time.monotonic() + 30
    while IngestionError.objects.count() != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert IngestionError.objects.count() == 2
    assert not IngestionError.objects.filter(received_at__lt=timezone.now() - dt.timedelta(days=30)).exists()
