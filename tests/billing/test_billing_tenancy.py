"""Tenancy: another organisation's customers, catalogue and contracts are invisible (404 on their ids,
absent from lists) and cannot be referenced (400 naming the field); nothing of theirs changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.contracts import contract_create
from billing.models import Contract, Customer, Plan, Pricing, Product
from tests.billing.conftest import customer_make, flat_fee_make, metered_pricing_make, metric_make
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Organisation

V1 = "/api/v1"


@dataclass
class Theirs:
    customer: Customer
    product: Product
    pricing: Pricing
    plan: Plan
    contract: Contract
    phase_id: str


@pytest.fixture
def theirs(other_organisation: Organisation) -> Theirs:
    actor = system_actor(organisation=other_organisation)
    customer = customer_make(other_organisation, external_id="cus_theirs")
    pricing = metered_pricing_make(other_organisation, metric_make(other_organisation))
    from billing.catalogue import plan_create

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
    return Theirs(customer, pricing.product, pricing, plan, contract, str(contract.phases.get().id))


@pytest.fixture
def mine(organisation: Organisation) -> dict[str, Any]:
    customer = customer_make(organisation, external_id="cus_mine")
    fee = flat_fee_make(organisation)
    contract = contract_create(
        actor=system_actor(organisation=organisation),
        data={
            "name": "My contract",
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "active",
            "start_date": "2026-01-01",
            "phases": [{"name": "Main", "pricings": [{"pricing_id": str(fee.id)}]}],
        },
    )
    return {"customer": customer, "contract": contract, "phase_id": str(contract.phases.get().id), "fee": fee}


def their_state(theirs: Theirs) -> list[Any]:
    return [
        list(Customer.objects.filter(id=theirs.customer.id).values()),
        list(Product.objects.filter(id=theirs.product.id).values()),
        list(Plan.objects.filter(id=theirs.plan.id).values()),
        list(Contract.objects.filter(id=theirs.contract.id).values()),
        theirs.contract.phases.count(),
        theirs.contract.pauses.count(),
        AuditEntry.objects.filter(organisation_id=theirs.customer.organisation_id).count(),
    ]


def test_lists_show_only_the_organisations_own_rows(api: APIClient, theirs: Theirs, mine: dict[str, Any]) -> None:
    for path, foreign in (
        ("customers", theirs.customer.id),
        ("products", theirs.product.id),
        ("plans", theirs.plan.id),
        ("contracts", theirs.contract.id),
    ):
        response = api.get(f"{V1}/{path}/")
        assert response.status_code == 200
        ids = [row["id"] for row in response.json()["results"]]
        assert str(foreign) not in ids, path
    assert [c["id"] for c in api.get(f"{V1}/contracts/").json()["results"]] == [str(mine["contract"].id)]
    filtered = api.get(f"{V1}/contracts/", {"customer_id": str(theirs.customer.id)}).json()["results"]
    assert filtered == []


def test_every_endpoint_answers_404_for_another_organisations_ids(
    api: APIClient, theirs: Theirs, mine: dict[str, Any]
) -> None:
    before = their_state(theirs)
    c, p, pl, k = theirs.customer.id, theirs.product.id, theirs.plan.id, theirs.contract.id
    mine_contract = mine["contract"].id
    calls = [
        ("get", f"{V1}/customers/{c}/", None),
        ("patch", f"{V1}/customers/{c}/", {"customer_name": "Hijacked"}),
        ("delete", f"{V1}/customers/{c}/", None),
        ("get", f"{V1}/products/{p}/", None),
        ("patch", f"{V1}/products/{p}/", {"name": "Hijacked"}),
        ("get", f"{V1}/products/{p}/pricings/", None),
        ("post", f"{V1}/products/{p}/pricings/", {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": 1}}),
        ("get", f"{V1}/products/{p}/pricings/{theirs.pricing.id}/", None),
        ("get", f"{V1}/products/{mine['fee'].product_id}/pricings/{theirs.pricing.id}/", None),
        ("get", f"{V1}/plans/{pl}/", None),
        ("patch", f"{V1}/plans/{pl}/", {"name": "Hijacked"}),
        ("post", f"{V1}/plans/{pl}/pricings/", {"pricing_ids": [str(mine["fee"].id)]}),
        ("get", f"{V1}/contracts/{k}/", None),
        ("patch", f"{V1}/contracts/{k}/", {"name": "Hijacked"}),
        ("delete", f"{V1}/contracts/{k}/", None),
        ("get", f"{V1}/contracts/{k}/phases/", None),
        ("post", f"{V1}/contracts/{k}/phases/", {"name": "Injected", "start_date": "2027-01-01"}),
        ("post", f"{V1}/contracts/{k}/phases/{theirs.phase_id}/pricings/", {"pricing_id": str(mine["fee"].id)}),
        (
            "post",
            f"{V1}/contracts/{mine_contract}/phases/{theirs.phase_id}/pricings/",
            {"pricing_id": str(mine["fee"].id)},
        ),
        ("post", f"{V1}/contracts/{k}/pause/", {"start_date": "2026-03-01", "unpause_extension_policy": "extend"}),
        ("post", f"{V1}/contracts/{k}/resume/", None),
        ("post", f"{V1}/contracts/{k}/expire/", {"expiry_date": "2026-06-01"}),
        ("get", f"{V1}/contracts/{k}/amendments/", None),
    ]

    for method, url, body in calls:
        response = getattr(api, method)(url, body, format="json") if body is not None else getattr(api, method)(url)
        assert response.status_code == 404, (method, url, response.status_code)
        assert "Their" not in response.content.decode()
        assert "cus_theirs" not in response.content.decode()

    assert their_state(theirs) == before


def test_another_organisations_rows_cannot_be_referenced(
    api: APIClient, organisation: Organisation, theirs: Theirs, mine: dict[str, Any]
) -> None:
    before = their_state(theirs)
    my_customer = str(mine["customer"].id)
    base = {"name": "X", "currency": "USD", "status": "active", "start_date": "2026-01-01"}
    cases = [
        (f"{V1}/contracts/", {**base, "customer_id": str(theirs.customer.id)}, "customer_id"),
        (f"{V1}/contracts/", {**base, "customer_id": my_customer, "plan_id": str(theirs.plan.id)}, "plan_id"),
        (
            f"{V1}/contracts/",
            {
                **base,
                "customer_id": my_customer,
                "phases": [{"name": "P", "pricings": [{"pricing_id": str(theirs.pricing.id)}]}],
            },
            "phases[0].pricings[0].pricing_id",
        ),
        (
            f"{V1}/contracts/",
            {
                **base,
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
        (
            f"{V1}/contracts/{mine['contract'].id}/phases/{mine['phase_id']}/pricings/",
            {"pricing_id": str(theirs.pricing.id)},
            "pricing_id",
        ),
        (f"{V1}/plans/", {"name": "P", "currency": "USD", "pricing_ids": [str(theirs.pricing.id)]}, "pricing_ids[0]"),
        (
            f"{V1}/contracts/{mine['contract'].id}/",
            {"customer_id": str(theirs.customer.id)},
            "customer_id",
        ),
    ]
    counts = (Contract.objects.count(), Plan.objects.count())

    for url, body, field in cases:
        method = api.patch if url.endswith(f"{mine['contract'].id}/") else api.post
        response = method(url, body, format="json")
        assert response.status_code == 400, (url, response.json())
        assert field in response.json()["errors"], (url, response.json())

    assert (Contract.objects.count(), Plan.objects.count()) == counts
    assert mine["contract"].phases.get().phase_pricings.count() == 1
    assert their_state(theirs) == before
