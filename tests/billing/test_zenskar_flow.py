"""Issue 11's acceptance: a whole billing set-up through the Zenskar-compatible paths only, on PostgreSQL.

Raw metric, usage, aggregate (POST /aggregates: this project's extension, Zenskar lists no creation
path), customer, product, a per-unit and a tiered pricing on the metric, a contract whose phase holds
both, then `GET /aggregates/estimates` equals the quantity computed by hand from the records sent.
Metric values are refreshed by the eager Celery task that ingestion enqueues after its commit.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from billing.models import Contract, PhasePricing
from tests.billing.zenskar_support import SCHEMA, ZenskarClient, created, days_ago, iso
from tests.factories import ApiKeyBundle

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _unthrottled(settings: Any) -> None:
    """These tests send many requests a second; the rate limits have their own tests."""
    settings.API_RATE_LIMIT = 0
    settings.INGEST_RATE_LIMIT = 0


@pytest.fixture
def zenskar(full_key: ApiKeyBundle) -> ZenskarClient:
    return ZenskarClient(full_key)


def test_a_full_flow_through_zenskar_paths_gives_the_hand_computed_estimate(
    zenskar: ZenskarClient, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    # Given a raw metric and an aggregate over it (the aggregate first, so ingestion refreshes it).
    raw = created(
        zenskar.post("/rawmetric", {"name": "Compute hours", "api_slug": "compute_hours", "dataschema": SCHEMA})
    )
    assert zenskar.get(f"/rawmetric/{raw['id']}").json()["api_slug"] == "compute_hours"
    assert zenskar.get("/rawmetric/slug/compute_hours").json()["id"] == raw["id"]
    with django_capture_on_commit_callbacks(execute=True):
        aggregate = created(
            zenskar.post(
                "/aggregates",
                {
                    "name": "CPU hours",
                    "slug": "cpu_hours",
                    "usage_event": "compute_hours",
                    "aggregation": "sum",
                    "field": "cpu_usage_hours",
                    "granularity": "day",
                },
            )
        )
    customer = created(zenskar.post("/customer", {"customer_name": "Acme Corp", "external_id": "cus_acme"}))

    # When usage is ingested: three records in the range, one before it, one of another customer.
    start, end = days_ago(3), days_ago(1)
    records = [
        {"customer_id": "cus_acme", "timestamp": iso(start + dt.timedelta(hours=1)), "data": {"cpu_usage_hours": 1.5}},
        {
            "customer_id": "cus_acme",
            "timestamp": iso(start + dt.timedelta(hours=30)),
            "data": {"cpu_usage_hours": 2.25},
        },
        {"customer_id": "cus_acme", "timestamp": iso(end - dt.timedelta(seconds=1)), "data": {"cpu_usage_hours": 4}},
        {"customer_id": "cus_acme", "timestamp": iso(start - dt.timedelta(hours=1)), "data": {"cpu_usage_hours": 100}},
        {"customer_id": "cus_other", "timestamp": iso(start + dt.timedelta(hours=2)), "data": {"cpu_usage_hours": 50}},
    ]
    with django_capture_on_commit_callbacks(execute=True):
        ingested = zenskar.post("/usage/compute_hours", records)
    assert ingested.status_code == 202, ingested.json()
    assert ingested.json()["accepted"] == 5

    # And the catalogue and a contract are set up through Zenskar's paths.
    listed = zenskar.get("/aggregates", {"name__ilike": "cpu"}).json()["results"]
    assert [row["id"] for row in listed] == [aggregate["id"]]
    product = created(zenskar.post("/products", {"name": "Compute", "type": "metered", "sku": "compute"}))
    metered = {"type": "metered", "aggregate_id": aggregate["id"], "unit": "CPU hour"}
    per_unit = created(
        zenskar.post(
            f"/products/{product['id']}/pricing",
            {
                "name": "Per hour",
                "pricing_data": {"pricing_type": "per_unit", "unit_amount": "0.5"},
                "quantity": metered,
            },
        )
    )
    tiered = created(
        zenskar.post(
            f"/products/{product['id']}/pricing",
            {
                "name": "Tiered",
                "pricing_data": {"pricing_type": "tiered", "unit_amount": ["1", "0.5"], "up_to": [5, None]},
                "billing_period": {"cadence": "P1M"},
                "quantity": metered,
            },
        )
    )
    contract = created(
        zenskar.post(
            "/contract_v2",
            {
                "name": "Acme compute",
                "status": "active",
                "currency": "USD",
                "customer_id": customer["id"],
                "start_date": iso(days_ago(20)),  # a date-time, as Zenskar sends it
                "renewal_policy": "do_not_renew",
                "phases": [
                    {
                        "name": "Main",
                        "phase_type": "active",
                        "pricings": [{"pricing_id": per_unit["id"]}, {"pricing_id": tiered["id"]}],
                    }
                ],
            },
        )
    )

    # Then the estimate is the records' sum in [start, end) for that customer: 1.5 + 2.25 + 4.
    estimate = zenskar.get(
        "/aggregates/estimates",
        {
            "aggregate_id": aggregate["id"],
            "customer_id": customer["id"],
            "start_date": iso(start),
            "end_date": iso(end),
        },
    )
    assert estimate.status_code == 200, estimate.json()
    assert Decimal(estimate.json()["quantity"]) == Decimal("7.75")
    assert estimate.json()["quantity"] == "7.75"
    # The same range as Unix seconds and dates gives the same answer.
    by_seconds = zenskar.get(
        "/aggregates/estimates",
        {
            "aggregate_id": "cpu_hours",
            "customer_id": "cus_acme",
            "start_date": int(start.timestamp()),
            "end_date": end.date().isoformat(),
            "get_single": "true",
        },
    ).json()
    assert by_seconds["quantity"] == "7.75"
    assert "estimates" not in by_seconds
    # And the contract's one phase holds both pricings, on the metric.
    stored = Contract.objects.get(id=contract["id"])
    assert stored.start_date == days_ago(20).date()
    links = PhasePricing.objects.filter(phase__contract=stored).select_related("pricing")
    assert sorted(link.pricing.pricing_type for link in links) == ["per_unit", "tiered"]
    assert {link.pricing.metric_id for link in links} == {aggregate["id"]}
    fetched = zenskar.get(f"/contract_v2/{contract['id']}").json()
    assert [len(phase["pricings"]) for phase in fetched["phases"]] == [2]
    logs = zenskar.get(f"/aggregates/logs/{aggregate['id']}", {"customer_id": customer["id"]}).json()["results"]
    assert sum(Decimal(row["value"]) for row in logs) == Decimal("107.75")  # every day's value, the earlier one too
