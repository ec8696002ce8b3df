"""Billing periods (SPEC §8): anchors on month ends, leap years, partial first and last periods, pauses,
and phases that change pricing in the middle of a period."""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.periods import (
    CADENCES,
    BillingPeriod,
    PauseSpan,
    PhaseSpan,
    billing_periods,
    cadence_parse,
    phase_spans_check,
)
from zenskar_site.lib.errors import ValidationFailed

pytestmark = pytest.mark.sqlite_only  # no database here: one pass is enough

d = dt.date
MONTHLY = cadence_parse(text="P1M")


def spans(periods: list[BillingPeriod]) -> list[tuple[dt.date, dt.date]]:
    return [(p.start, p.end) for p in periods]


def test_an_anchor_on_the_31st_falls_on_the_last_day_of_shorter_months_in_a_leap_year() -> None:
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2024, 1, 31), start=d(2024, 1, 31), end=None, until=d(2024, 6, 1)
    )
    assert spans(periods) == [
        (d(2024, 1, 31), d(2024, 2, 29)),
        (d(2024, 2, 29), d(2024, 3, 31)),  # back to the 31st: counted from the anchor, not from Feb 29
        (d(2024, 3, 31), d(2024, 4, 30)),
        (d(2024, 4, 30), d(2024, 5, 31)),
        (d(2024, 5, 31), d(2024, 6, 30)),
    ]
    assert all(p.fraction == 1 for p in periods)
    assert [p.index for p in periods] == [0, 1, 2, 3, 4]


def test_an_anchor_on_the_31st_in_a_common_year_uses_february_28() -> None:
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2023, 1, 31), start=d(2023, 1, 31), end=None, until=d(2023, 3, 1)
    )
    assert spans(periods) == [(d(2023, 1, 31), d(2023, 2, 28)), (d(2023, 2, 28), d(2023, 3, 31))]
    assert [p.full_days for p in periods] == [28, 31]


def test_a_yearly_anchor_on_february_29_falls_on_the_28th_in_common_years() -> None:
    periods = billing_periods(
        cadence=cadence_parse(text="P1Y"), anchor=d(2024, 2, 29), start=d(2024, 2, 29), end=None, until=d(2028, 3, 1)
    )
    assert [p.start for p in periods] == [
        d(2024, 2, 29),
        d(2025, 2, 28),
        d(2026, 2, 28),
        d(2027, 2, 28),
        d(2028, 2, 29),
    ]
    assert [p.full_days for p in periods[:2]] == [365, 365]


def test_a_quarterly_anchor_on_november_30_follows_february() -> None:
    periods = billing_periods(
        cadence=cadence_parse(text="P3M"), anchor=d(2023, 11, 30), start=d(2023, 11, 30), end=None, until=d(2024, 9, 1)
    )
    assert [p.start for p in periods] == [d(2023, 11, 30), d(2024, 2, 29), d(2024, 5, 30), d(2024, 8, 30)]


def test_a_mid_period_start_is_prorated_by_the_exact_fraction_of_its_full_period() -> None:
    """Started Jan 15 on a contract anchored on the 1st: the first invoice bills 17 of January's 31 days."""
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2025, 1, 1), start=d(2025, 1, 15), end=None, until=d(2025, 3, 1)
    )
    first, second = periods
    assert (first.start, first.end, first.full_start, first.full_end) == (
        d(2025, 1, 15),
        d(2025, 2, 1),
        d(2025, 1, 1),
        d(2025, 2, 1),
    )
    assert first.is_partial
    assert (first.days, first.full_days) == (17, 31)
    assert first.prorate(amount=Decimal(31)) == Decimal(17)
    assert first.prorate(amount=Decimal(100)) * 31 == Decimal(1700)  # one division, exact to 60 digits
    assert first.fraction == Decimal(17) / Decimal(31)
    assert (second.start, second.end, second.fraction) == (d(2025, 2, 1), d(2025, 3, 1), Decimal(1))
    assert second.prorate(amount=Decimal("99.99")) == Decimal("99.99")


