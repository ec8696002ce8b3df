"""Reads for billable metrics and their values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet

from metrics.engine import decimal_text, to_decimal
from metrics.models import BillableMetric, MetricValue
from zenskar_site.accounts.models import AuditEntry, Organisation
from zenskar_site.lib.errors import NotFound


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


def metric_values_list(*, metric: BillableMetric) -> QuerySet[MetricValue]:
    return MetricValue.objects.filter(metric=metric)


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
