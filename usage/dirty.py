"""Which hours of a usage event changed, and the signal that tells the layers above.

Every writer of records (ingestion, corrections, CSV imports) marks the UTC hours it changed, in the
transaction that changed them, and then announces the change. The metrics app listens (it is above
usage, so usage never imports it) and refreshes the metrics over those hours.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.dispatch import Signal

from usage.models import DirtyBucket

# Sent with `usage_event_id` when records of that usage event changed (marks already written in the
# current transaction, if any). Receivers must not do slow work inline: defer it to after commit.
records_changed = Signal(use_caching=True)  # one sender: the receivers are looked up once


def dirty_hours(moments: Iterable[dt.datetime]) -> list[dt.datetime]:
    """The distinct UTC hours that hold `moments`, in order: what one change marks (hour_floor's hours)."""
    # A batch holds a thousand moments in a few hours: each is counted as an integer (hours since day 0 of
    # the proleptic calendar), and only the distinct hours become datetimes.
    hours = {utc.toordinal() * 24 + utc.hour for utc in (moment.astimezone(dt.UTC) for moment in moments)}
    return [dt.datetime.fromordinal(hour // 24).replace(hour=hour % 24, tzinfo=dt.UTC) for hour in sorted(hours)]


def hours_mark_dirty(*, usage_event_id: int, moments: Iterable[dt.datetime]) -> None:
    """Mark the hours of `moments` as changed, in the caller's transaction; announce once the writer is done."""
    hours = dirty_hours(moments)
    if hours:
        DirtyBucket.objects.bulk_create(DirtyBucket(usage_event_id=usage_event_id, hour_start=h) for h in hours)


def records_changed_announce(*, usage_event_id: int) -> None:
    records_changed.send(sender=DirtyBucket, usage_event_id=usage_event_id)
