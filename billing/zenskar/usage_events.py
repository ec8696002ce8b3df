"""Zenskar's raw metrics are this project's usage events: `/rawmetric` over usage.services and selectors.

A raw metric's `id` is the usage event's id (a number); `POST /usage/{api_slug}` (ingestion) is served
by usage.ingestion as before.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.zenskar.common import (
    MAX_LIMIT,
    ZenskarApi,
    datetime_value,
    filters_apply,
    int_filter,
    integer_value,
    not_found,
    ordering_from,
    query_text,
    search_filter,
    text_filter,
    zenskar_page,
)
from usage.api import UsageEventOutput, request_object
from usage.models import UsageEvent, UsageEventKind, UsageRecord
from usage.records_api import RecordOutput
from usage.selectors import records_list, usage_event_get, usage_events_list
from usage.services import usage_event_create
from zenskar_site.accounts.models import Organisation
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed

RAW_METRIC_FILTERS = {
    "id": int_filter("id"),
    "name": text_filter("name"),
    "api_slug": text_filter("api_slug"),
}
RAW_METRIC_SORT_KEYS = {"id": "id", "name": "name", "api_slug": "api_slug", "created_at": "created_at"}
LOG_ORDERINGS = {"id": "id", "-id": "-id", "timestamp": "timestamp", "-timestamp": "-timestamp"}
MAX_LOG_OFFSET = 1_000_000


class RawMetricOutput(UsageEventOutput):
    class Meta(UsageEventOutput.Meta):
        fields = ["id", *UsageEventOutput.Meta.fields]


def raw_metric_get(*, organisation: Organisation, raw_metric_id: str) -> UsageEvent:
    """The organisation's usage event by its id; a malformed or another organisation's id is not found."""
    key = (
        int(raw_metric_id) if raw_metric_id.isascii() and raw_metric_id.isdigit() and len(raw_metric_id) < 19 else None
    )
    found = usage_events_list(organisation=organisation).filter(id=key).first() if key is not None else None
    if found is None:
        raise not_found("raw metric", raw_metric_id)
    return found


def output(request: Request, usage_event: UsageEvent) -> dict[str, Any]:
    return dict(RawMetricOutput(usage_event, context={"request": request}).data)


class RawMetricListApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        events: QuerySet[UsageEvent] = usage_events_list(organisation=request_actor(request).organisation)
        events = search_filter(events, params.get("search"), "search", ("name", "api_slug"))
        events = filters_apply(events, params, RAW_METRIC_FILTERS)
        return zenskar_page(
            request=request,
            view=self,
            queryset=events,
            serialize=lambda page: RawMetricOutput(page, many=True, context={"request": request}).data,
            ordering=ordering_from(params, allowed=RAW_METRIC_SORT_KEYS, default="id"),
        )

    def post(self, request: Request) -> Response:
        body = request_object(request)  # refuses unstorable text anywhere in it, naming the field
        missing = {name: ["This field is required."] for name in ("name", "api_slug", "dataschema") if name not in body}
        if missing:
            raise ValidationFailed(missing)
        usage_event = usage_event_create(
            actor=request_actor(request),
            name=body.get("name"),
            api_slug=body.get("api_slug"),
            # Zenskar's raw metrics are events; `kind` and `aggregate_period` are this project's extension.
            kind=body.get("kind") or UsageEventKind.EVENT,
            aggregate_period=body.get("aggregate_period"),
            description=body.get("description") or "",
            dataschema=body.get("dataschema"),
        )
        return Response(output(request, usage_event), status=status.HTTP_201_CREATED)


class RawMetricDetailApi(ZenskarApi):
    def get(self, request: Request, raw_metric_id: str) -> Response:
        usage_event = raw_metric_get(organisation=request_actor(request).organisation, raw_metric_id=raw_metric_id)
        return Response(output(request, usage_event))


class RawMetricBySlugApi(ZenskarApi):
    def get(self, request: Request, slug: str) -> Response:
        usage_event = usage_event_get(organisation=request_actor(request).organisation, api_slug=slug)
        return Response(output(request, usage_event))


class RawMetricLogsApi(ZenskarApi):
    """The raw metric's records, newest first: `limit` (default 10) from `offset`, filtered by
    `filters` (`customer_id`, `start_date` inclusive, `end_date` exclusive, on the record's timestamp).

    Zenskar sends these in the body of a GET; the query string is read too. `aggregate_operation` is
    ignored: aggregates are billable metrics (`/aggregates`).
    """

    def get(self, request: Request, raw_metric_id: str) -> Response:
        usage_event = raw_metric_get(organisation=request_actor(request).organisation, raw_metric_id=raw_metric_id)
        args: dict[str, Any] = dict(request.query_params.items())
        if isinstance(request.data, dict):
            args.update(request.data)
        elif request.data not in (None, b"", "", [], {}):
            raise ValidationFailed({"": ["Expected a JSON object."]})
        filters = args.get("filters") or {}
        if not isinstance(filters, dict):
            raise ValidationFailed({"filters": ['Expected an object such as {"customer_id": "cus_1"}.']})
        customer_id = filters.get("customer_id")
        start = filters.get("start_date")
        end = filters.get("end_date")
        records: QuerySet[UsageRecord] = records_list(
            usage_event=usage_event,
            customer_id=query_text(customer_id, "filters.customer_id", max_length=255) if customer_id else None,
            start=datetime_value(start, "filters.start_date") if start not in (None, "") else None,
            end=datetime_value(end, "filters.end_date") if end not in (None, "") else None,
        )
        limit = integer_value(args.get("limit", 10), "limit", minimum=1, maximum=MAX_LIMIT)
        offset = integer_value(args.get("offset", 0), "offset", minimum=0, maximum=MAX_LOG_OFFSET)
        order_by = args.get("order_by") or "-id"
        if order_by not in LOG_ORDERINGS:
            raise ValidationFailed({"order_by": [f"Must be one of: {', '.join(LOG_ORDERINGS)}."]})
        ordering = LOG_ORDERINGS[order_by]
        page = list(records.order_by(ordering, ordering.replace("timestamp", "id"))[offset : offset + limit + 1])
        return Response(
            {
                "raw_metric_id": usage_event.id,
                "limit": limit,
                "offset": offset,
                "has_more": len(page) > limit,
                "results": RecordOutput(page[:limit], many=True).data,
            }
        )
