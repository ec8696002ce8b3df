"""UTC periods (hour, day, month): where a moment's period starts, and the periods of a range.

One home for the rule, used by aggregate usage events (which period a record belongs to), the
metric engine (which periods to recompute) and the dashboard (which periods to show).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

HOUR, DAY, MONTH = "hour", "day", "month"


def period_floor(moment: dt.datetime, granularity: str) -> dt.datetime:
    """The start of the `granularity` period (UTC) that holds `moment`."""
    start = moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if granularity == HOUR:
        return start
    start = start.replace(hour=0)
    if granularity == DAY:
        return start
    return start.replace(day=1)


def hour_floor(moment: dt.datetime) -> dt.datetime:
    """The UTC hour that holds `moment`: the unit in which changed records are marked for the metrics."""
    return period_floor(moment, HOUR)


def period_next(start: dt.datetime, granularity: str) -> dt.datetime:
    if granularity == HOUR:
        return start + dt.timedelta(hours=1)
    if granularity == DAY:
        return start + dt.timedelta(days=1)
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def periods_between(
    start: dt.datetime, end: dt.datetime, granularity: str, *, limit: int | None = None
) -> list[dt.datetime]:
    """The periods that overlap [start, end), the first `limit` of them when given: a caller that only
    checks a bound passes one, so a range of millennia costs no more than the bound."""
    periods: list[dt.datetime] = []
    current = period_floor(start, granularity)
    while current < end and (limit is None or len(periods) < limit):
        periods.append(current)
        current = period_next(current, granularity)
    return periods


def merge_ranges(periods: Iterable[dt.datetime], granularity: str) -> list[tuple[dt.datetime, dt.datetime]]:
    """Consecutive periods joined into [start, end) ranges, so each range is one query."""
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for start in sorted(set(periods)):
        end = period_next(start, granularity)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges
