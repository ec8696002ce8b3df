"""Zenskar's aggregates are this project's billable metrics: `/aggregates` over metrics.definitions and
selectors; `GET /aggregates/estimates` answers billing.quantities.metered_quantity, the very quantity an
invoice charges.

ZENSKAR_API.md lists no way to create an aggregate. `POST /aggregates` is this project's extension: it
takes the body of `POST /api/v1/metrics/` (name, slug, usage_event, aggregation, field, filters,
group_by, granularity, or sql) and calls the same service, so a Zenskar client can set up billing with
Zenskar paths alone.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api.common import DecimalText
from billing.inputs import uuid_value
from billing.models import Customer
from billing.quantities import metered_quantity
from billing.selectors import customers_list
from billing.zenskar.common import (
    MAX_LIMIT,
    ZenskarApi,
    body_object,
    boolean_value,
    datetime_filter,
    datetime_value,
    filters_apply,
    int_filter,
    integer_value,
    not_found,
    ordering_from,
    query_text,
    text_filter,
    zenskar_page,
)
from metrics.api import MetricOutput, MetricValueOutput
from metrics.definitions import metric_create
from metrics.models import BillableMetric, MetricValue
from metrics.selectors import metric_values_list, metrics_list
from zenskar_site.accounts.models import Organisation
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.text import printable

AGGREGATE_FILTERS = {
    "id": int_filter("id"),
    "name": text_filter("name"),
    "created_at": datetime_filter("created_at"),
}
AGGREGATE_SORT_KEYS = {"id": "id", "name": "name", "slug": "slug", "created_at": "created_at"}
# Estimates span at most this long: a range the database can take and a client means.
MAX_ESTIMATE_DAYS = 366 * 100


class AggregateOutput(MetricOutput):
    """A metric as /api/v1 shows it, with `id` and its raw metric (`raw_metric_id`: the usage event's id)."""

    raw_metric_id = serializers.IntegerField(source="usage_event_id", read_only=True, allow_null=True)

    class Meta(MetricOutput.Meta):
        fields = ["id", "raw_metric_id", *MetricOutput.Meta.fields]


def aggregate_get(*, organisation: Organisation, aggregate_id: Any, field: str | None = None) -> BillableMetric:
    """The organisation's billable metric by id (a number) or slug; another organisation's is not found."""
    metrics = metrics_list(organisation=organisation)
    text = str(aggregate_id) if isinstance(aggregate_id, (str, int)) and not isinstance(aggregate_id, bool) else ""
    found = None
    if text.isascii() and text.isdigit() and len(text) < 19:
        found = metrics.filter(id=int(text)).first()
    if found is None and text and len(text) <= 64 and "\x00" not in text:
        found = metrics.filter(slug=text).first()
    if found is None:
        raise not_found("aggregate", aggregate_id)
    return found


def customer_find(*, organisation: Organisation, reference: str) -> Customer | None:
    """A customer of the organisation by its id or its external id."""
    customers = customers_list(organisation=organisation, include_archived=True)
    key = uuid_value(reference)
    if key is not None and (found := customers.filter(id=key).first()) is not None:
        return found
    return customers.filter(external_id=reference).first()


def customer_usage_ids(customer: Customer) -> list[str]:
    """The `customer_id`s usage records carry for this customer: its external id, or its id (SPEC §8)."""
    return [value for value in (customer.external_id, str(customer.id)) if value]


class AggregateListApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        metrics: QuerySet[BillableMetric] = metrics_list(organisation=request_actor(request).organisation)
        datasource = params.get("datasource")
        if datasource not in (None, ""):
            text = query_text(datasource, "datasource", max_length=64)
            if text.isascii() and text.isdigit() and len(text) < 19:
                metrics = metrics.filter(usage_event_id=int(text))
            else:
                metrics = metrics.filter(usage_event__api_slug=text)
        metrics = filters_apply(metrics, params, AGGREGATE_FILTERS)
        return zenskar_page(
            request=request,
            view=self,
            queryset=metrics,
            serialize=lambda page: AggregateOutput(page, many=True).data,
            ordering=ordering_from(params, allowed=AGGREGATE_SORT_KEYS, default="id"),
        )

    def post(self, request: Request) -> Response:
        metric = metric_create(actor=request_actor(request), body=body_object(request))
        return Response(AggregateOutput(metric).data, status=status.HTTP_201_CREATED)


class AggregateDetailApi(ZenskarApi):
    def get(self, request: Request, aggregate_id: str) -> Response:
        metric = aggregate_get(organisation=request_actor(request).organisation, aggregate_id=aggregate_id)
        return Response(AggregateOutput(metric).data)


def _required(params: Any, name: str) -> Any:
    value = params.get(name)
    if value in (None, ""):
        raise ValidationFailed({name: ["This field is required."]})
    return value


def estimate(
    *, metric: BillableMetric, customer: Customer, start: dt.datetime, end: dt.datetime
) -> tuple[Decimal, dict[str, Decimal]]:
    """The customer's quantity of `metric` over [start, end), in total and per usage customer id."""
    per_id = {
        usage_id: metered_quantity(metric=metric, customer_id=usage_id, start=start, end=end, field="end_date")
        for usage_id in customer_usage_ids(customer)
    }
    return sum(per_id.values(), Decimal(0)), per_id


class AggregateEstimateApi(ZenskarApi):
    """`GET /aggregates/estimates?aggregate_id&customer_id&start_date&end_date`: the metric's quantity for
    the customer over [start_date, end_date), as billing computes it (metered_quantity: effective values,
    overrides included, of the buckets overlapping the range).

    The answer: `{"aggregate_id", "customer_id", "start_date", "end_date", "quantity"}` with `quantity`
    an exact decimal string (as every amount of the API); unless `get_single=true`, also `estimates`:
    the quantity per `customer_id` the records carry (the customer's external id and its id).
    """

    def get(self, request: Request) -> Response:
        params = request.query_params
        organisation = request_actor(request).organisation
        aggregate_ref = query_text(_required(params, "aggregate_id"), "aggregate_id", max_length=255)
        customer_ref = query_text(_required(params, "customer_id"), "customer_id", max_length=255)
        start = datetime_value(_required(params, "start_date"), "start_date")
        end = datetime_value(_required(params, "end_date"), "end_date")
        if end <= start:
            raise ValidationFailed({"end_date": ["end_date must be after start_date."]})
        if end - start > dt.timedelta(days=MAX_ESTIMATE_DAYS):
            raise ValidationFailed({"end_date": [f"A range of at most {MAX_ESTIMATE_DAYS} days."]})
        single = boolean_value(params.get("get_single", "false"), "get_single")
        metric = aggregate_get(organisation=organisation, aggregate_id=aggregate_ref)
        customer = customer_find(organisation=organisation, reference=customer_ref)
        if customer is None:
            raise NotFound(f"No customer with id {printable(customer_ref)[:100]!r} in this organisation.")
        total, per_id = estimate(metric=metric, customer=customer, start=start, end=end)
        text = DecimalText().to_representation
        body: dict[str, Any] = {
            "aggregate_id": metric.id,
            "aggregate": metric.slug,
            "customer_id": str(customer.id),
            "start_date": start.isoformat().replace("+00:00", "Z"),
            "end_date": end.isoformat().replace("+00:00", "Z"),
            "quantity": text(total),
        }
        if not single:
            body["estimates"] = [{"customer_id": key, "quantity": text(value)} for key, value in per_id.items()]
        return Response(body)


class AggregateLogsApi(ZenskarApi):
    """The metric's stored values (one per customer, period and dimension), newest period first, filtered by
    `customer_id` (a customer's id or external id, or a `customer_id` records carry), `start_date` /
    `end_date` (periods starting in the range) or `month` (YYYY-MM); `query_limit` (or `limit`) rows."""

    def get(self, request: Request, aggregate_id: str) -> Response:
        params = request.query_params
        organisation = request_actor(request).organisation
        metric = aggregate_get(organisation=organisation, aggregate_id=aggregate_id)
        start = datetime_value(params["start_date"], "start_date") if params.get("start_date") else None
        end = datetime_value(params["end_date"], "end_date") if params.get("end_date") else None
        month = params.get("month")
        if month:
            first = datetime_value(f"{query_text(month, 'month', max_length=7)}-01", "month")
            start = first
            end = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
        values: QuerySet[MetricValue] = metric_values_list(metric=metric, start=start, end=end)
        customer_ref = params.get("customer_id")
        if customer_ref:
            text = query_text(customer_ref, "customer_id", max_length=255)
            customer = customer_find(organisation=organisation, reference=text)
            values = values.filter(customer_id__in=customer_usage_ids(customer) if customer else [text])
        limit = params.get("query_limit")
        return zenskar_page(
            limit=integer_value(limit, "query_limit", minimum=1, maximum=MAX_LIMIT) if limit else None,
            request=request,
            view=self,
            queryset=values,
            serialize=lambda page: MetricValueOutput(page, many=True).data,
            ordering="-period_start",
        )
