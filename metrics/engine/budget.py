"""Each organisation's budget of SQL-metric evaluation time, so that one organisation's heavy SQL
metrics cannot starve the workers every organisation's metrics share.

An organisation may spend METRIC_SQL_BUDGET_MS_PER_MINUTE milliseconds per minute (fixed windows of
WINDOW_SECONDS, timeouts included) evaluating its SQL metrics; 0 turns the budget off. The engine
gives each SQL metric at most what is left as the deadline of its computation (so the budget holds
within one metric too), charges what it spent, and when nothing is left, or the deadline passes,
defers the metric's periods instead of computing them: the metric keeps the ranges it owes and
`deferred_until` (the window's end), and the sweep computes them from then on. Deferred is not a
failure: no error, no backoff, no recompute of the whole history. Builder metrics are not budgeted:
one GROUP BY per refresh, bounded by the records it reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import F, Q, Sum
from django.utils import timezone

from metrics.models import BillableMetric, RecomputeState, SqlBudgetCharge

WINDOW_SECONDS = 60


def sql_budget_window(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The minute `now` is in: the budget's window."""
    start = now.replace(second=0, microsecond=0)
    return start, start + dt.timedelta(seconds=WINDOW_SECONDS)


def sql_budget_left_ms(*, organisation_id: Any, now: dt.datetime | None = None) -> int | None:
    """Milliseconds the organisation may still spend in this window; None when there is no budget."""
    budget = settings.METRIC_SQL_BUDGET_MS_PER_MINUTE
    if budget <= 0:
        return None
    start, _ = sql_budget_window(now or timezone.now())
    used = SqlBudgetCharge.objects.filter(organisation_id=organisation_id, charged_at__gte=start).aggregate(
        used=Sum("milliseconds")
    )["used"]
    return int(budget - (used or 0))


def sql_budget_charge(*, organisation_id: Any, milliseconds: float) -> None:
    """Record time spent, in the caller's transaction (a metric's failure rolls back only its savepoint)."""
    if settings.METRIC_SQL_BUDGET_MS_PER_MINUTE <= 0:
        return
    SqlBudgetCharge.objects.create(
        organisation_id=organisation_id, charged_at=timezone.now(), milliseconds=max(0, round(milliseconds))
    )


def sql_budget_prune() -> int:
    """Delete charges no window counts any more."""
    cutoff = timezone.now() - dt.timedelta(seconds=2 * WINDOW_SECONDS)
    deleted, _ = SqlBudgetCharge.objects.filter(charged_at__lt=cutoff).delete()
    return deleted


def ranges_merge(ranges: list[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    """The union of [start, end) ranges, sorted, overlapping and touching ones joined."""
    merged: list[tuple[dt.datetime, dt.datetime]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def deferred_ranges_read(metric: BillableMetric) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)) for start, end in metric.deferred_ranges]


def metric_defer(
    *, metric_id: int, ranges: list[tuple[dt.datetime, dt.datetime]], due: dt.datetime | None = None
) -> dt.datetime | None:
    """Add `ranges` to what the metric owes, due at `due` (by default when the budget's window ends;
    an earlier due time already set stays); in the caller's transaction, under the metric's row lock
    (held briefly: no drain holds it while computing). Returns when it is due (None: the metric is gone).

    Every deferral bumps `deferred_seq`, so a drain running meanwhile keeps these ranges owed.
    """
    metric = BillableMetric.objects.select_for_update(of=("self",)).filter(id=metric_id).first()
    if metric is None:
        return None
    until = due if due is not None else sql_budget_window(timezone.now())[1]
    if metric.deferred_until is not None:
        until = min(until, metric.deferred_until)
    owed = ranges_merge(deferred_ranges_read(metric) + ranges)
    BillableMetric.objects.filter(id=metric_id).update(
        deferred_ranges=deferred_ranges_dump(owed), deferred_until=until, deferred_seq=F("deferred_seq") + 1
    )
    return until


def deferred_ranges_dump(ranges: list[tuple[dt.datetime, dt.datetime]]) -> list[list[str]]:
    return [[_iso(start), _iso(end)] for start, end in ranges]


def deferred_metrics_due(*, limit: int = 100) -> list[int]:
    """Ids of metrics whose deferred periods are due and that have no drain queued or running (no live
    drain claim). Failed ones wait (their retry comes first), and so do those whose recompute runs (it
    holds their lock; the ranges stay owed until it ends)."""
    now = timezone.now()
    return list(
        BillableMetric.objects.filter(deferred_until__lte=now, archived=False)
        .filter(Q(drain_claimed_until__isnull=True) | Q(drain_claimed_until__lte=now))
        .exclude(recompute_state__in=(RecomputeState.FAILED, RecomputeState.RUNNING))
        .order_by("deferred_until", "id")
        .values_list("id", flat=True)[:limit]
    )
