"""Corrections of stored records: edit, void, restore, void by filter (SPEC §6).

Every change is revalidated with the usage event's schema, audited with its actor and reason, and
marks the hours it touches (before and after) dirty in the same transaction, so the metric engine
recomputes exactly the affected periods.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from usage.dirty import hours_mark_dirty, records_changed_announce
from usage.models import UsageEvent, UsageEventKind, UsageRecord
from usage.schema import datetime_format, record_validator, timestamp_bounds
from usage.selectors import records_list
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.models import AuditEntry
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.periods import period_floor

EDITABLE = ("customer_id", "timestamp", "data")
VOID_AUDIT_BATCH = 2000


def record_snapshot(record: UsageRecord) -> dict[str, Any]:
    return {
        "customer_id": record.customer_id,
        "timestamp": datetime_format(record.timestamp),
        "data": record.data,
        "voided": record.voided,
        "superseded": record.superseded,
    }


def _usage_event(actor: Actor, api_slug: str) -> UsageEvent:
    usage_event = UsageEvent.objects.filter(organisation=actor.organisation, api_slug=api_slug).first()
    if usage_event is None:
        raise NotFound(f"No usage event with API slug {api_slug!r} in this organisation.")
    return usage_event


def _locked_record(usage_event: UsageEvent, record_id: int) -> UsageRecord:
    record = UsageRecord.objects.select_for_update().filter(usage_event=usage_event, id=record_id).first()
    if record is None:
        raise NotFound(f"No record {record_id} in usage event {usage_event.api_slug!r}.")
    return record


def _require_reason(reason: Any) -> str:
    if reason is not None and not isinstance(reason, str):
        raise ValidationFailed({"reason": ["Expected a string."]})
    return (reason or "").strip()


def _changed(usage_event: UsageEvent, moments: Iterable[dt.datetime]) -> None:
    hours_mark_dirty(usage_event_id=usage_event.id, moments=moments)
    records_changed_announce(usage_event_id=usage_event.id)


def _aggregate_reset(usage_event: UsageEvent, pairs: set[tuple[str, dt.datetime]]) -> list[dt.datetime]:
    """For aggregates: in each (customer, period), the newest non-voided record counts, the rest are
    superseded. Returns the timestamps of every record in those periods (their hours may change)."""
    moments: list[dt.datetime] = []
    for customer_id, period_start in pairs:
        rows = UsageRecord.objects.filter(usage_event=usage_event, customer_id=customer_id, period_start=period_start)
        moments.extend(rows.values_list("timestamp", flat=True))
        newest = rows.filter(voided=False).aggregate(newest=Max("id"))["newest"]
        rows.update(superseded=True)
        if newest is not None:
            UsageRecord.objects.filter(id=newest).update(superseded=False)
    return moments


@transaction.atomic
def record_update(
    *, actor: Actor, api_slug: str, record_id: int, changes: dict[str, Any], reason: Any = ""
) -> UsageRecord:
    """Edit customer_id, timestamp and/or data (merged: a null removes a field), revalidated like ingestion.

    The stored content hash keeps describing what the client sent, so a client retrying the original
    record is still answered `duplicate` and the correction stands.
    """
    usage_event = _usage_event(actor, api_slug)
    record = _locked_record(usage_event, record_id)
    unknown = changes.keys() - set(EDITABLE)
    if unknown:
        raise ValidationFailed({key: ["Not editable: edit customer_id, timestamp or data."] for key in sorted(unknown)})
    data = record.data
    if "data" in changes:
        if not isinstance(changes["data"], dict):
            raise ValidationFailed({"data": ["Expected an object."]})
        data = {k: v for k, v in {**record.data, **changes["data"]}.items() if v is not None}
    candidate = {
        "customer_id": changes.get("customer_id", record.customer_id),
        "timestamp": changes.get("timestamp", datetime_format(record.timestamp)),
        "data": data,
    }
    valid, errors = record_validator(usage_event.dataschema)(candidate)
    if valid is None:
        raise ValidationFailed(errors)
    out_of_bounds = timestamp_bounds(now=timezone.now(), backfill=True).problems(valid.timestamp)
    if out_of_bounds:
        raise ValidationFailed(out_of_bounds)
    before = record_snapshot(record)
    old_moment, old_pair = record.timestamp, (record.customer_id, record.period_start)
    record.customer_id, record.timestamp, record.data = valid.customer_id, valid.timestamp, valid.data
    moments = [old_moment, record.timestamp]
    if usage_event.kind == UsageEventKind.AGGREGATE:
        record.period_start = period_floor(record.timestamp, usage_event.aggregate_period or "day")
        record.superseded = True  # _aggregate_reset decides which record of each period counts
        record.save(update_fields=["customer_id", "timestamp", "data", "period_start", "superseded"])
        moments += _aggregate_reset(usage_event, {old_pair, (record.customer_id, record.period_start)})  # type: ignore[arg-type]
        record.refresh_from_db()
    else:
        record.save(update_fields=["customer_id", "timestamp", "data"])
    after = record_snapshot(record)
    if after != before:
        audit_record(
            actor=actor,
            action="record.update",
            object_type="usage_record",
            object_id=str(record.id),
            before=before,
            after=after,
            reason=_require_reason(reason),
        )
        _changed(usage_event, moments)
    return record


def _set_voided(*, actor: Actor, api_slug: str, record_id: int, voided: bool, reason: Any) -> UsageRecord:
    usage_event = _usage_event(actor, api_slug)
    record = _locked_record(usage_event, record_id)
    if record.voided == voided:
        return record
    before = record_snapshot(record)
    record.voided = voided
    record.save(update_fields=["voided"])
    moments = [record.timestamp]
    if usage_event.kind == UsageEventKind.AGGREGATE and record.period_start is not None:
        moments += _aggregate_reset(usage_event, {(record.customer_id, record.period_start)})
        record.refresh_from_db()
    audit_record(
        actor=actor,
        action="record.void" if voided else "record.restore",
        object_type="usage_record",
        object_id=str(record.id),
        before=before,
        after=record_snapshot(record),
        reason=_require_reason(reason),
    )
    _changed(usage_event, moments)
    return record


@transaction.atomic
def record_void(*, actor: Actor, api_slug: str, record_id: int, reason: Any = "") -> UsageRecord:
    """Void a record: it stays stored (and restorable) but no metric counts it."""
    return _set_voided(actor=actor, api_slug=api_slug, record_id=record_id, voided=True, reason=reason)


@transaction.atomic
def record_restore(*, actor: Actor, api_slug: str, record_id: int, reason: Any = "") -> UsageRecord:
    return _set_voided(actor=actor, api_slug=api_slug, record_id=record_id, voided=False, reason=reason)


@transaction.atomic
def records_void_by_filter(
    *,
    actor: Actor,
    api_slug: str,
    customer_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    everything: bool = False,
    reason: Any = "",
) -> int:
    """Void every non-voided record matching the filters; one audit entry per record. Returns the count."""
    usage_event = _usage_event(actor, api_slug)
    if not (customer_id or start or end or everything):
        raise ValidationFailed(
            {"": ["Give customer_id, timestamp_after and/or timestamp_before (or all=true to void every record)."]}
        )
    if start is not None and end is not None and end <= start:
        raise ValidationFailed({"timestamp_before": ["timestamp_before must be after timestamp_after."]})
    reason = _require_reason(reason)
    matching = records_list(
        usage_event=usage_event, customer_id=customer_id, start=start, end=end, include_voided=True
    ).filter(voided=False)
    ids_and_moments = list(matching.select_for_update().values_list("id", "timestamp", "customer_id", "period_start"))
    if not ids_and_moments:
        return 0
    ids = [row[0] for row in ids_and_moments]
    snapshots = {r.id: record_snapshot(r) for r in UsageRecord.objects.filter(id__in=ids)}
    UsageRecord.objects.filter(id__in=ids).update(voided=True)
    moments = [row[1] for row in ids_and_moments]
    if usage_event.kind == UsageEventKind.AGGREGATE:
        pairs = {(row[2], row[3]) for row in ids_and_moments if row[3] is not None}
        moments += _aggregate_reset(usage_event, pairs)
    entries = []
    for record_id in ids:
        before = snapshots[record_id]
        entries.append(
            AuditEntry(
                organisation=actor.organisation,
                actor_user=actor.user,
                actor_api_key=actor.api_key,
                actor=actor.label,
                action="record.void",
                object_type="usage_record",
                object_id=str(record_id),
                before=before,
                after={**before, "voided": True},
                reason=reason,
            )
        )
    AuditEntry.objects.bulk_create(entries, batch_size=VOID_AUDIT_BATCH)
    _changed(usage_event, moments)
    return len(ids)
