"""Reads for usage events and their records."""

from __future__ import annotations

from django.db.models import QuerySet

from usage.models import IngestionError, UsageEvent, UsageRecord
from zenskar_site.errors import NotFound
from zenskar_site.models import Organisation


def usage_events_list(*, organisation: Organisation, include_archived: bool = False) -> QuerySet[UsageEvent]:
    events = UsageEvent.objects.filter(organisation=organisation)
    if not include_archived:
        events = events.filter(archived=False)
    return events.order_by("name", "id")


def usage_event_get(*, organisation: Organisation, api_slug: str, active_only: bool = False) -> UsageEvent:
    events = UsageEvent.objects.filter(organisation=organisation, api_slug=api_slug)
    if active_only:
        events = events.filter(archived=False)
    usage_event = events.first()
    if usage_event is None:
        raise NotFound(
            f"No {'active ' if active_only else ''}usage event with API slug {api_slug!r} in this organisation."
        )
    return usage_event


def records_list(*, usage_event: UsageEvent, include_voided: bool = False) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(usage_event=usage_event)
    if not include_voided:
        records = records.filter(voided=False)
    return records


def record_get(*, usage_event: UsageEvent, record_id: int) -> UsageRecord:
    record = UsageRecord.objects.filter(usage_event=usage_event, id=record_id).first()
    if record is None:
        raise NotFound(f"No record {record_id} in usage event {usage_event.api_slug!r}.")
    return record


def ingestion_errors_list(*, usage_event: UsageEvent) -> QuerySet[IngestionError]:
    return IngestionError.objects.filter(usage_event=usage_event)
