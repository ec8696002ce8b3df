"""Celery adapters: each takes IDs, calls one service, and is safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from metrics.dispatch import metrics_refresh_soon, refresh_claim_release
from metrics.engine.budget import deferred_metrics_due, sql_budget_prune
from metrics.engine.refresh import (
    dirty_usage_events,
    drain_claim,
    drain_release,
    failed_metrics_due,
    metric_deferred_refresh,
    metric_recompute,
    metric_retry_claim,
    metric_values_refresh,
    stalled_recomputes,
)
from metrics.services import sweep_heartbeat_record
from usage.models import DirtyBucket

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True, acks_late=True)
def metrics_refresh_task(usage_event_id: int, claim: str | None = None) -> int:
    """Each metric of the usage event is refreshed on its own (a failing one is marked FAILED and the
    others still update); what raises here is the refresh itself, whose dirty hours stay for the sweep.

    It first gives back the usage event's refresh claim (`claim`, the token it was queued with), so
    records committed from here on queue the next refresh (this one may read the dirty hours before
    they commit)."""
    if claim is not None:
        refresh_claim_release(usage_event_id=usage_event_id, token=claim)
    # One round (at most REFRESH_BATCH dirty hours), then the next refresh of what is left goes to the
    # back of the queue: under a steady stream a refresh that looped until its usage event was clean
    # held a worker process for many rounds while other organisations' refreshes waited.
    processed = metric_values_refresh(usage_event_id=usage_event_id, max_rounds=1)
    if processed and DirtyBucket.objects.filter(usage_event_id=usage_event_id).exists():
        metrics_refresh_soon(usage_event_id=usage_event_id)
    return processed


@shared_task(ignore_result=True)
def metrics_sweep_task() -> int:
    """Beat: restart recomputes whose worker died (each month chunk is its own transaction, so a rerun
    is safe), retry FAILED metrics whose retry time has passed, pick up dirty hours whose prompt
    task never ran (broker down, worker killed), and enqueue the drain of the periods metrics deferred
    (a SQL metric, its organisation's budget, a busy lock) once due, for those that have none queued.

    Every item is its own step: one that raises is logged and the next still runs. A metric's failure
    is also on the metric (FAILED, with its error and retry time, in the API, the dashboard and the
    admin); a usage event whose refresh raises keeps its dirty hours, so the next sweep tries again.
    """
    for metric_id, version in stalled_recomputes(older_than_seconds=settings.METRICS_RECOMPUTE_STALL_SECONDS):
        try:
            metric_recompute_task.delay(metric_id, version)
        except Exception:
            logger.exception("Could not restart the stalled recompute of metric %s version %s", metric_id, version)
    for metric_id, version in failed_metrics_due():
        try:
            if metric_retry_claim(metric_id=metric_id, version=version):
                metric_recompute_task.delay(metric_id, version)
        except Exception:
            # A recompute that raised has recorded its failure; one claimed but never started (broker
            # down) is restarted by a later sweep as a stalled recompute.
            logger.exception("Retrying failed metric %s version %s raised", metric_id, version)
    processed = 0
    for usage_event_id in dirty_usage_events(older_than_seconds=1):
        try:
            # One round each: the next sweep (or the usage event's own refresh task) takes the rest.
            processed += metric_values_refresh(usage_event_id=usage_event_id, max_rounds=1)
        except Exception:
            logger.exception("Refreshing the metrics of usage event %s raised; its dirty hours stay", usage_event_id)
    for metric_id in deferred_metrics_due():
        # Enqueued, not run here: a drain may take a SQL time limit, and the sweep refreshes every
        # organisation's usage events. The claim keeps it to one drain per metric.
        try:
            if drain_claim(metric_id=metric_id):
                try:
                    metric_deferred_refresh_task.apply_async((metric_id,))
                except Exception:
                    drain_release(metric_id=metric_id)
                    raise
        except Exception:
            logger.exception("Enqueueing the drain of metric %s raised; what it owes stays deferred", metric_id)
    try:
        sql_budget_prune()
    except Exception:
        logger.exception("Pruning the SQL budget's old charges raised")
    # Last, so the health signal says the whole sweep ran (a sweep that cannot reach the database never gets here).
    sweep_heartbeat_record(finished_at=timezone.now())
    return processed


@shared_task(ignore_result=True, acks_late=True)
def metric_deferred_refresh_task(metric_id: int) -> bool:
    """What a metric owes, computed once due (a refresh deferred it: a SQL metric, or its lock was busy);
    what it leaves owed is the sweep's."""
    return metric_deferred_refresh(metric_id=metric_id)


@shared_task(ignore_result=True, acks_late=True)
def metric_recompute_task(metric_id: int, version: int) -> bool:
    return metric_recompute(metric_id=metric_id, version=version)
