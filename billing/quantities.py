"""Metered quantities (SPEC §8): a metric's value for a customer over exactly a billing period.

The quantity comes from the stored metric values (metrics.models.MetricValue), never from raw records,
so an invoice always agrees with the metric pages: effective values (an admin's override wins over the
computed amount) of the buckets that cover the period. For additive aggregations (`count`, `sum`) the
buckets add up; for the others (`max`, `avg`, `unique_count`, ...) values of two buckets cannot be
combined, so the metric's granularity must equal the billing cadence and the period is one bucket
(`metric_cadence_check`, which a pricing or contract calls before it is saved: a 400 naming the field).

A bucket counts in a period when it overlaps it. Days and hours never straddle a billing period's
bounds (dates at UTC midnight); a month bucket does when a period starts or ends mid-month (a contract
starting on the 15th, a phase changing on the 15th): its whole value counts in each such piece.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from django.db.models import QuerySet

from billing.periods import Cadence
from billing.rating import DimensionKey
from metrics.models import Aggregation, BillableMetric, MetricKind, MetricValue
from metrics.selectors import EffectiveSum
from usage.models import Period
from zenskar_site.lib.errors import ValidationFailed

ADDITIVE_AGGREGATIONS = frozenset({Aggregation.COUNT, Aggregation.SUM})
# The one cadence each granularity's buckets equal.
GRANULARITY_CADENCE = {str(Period.DAY): "P1D", str(Period.MONTH): "P1M"}
# The column a SQL metric's `dimension` is stored under (metrics.engine.compute).
SQL_DIMENSION_COLUMN = "dimension"


def metric_is_additive(*, metric: BillableMetric) -> bool:
    """Whether values of consecutive buckets add up to the value of their union (SPEC §8)."""
    if metric.kind == MetricKind.SQL:
        # SPEC §8: "SQL metrics declared additive". A metric has no such declaration yet, so a SQL
        # metric is non-additive (the safe side: it must then match the cadence) until it gains one.
        return bool(getattr(metric, "additive", False))
    return metric.aggregation in ADDITIVE_AGGREGATIONS


def metric_cadence_check(
    *,
    metric: BillableMetric,
    cadence: Cadence,
    field: str = "billing_period.cadence",
    anchor: dt.date | None = None,
    anchor_field: str = "anchor_date",
) -> None:
    """Refuse (a 400 naming `field`) a metric whose buckets cannot give its value over each period.

    Non-additive metrics need a granularity equal to the cadence (day: P1D, month: P1M). Month buckets
    (additive or not) also need month-based cadences and, when the contract's anchor is known, an
    anchor on the 1st (else a 400 naming `anchor_field`), so that periods are whole months.
    """
    granularity = str(metric.granularity)
    if not metric_is_additive(metric=metric):
        expected = GRANULARITY_CADENCE.get(granularity)
        if expected != cadence.text:
            how = f"aggregates with {metric.aggregation}" if metric.kind == MetricKind.BUILDER else "is a SQL metric"
            fix = f"use the cadence {expected}" if expected else "use a metric with day or month granularity"
            raise ValidationFailed(
                {
                    field: [
                        f"The metric {metric.slug!r} {how}, whose values do not add up over periods: its "
                        f"granularity ({granularity}) must equal the billing cadence ({cadence.text}); {fix}."
                    ]
                }
            )
    if granularity == Period.MONTH:
        if not cadence.months:
            raise ValidationFailed(
                {
                    field: [
                        f"The metric {metric.slug!r} has monthly values, which cannot be split into "
                        f"{cadence.text} periods: use a cadence of whole months."
                    ]
                }
            )
        if anchor is not None and anchor.day != 1:
            raise ValidationFailed(
                {
                    anchor_field: [
                        f"The metric {metric.slug!r} has monthly values (calendar months, UTC): anchor "
                        f"the billing on the 1st of a month, not the {anchor.day}th."
                    ]
                }
            )


def period_datetimes(*, start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """A billing period's dates as the UTC-midnight datetimes metric values are bucketed in."""
    return (
        dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC),
        dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC),
    )


def _period_values(
    metric: BillableMetric, customer_id: str, start: dt.datetime, end: dt.datetime, field: str
) -> QuerySet[MetricValue]:
    values = MetricValue.objects.filter(
        metric=metric, customer_id=customer_id, period_start__lt=end, period_end__gt=start
    )
    if not metric_is_additive(metric=metric):
        buckets = list(values.values_list("period_start", flat=True).distinct().order_by("period_start")[:2])
        if len(buckets) > 1:
            # metric_cadence_check refuses this when the pricing is saved; a metric whose granularity
            # changed since is refused here rather than billed a meaningless sum of maxima.
            raise ValidationFailed(
                {
                    field: [
                        f"The metric {metric.slug!r} does not add up over periods and [{start:%Y-%m-%d}, "
                        f"{end:%Y-%m-%d}) covers more than one of its {metric.granularity} values."
                    ]
                }
            )
    return values


