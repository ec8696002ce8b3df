"""The engine's values equal an independent Python computation over the same records (both databases)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.engine.builder import BuilderDefinition, builder_compute
from tests.factories import organisation_make, usage_event_make
from tests.metrics.reference import reference_values
from usage.models import UsageEvent, UsageRecord

FIELDS = {
    "amount": "Float64",
    "qty": "Int64",
    "price": "Nullable(Decimal)",
    "region": "Nullable(String)",
    "flag": "Bool",
}
BASE = dt.datetime(2026, 10, 30, 20, 0, tzinfo=dt.UTC)  # spans a month boundary
AGGREGATIONS = [
    ("count", ""),
    ("sum", "amount"),
    ("sum", "price"),
    ("min", "qty"),
    ("max", "amount"),
    ("avg", "price"),
    ("avg", "qty"),
    ("unique_count", "region"),
    ("latest", "amount"),
    ("latest", "price"),
]
FILTER_SETS: list[list[dict[str, Any]]] = [
    [],
    [{"field": "region", "op": "eq", "value": "eu"}],
    [{"field": "region", "op": "neq", "value": "us"}, {"field": "qty", "op": "gte", "value": 3}],
    [{"field": "region", "op": "in", "value": ["eu", "ap"]}, {"field": "amount", "op": "lt", "value": 50.5}],
    [{"field": "region", "op": "not_in", "value": ["eu"]}, {"field": "qty", "op": "gt", "value": 1}],
    [{"field": "price", "op": "is_null"}],
    [{"field": "price", "op": "is_not_null"}, {"field": "price", "op": "lte", "value": "10.5"}],
    [{"field": "flag", "op": "eq", "value": True}],
]
GROUP_BYS: list[list[str]] = [[], ["region"], ["region", "flag"]]

record_strategy = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(["cus_a", "cus_b", "cus_c"]),
        "offset": st.integers(min_value=0, max_value=3 * 24 * 3600 - 1),
        "micro": st.integers(min_value=0, max_value=999_999),
        "amount": st.integers(min_value=-10_000, max_value=10_000).map(lambda n: n / 100),
        "qty": st.integers(min_value=-5, max_value=9),
        "price": st.one_of(
            st.none(), st.integers(min_value=0, max_value=100_000).map(lambda n: f"{n // 100}.{n % 100:02d}")
        ),
        "region": st.sampled_from(["eu", "us", "ap", None]),
        "flag": st.booleans(),
        "voided": st.booleans(),
        "superseded": st.sampled_from([False, False, False, True]),
    }
)


def store(usage_event: UsageEvent, generated: list[dict[str, Any]]) -> list[dict[str, Any]]:
    UsageRecord.objects.filter(usage_event=usage_event).delete()
    rows = []
    for g in generated:
        data = {k: g[k] for k in FIELDS if g[k] is not None}
        rows.append(
            UsageRecord(
                usage_event=usage_event,
                customer_id=g["customer_id"],
                timestamp=BASE + dt.timedelta(seconds=g["offset"], microseconds=g["micro"]),
                data=data,
                content_hash="x",
                received_at=BASE,
                voided=g["voided"],
                superseded=g["superseded"],
            )
        )
    UsageRecord.objects.bulk_create(rows)
    return [
        {
            "id": r.id,
            "customer_id": r.customer_id,
            "timestamp": r.timestamp,
            "data": r.data,
            "voided": r.voided,
            "superseded": r.superseded,
        }
        for r in UsageRecord.objects.filter(usage_event=usage_event)
    ]


@pytest.fixture
def usage_event(db: None) -> UsageEvent:
    return usage_event_make(organisation=organisation_make(), api_slug="ops", data=FIELDS)


@pytest.mark.parametrize("granularity", ["hour", "day", "month"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=st.lists(record_strategy, min_size=0, max_size=40), filter_index=st.integers(0, len(FILTER_SETS) - 1))
def test_every_aggregation_equals_an_independent_computation(
    usage_event: UsageEvent, granularity: str, generated: list[dict[str, Any]], filter_index: int
) -> None:
    records = store(usage_event, generated)
    for aggregation, field in AGGREGATIONS:
        for group_by in GROUP_BYS:
            filters = FILTER_SETS[filter_index]
            definition = BuilderDefinition(
                usage_event_id=usage_event.id,
                fields=FIELDS,
                aggregation=aggregation,
                field=field,
                filters=filters,
                group_by=group_by,
                granularity=granularity,
            )
            computed = builder_compute(
                definition=definition, start=BASE - dt.timedelta(days=40), end=BASE + dt.timedelta(days=40)
            )
            got = {(c.customer_id, c.period_start, c.dimension_key): c.value for c in computed}
            expected = reference_values(
                records=records,
                fields=FIELDS,
                aggregation=aggregation,
                field=field,
                filters=filters,
                group_by=group_by,
                granularity=granularity,
            )
            assert got == expected, (aggregation, field, group_by, filters)


def test_every_filter_operator_appears_in_the_property_test() -> None:
    ops = {c["op"] for filters in FILTER_SETS for c in filters}
    assert ops == {"eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "is_null", "is_not_null"}
