"""A metric's values computed from raw records, for a range of periods; nothing is stored here.

Builder metrics run one GROUP BY (`metrics.engine.builder`); SQL metrics run in the sandbox
(`metrics.sandbox`) once per period.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection

from metrics.engine.builder import BuilderDefinition, ComputedValue, builder_compute, decimal_text, to_decimal
from metrics.models import BillableMetric, MetricKind
from usage.models import UsageEvent
from zenskar_site.lib.periods import period_next, periods_between

if TYPE_CHECKING:
    from metrics.sandbox import SandboxTable

PREVIEW_MAX_PERIODS = 1000


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


def metric_compute(*, metric: BillableMetric, start: dt.datetime, end: dt.datetime) -> list[ComputedValue]:
    """Values for the periods starting in [start, end), computed from raw records; nothing is stored."""
    if metric.kind == MetricKind.BUILDER:
        return builder_compute(definition=builder_definition(metric), start=start, end=end)
    from metrics.sandbox import sql_metric_compile, sql_metric_execute

    compiled = sql_metric_compile(
        sql=metric.sql, tables=sandbox_tables(metric.organisation_id), vendor=connection.vendor
    )
    results = []
    for period_start in periods_between(start, end, metric.granularity):
        period_end = period_next(period_start, metric.granularity)
        for customer_id, quantity, dimension in sql_metric_execute(
            compiled=compiled,
            period_start=period_start,
            period_end=period_end,
            timeout_ms=settings.METRIC_SQL_TIMEOUT_MS,
        ):
            results.append(
                ComputedValue(
                    customer_id=customer_id,
                    period_start=period_start,
                    dimension={"dimension": dimension} if dimension is not None else None,
                    value=decimal_text(to_decimal(quantity)),
                )
            )
    return _merge_duplicates(results)


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
