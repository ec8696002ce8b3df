"""Keeping stored values fresh: the refresh of dirty hours, the recompute of a metric's whole history,
the drain of what a metric owes, the per-metric lock they take, and the retry of failed metrics.

A metric fails on its own. When computing it raises (a SQL metric past its time limit, say), its
refresh or recompute rolls back only its own work and the metric is marked FAILED, with the error's
first line, its count of failures and the time of its next retry. FAILED is the metric's durable
record of what it still owes, and what it owes is its whole history: the beat sweep claims it once
`recompute_retry_at` has passed and runs `metric_recompute`, the same recompute a definition change
runs. That is the simplest record that is exactly right: keeping the failed metric's own list of
missed hours would need a second claim-and-delete protocol beside the usage event's dirty hours,
while a whole recompute rebuilds every period from raw records whatever happened meanwhile (records
added, voided, moved). Its cost is bounded by the backoff (10 s doubling up to 10 min), and the
incremental refresh skips FAILED metrics, so a query that times out costs its usage event's refreshes
nothing until its retry.

SQL metrics are never computed by a refresh: their periods are deferred (due at once) and drained by
their own task, held to their organisation's budget of evaluation time (`metrics.engine.budget`):
past it they stay deferred, not failed, until the budget's next window.

A metric has at most one drain queued or running: whoever defers its periods enqueues a drain only
if it wins the metric's drain claim (`drain_claim`, a conditional UPDATE of `drain_claimed_until`),
and the drain gives the claim back when it ends, under the metric's row lock, enqueueing its
successor itself when more was deferred meanwhile. So a stream of records into a usage event with a
slow SQL metric costs one drain at a time, not one per refresh: the workers every organisation
shares are never filled with drains of one metric. A claim whose worker died lapses after
`drain_claim_seconds()`, and the sweep claims what is due and unclaimed. Nothing is enqueued for a
metric that is FAILED (its retry recomputes everything) or RUNNING, or whose periods are not due
(its organisation's budget is spent until the next window).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Max, Min, Q
from django.utils import timezone

from metrics.engine.budget import (
    deferred_ranges_dump,
    deferred_ranges_read,
    metric_defer,
    sql_budget_charge,
    sql_budget_left_ms,
    sql_budget_window,
)
from metrics.engine.compute import DeadlinePassed, metric_compute
from metrics.engine.store import metric_values_store
from metrics.models import BillableMetric, MetricKind, MetricValue, RecomputeState
from usage.models import DirtyBucket, Period, UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.enqueue import enqueue_on_commit
from zenskar_site.lib.periods import merge_ranges, period_floor, period_next, periods_between

logger = logging.getLogger(__name__)
REFRESH_BATCH = 5000
RETRY_FIRST_SECONDS = 10
RETRY_MAX_SECONDS = 600
RETRY_BATCH = 100


def _advisory_xact_lock(name: str, *, wait: bool) -> bool:
    """A transaction-scoped advisory lock named `name` (PostgreSQL); SQLite serialises writers anyway."""
    if connection.vendor != "postgresql":
        return True
    key = zlib.crc32(name.encode())
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def _lock_usage_event(usage_event_id: int, *, wait: bool) -> bool:
    """Serialise the refreshes' claim of a usage event's dirty hours: two refreshes of one usage event
    never interleave. Nothing else takes it."""
    return _advisory_xact_lock(f"metrics:{usage_event_id}", wait=wait)


def _lock_metric(metric_id: int, *, wait: bool) -> bool:
    """Serialise the writers of one metric's values (a refresh, a recompute's chunk, a drain of what it
    owes), held while computing and storing: each computes from a snapshot taken after the previous
    writer committed, so an older snapshot never overwrites a newer one.

    Lock order: only a refresh holds two locks (its usage event's, then its metrics'), and it never
    waits for a metric's (try-lock: busy, it defers the metric's ranges), so no cycle can form.
    """
    return _advisory_xact_lock(f"metric:{metric_id}", wait=wait)


def metrics_over(usage_event_id: int) -> list[BillableMetric]:
    return list(
        BillableMetric.objects.filter(sources=usage_event_id, archived=False).select_related("usage_event").distinct()
    )


def metric_values_refresh(*, usage_event_id: int, max_rounds: int = 20) -> int:
    """Recompute every metric period touched by the usage event's dirty hours; returns hours processed.

    Each round claims a bounded batch of dirty rows, recomputes the affected periods from raw records,
    stores them and deletes exactly the claimed rows, in one transaction: a crash rolls all of it back
    and leaves the rows for the next run; rows added meanwhile stay for the next round.

    Only builder metrics are computed here, each under its own lock, in its own savepoint. A SQL
    metric (which may run for its whole time limit), or a metric whose lock is busy (its recompute or
    drain is running), is not waited for: its ranges are added to what it owes (`metric_defer`), in
    the transaction that deletes the rows, and its drain is enqueued after commit (the sweep drains
    what is due as well). So a slow metric never holds back the others' commit.

    A builder metric that raises rolls back only its own work and is marked FAILED in the same
    transaction that deletes the rows, so the hours it missed are covered by the recompute of its
    whole history that its retry runs (see the module's docstring). FAILED metrics are skipped.
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
            budget_left: dict[Any, int | None] = {}
            for metric in metrics_over(usage_event_id):
                if metric.recompute_state == RecomputeState.FAILED:
                    continue  # its retry recomputes its whole history, these hours included
                periods = {period_floor(hour, metric.granularity) for hour in hours}
                ranges = merge_ranges(periods, metric.granularity)
                if metric.kind != MetricKind.SQL and _lock_metric(metric.id, wait=False):
                    _metric_ranges_refresh(metric=metric, ranges=ranges)
                    continue
                due = timezone.now()
                if metric.kind == MetricKind.SQL:
                    if metric.organisation_id not in budget_left:
                        budget_left[metric.organisation_id] = sql_budget_left_ms(organisation_id=metric.organisation_id)
                    left = budget_left[metric.organisation_id]
                    if left is not None and left <= 0:
                        due = sql_budget_window(due)[1]  # nothing to spend before the next window
                metric_defer(metric_id=metric.id, ranges=ranges, due=due)
                if (
                    due <= timezone.now()
                    and metric.recompute_state == RecomputeState.IDLE
                    and drain_claim(metric_id=metric.id)
                ):
                    _drain_after_commit(metric.id)
            DirtyBucket.objects.filter(id__in=[row_id for row_id, _ in dirty]).delete()
            processed += len(dirty)
    return processed


def drain_claim_seconds() -> float:
    """How long a drain claim holds: longer than a drain's wait in the queue and its run take in
    practice (a drain computes at most an organisation's budget of a minute's SQL, or what it owes a
    SQL time limit at a time), short enough that the drain of a worker that died is soon claimed again.
    A claim that lapses while its drain still runs only lets a second drain be enqueued, which finds
    the metric's lock busy or nothing left to do."""
    return max(60.0, 6 * settings.METRIC_SQL_TIMEOUT_MS / 1000)


def drain_claim(*, metric_id: int) -> bool:
    """Claim the metric's one drain, in the caller's transaction: True for the one caller that must
    enqueue it, False while a drain is already queued or running (its claim has not lapsed)."""
    now = timezone.now()
    claimed = (
        BillableMetric.objects.filter(id=metric_id)
        .filter(Q(drain_claimed_until__isnull=True) | Q(drain_claimed_until__lte=now))
        .update(drain_claimed_until=now + dt.timedelta(seconds=drain_claim_seconds()))
    )
    return claimed == 1


def drain_release(*, metric_id: int) -> None:
    """Give back the metric's drain claim (its drain ended, or could not be enqueued)."""
    BillableMetric.objects.filter(id=metric_id).update(drain_claimed_until=None)


def _drain_after_commit(metric_id: int) -> None:
    """Enqueue the drain whose claim the caller's transaction holds, once it commits. If the broker is
    unreachable the claim is given back at once, and the sweep claims and enqueues the drain again."""
    from metrics.tasks import metric_deferred_refresh_task

    enqueue_on_commit(
        metric_deferred_refresh_task, (metric_id,), on_failure=lambda exc: _drain_release_quietly(metric_id)
    )


def _drain_release_quietly(metric_id: int) -> None:
    try:
        drain_release(metric_id=metric_id)
    except DatabaseError:
        logger.warning("Could not release the drain claim of metric %s; it lapses by itself", metric_id)


def _metric_ranges_refresh(
    *, metric: BillableMetric, ranges: list[tuple[dt.datetime, dt.datetime]], defer: bool = True
) -> bool:
    """Recompute and store the metric's values over `ranges` in a savepoint of the caller's transaction,
    which holds the metric's lock.

    A SQL metric runs within what is left of its organisation's budget: with nothing left, or once
    its deadline passes, it stops (the savepoint rolled back) rather than fails, and with `defer` its
    ranges are deferred. Any other error marks it FAILED. Returns whether the values were stored.
    """
    budgeted = metric.kind == MetricKind.SQL
    deadline = None
    if budgeted:
        left = sql_budget_left_ms(organisation_id=metric.organisation_id)
        if left is None:
            budgeted = False
        elif left <= 0:
            if defer:
                metric_defer(metric_id=metric.id, ranges=ranges)
            return False
        else:
            deadline = time.monotonic() + left / 1000
    spent = 0.0  # computing only: the bookkeeping around it is the engine's, not the metric's
    stored = False
    try:
        with transaction.atomic():
            for start, end in ranges:
                began = time.monotonic()
                try:
                    computed = metric_compute(metric=metric, start=start, end=end, deadline=deadline)
                finally:
                    spent += time.monotonic() - began
                metric_values_store(metric=metric, start=start, end=end, computed=computed)
        stored = True
    except DeadlinePassed:
        if defer:
            metric_defer(metric_id=metric.id, ranges=ranges)
    except Exception as exc:
        logger.warning("Refreshing metric %s (%s) failed", metric.id, metric.slug, exc_info=True)
        _failure_record(metric_id=metric.id, version=metric.version, error=exc)
    if budgeted:
        # Outside the savepoint: time spent failing or timing out is spent all the same.
        sql_budget_charge(organisation_id=metric.organisation_id, milliseconds=spent * 1000)
    return stored


def metric_deferred_refresh(*, metric_id: int, max_passes: int = 5) -> bool:
    """Compute the periods a metric owes (deferred by a refresh, or by its organisation's SQL budget)
    once they are due; returns whether nothing is owed any more (else what is left stays owed).

    It is the metric's one drain (see the module's docstring): when it ends it releases the drain
    claim (`_drain_end`), whether or not it holds it (a drain enqueued before the claim existed, or run
    again after its worker died, ends the same way).

    Each pass is a transaction under the metric's lock, tried rather than waited for: when it is busy
    (its recompute or another drain runs) the ranges stay owed and due, and the sweep asks again, so a
    worker never sits waiting for a SQL metric's time limit. A pass reads what is owed without the
    metric's row lock (a refresh deferring more meanwhile does not wait for the computation), computes
    and stores it a period at a time within the budget, then takes the row lock briefly to remove what
    it computed. If anything was deferred while it ran, those ranges may hold records it did not see:
    everything stays owed and the next pass computes it again.
    """
    successor = True
    try:
        for _ in range(max_passes):
            outcome = _deferred_pass(metric_id=metric_id)
            if outcome is _BUSY:
                successor = False
                return False
            if outcome is not None:
                return bool(outcome)
        return False  # deferred again during every pass: what is left stays owed, for its successor
    finally:
        _drain_end(metric_id=metric_id, successor=successor)


# `_deferred_pass`'s answer when the metric's lock is busy (its recompute, a refresh of a builder
# metric, or a drain whose claim lapsed holds it): nothing done, and no successor enqueued, which would
# only find it busy again; what is owed stays due and the sweep claims it.
_BUSY = object()


def _drain_end(*, metric_id: int, successor: bool) -> None:
    """Release the metric's drain claim under its row lock, so that a refresh deferring meanwhile
    either wins the next claim itself or deferred before this looks. With `successor`, what is owed and
    due now (deferred while the drain ran, when a refresh could not claim) gets the next drain here."""
    try:
        with transaction.atomic():
            metric = (
                BillableMetric.objects.select_for_update(of=("self",))
                .filter(id=metric_id)
                .values("archived", "recompute_state", "deferred_until")
                .first()
            )
            if metric is None:
                return
            drain_release(metric_id=metric_id)
            due = metric["deferred_until"]
            if (
                successor
                and not metric["archived"]
                and metric["recompute_state"] == RecomputeState.IDLE
                and due is not None
                and due <= timezone.now()
                and drain_claim(metric_id=metric_id)
            ):
                _drain_after_commit(metric_id)
    except DatabaseError:
        logger.warning("Could not release the drain claim of metric %s; it lapses by itself", metric_id, exc_info=True)


def _deferred_pass(*, metric_id: int) -> bool | object | None:
    """One pass of `metric_deferred_refresh`: True (nothing owed), False (stopped, what is left stays
    owed), None (more was deferred while it ran: pass again), _BUSY (the metric's lock is busy)."""
    with transaction.atomic():
        if not _lock_metric(metric_id, wait=False):
            return _BUSY
        metric = BillableMetric.objects.select_related("usage_event").filter(id=metric_id, archived=False).first()
        if metric is None or metric.deferred_until is None or metric.deferred_until > timezone.now():
            return False  # gone, or done (or pushed back) by another drain meanwhile
        if metric.recompute_state != RecomputeState.IDLE:
            # FAILED: its retry comes first. RUNNING: its recompute is (or is about to be) on it; what
            # it owes stays owed until the recompute ends.
            return False
        seq = metric.deferred_seq
        periods = [
            period
            for start, end in deferred_ranges_read(metric)
            for period in periods_between(start, end, metric.granularity)
        ]
        done = 0
        # A period at a time, each its own savepoint: what is owed may cost more than one minute's
        # budget, and what is done stays done.
        for period in periods:
            period_range = [(period, period_next(period, metric.granularity))]
            if not _metric_ranges_refresh(metric=metric, ranges=period_range, defer=False):
                break  # out of budget (owed until its next window) or failed (its retry recomputes everything)
            done += 1
        stopped = done < len(periods)
        current = BillableMetric.objects.select_for_update(of=("self",)).filter(id=metric_id).first()
        if current is None:
            return False
        if current.deferred_seq != seq:
            # Deferred again while this pass ran: all of it stays owed (the rest of what this pass read
            # included); out of budget, it waits for the next window.
            if stopped:
                BillableMetric.objects.filter(id=metric_id).update(deferred_until=sql_budget_window(timezone.now())[1])
                return False
            return None
        owed = merge_ranges(periods[done:], metric.granularity)
        BillableMetric.objects.filter(id=metric_id).update(
            deferred_ranges=deferred_ranges_dump(owed),
            deferred_until=sql_budget_window(timezone.now())[1] if owed else None,
        )
        return not owed


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


def failed_metrics_due(*, limit: int = RETRY_BATCH) -> list[tuple[int, int]]:
    """(metric id, version) of FAILED metrics whose retry time has passed, the longest waiting first."""
    return list(
        BillableMetric.objects.filter(
            recompute_state=RecomputeState.FAILED, archived=False, recompute_retry_at__lte=timezone.now()
        )
        .order_by("recompute_retry_at", "id")
        .values_list("id", "version")[:limit]
    )


def metric_retry_claim(*, metric_id: int, version: int) -> bool:
    """Claim a due retry with one conditional UPDATE (FAILED to RUNNING), so two sweeps never both win.

    The winner then runs `metric_recompute(metric_id, version)`. From the claim on, refreshes include
    the metric again, so a record committed after the recompute has read its range is still counted;
    if the recompute never starts (broker down, worker killed), the sweep restarts it once it stalls.
    """
    now = timezone.now()
    claimed = BillableMetric.objects.filter(
        id=metric_id,
        version=version,
        recompute_state=RecomputeState.FAILED,
        archived=False,
        recompute_retry_at__lte=now,
    ).update(
        recompute_state=RecomputeState.RUNNING,
        recompute_version=version,
        recompute_done=0,
        recompute_total=0,
        recompute_retry_at=None,
        updated_at=now,
    )
    return claimed == 1


def retry_delay_seconds(failures: int) -> int:
    """The wait before retry number `failures`: 10 s, doubling, at most 10 minutes."""
    return int(min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(max(failures - 1, 0), 16)))


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
    When it raises, the metric is marked FAILED with the error's first line and a retry time, and the
    error goes on. When it succeeds the metric is IDLE again, unless a refresh failed it meanwhile.
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
    source_ids = sorted(metric.sources.values_list("id", flat=True))
    bounds = records_range(usage_event_ids=source_ids)
    chunks: list[tuple[dt.datetime, dt.datetime]] = []
    if bounds is not None:
        month = period_floor(bounds[0], Period.MONTH)
        while month <= bounds[1]:
            chunks.append((month, period_next(month, Period.MONTH)))
            month = chunks[-1][1]
    # A FAILED metric is RUNNING again from here: what failed before is in the history recomputed below.
    BillableMetric.objects.filter(id=metric_id, version=version).update(
        recompute_state=RecomputeState.RUNNING,
        recompute_version=version,
        recompute_total=len(chunks),
        recompute_done=0,
        recompute_retry_at=None,
        updated_at=timezone.now(),
    )
    for done, (start, end) in enumerate(chunks, start=1):
        with transaction.atomic():
            # The metric's lock only: refreshes of its usage events go on (deferring this metric's
            # ranges while a chunk runs), and never wait for its queries.
            _lock_metric(metric_id, wait=True)
            current = BillableMetric.objects.filter(id=metric_id).values_list("version", flat=True).first()
            if current != version:
                return False
            began = time.monotonic()
            computed = metric_compute(metric=metric, start=start, end=end)
            if metric.kind == MetricKind.SQL:
                # A recompute is not deferred (its progress is the metric's state), but it counts.
                spent_ms = (time.monotonic() - began) * 1000
                sql_budget_charge(organisation_id=metric.organisation_id, milliseconds=spent_ms)
            metric_values_store(metric=metric, start=start, end=end, computed=computed)
            BillableMetric.objects.filter(id=metric_id, version=version).update(
                recompute_done=done, updated_at=timezone.now()
            )
        if progress is not None:
            progress(done, len(chunks))
        if settings.METRICS_RECOMPUTE_THROTTLE_SECONDS:
            time.sleep(settings.METRICS_RECOMPUTE_THROTTLE_SECONDS)
    with transaction.atomic():
        # Under the metric's lock no writer of its values is half done: the range read now holds every
        # record whose value a refresh or drain stored while the months above were recomputed (records
        # are never deleted), so only values with no record behind them are outside it. The row lock
        # is taken only now, after the computing, so a refresh deferring into this metric never waits.
        _lock_metric(metric_id, wait=True)
        finished = _version_locked(metric_id=metric_id, version=version)
        if finished is None:
            return False
        bounds = records_range(usage_event_ids=source_ids)
        outside = MetricValue.objects.filter(metric=metric)
        if bounds is not None:
            outside = outside.exclude(
                period_start__gte=period_floor(bounds[0], Period.MONTH),
                period_start__lt=period_next(period_floor(bounds[1], Period.MONTH), Period.MONTH),
            )
        outside.filter(override_value__isnull=True).delete()
        outside.filter(override_value__isnull=False).update(stale=True, computed_value=None, metric_version=version)
        if finished.recompute_state != RecomputeState.RUNNING:
            # A refresh failed the metric while this ran (hours it missed may be in months done
            # before, so it stays FAILED and its retry recomputes again), or another run finished.
            return True
        BillableMetric.objects.filter(id=metric_id, version=version).update(
            recompute_state=RecomputeState.IDLE, recompute_error="", recompute_failures=0, recompute_retry_at=None
        )
        if finished.recompute_failures:
            audit_record(
                actor=system_actor(organisation=finished.organisation),
                action="metric.recover",
                object_type="metric",
                object_id=finished.slug,
                before=_failure_snapshot(finished),
                after={"version": version, "recompute_state": RecomputeState.IDLE},
            )
    return True


