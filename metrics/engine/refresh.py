"""Keeping stored values fresh: the refresh of dirty hours, the recompute of a metric's whole history,
and the per-usage-event lock both take."""

from __future__ import annotations

import datetime as dt
import logging
import time
import zlib
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from metrics.engine.compute import metric_compute
from metrics.engine.store import metric_values_store
from metrics.models import BillableMetric, MetricValue, RecomputeState
from usage.models import DirtyBucket, Period, UsageRecord
from zenskar_site.lib.periods import merge_ranges, period_floor, period_next

logger = logging.getLogger(__name__)
REFRESH_BATCH = 5000


def _lock_usage_event(usage_event_id: int, *, wait: bool) -> bool:
    """Serialise the engine per usage event (PostgreSQL): two workers never write one bucket at once,
    so an older snapshot can never overwrite a newer one. SQLite serialises writers anyway."""
    if connection.vendor != "postgresql":
        return True
    key = zlib.crc32(f"metrics:{usage_event_id}".encode())
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def metrics_over(usage_event_id: int) -> list[BillableMetric]:
    return list(
        BillableMetric.objects.filter(sources=usage_event_id, archived=False).select_related("usage_event").distinct()
    )


def metric_values_refresh(*, usage_event_id: int, max_rounds: int = 20) -> int:
    """Recompute every metric period touched by the usage event's dirty hours; returns hours processed.

    Each round claims a bounded batch of dirty rows, recomputes the affected periods from raw records,
    stores them and deletes exactly the claimed rows, in one transaction: a crash rolls all of it back
    and leaves the rows for the next run; rows added meanwhile stay for the next round.
    """
    processed = 0
    for _ in range(max_rounds):
        with transaction.atomic():
            if not _lock_usage_event(usage_event_id, wait=False):
                return processed  # another worker is on this usage event and loops until it is clean
            dirty = list(
                DirtyBucket.objects.filter(usage_event_id=usage_event_id)
                .order_by("id")
                .values_list("id", "hour_start")[:REFRESH_BATCH]
            )
            if not dirty:
                return processed
            hours = {hour for _, hour in dirty}
            for metric in metrics_over(usage_event_id):
                periods = {period_floor(hour, metric.granularity) for hour in hours}
                for start, end in merge_ranges(periods, metric.granularity):
                    metric_values_store(
                        metric=metric,
                        start=start,
                        end=end,
                        computed=metric_compute(metric=metric, start=start, end=end),
                    )
            DirtyBucket.objects.filter(id__in=[row_id for row_id, _ in dirty]).delete()
            processed += len(dirty)
    return processed


def dirty_usage_events(*, older_than_seconds: float = 0) -> list[int]:
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    return sorted(
        set(DirtyBucket.objects.filter(created_at__lte=cutoff).values_list("usage_event_id", flat=True)[:1000])
    )


def stalled_recomputes(*, older_than_seconds: float) -> list[tuple[int, int]]:
    """(metric id, version) of recomputes that stopped making progress (their worker died)."""
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    return list(
        BillableMetric.objects.filter(recompute_state=RecomputeState.RUNNING, updated_at__lt=cutoff).values_list(
            "id", "version"
        )
    )


def records_range(*, usage_event_ids: list[int]) -> tuple[dt.datetime, dt.datetime] | None:
    bounds = UsageRecord.objects.filter(usage_event_id__in=usage_event_ids).aggregate(
        first=Min("timestamp"), last=Max("timestamp")
    )
    if bounds["first"] is None:
        return None
    return bounds["first"], bounds["last"]


def metric_recompute(*, metric_id: int, version: int, progress: Callable[[int, int], None] | None = None) -> bool:
    """Recompute a metric's whole history for `version`, a month of data per transaction, with progress.

    Returns False when the metric moved on to a newer version (that version's task does the work).
    When it raises, the metric is marked FAILED with the error's first line, and the error goes on.
    """
    try:
        return _history_recompute(metric_id=metric_id, version=version, progress=progress)
    except Exception as exc:
        _recompute_failed(metric_id=metric_id, version=version, error=exc)
        raise


def _history_recompute(*, metric_id: int, version: int, progress: Callable[[int, int], None] | None) -> bool:
    metric = BillableMetric.objects.select_related("usage_event").filter(id=metric_id).first()
    if metric is None or metric.version != version:
        return False
    source_ids = list(metric.sources.values_list("id", flat=True))
    bounds = records_range(usage_event_ids=source_ids)
    chunks: list[tuple[dt.datetime, dt.datetime]] = []
    if bounds is not None:
        month = period_floor(bounds[0], Period.MONTH)
        while month <= bounds[1]:
            chunks.append((month, period_next(month, Period.MONTH)))
            month = chunks[-1][1]
    BillableMetric.objects.filter(id=metric_id, version=version).update(
        recompute_state=RecomputeState.RUNNING,
        recompute_version=version,
        recompute_total=len(chunks),
        recompute_done=0,
        updated_at=timezone.now(),
    )
    for done, (start, end) in enumerate(chunks, start=1):
        with transaction.atomic():
            for usage_event_id in source_ids:
                _lock_usage_event(usage_event_id, wait=True)
            current = BillableMetric.objects.filter(id=metric_id).values_list("version", flat=True).first()
            if current != version:
                return False
            metric_values_store(
                metric=metric, start=start, end=end, computed=metric_compute(metric=metric, start=start, end=end)
            )
            BillableMetric.objects.filter(id=metric_id, version=version).update(
                recompute_done=done, updated_at=timezone.now()
            )
        if progress is not None:
            progress(done, len(chunks))
        if settings.METRICS_RECOMPUTE_THROTTLE_SECONDS:
            time.sleep(settings.METRICS_RECOMPUTE_THROTTLE_SECONDS)
    with transaction.atomic():
        # Values outside the data's range (its records were voided or moved) go too.
        outside = MetricValue.objects.filter(metric=metric)
        if chunks:
            outside = outside.exclude(period_start__gte=chunks[0][0], period_start__lt=chunks[-1][1])
        outside.filter(override_value__isnull=True).delete()
        outside.filter(override_value__isnull=False).update(stale=True, computed_value=None, metric_version=version)
        BillableMetric.objects.filter(id=metric_id, version=version).update(
            recompute_state=RecomputeState.IDLE, recompute_error=""
        )
    return True


def _recompute_failed(*, metric_id: int, version: int, error: Exception) -> None:
    """Mark the version's recompute FAILED. The sweep restarts only RUNNING ones, so a query that always
    fails is not retried in a loop; editing the definition starts a new recompute."""
    text = str(error).strip()
    line = text.splitlines()[0][:500] if text else type(error).__name__
    try:
        # Its own transaction: the chunk that raised has rolled back, and the failure must outlive it.
        with transaction.atomic():
            BillableMetric.objects.filter(id=metric_id, version=version).update(
                recompute_state=RecomputeState.FAILED, recompute_error=line, updated_at=timezone.now()
            )
    except DatabaseError:
        # The database itself may be what failed: the original error matters more than this one.
        logger.exception("Could not record the failed recompute of metric %s version %s", metric_id, version)
