"""Storing computed values: each bucket (metric, customer, period, dimension) replaced by an upsert."""

from __future__ import annotations

import datetime as dt

import orjson
from django.db import connection

from metrics.engine.builder import ComputedValue
from metrics.models import BillableMetric, MetricValue
from metrics.signals import metric_values_changed_announce
from zenskar_site.lib.periods import period_next
from zenskar_site.lib.sql import hot_rows


def metric_values_store(
    *, metric: BillableMetric, start: dt.datetime, end: dt.datetime, computed: list[ComputedValue]
) -> int:
    """Replace the stored values of periods in [start, end) with `computed` (an upsert per bucket).

    Values that vanished are deleted, unless an admin override holds them: those stay, marked stale.
    """
    stored = {
        (customer_id, period_start, dimension_key): (value_id, computed_value, version, stale, override)
        for value_id, customer_id, period_start, dimension_key, computed_value, version, stale, override in (
            MetricValue.objects.filter(metric=metric, period_start__gte=start, period_start__lt=end).values_list(
                "id",
                "customer_id",
                "period_start",
                "dimension_key",
                "computed_value",
                "metric_version",
                "stale",
                "override_value",
            )
        )
    }
    fresh = {(c.customer_id, c.period_start, c.dimension_key): c for c in computed}
    to_write = [
        value
        for key, value in fresh.items()
        if key not in stored or stored[key][1:4] != (value.value, metric.version, False)
    ]
    if to_write:
        _values_upsert(metric=metric, values=to_write)
    gone = [row for key, row in stored.items() if key not in fresh]
    overridden = [row[0] for row in gone if row[4] is not None]
    if overridden:
        MetricValue.objects.filter(id__in=overridden).update(
            stale=True, computed_value=None, metric_version=metric.version
        )
    removable = [row[0] for row in gone if row[4] is None]
    if removable:
        MetricValue.objects.filter(id__in=removable).delete()
    customers = {value.customer_id for value in to_write} | {key[0] for key, row in stored.items() if key not in fresh}
    metric_values_changed_announce(metric_id=metric.id, customer_ids=customers)
    return len(to_write)


def _values_upsert(*, metric: BillableMetric, values: list[ComputedValue]) -> None:
    """Insert or update values by bucket; overrides are never touched."""
    if connection.vendor == "postgresql":
        # One statement per 5,000 values: arrays in (sent in binary: quoting them as text cost more than
        # the statement), ON CONFLICT on the bucket's unique constraint.
        table = MetricValue._meta.db_table
        for offset in range(0, len(values), 5000):
            chunk = values[offset : offset + 5000]
            hot_rows(
                f"""
                INSERT INTO {table} (metric_id, customer_id, period_start, period_end, dimension, dimension_key,
                                     computed_value, override_reason, stale, metric_version, updated_at)
                SELECT %s, t.customer_id, t.period_start, t.period_end, t.dimension::jsonb, t.dimension_key,
                       t.computed_value, '', false, %s, now()
                FROM unnest(%b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::text[], %b::text[])
                     AS t(customer_id, period_start, period_end, dimension, dimension_key, computed_value)
                ON CONFLICT (metric_id, customer_id, period_start, dimension_key) DO UPDATE
                SET computed_value = EXCLUDED.computed_value, metric_version = EXCLUDED.metric_version,
                    stale = false, period_end = EXCLUDED.period_end, dimension = EXCLUDED.dimension,
                    updated_at = EXCLUDED.updated_at
                """,
                [
                    metric.id,
                    metric.version,
                    [v.customer_id for v in chunk],
                    [v.period_start for v in chunk],
                    [period_next(v.period_start, metric.granularity) for v in chunk],
                    [orjson.dumps(v.dimension).decode() if v.dimension is not None else None for v in chunk],
                    [v.dimension_key for v in chunk],
                    [v.value for v in chunk],
                ],
            )
        return
    MetricValue.objects.bulk_create(
        [
            MetricValue(
                metric=metric,
                customer_id=v.customer_id,
                period_start=v.period_start,
                period_end=period_next(v.period_start, metric.granularity),
                dimension=v.dimension,
                dimension_key=v.dimension_key,
                computed_value=v.value,
                metric_version=metric.version,
                stale=False,
            )
            for v in values
        ],
        update_conflicts=True,
        unique_fields=["metric", "customer_id", "period_start", "dimension_key"],
        update_fields=["computed_value", "metric_version", "stale", "period_end", "dimension", "updated_at"],
        batch_size=1000,
    )
