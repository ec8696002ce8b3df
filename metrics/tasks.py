"""Celery adapters: each takes IDs, calls one service, and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from metrics.engine.refresh import dirty_usage_events, metric_recompute, metric_values_refresh, stalled_recomputes


@shared_task(ignore_result=True, acks_late=True)
def metrics_refresh_task(usage_event_id: int) -> int:
    return metric_values_refresh(usage_event_id=usage_event_id)


@shared_task(ignore_result=True)
def metrics_sweep_task() -> int:
    """Beat: pick up dirty hours whose prompt task never ran (broker down, worker killed), and restart
    recomputes whose worker died (each month chunk is its own transaction, so a rerun is safe)."""
    for metric_id, version in stalled_recomputes(older_than_seconds=settings.METRICS_RECOMPUTE_STALL_SECONDS):
        metric_recompute_task.delay(metric_id, version)
    processed = 0
    for usage_event_id in dirty_usage_events(older_than_seconds=1):
        processed += metric_values_refresh(usage_event_id=usage_event_id)
    return processed


@shared_task(ignore_result=True, acks_late=True)
def metric_recompute_task(metric_id: int, version: int) -> bool:
    return metric_recompute(metric_id=metric_id, version=version)