def test_an_anchor_after_the_start_begins_with_a_partial_period_before_it() -> None:
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2025, 2, 10), start=d(2025, 1, 20), end=None, until=d(2025, 2, 11)
    )
    assert [(p.start, p.end, p.full_start, p.index) for p in periods] == [
        (d(2025, 1, 20), d(2025, 2, 10), d(2025, 1, 10), -1),
        (d(2025, 2, 10), d(2025, 3, 10), d(2025, 2, 10), 0),
    ]
    assert periods[0].fraction == Decimal(21) / Decimal(31)


def test_an_expiry_mid_period_ends_with_a_partial_last_period() -> None:
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 1, 1), end=d(2024, 3, 10), until=d(2030, 1, 1)
    )
    assert spans(periods) == [
        (d(2024, 1, 1), d(2024, 2, 1)),
        (d(2024, 2, 1), d(2024, 3, 1)),
        (d(2024, 3, 1), d(2024, 3, 10)),
    ]
    last = periods[-1]
    assert (last.days, last.full_days, last.period_end) == (9, 31, d(2024, 3, 10))
    assert last.prorate(amount=Decimal(31)) == Decimal(9)


def test_an_end_on_a_boundary_adds_no_empty_period() -> None:
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 1, 1), end=d(2024, 3, 1), until=d(2030, 1, 1)
    )
    assert len(periods) == 2
    assert periods[-1].end == d(2024, 3, 1)


def test_until_bounds_an_open_ended_contract_and_keeps_the_open_period() -> None:
    """On Mar 15 (until = Mar 16) the March period is the open one: it ends after today."""
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 1, 1), end=None, until=d(2024, 3, 16)
    )
    assert [p.start for p in periods] == [d(2024, 1, 1), d(2024, 2, 1), d(2024, 3, 1)]
    assert periods[-1].end == d(2024, 4, 1)


def test_a_start_on_or_after_the_end_has_no_periods() -> None:
    assert (
        billing_periods(
            cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 3, 1), end=d(2024, 3, 1), until=d(2025, 1, 1)
        )
        == []
    )
    assert (
        billing_periods(cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 3, 1), end=None, until=d(2024, 3, 1)) == []
    )


def test_weekly_and_daily_cadences_step_by_days() -> None:
    weekly = billing_periods(
        cadence=cadence_parse(text="P1W"), anchor=d(2024, 2, 26), start=d(2024, 2, 28), end=None, until=d(2024, 3, 12)
    )
    assert [(p.start, p.end, p.full_start) for p in weekly] == [
        (d(2024, 2, 28), d(2024, 3, 4), d(2024, 2, 26)),
        (d(2024, 3, 4), d(2024, 3, 11), d(2024, 3, 4)),
        (d(2024, 3, 11), d(2024, 3, 18), d(2024, 3, 11)),
    ]
    assert weekly[0].fraction == Decimal(5) / Decimal(7)
    daily = billing_periods(
        cadence=cadence_parse(text="p1d"),
        anchor=d(2024, 2, 28),
        start=d(2024, 2, 28),
        end=d(2024, 3, 2),
        until=d(2025, 1, 1),
    )
    assert [p.start for p in daily] == [d(2024, 2, 28), d(2024, 2, 29), d(2024, 3, 1)]


def test_a_pause_stops_fixed_fees_for_the_paused_days_but_not_usage() -> None:
    periods = billing_periods(
        cadence=MONTHLY,
        anchor=d(2024, 1, 1),
        start=d(2024, 1, 1),
        end=None,
        until=d(2024, 4, 1),
        pauses=[PauseSpan(d(2024, 2, 10), d(2024, 2, 20))],
    )
    january, february, march = periods
    assert (february.start, february.end) == (d(2024, 2, 1), d(2024, 3, 1))  # usage: the whole period
    assert (february.days, february.fixed_days) == (29, 19)
    assert february.fixed_fraction == Decimal(19) / Decimal(29)
    assert february.fixed_prorate(amount=Decimal(29)) == Decimal(19)
    assert february.prorate(amount=Decimal(29)) == Decimal(29)
    assert january.fixed_days == 31
    assert march.fixed_days == 31


