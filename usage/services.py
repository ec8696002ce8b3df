"""Writes for usage-event definitions."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.db import IntegrityError, transaction

from usage.models import IngestionError, Period, UsageEvent, UsageEventKind
from usage.schema import dataschema_change_problems, dataschema_normalize
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.errors import Conflict, NotFound, ValidationFailed

API_SLUG_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z", re.ASCII)


def usage_event_snapshot(usage_event: UsageEvent) -> dict[str, Any]:
    return {
        "name": usage_event.name,
        "api_slug": usage_event.api_slug,
        "kind": usage_event.kind,
        "aggregate_period": usage_event.aggregate_period,
        "description": usage_event.description,
        "dataschema": usage_event.dataschema,
        "archived": usage_event.archived,
    }


def _check_name(name: Any, errors: dict[str, list[str]]) -> str:
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["A usage event needs a name."]
        return ""
    if len(name.strip()) > 200:
        errors["name"] = ["At most 200 characters."]
    return name.strip()


def _check_kind_and_period(kind: Any, aggregate_period: Any, errors: dict[str, list[str]]) -> None:
    if kind not in UsageEventKind.values:
        errors["kind"] = [f"Kind must be one of: {', '.join(UsageEventKind.values)}."]
    elif kind == UsageEventKind.AGGREGATE and aggregate_period not in Period.values:
        errors["aggregate_period"] = [f"An aggregate usage event needs a period: {', '.join(Period.values)}."]
    elif kind == UsageEventKind.EVENT and aggregate_period not in (None, ""):
        errors["aggregate_period"] = ["Only aggregate usage events have a period."]


@transaction.atomic
def usage_event_create(
    *,
    actor: Actor,
    name: Any,
    api_slug: Any,
    kind: Any = UsageEventKind.EVENT,
    aggregate_period: Any = None,
    description: Any = "",
    dataschema: Any,
) -> UsageEvent:
    errors: dict[str, list[str]] = {}
    name = _check_name(name, errors)
    if not isinstance(api_slug, str) or not API_SLUG_RE.match(api_slug):
        errors["api_slug"] = ["An API slug is 1-64 characters: letters, digits, _ or -."]
    elif UsageEvent.objects.filter(organisation=actor.organisation, api_slug=api_slug).exists():
        errors["api_slug"] = [f"The API slug {api_slug!r} is already taken in this organisation."]
    _check_kind_and_period(kind, aggregate_period, errors)
    if description is None:
        description = ""
    if not isinstance(description, str):
        errors["description"] = ["Expected a string."]
    try:
        normalized = dataschema_normalize(dataschema)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    if errors:
        raise ValidationFailed(errors)
    try:
        with transaction.atomic():
            usage_event = UsageEvent.objects.create(
                organisation=actor.organisation,
                name=name,
                api_slug=api_slug,
                kind=kind,
                aggregate_period=aggregate_period if kind == UsageEventKind.AGGREGATE else None,
                description=description,
                dataschema=normalized,
            )
    except IntegrityError:  # a concurrent create took the slug between the check and the insert
        raise ValidationFailed(
            {"api_slug": [f"The API slug {api_slug!r} is already taken in this organisation."]}
        ) from None
    audit_record(
        actor=actor,
        action="usage_event.create",
        object_type="usage_event",
        object_id=usage_event.api_slug,
        after=usage_event_snapshot(usage_event),
    )
    return usage_event


def _locked(*, actor: Actor, api_slug: str) -> UsageEvent:
    usage_event = (
        UsageEvent.objects.select_for_update().filter(organisation=actor.organisation, api_slug=api_slug).first()
    )
    if usage_event is None:
        raise NotFound(f"No usage event with API slug {api_slug!r}.")
    return usage_event


@transaction.atomic
def usage_event_update(*, actor: Actor, api_slug: str, changes: dict[str, Any], reason: str = "") -> UsageEvent:
    """Edit a definition. Name and description change freely; the schema may only gain Nullable fields."""
    usage_event = _locked(actor=actor, api_slug=api_slug)
    before = usage_event_snapshot(usage_event)
    errors: dict[str, list[str]] = {}
    known = {"name", "description", "dataschema", "api_slug", "kind", "aggregate_period", "reason"}
    for key in changes.keys() - known:
        errors[key] = ["Unknown field."]
    conflicts = []
    for fixed in ("api_slug", "kind", "aggregate_period"):
        if fixed in changes and changes[fixed] != getattr(usage_event, fixed):
            conflicts.append(
                f"{fixed} cannot change once the usage event exists (clients and stored records rely on it)."
            )
    if "name" in changes:
        usage_event.name = _check_name(changes["name"], errors)
    if "description" in changes:
        if not isinstance(changes["description"], str):
            errors["description"] = ["Expected a string."]
        else:
            usage_event.description = changes["description"]
    if "dataschema" in changes:
        try:
            normalized = dataschema_normalize(changes["dataschema"])
        except ValidationFailed as exc:
            errors.update(exc.errors)
        else:
            conflicts.extend(dataschema_change_problems(usage_event.dataschema, normalized))
            usage_event.dataschema = normalized
    if errors:
        raise ValidationFailed(errors)
    if conflicts:
        raise Conflict(" ".join(conflicts), {"dataschema": conflicts})
    usage_event.save()
    after = usage_event_snapshot(usage_event)
    if after != before:
        audit_record(
            actor=actor,
            action="usage_event.update",
            object_type="usage_event",
            object_id=usage_event.api_slug,
            before=before,
            after=after,
            reason=reason,
        )
    return usage_event


@transaction.atomic
def usage_event_archive(*, actor: Actor, api_slug: str, reason: str = "") -> UsageEvent:
    """Archive: ingestion answers 404 from now on; every stored record is kept."""
    usage_event = _locked(actor=actor, api_slug=api_slug)
    if usage_event.archived:
        return usage_event
    before = usage_event_snapshot(usage_event)
    usage_event.archived = True
    usage_event.save(update_fields=["archived", "updated_at"])
    audit_record(
        actor=actor,
        action="usage_event.archive",
        object_type="usage_event",
        object_id=usage_event.api_slug,
        before=before,
        after=usage_event_snapshot(usage_event),
        reason=reason,
    )
    return usage_event


def ingestion_errors_prune(*, older_than: dt.datetime, batch_size: int = 5000) -> int:
    """Delete up to `batch_size` error-log rows received before `older_than`; returns how many went.

    Bounded so one run never holds a long lock; the caller repeats while a full batch was deleted.
    """
    ids = list(
        IngestionError.objects.filter(received_at__lt=older_than)
        .order_by("id")
        .values_list("id", flat=True)[:batch_size]
    )
    if not ids:
        return 0
    deleted, _ = IngestionError.objects.filter(id__in=ids).delete()
    return deleted
