"""Reads for usage events and their records."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDay, TruncHour

from usage.models import CsvImport, IngestionError, UsageEvent, UsageRecord
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.errors import NotFound
from zenskar_site.lib.keyset import KeysetPage, keyset_page


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


def records_list(
    *,
    usage_event: UsageEvent,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    include_voided: bool = False,
) -> QuerySet[UsageRecord]:
    """The usage event's records, filtered: one customer (when given), timestamps in [start, end).

    The one record filter of the API, the dashboard, void by filter and the CSV export.
    """
    records = UsageRecord.objects.filter(usage_event=usage_event)
    if not include_voided:
        records = records.filter(voided=False)
    if customer_id:
        records = records.filter(customer_id=customer_id)
    if start is not None:
        records = records.filter(timestamp__gte=start)
    if end is not None:
        records = records.filter(timestamp__lt=end)
    return records


def record_get(*, usage_event: UsageEvent, record_id: int) -> UsageRecord:
    record = UsageRecord.objects.filter(usage_event=usage_event, id=record_id).first()
    if record is None:
        raise NotFound(f"No record {record_id} in usage event {usage_event.api_slug!r}.")
    return record


def ingestion_errors_list(*, usage_event: UsageEvent) -> QuerySet[IngestionError]:
    return IngestionError.objects.filter(usage_event=usage_event)


VOLUME_BUCKETS: dict[str, tuple[dt.timedelta, int]] = {
    "hour": (dt.timedelta(hours=1), 48),
    "day": (dt.timedelta(days=1), 30),
}


def records_page(
    *,
    usage_event: UsageEvent,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    after: tuple[int] | None = None,
    limit: int = 50,
) -> KeysetPage[UsageRecord]:
    """One page of records, newest id first (keyset pagination, see zenskar_site/lib/keyset.py).

    Voided and superseded records are included (the page shows them with a badge). `start` is
    inclusive, `end` exclusive, both on the record's own timestamp.
    """
    records = records_list(usage_event=usage_event, customer_id=customer_id, start=start, end=end, include_voided=True)
    return keyset_page(records, order=("id",), after=after, limit=limit)


def records_volume(*, usage_event: UsageEvent, bucket: str, now: dt.datetime) -> list[tuple[dt.datetime, int]]:
    """Records received per UTC hour (last 48 hours) or day (last 30 days), oldest first, empty buckets as 0.

    Counts every stored row by `received_at`, voided or superseded ones too: it shows what arrived.
    The database groups and counts; Python only fills the gaps between the (at most 48) buckets.
    """
    step, count = VOLUME_BUCKETS[bucket]
    now = now.astimezone(dt.UTC)
    if bucket == "hour":
        current = now.replace(minute=0, second=0, microsecond=0)
        trunc: TruncHour | TruncDay = TruncHour("received_at", tzinfo=dt.UTC)
    else:
        current = now.replace(hour=0, minute=0, second=0, microsecond=0)
        trunc = TruncDay("received_at", tzinfo=dt.UTC)
    first = current - step * (count - 1)
    rows = (
        UsageRecord.objects.filter(usage_event=usage_event, received_at__gte=first, received_at__lt=current + step)
        .annotate(bucket=trunc)
        .values("bucket")
        # received_at, not id: the (usage_event, received_at) index then answers it alone (index-only scan).
        .annotate(n=Count("received_at"))
        .order_by()
        .values_list("bucket", "n")
    )
    counts = {moment.astimezone(dt.UTC): n for moment, n in rows}
    return [(first + step * i, counts.get(first + step * i, 0)) for i in range(count)]


def ingestion_errors_latest(*, usage_event: UsageEvent, limit: int = 50) -> list[IngestionError]:
    return list(ingestion_errors_list(usage_event=usage_event).order_by("-id")[:limit])


def csv_import_get(*, organisation: Organisation, import_id: int, with_content: bool = False) -> CsvImport:
    imports = CsvImport.objects.select_related("usage_event").filter(organisation=organisation, id=import_id)
    if not with_content:
        imports = imports.defer("content")
    found = imports.first()
    if found is None:
        raise NotFound(f"No CSV import {import_id} in this organisation.")
    return found


def csv_imports_recent(*, organisation: Organisation, limit: int = 20) -> list[CsvImport]:
    return list(
        CsvImport.objects.select_related("usage_event", "created_by")
        .filter(organisation=organisation)
        .defer("content", "sample", "errors")
        .order_by("-id")[:limit]
    )
