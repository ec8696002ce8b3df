"""Reads for billable metrics and their values, including the window of values a metric's page shows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Aggregate, CharField, Q, QuerySet
from django.db.models.functions import Coalesce
from django.db.models.sql.compiler import SQLCompiler

from metrics.engine.builder import decimal_text, to_decimal
from metrics.models import BillableMetric, MetricValue, SweepHeartbeat
from usage.models import Period
from zenskar_site.accounts.models import AuditEntry, Organisation
from zenskar_site.lib.errors import NotFound
from zenskar_site.lib.keyset import keyset_page
from zenskar_site.lib.periods import period_floor, period_next

VALUES_PER_PAGE = 50
TOTALS_SHOWN = 50
# The chart and totals window when no dates are chosen: this many periods, ending at the newest value.
DEFAULT_SPAN = {str(Period.HOUR): 48, str(Period.DAY): 30, str(Period.MONTH): 12}
MAX_WINDOW_PERIODS = 500
PERIOD_LENGTH = {
    str(Period.HOUR): dt.timedelta(hours=1),
    str(Period.DAY): dt.timedelta(days=1),
    str(Period.MONTH): dt.timedelta(days=28),
}


def metrics_list(*, organisation: Organisation, include_archived: bool = False) -> QuerySet[BillableMetric]:
    metrics = BillableMetric.objects.filter(organisation=organisation).select_related("usage_event")
    if not include_archived:
        metrics = metrics.filter(archived=False)
    return metrics.order_by("name", "id")


def metric_get(*, organisation: Organisation, slug: str) -> BillableMetric:
    metric = BillableMetric.objects.select_related("usage_event").filter(organisation=organisation, slug=slug).first()
    if metric is None:
        raise NotFound(f"No metric with slug {slug!r} in this organisation.")
    return metric


def metric_values_list(
    *,
    metric: BillableMetric,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> QuerySet[MetricValue]:
    """The metric's values: one customer (when given), periods starting in [start, end)."""
    values = MetricValue.objects.filter(metric=metric)
    if customer_id:
        values = values.filter(customer_id=customer_id)
    if start is not None:
        values = values.filter(period_start__gte=start)
    if end is not None:
        values = values.filter(period_start__lt=end)
    return values


def metric_audit_entries(*, metric: BillableMetric, limit: int = 30) -> list[AuditEntry]:
    """The metric's audit trail: changes to its definition and overrides of its values, newest first."""
    return list(
        AuditEntry.objects.filter(organisation_id=metric.organisation_id)
        .filter(
            Q(object_type="metric", object_id=metric.slug) | Q(object_type="metric_value", after__metric=metric.slug)
        )
        .order_by("-at", "-id")[:limit]
    )


def metric_total(
    *, metric: BillableMetric, customer_id: str, start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    """The customer's effective values summed per dimension, over periods starting in [start, end)."""
    totals: dict[str, tuple[Any, Decimal]] = {}
    values = MetricValue.objects.filter(
        metric=metric, customer_id=customer_id, period_start__gte=start, period_start__lt=end
    ).order_by("dimension_key", "period_start")
    for value in values.iterator():
        amount = to_decimal(value.value)
        if amount is None:
            continue
        dimension, total = totals.get(value.dimension_key, (value.dimension, Decimal(0)))
        totals[value.dimension_key] = (dimension, total + amount)
    return [{"dimension": dimension, "quantity": decimal_text(total)} for dimension, total in totals.values()]


# --- a window of values: the metric page's chart, totals and table ---


class EffectiveSum(Aggregate):
    """The sum of effective amounts (the override, else the computed amount), exact on both databases."""

    function = "SUM"
    name = "EffectiveSum"

    def __init__(self) -> None:
        super().__init__(Coalesce("override_value", "computed_value"), output_field=CharField())

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, Any]:
        return super().as_sql(compiler, connection, template="SUM(CAST(%(expressions)s AS NUMERIC))", **extra_context)

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, Any]:
        # SQLite has no exact numeric type: z_sum adds Python Decimals (registered by metrics.apps).
        return super().as_sql(compiler, connection, function="z_sum", **extra_context)


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime
    periods: list[dt.datetime]


