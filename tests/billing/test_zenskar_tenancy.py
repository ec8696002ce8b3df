"""Tenancy of the Zenskar-compatible paths: another organisation's raw metrics, aggregates, customers,
products, pricings, plans and contracts are 404 on every path that names them (reads and writes), absent
from every list, and refused (400 naming the field) when a body refers to them; nothing of theirs changes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest

from billing.catalogue import plan_create
from billing.contracts import contract_create
from billing.models import Contract, Customer, Plan, Pricing, Product
from metrics.models import BillableMetric, MetricValue
from tests.billing.conftest import customer_make, flat_fee_make, metered_pricing_make, metric_make
from tests.billing.zenskar_support import ZenskarClient
from tests.factories import ApiKeyBundle
from usage.models import UsageEvent
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Organisation


@dataclass
class Theirs:
    usage_event: UsageEvent
    metric: BillableMetric
    customer: Customer
    product: Product
    pricing: Pricing
    plan: Plan
    contract: Contract
    phase_id: str


@pytest.fixture
def theirs(other_organisation: Organisation) -> Theirs:
    actor = system_actor(organisation=other_organisation)
    metric = metric_make(other_organisation)
    customer = customer_make(other_organisation, external_id="cus_theirs")
    pricing = metered_pricing_make(other_organisation, metric)
    plan = plan_create(actor=actor, data={"name": "Their plan", "currency": "USD", "pricing_ids": [str(pricing.id)]})
    contract = contract_create(
        actor=actor,
        data={
            "name": "Their contract",
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "active",
            "start_date": "2026-01-01",
            "plan_id": str(plan.id),
        },
    )
    MetricValue.objects.create(
        metric=metric,
        customer_id="cus_theirs",
        period_start=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        period_end=dt.datetime(2026, 1, 3, tzinfo=dt.UTC),
        computed_value="9",
        metric_version=1,
    )
    assert metric.usage_event is not None
    return Theirs(
        metric.usage_event, metric, customer, pricing.product, pricing, plan, contract, str(contract.phases.get().id)
    )


@pytest.fixture(autouse=True)
def _unthrottled(settings: Any) -> None:
    """These tests send many requests a second; the rate limits have their own tests."""
    settings.API_RATE_LIMIT = 0
    settings.INGEST_RATE_LIMIT = 0


@pytest.fixture
def zenskar(full_key: ApiKeyBundle) -> ZenskarClient:
    return ZenskarClient(full_key)


@pytest.fixture
def mine(organisation: Organisation) -> dict[str, Any]:
    """Rows of my own organisation, so that lists are not trivially empty."""
    metric = metric_make(organisation)
    customer = customer_make(organisation, external_id="cus_mine")
    pricing = flat_fee_make(organisation)
    plan = plan_create(
        actor=system_actor(organisation=organisation),
        data={"name": "My plan", "currency": "USD", "pricing_ids": [str(pricing.id)]},
    )
    contract = contract_create(
        actor=system_actor(organisation=organisation),
        data={
            "name": "My contract",
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "draft",
            "start_date": "2026-01-01",
        },
    )
    return {"metric": metric, "customer": customer, "pricing": pricing, "plan": plan, "contract": contract}


def their_paths(t: Theirs) -> list[tuple[str, str, Any]]:
    """(method, path, body) of every Zenskar path that names one of their objects."""
    contract = f"/contract_v2/{t.contract.id}"
    return [
        ("GET", f"/rawmetric/{t.usage_event.id}", None),
        ("GET", f"/rawmetric/{t.usage_event.id}/logs", None),
        ("GET", f"/aggregates/{t.metric.id}", None),
        ("GET", f"/aggregates/logs/{t.metric.id}", None),
        ("GET", f"/customers/{t.customer.id}", None),
        ("PATCH", f"/customers/{t.customer.id}", {"customer_name": "Hijacked"}),
        ("DELETE", f"/customers/{t.customer.id}", None),
        ("GET", f"/products/{t.product.id}", None),
        ("PATCH", f"/products/{t.product.id}", {"name": "Hijacked"}),
        ("GET", f"/products/{t.product.id}/pricing", None),
        ("POST", f"/products/{t.product.id}/pricing", {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": 1}}),
        ("GET", f"/templates/plan/{t.plan.id}", None),
        ("POST", f"/templates/plan/{t.plan.id}/products", {"products": []}),
        ("POST", f"/templates/plan/{t.plan.id}/preview", {"start_date": "2026-01-01"}),
        ("GET", contract, None),
        (
            "PUT",
            contract,
            {
                "name": "X",
                "status": "active",
                "currency": "USD",
                "start_date": "2026-01-01",
                "customer_id": str(t.customer.id),
            },
        ),
        ("DELETE", contract, None),
        ("GET", f"{contract}/amendments", None),
        ("POST", f"{contract}/phases", {"name": "Extra", "start_date": "2027-01-01"}),
        ("POST", f"{contract}/phases/{t.phase_id}/pricing", {"pricing_id": str(t.pricing.id)}),
        ("PATCH", f"{contract}/expire", {"expiry_date": "2026-06-01"}),
        ("POST", f"{contract}/pause", {"start_date": "2026-03-01", "unpause_extension_policy": "extend"}),
        ("PATCH", f"{contract}/resume", None),
    ]


def test_every_path_naming_their_object_is_404_and_changes_nothing(
    zenskar: ZenskarClient, theirs: Theirs, mine: dict[str, Any]
) -> None:
    audit_before = AuditEntry.objects.filter(organisation=theirs.contract.organisation).count()

    for method, path, body in their_paths(theirs):
        for variant in (path, path + "/"):
            response = zenskar.send(method, variant, body) if method != "GET" else zenskar.get(variant)
            assert response.status_code == 404, (method, variant, response.status_code, response.content[:300])
            assert "detail" in response.json()

    theirs.customer.refresh_from_db()
    theirs.product.refresh_from_db()
    theirs.contract.refresh_from_db()
    assert (theirs.customer.customer_name, theirs.customer.archived) == ("Initech", False)
    assert theirs.product.name == "Compute"
    assert (theirs.contract.name, theirs.contract.status) == ("Their contract", "active")
    assert theirs.plan.plan_pricings.count() == 1
    assert theirs.product.pricings.count() == 1
    assert AuditEntry.objects.filter(organisation=theirs.contract.organisation).count() == audit_before


def test_their_slug_is_not_found_even_when_mine_differs(zenskar: ZenskarClient, theirs: Theirs) -> None:
    theirs.usage_event.api_slug = "their_only_slug"
    theirs.usage_event.save(update_fields=["api_slug"])

    assert zenskar.get("/rawmetric/slug/their_only_slug").status_code == 404
    assert zenskar.get("/aggregates/cpu_hours").status_code == 404  # their metric's slug; I have none


def test_lists_never_show_their_rows(zenskar: ZenskarClient, theirs: Theirs, mine: dict[str, Any]) -> None:
    lists = {
        "/rawmetric": str(theirs.usage_event.id),
        "/aggregates": str(theirs.metric.id),
        "/customer": str(theirs.customer.id),
        "/products": str(theirs.product.id),
        "/templates/plan": str(theirs.plan.id),
        "/contract_v2": str(theirs.contract.id),
    }
    for path, their_id in lists.items():
        # Asking for their row by id, or by a filter only their row matches, finds nothing either.
        for params in ({"limit": 1000}, {"id": their_id}, {"name__ilike": "their"}):
            response = zenskar.get(path, params)
            if response.status_code == 400:  # an id filter of another type (a number for raw metrics)
                continue
            assert response.status_code == 200, (path, params, response.content[:300])
            ids = [str(row["id"]) for row in response.json()["results"]]
            assert their_id not in ids, (path, params)
        assert zenskar.get(path, {"limit": 1000}).json()["results"], path  # mine are listed
    customers = zenskar.get("/customer", {"external_id": "cus_theirs"}).json()["results"]
    assert customers == []
    contracts = zenskar.get("/contract_v2", {"customer_id": str(theirs.customer.id)}).json()["results"]
    assert contracts == []
    pricings = zenskar.get(f"/products/{mine['pricing'].product_id}/pricing").json()["results"]
    assert [row["id"] for row in pricings] == [str(mine["pricing"].id)]


def test_estimates_and_logs_never_read_their_metric_or_customer(
    zenskar: ZenskarClient, theirs: Theirs, mine: dict[str, Any]
) -> None:
    window = {"start_date": "2026-01-01", "end_date": "2026-02-01"}
    their_metric = zenskar.get(
        "/aggregates/estimates", {"aggregate_id": theirs.metric.id, "customer_id": str(mine["customer"].id), **window}
    )
    their_customer = zenskar.get(
        "/aggregates/estimates", {"aggregate_id": mine["metric"].id, "customer_id": str(theirs.customer.id), **window}
    )
    their_external_id = zenskar.get(
        "/aggregates/estimates", {"aggregate_id": mine["metric"].id, "customer_id": "cus_theirs", **window}
    )
    my_logs_of_their_customer = zenskar.get(f"/aggregates/logs/{mine['metric'].id}", {"customer_id": "cus_theirs"})

    assert their_metric.status_code == 404
    assert their_customer.status_code == 404
    assert their_external_id.status_code == 404
    assert my_logs_of_their_customer.status_code == 200
    assert my_logs_of_their_customer.json()["results"] == []


def test_bodies_referring_to_their_objects_are_refused_naming_the_field(
    zenskar: ZenskarClient, theirs: Theirs, mine: dict[str, Any]
) -> None:
    my_customer = str(mine["customer"].id)
    contract = {"name": "C", "status": "active", "currency": "USD", "start_date": "2026-01-01"}
    metered_product = zenskar.post("/products", {"name": "Metered", "type": "metered"}).json()

    cases = [
        ("/contract_v2", {**contract, "customer_id": str(theirs.customer.id)}, "customer_id"),
        (
            "/contract_v2",
            {
                **contract,
                "customer_id": my_customer,
                "phases": [{"name": "P", "pricings": [{"pricing_id": str(theirs.pricing.id)}]}],
            },
            "phases[0].pricings[0].pricing_id",
        ),
        (
            "/contract_v2",
            {
                **contract,
                "customer_id": my_customer,
                "phases": [
                    {
                        "name": "P",
                        "pricings": [
                            {
                                "product_id": str(theirs.product.id),
                                "pricing": {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": 1}},
                            }
                        ],
                    }
                ],
            },
            "phases[0].pricings[0].product_id",
        ),
        ("/templates/plan", {"name": "P", "currency": "USD", "products": [str(theirs.pricing.id)]}, "products[0]"),
        (
            "/templates/plan",
            {"name": "P", "currency": "USD", "products": [{"pricing_id": str(theirs.pricing.id)}]},
            "products[0]",
        ),
        (f"/templates/plan/{mine['plan'].id}/products", {"products": [str(theirs.pricing.id)]}, "products[0]"),
        (
            f"/products/{metered_product['id']}/pricing",
            {
                "pricing_data": {"pricing_type": "per_unit", "unit_amount": 1},
                "quantity": {"type": "metered", "aggregate_id": theirs.metric.id},
            },
            "quantity.aggregate_id",
        ),
        (
            f"/contract_v2/{mine['contract'].id}/phases/{mine['contract'].phases.first().id if mine['contract'].phases.exists() else 'none'}/pricing",
            {"pricing_id": str(theirs.pricing.id)},
            None,  # my contract has no phase: a 404 for the phase, checked below
        ),
    ]
    for path, body, field in cases:
        response = zenskar.post(path, body)
        if field is None:
            assert response.status_code == 404
            continue
        assert response.status_code == 400, (path, response.content[:400])
        assert field in response.json()["errors"], (path, response.json())
    phase = zenskar.post(f"/contract_v2/{mine['contract'].id}/phases", {"name": "Main"}).json()
    refused = zenskar.post(
        f"/contract_v2/{mine['contract'].id}/phases/{phase['id']}/pricing", {"pricing_id": str(theirs.pricing.id)}
    )
    assert refused.status_code == 400
    assert "pricing_id" in refused.json()["errors"]
    their_phase = zenskar.post(
        f"/contract_v2/{mine['contract'].id}/phases/{theirs.phase_id}/pricing", {"pricing_id": str(mine["pricing"].id)}
    )
    assert their_phase.status_code == 404
    assert theirs.pricing.phase_pricings.count() == 1  # only their own contract's
