"""Reads for usage events and their records."""

from __future__ import annotations

from django.db.models import QuerySet

from usage.models import UsageEvent
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