def test_overlapping_and_open_pauses_count_each_paused_day_once() -> None:
    periods = billing_periods(
        cadence=MONTHLY,
        anchor=d(2024, 1, 1),
        start=d(2024, 1, 1),
        end=None,
        until=d(2024, 3, 1),
        pauses=[
            PauseSpan(d(2024, 1, 5), d(2024, 1, 15)),
            PauseSpan(d(2024, 1, 10), d(2024, 1, 20)),
            PauseSpan(d(2024, 2, 25), None),
        ],
    )
    assert [p.fixed_days for p in periods] == [31 - 15, 24]


def test_a_phase_change_mid_period_splits_it_and_prorates_each_phase() -> None:
    """Pricing A until Feb 15, pricing B from then: February is billed 14/29 at A and 15/29 at B."""
    phases = [PhaseSpan(d(2024, 1, 1), d(2024, 2, 15), "active", "A"), PhaseSpan(d(2024, 2, 15), None, "active", "B")]
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 1, 1), end=None, until=d(2024, 3, 2), phases=phases
    )
    assert [(p.start, p.end, p.phase_key, p.days, p.full_days) for p in periods] == [
        (d(2024, 1, 1), d(2024, 2, 1), "A", 31, 31),
        (d(2024, 2, 1), d(2024, 2, 15), "A", 14, 29),
        (d(2024, 2, 15), d(2024, 3, 1), "B", 15, 29),
        (d(2024, 3, 1), d(2024, 4, 1), "B", 31, 31),
    ]
    # Both pieces belong to February's one invoice.
    assert {(p.period_start, p.period_end) for p in periods[1:3]} == {(d(2024, 2, 1), d(2024, 3, 1))}
    assert periods[1].fraction + periods[2].fraction == 1
    assert periods[1].prorate(amount=Decimal(29)) + periods[2].prorate(amount=Decimal(29)) == Decimal(29)


def test_trial_and_pause_phases_are_returned_but_charge_nothing() -> None:
    phases = [
        PhaseSpan(d(2024, 1, 1), d(2024, 1, 15), "trial", 1),
        PhaseSpan(d(2024, 1, 15), d(2024, 2, 10), "active", 2),
        PhaseSpan(d(2024, 2, 10), d(2024, 3, 1), "pause", 3),
    ]
    periods = billing_periods(
        cadence=MONTHLY,
        anchor=d(2024, 1, 1),
        start=d(2024, 1, 1),
        end=d(2024, 3, 1),
        until=d(2025, 1, 1),
        phases=phases,
    )
    assert [(p.phase_key, p.phase_type, p.charges, p.days) for p in periods] == [
        (1, "trial", False, 14),
        (2, "active", True, 17),
        (2, "active", True, 9),
        (3, "pause", False, 20),
    ]


def test_time_no_phase_covers_is_not_billed() -> None:
    phases = [PhaseSpan(d(2024, 1, 10), d(2024, 1, 20), "active", "only")]
    periods = billing_periods(
        cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 1, 1), end=None, until=d(2024, 3, 1), phases=phases
    )
    assert spans(periods) == [(d(2024, 1, 10), d(2024, 1, 20))]
    assert periods[0].fraction == Decimal(10) / Decimal(31)


def test_without_phases_the_phase_fields_are_empty_and_everything_charges() -> None:
    (period,) = billing_periods(
        cadence=MONTHLY, anchor=d(2024, 1, 1), start=d(2024, 1, 1), end=d(2024, 2, 1), until=d(2025, 1, 1)
    )
    assert (period.phase_key, period.phase_type, period.charges) == (None, None, True)


