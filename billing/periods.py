"""Billing periods of a contract (SPEC §8): from the anchor, stepping by the cadence, clipped to the
contract's dates and its phases, with the exact proration fractions of partial periods.

Pure functions over calendar dates; a period `[start, end)` is metered from `start` to `end` at UTC
midnight (billing.quantities).

- Period k of a cadence is `[boundary(k), boundary(k + 1))`, where `boundary(k)` is the anchor moved
  by k cadences: k x n days for P1D and P1W; for month cadences k x n calendar months *from the
  anchor* (never step by step), on the anchor's day or the month's last day when it is shorter. An
  anchor on the 31st bills Jan 31 → Feb 28 (29 in leap years) → Mar 31 → Apr 30; an anchor on Feb 29
  with P1Y falls on Feb 28 in other years. k may be negative: a contract starting before its anchor
  begins with a partial period.
- Clipping: to the contract's `[start, end)` (`end` is the end date or the expiry date, exclusive) and,
  when phases are given, to each phase: a period crossed by a phase change is split in pieces, one per
  phase, each with its own fraction (so a pricing change mid-period prorates both pricings). Time that
  no phase covers yields no piece (it has no pricing).
- Proration: a piece's `fraction` is its length over its full cadence period's length, in days. The
  full period is the unclipped one, so a first period [Jan 15, Feb 1) of a monthly contract anchored on
  the 1st bills 17/31 of the fixed fee.
- Pauses (the contract's pause, not a phase of type `pause`): they stop fixed fees, not usage. A
  piece keeps its whole `[start, end)` for usage, while `fixed_days` (hence `fixed_fraction`) leaves
  out the paused days. Phases of type `trial` or `pause` charge nothing at all (`charges` is False);
  they are returned so the caller can show them.
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import functools
import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from zenskar_site.lib.errors import ValidationFailed

# Digits of a prorated amount before the caller rounds it to the currency: far more than a cent needs,
# so the one rounding that matters stays money_round's.
_PRORATE_PRECISION = 60
CHARGING_PHASE_TYPES = frozenset({"active"})


@dataclass(frozen=True)
class Cadence:
    text: str  # ISO 8601 duration: P1D, P1W, P1M, P3M, P6M, P1Y
    months: int  # calendar months per period (0 for day cadences)
    days: int  # days per period (0 for month cadences)


CADENCES: dict[str, Cadence] = {
    c.text: c
    for c in (
        Cadence("P1D", 0, 1),
        Cadence("P1W", 0, 7),
        Cadence("P1M", 1, 0),
        Cadence("P3M", 3, 0),
        Cadence("P6M", 6, 0),
        Cadence("P1Y", 12, 0),
    )
}


def cadence_parse(*, text: object, field: str = "billing_period.cadence") -> Cadence:
    """A cadence from its ISO 8601 text (case-insensitive); anything else is a 400 naming `field`."""
    cadence = CADENCES.get(text.strip().upper()) if isinstance(text, str) else None
    if cadence is None:
        shown = text[:20] if isinstance(text, str) else text
        raise ValidationFailed({field: [f"{shown!r} is not a billing cadence: expected one of {', '.join(CADENCES)}."]})
    return cadence


@dataclass(frozen=True)
class PhaseSpan:
    """A contract phase's dates `[start, end)` (end None: open), its type and the caller's key for it."""

    start: dt.date
    end: dt.date | None
    phase_type: str = "active"
    key: Hashable = None


@dataclass(frozen=True)
class PauseSpan:
    """A pause of the contract `[start, end)` (end None: until further notice): no fixed fees in it."""

    start: dt.date
    end: dt.date | None


@dataclass(frozen=True)
class BillingPeriod:
    """One piece of a billing period: a cadence period clipped to the contract and to one phase."""

    start: dt.date
    end: dt.date  # exclusive
    full_start: dt.date  # the whole cadence period the piece belongs to, unclipped
    full_end: dt.date
    period_start: dt.date  # the billing period an invoice covers: the cadence period clipped to the contract
    period_end: dt.date
    index: int  # the cadence period's number counted from the anchor (0: the one starting on it)
    fixed_days: int  # days of the piece outside every pause: what fixed fees are charged for
    phase_key: Hashable = None
    phase_type: str | None = None  # None when no phases were given

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def full_days(self) -> int:
        return (self.full_end - self.full_start).days

    @property
    def fraction(self) -> Decimal:
        """days / full_days (1 for a whole period); exact when it terminates, else to 28 digits: prorate
        amounts with `prorate`, which divides once."""
        return Decimal(self.days) / Decimal(self.full_days)

    @property
    def fixed_fraction(self) -> Decimal:
        return Decimal(self.fixed_days) / Decimal(self.full_days)

    @property
    def is_partial(self) -> bool:
        return self.days != self.full_days

    @property
    def charges(self) -> bool:
        """False in trial and pause phases, which charge nothing (SPEC §8)."""
        return self.phase_type is None or self.phase_type in CHARGING_PHASE_TYPES

    def prorate(self, *, amount: Decimal) -> Decimal:
        """`amount * days / full_days`, one division, unrounded: round the line with money_round."""
        return _prorate(amount, self.days, self.full_days)

    def fixed_prorate(self, *, amount: Decimal) -> Decimal:
        """A fixed fee for this piece: prorated over the days it is not paused."""
        return _prorate(amount, self.fixed_days, self.full_days)


def _prorate(amount: Decimal, days: int, full_days: int) -> Decimal:
    if days == full_days:
        return amount
    with decimal.localcontext(decimal.Context(prec=_PRORATE_PRECISION)):
        return (amount * days) / full_days


# --- boundaries ---


@functools.lru_cache(maxsize=4096)  # pure; a month-end run asks the same few anchors and months per contract
def _add_months(anchor: dt.date, months: int) -> dt.date:
    total = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(total, 12)
    last_day = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(anchor.day, last_day))


def cadence_boundary(*, cadence: Cadence, anchor: dt.date, index: int) -> dt.date:
    """The start of cadence period `index` (0: the anchor's own), always computed from the anchor."""
    if cadence.months:
        return _add_months(anchor, index * cadence.months)
    return anchor + dt.timedelta(days=index * cadence.days)


def cadence_index(*, cadence: Cadence, anchor: dt.date, day: dt.date) -> int:
    """The number of the cadence period that holds `day`."""
    if cadence.months:
        months = (day.year - anchor.year) * 12 + day.month - anchor.month
        index = months // cadence.months
    else:
        index = (day - anchor).days // cadence.days
    # The month estimate can be one off around short months (an anchor on the 31st): settle it.
    while cadence_boundary(cadence=cadence, anchor=anchor, index=index) > day:
        index -= 1
    while cadence_boundary(cadence=cadence, anchor=anchor, index=index + 1) <= day:
        index += 1
    return index


# --- periods ---


def billing_periods(
    *,
    cadence: Cadence,
    anchor: dt.date,
    start: dt.date,
    end: dt.date | None,
    until: dt.date,
    phases: Sequence[PhaseSpan] = (),
    pauses: Sequence[PauseSpan] = (),
) -> list[BillingPeriod]:
    """The contract's billing-period pieces that start before `until`, in time order.

    `end` is exclusive (a contract ending on Mar 1 bills through Feb 28); pass the expiry date for an
    expired contract, so its last period is partial. `until` bounds an open-ended contract: pass the
    day after today to get every closed period and the current, open one (whose `end` is after today).
    With no phases every piece is a whole billing period clipped to [start, end) and its `phase_type` is
    None. Phases must not overlap (`phase_spans_check`).
    """
    stop = until if end is None else min(end, until)
    if start >= stop:
        return []
    ordered_phases = sorted(phases, key=lambda p: p.start)
    paused = _merged([(p.start, p.end) for p in pauses])
    periods: list[BillingPeriod] = []
    index = cadence_index(cadence=cadence, anchor=anchor, day=start)
    while True:
        full_start = cadence_boundary(cadence=cadence, anchor=anchor, index=index)
        if full_start >= stop:
            break
        full_end = cadence_boundary(cadence=cadence, anchor=anchor, index=index + 1)
        period_start = max(full_start, start)
        period_end = full_end if end is None else min(full_end, end)
        pieces: list[tuple[dt.date, dt.date, PhaseSpan | None]]
        if not phases:
            pieces = [(period_start, period_end, None)]
        else:
            pieces = []
            for span in ordered_phases:
                piece_start = max(period_start, span.start)
                piece_end = period_end if span.end is None else min(period_end, span.end)
                if piece_start < piece_end:
                    pieces.append((piece_start, piece_end, span))
        for piece_start, piece_end, phase in pieces:
            if piece_start >= until:
                break
            periods.append(
                BillingPeriod(
                    start=piece_start,
                    end=piece_end,
                    full_start=full_start,
                    full_end=full_end,
                    period_start=period_start,
                    period_end=period_end,
                    index=index,
                    fixed_days=(piece_end - piece_start).days - _overlap_days(paused, piece_start, piece_end),
                    phase_key=None if phase is None else phase.key,
                    phase_type=None if phase is None else phase.phase_type,
                )
            )
        index += 1
    return periods


def _merged(spans: list[tuple[dt.date, dt.date | None]]) -> list[tuple[dt.date, dt.date]]:
    """Pauses joined where they overlap or touch, an open end read as the end of time."""
    merged: list[tuple[dt.date, dt.date]] = []
    for span_start, span_end in sorted((s, e or dt.date.max) for s, e in spans):
        if span_start >= span_end:
            continue
        if merged and span_start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], span_end))
        else:
            merged.append((span_start, span_end))
    return merged


def _overlap_days(spans: list[tuple[dt.date, dt.date]], start: dt.date, end: dt.date) -> int:
    return sum(max((min(end, e) - max(start, s)).days, 0) for s, e in spans)


def phase_spans_check(*, phases: Sequence[PhaseSpan], field: str = "phases") -> None:
    """Phases that end after they start and do not overlap; else a 400 naming the phase's field.

    Indexes in the field names are the phases' positions in `phases`, as the caller received them.
    """
    for position, phase in enumerate(phases):
        if phase.end is not None and phase.end <= phase.start:
            raise ValidationFailed({f"{field}[{position}].end_date": ["A phase must end after it starts."]})
    order = sorted(range(len(phases)), key=lambda i: phases[i].start)
    for before, after in itertools.pairwise(order):
        earlier, later = phases[before], phases[after]
        if earlier.end is None or earlier.end > later.start:
            raise ValidationFailed(
                {
                    f"{field}[{after}].start_date": [
                        f"The phase overlaps phase {before} (which runs until "
                        f"{earlier.end.isoformat() if earlier.end else 'no end date'})."
                    ]
                }
            )
