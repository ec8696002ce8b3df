"""Dashboard pages for Usage > Usage events."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from usage.forms import UsageEventForm
from usage.models import IngestionError, UsageRecord
from usage.schema import BASE_TYPES, dataschema_sample
from usage.selectors import (
    VOLUME_BUCKETS,
    ingestion_errors_latest,
    records_page,
    records_volume,
    usage_event_get,
    usage_events_list,
)
from usage.services import usage_event_create
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import form_errors_apply, member_view
from zenskar_site.accounts.selectors import audit_entries_list
from zenskar_site.lib.charts import BarChart, ChartPoint, bar_chart
from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.forms import UtcDateTimeField
from zenskar_site.lib.keyset import KeysetCursorField
from zenskar_site.lib.pages import not_found_page

FORM_FIELDS = {
    "name": "name",
    "api_slug": "api_slug",
    "kind": "kind",
    "aggregate_period": "aggregate_period",
    "description": "description",
    "dataschema": "dataschema",
}


@member_view()
def usage_event_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    events = usage_events_list(organisation=actor.organisation)
    return render(request, "usage/event_list.html", {"events": events})


@member_view(write=True)
def usage_event_new(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = UsageEventForm(request.POST or None)
    field_errors: dict[str, list[str]] = {}
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            usage_event = usage_event_create(
                actor=actor,
                name=data["name"],
                api_slug=data["api_slug"],
                kind=data["kind"],
                aggregate_period=data["aggregate_period"] or None,
                description=data["description"],
                dataschema=data["dataschema"],
            )
        except ValidationFailed as exc:
            field_errors = {
                path.removeprefix("dataschema.data."): messages
                for path, messages in exc.errors.items()
                if path.startswith("dataschema.data.")
            }
            other = {p: m for p, m in exc.errors.items() if not p.startswith("dataschema.data.")}
            if other:
                form_errors_apply(form, ValidationFailed(other), fields=FORM_FIELDS)
        else:
            return redirect("usage:event-detail", api_slug=usage_event.api_slug)
    return render(
        request,
        "usage/event_form.html",
        {"form": form, "types": BASE_TYPES, "field_errors": field_errors},
    )


def curl_example(*, url: str, organisation_id: str, body: Mapping[str, object]) -> str:
    return "\n".join(
        [
            f"curl -X POST {shlex.quote(url)} \\",
            f'  -H "organisation: {organisation_id}" \\',
            '  -H "x-api-key: <your API key>" \\',
            '  -H "Content-Type: application/json" \\',
            f"  --data-raw {shlex.quote(json.dumps(body))}",
        ]
    )


RECORDS_PER_PAGE = 50
ERRORS_SHOWN = 50
DATA_MAX_CHARS = 300
PAYLOAD_PREVIEW_CHARS = 160


class RecordFilterForm(forms.Form):
    customer_id = forms.CharField(label="Customer ID", max_length=255, required=False)
    start = UtcDateTimeField(label="From (UTC)", required=False)
    end = UtcDateTimeField(label="To (UTC)", required=False)
    cursor = KeysetCursorField(kinds=(int,))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start is not None and end is not None and start >= end:
            self.add_error("end", "“To” must be later than “From”.")
        return cleaned


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class RecordRow:
    record: UsageRecord
    data: str
    data_clipped: bool


@dataclass(frozen=True)
class ErrorRow:
    error: IngestionError
    reasons: list[str]
    payload: str
    preview: str


def record_row(record: UsageRecord) -> RecordRow:
    data = _compact_json(record.data)
    return RecordRow(record=record, data=_clip(data, DATA_MAX_CHARS), data_clipped=len(data) > DATA_MAX_CHARS)


def error_row(error: IngestionError) -> ErrorRow:
    if isinstance(error.errors, dict):
        reasons = [
            f"{path}: {message}" if path else str(message)
            for path, messages in error.errors.items()
            for message in (messages if isinstance(messages, list) else [messages])
        ]
    elif isinstance(error.errors, list):
        reasons = [str(message) for message in error.errors]
    else:
        reasons = [str(error.errors)]
    # A payload over the ingestion limit is stored as the start of its JSON text, not as JSON.
    payload = error.payload if error.payload_truncated and isinstance(error.payload, str) else None
    text = payload if payload is not None else _compact_json(error.payload)
    return ErrorRow(error=error, reasons=reasons, payload=text, preview=_clip(text, PAYLOAD_PREVIEW_CHARS))


# --- the volume chart (zenskar_site.lib.charts lays it out, the shared template draws it) ---


def _bucket_title(moment: dt.datetime, bucket: str, count: int) -> str:
    noun = "record" if count == 1 else "records"
    if bucket == "hour":
        end = moment + dt.timedelta(hours=1)
        return f"{moment:%Y-%m-%d %H:%M} to {end:%H:%M} UTC: {count:,} {noun}"
    return f"{moment:%Y-%m-%d} UTC: {count:,} {noun}"


def _bucket_label(moment: dt.datetime, bucket: str, index: int, count: int) -> str | None:
    if bucket == "hour":
        if moment.hour % 6:
            return None
        return f"{moment:%b} {moment.day}" if moment.hour == 0 else f"{moment:%H:%M}"
    return f"{moment:%b} {moment.day}" if (count - 1 - index) % 5 == 0 else None


def volume_chart(*, buckets: list[tuple[dt.datetime, int]], bucket: str) -> BarChart:
    points = [
        ChartPoint(
            amount=Decimal(n),
            text=str(n),
            title=_bucket_title(moment, bucket, n),
            label=_bucket_label(moment, bucket, index, len(buckets)),
        )
        for index, (moment, n) in enumerate(buckets)
    ]
    return bar_chart(points=points, total=sum(n for _, n in buckets), bucket=bucket, integers=True)


@member_view()
def usage_event_detail(request: HttpRequest, actor: Actor, api_slug: str) -> HttpResponse:
    try:
        usage_event = usage_event_get(organisation=actor.organisation, api_slug=api_slug)
    except NotFound as exc:
        return not_found_page(request, exc)
    endpoint = request.build_absolute_uri(f"/usage/{usage_event.api_slug}")
    body = {
        "customer_id": "cus_123",
        "timestamp": "2026-11-20T14:03:12Z",
        "data": dataschema_sample(usage_event.dataschema),
    }

    filters = RecordFilterForm(request.GET)
    valid = filters.is_valid()
    records: list[RecordRow] = []
    next_cursor: str | None = None
    if valid:
        page = records_page(
            usage_event=usage_event,
            customer_id=filters.cleaned_data["customer_id"] or None,
            start=filters.cleaned_data["start"],
            end=filters.cleaned_data["end"],
            after=filters.cleaned_data["cursor"],
            limit=RECORDS_PER_PAGE,
        )
        records, next_cursor = [record_row(record) for record in page.rows], page.next_cursor
    volume = request.GET.get("volume", "hour")
    if volume not in VOLUME_BUCKETS:
        volume = "hour"
    buckets = records_volume(usage_event=usage_event, bucket=volume, now=timezone.now())

    return render(
        request,
        "usage/event_detail.html",
        {
            "event": usage_event,
            "endpoint": endpoint,
            "curl": curl_example(url=endpoint, organisation_id=str(actor.organisation.id), body=body),
            "schema_json": json.dumps(usage_event.dataschema, indent=2),
            "audit": list(
                audit_entries_list(organisation=actor.organisation).filter(
                    object_type="usage_event", object_id=usage_event.api_slug
                )[:20]
            ),
            "filters": filters,
            "filtered": valid and any(filters.cleaned_data[name] for name in ("customer_id", "start", "end")),
            "records": records,
            "paged": valid and filters.cleaned_data["cursor"] is not None,
            "next_cursor": next_cursor,
            "volume": volume,
            "chart": volume_chart(buckets=buckets, bucket=volume),
            "errors": [error_row(e) for e in ingestion_errors_latest(usage_event=usage_event, limit=ERRORS_SHOWN)],
        },
    )