def _periods_back(end: dt.datetime, granularity: str, count: int) -> dt.datetime:
    start = end
    for _ in range(count):
        start = period_floor(start - dt.timedelta(microseconds=1), granularity)
    return start


def _periods_forward(start: dt.datetime, granularity: str, count: int) -> dt.datetime:
    end = period_floor(start, granularity)
    for _ in range(count):
        end = period_next(end, granularity)
    return end


def window_choose(
    *, metric: BillableMetric, start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
) -> tuple[Window | None, str | None]:
    """The window the chart, the totals and the table show; an error text when it is too long."""
    granularity, span = metric.granularity, DEFAULT_SPAN[metric.granularity]
    if start is None and end is None:
        newest = metric_values_list(metric=metric).order_by("-period_start").values_list("period_start", flat=True)
        anchor = newest.first() or now
        end = period_next(period_floor(anchor, granularity), granularity)
    if start is None:
        assert end is not None
        start = _periods_back(end, granularity, span)
    if end is None:
        end = _periods_forward(start, granularity, span)
    if (end - start) / PERIOD_LENGTH[granularity] > MAX_WINDOW_PERIODS:
        return None, f"Show at most {MAX_WINDOW_PERIODS} {granularity} periods at once: choose a shorter window."
    current, periods = period_floor(start, granularity), []
    while current < end:
        if current >= start:
            periods.append(current)
        current = period_next(current, granularity)
    return Window(start=start, end=end, periods=periods), None


@dataclass(frozen=True)
class WindowValues:
    period_totals: dict[dt.datetime, Decimal]  # effective amounts summed per period
    customer_totals: Sequence[Mapping[str, Any]]  # customer_id, dimension_key, dimension, total (a sum)
    more_totals: bool
    values: list[MetricValue]  # one page, newest period first
    next_cursor: str | None  # of the page's last value (zenskar_site/lib/keyset.py)
    grouped: bool


def metric_window_values(
    *, metric: BillableMetric, window: Window, customer_id: str | None, cursor: tuple[dt.datetime, int] | None
) -> WindowValues:
    """The totals per period and per customer and one page of values, all over one window."""
    in_window = _window_values(metric, window, customer_id)
    by_customer = list(
        in_window.values("customer_id", "dimension_key", "dimension")
        .annotate(total=EffectiveSum())
        .order_by("customer_id", "dimension_key")[: TOTALS_SHOWN + 1]
    )
    page = keyset_page(in_window, order=("period_start", "id"), after=cursor, limit=VALUES_PER_PAGE)
    return WindowValues(
        period_totals=_period_totals(in_window),
        customer_totals=by_customer[:TOTALS_SHOWN],
        more_totals=len(by_customer) > TOTALS_SHOWN,
        values=page.rows,
        next_cursor=page.next_cursor,
        # A SQL metric has a dimension column only when its query returns one.
        grouped=bool(metric.group_by) or any(row["dimension_key"] for row in by_customer),
    )


def _window_values(metric: BillableMetric, window: Window, customer_id: str | None) -> QuerySet[MetricValue]:
    return metric_values_list(metric=metric, customer_id=customer_id, start=window.start, end=window.end)


def _period_totals(values: QuerySet[MetricValue]) -> dict[dt.datetime, Decimal]:
    totals = {}
    for row in values.values("period_start").annotate(total=EffectiveSum()).order_by("period_start"):
        amount = to_decimal(row["total"])
        if amount is not None:
            totals[row["period_start"]] = amount
    return totals


def sweep_heartbeat_age(*, now: dt.datetime) -> float | None:
    """Seconds since beat's metrics sweep last finished; None if it never has."""
    finished_at = SweepHeartbeat.objects.filter(id=1).values_list("finished_at", flat=True).first()
    return None if finished_at is None else max(0.0, (now - finished_at).total_seconds())