@pytest.mark.parametrize("text", ["P2M", "1M", "", "monthly", None, 30])
def test_an_unknown_cadence_is_a_400_naming_the_field(text: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        cadence_parse(text=text, field="pricing_data.pricing_period.cadence")
    assert list(caught.value.errors) == ["pricing_data.pricing_period.cadence"]


def test_overlapping_phases_are_a_400_naming_the_later_phase() -> None:
    phases = [PhaseSpan(d(2024, 2, 1), None), PhaseSpan(d(2024, 1, 1), d(2024, 2, 5))]
    with pytest.raises(ValidationFailed) as caught:
        phase_spans_check(phases=phases)
    assert list(caught.value.errors) == ["phases[0].start_date"]
    with pytest.raises(ValidationFailed) as caught:
        phase_spans_check(phases=[PhaseSpan(d(2024, 2, 1), d(2024, 2, 1))])
    assert list(caught.value.errors) == ["phases[0].end_date"]
    phase_spans_check(phases=[PhaseSpan(d(2024, 1, 1), d(2024, 2, 1)), PhaseSpan(d(2024, 2, 1), None)])


# --- properties over any anchor, start, end and cadence ---

dates = st.dates(min_value=d(2019, 1, 1), max_value=d(2031, 12, 31))


@settings(max_examples=1500, deadline=None)
@given(
    cadence=st.sampled_from(sorted(CADENCES)),
    anchor=dates,
    start=dates,
    length=st.integers(1, 800),
    open_ended=st.booleans(),
    pause=st.one_of(st.none(), st.tuples(dates, st.integers(1, 90))),
)
def test_periods_tile_the_contract_and_follow_the_anchor(
    cadence: str, anchor: dt.date, start: dt.date, length: int, open_ended: bool, pause: tuple[dt.date, int] | None
) -> None:
    step = CADENCES[cadence]
    stop = start + dt.timedelta(days=length)
    pauses = [] if pause is None else [PauseSpan(pause[0], pause[0] + dt.timedelta(days=pause[1]))]
    periods = billing_periods(
        cadence=step, anchor=anchor, start=start, end=None if open_ended else stop, until=stop, pauses=pauses
    )
    # Contiguous, no gaps or overlaps, from the start to the end (or past `until` for the open period).
    assert periods[0].start == start
    for earlier, later in itertools.pairwise(periods):
        assert earlier.end == later.start
        assert earlier.full_end == later.full_start
        assert later.index == earlier.index + 1
    assert periods[-1].start < stop
    assert periods[-1].end == (periods[-1].full_end if open_ended else stop)
    for period in periods:
        assert period.full_start <= period.start < period.end <= period.full_end
        assert 0 < period.fraction <= 1
        assert 0 <= period.fixed_days <= period.days
        if step.months:
            # On the anchor's day, or the last day of a shorter month.
            last = calendar.monthrange(period.full_start.year, period.full_start.month)[1]
            assert period.full_start.day == min(anchor.day, last)
            assert 28 * step.months <= period.full_days <= 31 * step.months + (1 if step.months == 12 else 0)
        else:
            assert period.full_days == step.days
            assert (period.full_start - anchor).days % step.days == 0
    if pause is not None:
        paused_days = sum(p.days - p.fixed_days for p in periods)
        pause_start, pause_end = pauses[0].start, pauses[0].end
        assert pause_end is not None
        covered_end = periods[-1].end
        expected = max((min(pause_end, covered_end) - max(pause_start, start)).days, 0)
        assert paused_days == expected


@settings(max_examples=500, deadline=None)
@given(anchor=dates, start=dates, cuts=st.lists(st.integers(1, 400), min_size=1, max_size=4, unique=True))
def test_phase_pieces_partition_each_period(anchor: dt.date, start: dt.date, cuts: list[int]) -> None:
    boundaries = [start + dt.timedelta(days=c) for c in sorted(cuts)]
    edges = [start, *boundaries]
    phases = [PhaseSpan(a, b, "active", i) for i, (a, b) in enumerate(zip(edges, [*boundaries, None], strict=True))]
    whole = billing_periods(
        cadence=MONTHLY, anchor=anchor, start=start, end=None, until=boundaries[-1] + dt.timedelta(days=1)
    )
    pieces = billing_periods(
        cadence=MONTHLY,
        anchor=anchor,
        start=start,
        end=None,
        until=boundaries[-1] + dt.timedelta(days=1),
        phases=phases,
    )
    for period in whole:
        parts = [p for p in pieces if p.full_start == period.full_start]
        assert sum(p.days for p in parts) == period.days
        assert sum(p.prorate(amount=Decimal(period.full_days)) for p in parts) == period.days
        assert all(p.period_start == period.start and p.period_end == period.end for p in parts)
