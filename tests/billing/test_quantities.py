"""Metered quantities from stored metric values (SPEC §8): overrides count, additive metrics add up over
buckets, non-additive ones need their granularity to equal the cadence. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from billing.periods import cadence_parse
from billing.quantities import (
    MeteredQuantities,
    matrix_columns_check,
    metered_quantities_by_dimension,
    metered_quantity,
    metric_cadence_check,
    metric_is_additive,
    period_datetimes,
)
from billing.rating import pricing_parse, rate
from metrics.models import BillableMetric, MetricKind, MetricValue
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.errors import ValidationFailed

UTC = dt.UTC
d = dt.date


def metric_make(
    organisation: Organisation, *, slug: str, aggregation: str, granularity: str, **extra: Any
) -> BillableMetric:
    return BillableMetric.objects.create(
        organisation=organisation,
        name=slug,
        slug=slug,
        kind=extra.pop("kind", MetricKind.BUILDER),
        aggregation=aggregation,
        field="" if aggregation == "count" else "amount",
        granularity=granularity,
        **extra,
    )


def value_make(
    metric: BillableMetric,
    customer_id: str,
    start: dt.datetime,
    computed: str | None,
    *,
    override: str | None = None,
    dimension: dict[str, str | None] | None = None,
    stale: bool = False,
) -> MetricValue:
    length = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}.get(metric.granularity)
    end = start + length if length else (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return MetricValue.objects.create(
        metric=metric,
        customer_id=customer_id,
        period_start=start,
        period_end=end,
        dimension=dimension,
        dimension_key="" if not dimension else str(sorted(dimension.items())),
        computed_value=computed,
        override_value=override,
        stale=stale,
        metric_version=1,
    )


def january_2024() -> tuple[dt.datetime, dt.datetime]:
    return period_datetimes(start=d(2024, 1, 1), end=d(2024, 2, 1))


@pytest.mark.django_db
def test_an_additive_quantity_sums_the_effective_values_of_the_period(organisation: Organisation) -> None:
    metric = metric_make(organisation, slug="gb", aggregation="sum", granularity="day")
    value_make(metric, "cus_1", dt.datetime(2023, 12, 31, tzinfo=UTC), "1000")  # before the period
    value_make(metric, "cus_1", dt.datetime(2024, 1, 1, tzinfo=UTC), "1.5")  # first day
    value_make(metric, "cus_1", dt.datetime(2024, 1, 10, tzinfo=UTC), "7", override="2.25")  # the override wins
    value_make(metric, "cus_1", dt.datetime(2024, 1, 20, tzinfo=UTC), None, override="0.25", stale=True)
    value_make(metric, "cus_1", dt.datetime(2024, 1, 25, tzinfo=UTC), None)  # no amount at all
    value_make(metric, "cus_1", dt.datetime(2024, 1, 31, tzinfo=UTC), "0.000000000001")  # last day
    value_make(metric, "cus_1", dt.datetime(2024, 2, 1, tzinfo=UTC), "1000")  # after the period
    value_make(metric, "cus_2", dt.datetime(2024, 1, 5, tzinfo=UTC), "1000")  # another customer
    start, end = january_2024()

    quantity = metered_quantity(metric=metric, customer_id="cus_1", start=start, end=end)

    assert quantity == Decimal("4.000000000001")  # 1.5 + 2.25 + 0.25 + 1e-12, exact
    assert metered_quantity(metric=metric, customer_id="nobody", start=start, end=end) == 0


@pytest.mark.django_db
def test_hourly_values_fall_in_the_period_of_their_utc_day(organisation: Organisation) -> None:
    metric = metric_make(organisation, slug="calls", aggregation="count", granularity="hour")
    value_make(metric, "cus_1", dt.datetime(2024, 1, 31, 23, tzinfo=UTC), "3")
    value_make(metric, "cus_1", dt.datetime(2024, 2, 1, 0, tzinfo=UTC), "5")
    january, february = january_2024(), period_datetimes(start=d(2024, 2, 1), end=d(2024, 3, 1))
    assert metered_quantity(metric=metric, customer_id="cus_1", start=january[0], end=january[1]) == 3
    assert metered_quantity(metric=metric, customer_id="cus_1", start=february[0], end=february[1]) == 5


@pytest.mark.django_db
def test_a_non_additive_quantity_is_the_one_value_of_its_period(organisation: Organisation) -> None:
    metric = metric_make(organisation, slug="seats", aggregation="max", granularity="month")
    value_make(metric, "cus_1", dt.datetime(2024, 1, 1, tzinfo=UTC), "40")
    value_make(metric, "cus_1", dt.datetime(2024, 2, 1, tzinfo=UTC), "12", override="10")
    february = period_datetimes(start=d(2024, 2, 1), end=d(2024, 3, 1))
    assert metered_quantity(metric=metric, customer_id="cus_1", start=february[0], end=february[1]) == 10
    # A partial first period (a contract starting on the 15th) is still February's one value.
    partial = period_datetimes(start=d(2024, 2, 15), end=d(2024, 3, 1))
    assert metered_quantity(metric=metric, customer_id="cus_1", start=partial[0], end=partial[1]) == 10


@pytest.mark.django_db
def test_a_non_additive_quantity_over_two_buckets_is_refused_not_summed(organisation: Organisation) -> None:
    metric = metric_make(organisation, slug="seats", aggregation="max", granularity="month")
    value_make(metric, "cus_1", dt.datetime(2024, 1, 1, tzinfo=UTC), "40")
    value_make(metric, "cus_1", dt.datetime(2024, 2, 1, tzinfo=UTC), "10")
    start, end = period_datetimes(start=d(2024, 1, 15), end=d(2024, 2, 15))
    with pytest.raises(ValidationFailed) as caught:
        metered_quantity(
            metric=metric, customer_id="cus_1", start=start, end=end, field="pricings[0].billing_period.cadence"
        )
    assert list(caught.value.errors) == ["pricings[0].billing_period.cadence"]


@pytest.mark.django_db
def test_quantities_by_dimension_key_each_matrix_cell(organisation: Organisation) -> None:
    metric = metric_make(organisation, slug="cpu", aggregation="sum", granularity="day", group_by=["region", "plan"])
    jan = [dt.datetime(2024, 1, day, tzinfo=UTC) for day in (1, 2, 3)]
    value_make(metric, "cus_1", jan[0], "10", dimension={"region": "us", "plan": "gold"})
    value_make(metric, "cus_1", jan[1], "5", override="6", dimension={"region": "us", "plan": "gold"})
    value_make(metric, "cus_1", jan[0], "1.5", dimension={"region": "eu", "plan": "gold"})
    value_make(metric, "cus_1", jan[2], "4", dimension={"region": None, "plan": "gold"})
    start, end = january_2024()

    quantities = metered_quantities_by_dimension(
        metric=metric, customer_id="cus_1", start=start, end=end, columns=["region", "plan"]
    )

    assert quantities == {("us", "gold"): Decimal(16), ("eu", "gold"): Decimal("1.5"), (None, "gold"): Decimal(4)}
    by_plan = metered_quantities_by_dimension(
        metric=metric, customer_id="cus_1", start=start, end=end, columns=["plan"]
    )
    assert by_plan == {("gold",): Decimal("21.5")}
    # Rated: 16 x 2 + 1.5 x 3, and the value with no region is flagged (no entry, no default).
    model = pricing_parse(
        pricing_data={
            "pricing_type": "matrix",
            "dimensions": [{"name": "Region", "column_name": "region"}, {"name": "Plan", "column_name": "plan"}],
            "values": [
                {"dimension_values": ["us", "gold"], "unit_amount": 2},
                {"dimension_values": ["eu", "gold"], "unit_amount": 3},
            ],
        }
    )
    rating = rate(model=model, dimensions=quantities)
    assert rating.amount == Decimal("36.5")
    assert len(rating.flagged) == 1


@pytest.mark.django_db
def test_matrix_columns_must_be_dimensions_of_the_metric(organisation: Organisation) -> None:
    grouped = metric_make(organisation, slug="cpu", aggregation="sum", granularity="day", group_by=["region"])
    matrix_columns_check(metric=grouped, columns=["region"])
    with pytest.raises(ValidationFailed) as caught:
        matrix_columns_check(metric=grouped, columns=["region", "zone"])
    assert list(caught.value.errors) == ["pricing_data.dimensions[1].column_name"]
    sql = metric_make(organisation, slug="sqlm", aggregation="", granularity="day", kind=MetricKind.SQL, sql="SELECT 1")
    matrix_columns_check(metric=sql, columns=["dimension"])


CADENCE_CASES = [
    # (aggregation, granularity, kind, cadence, anchor, refused field or None)
    ("sum", "day", "builder", "P1M", d(2024, 1, 15), None),  # additive day values tile any period
    ("count", "hour", "builder", "P1W", d(2024, 1, 3), None),
    ("sum", "month", "builder", "P3M", d(2024, 1, 1), None),
    ("sum", "month", "builder", "P1D", None, "billing_period.cadence"),  # a month cannot be split into days
    ("sum", "month", "builder", "P1M", d(2024, 1, 15), "anchor_date"),  # periods would straddle months
    ("max", "month", "builder", "P1M", d(2024, 1, 1), None),
    ("max", "month", "builder", "P1M", None, None),
    ("max", "day", "builder", "P1D", d(2024, 1, 15), None),
    ("max", "day", "builder", "P1M", d(2024, 1, 1), "billing_period.cadence"),
    ("avg", "month", "builder", "P1Y", d(2024, 1, 1), "billing_period.cadence"),
    ("unique_count", "hour", "builder", "P1D", d(2024, 1, 1), "billing_period.cadence"),
    ("latest", "month", "builder", "P1M", d(2024, 1, 31), "anchor_date"),
    ("", "day", "sql", "P1M", d(2024, 1, 1), "billing_period.cadence"),  # SQL metrics: not declared additive
    ("", "day", "sql", "P1D", d(2024, 1, 1), None),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("aggregation", "granularity", "kind", "cadence", "anchor", "refused"), CADENCE_CASES)
def test_metric_cadence_check(
    organisation: Organisation,
    aggregation: str,
    granularity: str,
    kind: str,
    cadence: str,
    anchor: dt.date | None,
    refused: str | None,
) -> None:
    metric = metric_make(organisation, slug="m", aggregation=aggregation, granularity=granularity, kind=kind)
    assert metric_is_additive(metric=metric) == (aggregation in ("sum", "count"))
    if refused is None:
        metric_cadence_check(metric=metric, cadence=cadence_parse(text=cadence), anchor=anchor)
        return
    with pytest.raises(ValidationFailed) as caught:
        metric_cadence_check(metric=metric, cadence=cadence_parse(text=cadence), anchor=anchor)
    assert list(caught.value.errors) == [refused]
    assert "'m'" in caught.value.detail  # names the metric


def test_period_datetimes_are_utc_midnights() -> None:
    start, end = period_datetimes(start=d(2024, 2, 29), end=d(2024, 3, 1))
    assert (start, end) == (dt.datetime(2024, 2, 29, tzinfo=UTC), dt.datetime(2024, 3, 1, tzinfo=UTC))


@pytest.mark.django_db
def test_prefetched_quantities_answer_as_the_per_customer_read(
    organisation: Organisation, django_assert_num_queries: Any
) -> None:
    cpu = metric_make(organisation, slug="cpu", aggregation="sum", granularity="day", group_by=["region"])
    peak = metric_make(organisation, slug="peak", aggregation="max", granularity="day")
    jan = [dt.datetime(2024, 1, day, tzinfo=UTC) for day in (1, 2, 31)]
    value_make(cpu, "cus_1", jan[0], "10", dimension={"region": "us"})
    value_make(cpu, "cus_1", jan[1], "5", override="6.25", dimension={"region": "us"})
    value_make(cpu, "cus_1", jan[2], "1.5", dimension={"region": "eu"})
    value_make(cpu, "cus_1", dt.datetime(2024, 2, 1, tzinfo=UTC), "1000", dimension={"region": "us"})
    value_make(cpu, "cus_2", jan[0], None, override="0.5", dimension={"region": None})
    value_make(peak, "cus_1", jan[0], "7")
    value_make(peak, "cus_1", jan[1], "9")  # two buckets of a non-additive metric: refused, as per customer
    start, end = january_2024()
    quantities = MeteredQuantities()

    with django_assert_num_queries(1):
        quantities.prefetch(metrics=[cpu, peak], customer_ids=["cus_1", "cus_2", "nobody"], start=start, end=end)
        for customer in ("cus_1", "cus_2", "nobody"):
            for columns in (None, ["region"]):
                quantities(metric=cpu, customer_id=customer, start=start, end=end, columns=columns)

    for customer in ("cus_1", "cus_2", "nobody"):
        for columns in (None, ["region"]):
            assert quantities(
                metric=cpu, customer_id=customer, start=start, end=end, columns=columns
            ) == metered_quantities_by_dimension(
                metric=cpu, customer_id=customer, start=start, end=end, columns=columns
            )
    assert quantities(metric=cpu, customer_id="cus_1", start=start, end=end, columns=["region"]) == {
        ("us",): Decimal("16.25"),
        ("eu",): Decimal("1.5"),
    }
    # Not prefetched (another period; a non-additive metric): read per customer, refusals included.
    february = period_datetimes(start=d(2024, 2, 1), end=d(2024, 3, 1))
    assert quantities(metric=cpu, customer_id="cus_1", start=february[0], end=february[1], columns=["region"]) == {
        ("us",): Decimal(1000)
    }
    with pytest.raises(ValidationFailed):
        quantities(metric=peak, customer_id="cus_1", start=start, end=end, columns=None)
