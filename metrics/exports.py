"""A metric's values as CSV, offered on the Usage data page's export form and on the metric's page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from metrics.models import BillableMetric
from metrics.selectors import metric_get, metric_values_list, metrics_list
from usage.csv.exports import ExportSource
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.csvstream import ITERATOR_CHUNK_ROWS, csv_cell, csv_download


def metric_values_csv_rows(
    *,
    metric: BillableMetric,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> Iterator[list[str]]:
    """A metric's values as CSV rows, header first, by period; periods starting in [start, end).

    Every cell goes through `csv_cell` (a customer id comes from clients and could read as a formula).
    """
    yield [
        "customer_id",
        "period_start",
        "period_end",
        "dimension",
        "computed_value",
        "override_value",
        "value",
        "metric_version",
    ]
    values = metric_values_list(metric=metric, customer_id=customer_id, start=start, end=end)
    rows = values.order_by("period_start", "customer_id", "dimension_key", "id").values_list(
        "customer_id", "period_start", "period_end", "dimension", "computed_value", "override_value", "metric_version"
    )
    for customer, period_start, period_end, dimension, computed, override, version in rows.iterator(
        chunk_size=ITERATOR_CHUNK_ROWS
    ):
        yield [
            csv_cell(customer),
            csv_cell(period_start),
            csv_cell(period_end),
            csv_cell(dimension),
            csv_cell(computed),
            csv_cell(override),
            csv_cell(override if override is not None else computed),
            csv_cell(version),
        ]


def metric_values_download(request: HttpRequest, *, organisation: Organisation, slug: str) -> HttpResponse:
    """The metric's values, streamed, filtered by the query's `customer`, `from` and `to`."""
    return csv_download(
        request,
        find=lambda: metric_get(organisation=organisation, slug=slug),
        rows=lambda metric, filters: metric_values_csv_rows(
            metric=metric, customer_id=filters.customer_id, start=filters.start, end=filters.end
        ),
        filename=lambda metric: f"{metric.slug}-values.csv",
    )


METRIC_VALUES_SOURCE = ExportSource(
    key_prefix="values",
    group_label="Values of a billable metric",
    choices=lambda organisation: metrics_list(organisation=organisation).values_list("slug", "name"),
    url=lambda slug: reverse("metrics:values-export", kwargs={"slug": slug}),
)