def metered_quantity(
    *,
    metric: BillableMetric,
    customer_id: str,
    start: dt.datetime,
    end: dt.datetime,
    field: str = "billing_period.cadence",
) -> Decimal:
    """The customer's quantity over [start, end): the effective values of the buckets covering it, summed
    over buckets (additive metrics) and over dimensions. No value is a quantity of 0."""
    totals = metered_quantities_by_dimension(
        metric=metric, customer_id=customer_id, start=start, end=end, columns=None, field=field
    )
    return sum(totals.values(), Decimal(0))


def metered_quantities_by_dimension(
    *,
    metric: BillableMetric,
    customer_id: str,
    start: dt.datetime,
    end: dt.datetime,
    columns: Sequence[str] | None,
    field: str = "billing_period.cadence",
) -> dict[DimensionKey, Decimal]:
    """The quantity per matrix cell: effective values keyed by their dimension's `columns`, in order.

    A dimension lacking a column (or an ungrouped value) has None there. `columns=None` keys every value
    by its whole stored dimension (used by `metered_quantity`). Check the columns with
    `matrix_columns_check` when the pricing is saved.
    """
    grouped = (
        _period_values(metric, customer_id, start, end, field)
        .values("dimension_key", "dimension")
        .annotate(total=EffectiveSum())
        .order_by("dimension_key")
    )
    return _totals(grouped, columns)


def _totals(grouped: Iterable[Mapping[str, Any]], columns: Sequence[str] | None) -> dict[DimensionKey, Decimal]:
    """Rows of (dimension_key, dimension, total), in dimension_key order, keyed by `columns`."""
    totals: dict[DimensionKey, Decimal] = {}
    for row in grouped:
        if row["total"] is None:  # every value of the key has no amount (computed and override null)
            continue
        amount = Decimal(str(row["total"]))
        dimension = row["dimension"] or {}
        if columns is None:
            key: DimensionKey = (row["dimension_key"],)
        else:
            key = tuple(_dimension_text(dimension.get(column)) for column in columns)
        totals[key] = totals.get(key, Decimal(0)) + amount
    return totals


class QuantitySource(Protocol):
    """What an invoice asks for its metered quantities: `metered_quantities_by_dimension`, or a
    `MeteredQuantities` prefetched for many invoices at once."""

    def __call__(
        self,
        *,
        metric: BillableMetric,
        customer_id: str,
        start: dt.datetime,
        end: dt.datetime,
        columns: Sequence[str] | None,
    ) -> dict[DimensionKey, Decimal]: ...


class MeteredQuantities:
    """Metered quantities of many customers over the same periods, read in one query per period.

    `prefetch` reads, for one period, the effective values of every (additive metric, customer) asked,
    summed per dimension; calling the object then answers exactly as `metered_quantities_by_dimension`
    would from the same stored values. What was not prefetched (another period, a metric or customer
    not asked, a non-additive metric, whose buckets must be checked one customer at a time) is read by
    `metered_quantities_by_dimension` itself. Values read here are as of the prefetch: use the object
    for one computation pass, not as a cache that outlives it.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[int, str, dt.datetime, dt.datetime], list[Mapping[str, Any]]] = {}

    def prefetch(
        self,
        *,
        metrics: Iterable[BillableMetric],
        customer_ids: Iterable[str],
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        metric_ids = sorted({metric.id for metric in metrics if metric_is_additive(metric=metric)})
        keys = sorted(set(customer_ids))
        if not metric_ids or not keys:
            return
        for metric_id in metric_ids:
            for key in keys:
                self._rows[(metric_id, key, start, end)] = []
        grouped = (
            MetricValue.objects.filter(
                metric_id__in=metric_ids, customer_id__in=keys, period_start__lt=end, period_end__gt=start
            )
            .values("metric_id", "customer_id", "dimension_key", "dimension")
            .annotate(total=EffectiveSum())
            .order_by("metric_id", "customer_id", "dimension_key")
        )
        for row in grouped:
            self._rows[(row["metric_id"], row["customer_id"], start, end)].append(row)

    def __call__(
        self,
        *,
        metric: BillableMetric,
        customer_id: str,
        start: dt.datetime,
        end: dt.datetime,
        columns: Sequence[str] | None,
    ) -> dict[DimensionKey, Decimal]:
        rows = self._rows.get((metric.id, customer_id, start, end))
        if rows is None:
            return metered_quantities_by_dimension(
                metric=metric, customer_id=customer_id, start=start, end=end, columns=columns
            )
        return _totals(rows, columns)


def _dimension_text(value: object) -> str | None:
    return None if value is None else str(value)


def matrix_columns_check(
    *, metric: BillableMetric, columns: Sequence[str], field: str = "pricing_data.dimensions"
) -> None:
    """Each matrix column must be one of the metric's dimensions; else a 400 naming the column's field."""
    available = [SQL_DIMENSION_COLUMN] if metric.kind == MetricKind.SQL else list(metric.group_by or [])
    for index, column in enumerate(columns):
        if column not in available:
            shown = ", ".join(available) if available else "none: the metric is not grouped"
            raise ValidationFailed(
                {
                    f"{field}[{index}].column_name": [
                        f"{column!r} is not a dimension of the metric {metric.slug!r} (its dimensions: {shown})."
                    ]
                }
            )
