"""A metric's values computed from raw records, for a range of periods; nothing is stored here.

Builder metrics run one GROUP BY (`metrics.engine.builder`); SQL metrics run in the sandbox
(`metrics.sandbox`) once per period.

A computation may be given a deadline (a `time.monotonic()` moment) for all of its work: a preview's
budget, or what is left of an organisation's SQL budget. Each period's statement then runs under the
smaller of METRIC_SQL_TIMEOUT_MS and the time left, so the whole computation ends by the deadline
(give or take one statement's start-up) however many periods it covers; past it, DeadlinePassed.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from metrics.engine.builder import BuilderDefinition, ComputedValue, builder_compute, decimal_text, to_decimal
from metrics.models import BillableMetric, MetricKind
from usage.models import UsageEvent
from zenskar_site.lib.periods import period_next, periods_between

if TYPE_CHECKING:
    from metrics.sandbox import SandboxTable

PREVIEW_MAX_PERIODS = 1000


class DeadlinePassed(Exception):
    """The computation reached its deadline; it stored nothing (nothing here stores anything)."""

    def __init__(self, *, periods_done: int, periods_total: int) -> None:
        super().__init__(f"The deadline passed after {periods_done} of {periods_total} periods.")
        self.periods_done = periods_done
        self.periods_total = periods_total


def _ms_left(deadline: float) -> int:
    return math.floor((deadline - time.monotonic()) * 1000)


def sandbox_tables(organisation_id: Any) -> dict[str, SandboxTable]:
    """The tables a SQL metric of the organisation may read: its active usage events, by API slug."""
    from metrics.sandbox import SandboxTable

    return {
        e.api_slug: SandboxTable(slug=e.api_slug, usage_event_id=e.id, fields=dict(e.dataschema.get("data", {})))
        for e in UsageEvent.objects.filter(organisation_id=organisation_id, archived=False)
    }


def builder_definition(metric: BillableMetric, *, fields: dict[str, str] | None = None) -> BuilderDefinition:
    assert metric.usage_event is not None
    return BuilderDefinition(
        usage_event_id=metric.usage_event.id,
        fields=fields if fields is not None else dict(metric.usage_event.dataschema.get("data", {})),
        aggregation=metric.aggregation,
        field=metric.field,
        filters=list(metric.filters),
        group_by=list(metric.group_by),
        granularity=metric.granularity,
    )


def metric_compute(
    *, metric: BillableMetric, start: dt.datetime, end: dt.datetime, deadline: float | None = None
) -> list[ComputedValue]:
    """Values for the periods starting in [start, end), computed from raw records; nothing is stored.

    With a `deadline` (time.monotonic()), raises DeadlinePassed rather than run past it.
    """
    if metric.kind == MetricKind.BUILDER:
        if deadline is None:
            return builder_compute(definition=builder_definition(metric), start=start, end=end)
        with _deadline_statements(deadline, periods_total=len(periods_between(start, end, metric.granularity))):
            return builder_compute(definition=builder_definition(metric), start=start, end=end)
    from metrics.sandbox import SandboxError, sql_metric_compile, sql_metric_execute

    compiled = sql_metric_compile(
        sql=metric.sql, tables=sandbox_tables(metric.organisation_id), vendor=connection.vendor
    )
    periods = periods_between(start, end, metric.granularity)
    results = []
    for done, period_start in enumerate(periods):
        period_end = period_next(period_start, metric.granularity)
        timeout_ms = settings.METRIC_SQL_TIMEOUT_MS
        if deadline is not None:
            left = _ms_left(deadline)
            if left <= 0:
                raise DeadlinePassed(periods_done=done, periods_total=len(periods))
            timeout_ms = min(timeout_ms, left)
        try:
            rows = sql_metric_execute(
                compiled=compiled, period_start=period_start, period_end=period_end, timeout_ms=timeout_ms
            )
        except SandboxError:
            # Stopped by the deadline's shorter limit rather than the metric's own: the deadline's error.
            if deadline is not None and timeout_ms < settings.METRIC_SQL_TIMEOUT_MS and _ms_left(deadline) <= 0:
                raise DeadlinePassed(periods_done=done, periods_total=len(periods)) from None
            raise
        for customer_id, quantity, dimension in rows:
            results.append(
                ComputedValue(
                    customer_id=customer_id,
                    period_start=period_start,
                    dimension={"dimension": dimension} if dimension is not None else None,
                    value=decimal_text(to_decimal(quantity)),
                )
            )
    return _merge_duplicates(results)


@contextmanager
def _deadline_statements(deadline: float, *, periods_total: int) -> Iterator[None]:
    """Run the block's (read-only) statements so that they stop at the deadline (PostgreSQL; SQLite,
    the embedded mode, only checks the deadline once the block is done)."""
    left = _ms_left(deadline)
    if left <= 0:
        raise DeadlinePassed(periods_done=0, periods_total=periods_total)
    if connection.vendor != "postgresql":
        yield
        if _ms_left(deadline) <= 0:
            raise DeadlinePassed(periods_done=0, periods_total=periods_total)
        return
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {int(left)}")
            try:
                yield
            finally:
                transaction.set_rollback(True)  # reads only: rolling back ends SET LOCAL with the block
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "57014":
            raise DeadlinePassed(periods_done=0, periods_total=periods_total) from None
        raise


def _merge_duplicates(values: list[ComputedValue]) -> list[ComputedValue]:
    """A SQL metric may return one customer twice in a period: the amounts add up."""
    merged: dict[tuple[str, dt.datetime, str], ComputedValue] = {}
    for value in values:
        key = (value.customer_id, value.period_start, value.dimension_key)
        if key in merged and merged[key].value is not None and value.value is not None:
            total = to_decimal(merged[key].value) + to_decimal(value.value)  # type: ignore[operator]
            value = ComputedValue(value.customer_id, value.period_start, value.dimension, decimal_text(total))
        merged[key] = value
    return list(merged.values())