def _version_locked(*, metric_id: int, version: int) -> BillableMetric | None:
    """The metric, row-locked, while it is still at `version` (None once a newer version replaced it)."""
    return (
        BillableMetric.objects.select_for_update(of=("self",))
        .select_related("organisation")
        .filter(id=metric_id, version=version)
        .first()
    )


def _recompute_failed(*, metric_id: int, version: int, error: Exception) -> None:
    try:
        # Its own transaction: the chunk that raised has rolled back, and the failure must outlive it.
        with transaction.atomic():
            _failure_record(metric_id=metric_id, version=version, error=error)
    except DatabaseError:
        # The database itself may be what failed: the original error matters more than this one.
        logger.exception("Could not record the failed recompute of metric %s version %s", metric_id, version)


def _failure_record(*, metric_id: int, version: int, error: Exception) -> None:
    """Mark the metric's `version` FAILED with the error's first line and its next retry time, in the
    caller's transaction; the first failure since the last success is audited.

    A newer version is left alone: its own recompute covers everything.
    """
    metric = _version_locked(metric_id=metric_id, version=version)
    if metric is None:
        return
    now = timezone.now()
    first = metric.recompute_failures == 0
    before = {"version": version, "recompute_state": metric.recompute_state}
    metric.recompute_state = RecomputeState.FAILED
    metric.recompute_error = _error_line(error)
    metric.recompute_failures += 1
    metric.recompute_retry_at = now + dt.timedelta(seconds=retry_delay_seconds(metric.recompute_failures))
    BillableMetric.objects.filter(id=metric_id, version=version).update(
        recompute_state=metric.recompute_state,
        recompute_error=metric.recompute_error,
        recompute_failures=metric.recompute_failures,
        recompute_retry_at=metric.recompute_retry_at,
        updated_at=now,
    )
    if first:
        audit_record(
            actor=system_actor(organisation=metric.organisation),
            action="metric.fail",
            object_type="metric",
            object_id=metric.slug,
            before=before,
            after=_failure_snapshot(metric),
            reason=metric.recompute_error,
        )


def _failure_snapshot(metric: BillableMetric) -> dict[str, Any]:
    retry_at = metric.recompute_retry_at
    return {
        "version": metric.version,
        "recompute_state": metric.recompute_state,
        "recompute_error": metric.recompute_error,
        "recompute_failures": metric.recompute_failures,
        "recompute_retry_at": retry_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if retry_at else None,
    }


def _error_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__
