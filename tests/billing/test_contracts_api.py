"""SPEC §8: plans and contracts through /api/v1/: phases and their pricings (referenced or inline), one
currency, pause, resume, expire, and every change an amendment in the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from billing.models import Contract, ContractPhase, PhasePricing, Plan, Pricing, Product
from metrics.models import BillableMetric
from tests.billing.conftest import TIERED, customer_make, flat_fee_make, metered_pricing_make
from zenskar_site.accounts.models import AuditEntry, Organisation

URL = "/api/v1/contracts/"


@pytest.fixture
def customer_id(organisation: Organisation) -> str:
    return str(customer_make(organisation, external_id="cus_1").id)


def contract_body(customer_id: str, **body: Any) -> dict[str, Any]:
    return {
        "name": "Initech 2026",
        "customer_id": customer_id,
        "currency": "USD",
        "status": "active",
        "start_date": "2026-01-01",
        "end_date": "2027-01-01",
        **body,
    }


def create(api: APIClient, customer_id: str, **body: Any) -> Any:
    return api.post(URL, contract_body(customer_id, **body), format="json")


def created(api: APIClient, customer_id: str, **body: Any) -> dict[str, Any]:
    response = create(api, customer_id, **body)
    assert response.status_code == 201, response.json()
    return response.json()


# --- plans ---


def test_a_plan_lists_pricings_in_its_currency(api: APIClient, organisation: Organisation) -> None:
    fee = flat_fee_make(organisation)
    euro_fee = flat_fee_make(organisation, currency="EUR")

    response = api.post(
        "/api/v1/plans/", {"name": "Starter", "currency": "USD", "pricing_ids": [str(fee.id)]}, format="json"
    )
    refused = api.post(
        f"/api/v1/plans/{response.json()['id']}/pricings/", {"pricing_ids": [str(euro_fee.id)]}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert [p["id"] for p in response.json()["pricings"]] == [str(fee.id)]
    assert refused.status_code == 400
    assert "pricing_ids[0]" in refused.json()["errors"]
    assert Plan.objects.get().plan_pricings.count() == 1
    assert [p["name"] for p in api.get("/api/v1/plans/", {"currency": "USD"}).json()["results"]] == ["Starter"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"currency": "XXQ"}, "currency"),
        ({"currency": None}, "currency"),
        ({"name": ""}, "name"),
        ({"status": "live"}, "status"),
        ({"pricing_ids": "abc"}, "pricing_ids"),
        ({"pricing_ids": ["not-a-uuid"]}, "pricing_ids[0]"),
    ],
)
def test_a_bad_plan_is_a_400_naming_the_field(api: APIClient, body: dict[str, Any], field: str) -> None:
    response = api.post("/api/v1/plans/", {"name": "Starter", "currency": "USD", **body}, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert not Plan.objects.exists()


# --- contracts ---


def test_a_contract_takes_referenced_and_inline_pricings(
    api: APIClient, organisation: Organisation, customer_id: str, metric: BillableMetric
) -> None:
    metered = metered_pricing_make(organisation, metric)
    seats = Product.objects.create(organisation=organisation, name="Seats", type="fixed")

    body = created(
        api,
        customer_id,
        anchor_date="2026-01-15",
        renewal_policy="renew_with_existing",
        phases=[
            {"name": "Trial", "phase_type": "trial", "start_date": "2026-01-01", "end_date": "2026-02-01"},
            {
                "name": "Main",
                "start_date": "2026-02-01",
                "pricings": [
                    {"pricing_id": str(metered.id)},
                    {
                        "product_id": str(seats.id),
                        "pricing": {
                            "pricing_data": {"pricing_type": "per_unit", "unit_amount": "10"},
                            "quantity": {"type": "fixed", "quantity": 5, "unit": "seat"},
                        },
                    },
                    {
                        "product": {"name": "Support", "type": "fixed"},
                        "pricing": {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": "99"}},
                    },
                ],
            },
        ],
    )

    assert body["status"] == "active"
    assert body["anchor_date"] == "2026-01-15"
    assert body["renewal_policy"] == "renew_with_existing"
    assert [p["name"] for p in body["phases"]] == ["Trial", "Main"]
    main = body["phases"][1]
    assert main["end_date"] is None
    assert main["pricings"][0]["pricing_id"] == str(metered.id)
    assert main["pricings"][1]["pricing"]["quantity"] == {"type": "fixed", "quantity": "5", "unit": "seat"}
    assert main["pricings"][2]["pricing"]["pricing_data"] == {"pricing_type": "flat_fee", "unit_amount": "99"}
    assert Product.objects.filter(name="Support", organisation=organisation).exists()
    assert api.get(f"{URL}{body['id']}/").json() == body
    amendment = AuditEntry.objects.get(object_type="contract", object_id=body["id"])
    assert amendment.action == "contract.create"
    assert len(amendment.after["phases"][1]["pricings"]) == 3


def test_the_anchor_defaults_to_the_start_date(api: APIClient, customer_id: str) -> None:
    assert created(api, customer_id)["anchor_date"] == "2026-01-01"


def test_a_contract_from_a_plan_copies_its_pricings_into_the_first_phase(
    api: APIClient, organisation: Organisation, customer_id: str, metric: BillableMetric
) -> None:
    pricings = [flat_fee_make(organisation), metered_pricing_make(organisation, metric)]
    plan = api.post(
        "/api/v1/plans/",
        {"name": "Pro", "currency": "USD", "pricing_ids": [str(p.id) for p in pricings]},
        format="json",
    ).json()

    body = created(api, customer_id, plan_id=plan["id"])

    assert body["plan_id"] == plan["id"]
    assert len(body["phases"]) == 1
    assert body["phases"][0]["start_date"] == "2026-01-01"
    assert [p["pricing_id"] for p in body["phases"][0]["pricings"]] == [str(p.id) for p in pricings]


def test_a_plan_in_another_currency_is_refused(api: APIClient, customer_id: str) -> None:
    plan = api.post("/api/v1/plans/", {"name": "Euro", "currency": "EUR"}, format="json").json()
    response = create(api, customer_id, plan_id=plan["id"])
    assert response.status_code == 400
    assert "plan_id" in response.json()["errors"]


def test_a_pricing_in_another_currency_is_a_400_and_nothing_is_stored(
    api: APIClient, organisation: Organisation, customer_id: str
) -> None:
    euro_fee = flat_fee_make(organisation, currency="EUR")
    products_before = Product.objects.count()
    pricings_before = Pricing.objects.count()

    response = create(
        api,
        customer_id,
        phases=[
            {
                "name": "Main",
                "pricings": [
                    {
                        "product": {"name": "Support", "type": "fixed"},
                        "pricing": {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": "99"}},
                    },
                    {"pricing_id": str(euro_fee.id)},
                ],
            }
        ],
    )
    inline = create(
        api,
        customer_id,
        phases=[
            {
                "name": "Main",
                "pricings": [
                    {
                        "product_id": str(euro_fee.product_id),
                        "pricing": {
                            "pricing_data": {"pricing_type": "flat_fee", "unit_amount": "9"},
                            "currency": "GBP",
                        },
                    }
                ],
            }
        ],
    )

    assert response.status_code == 400
    assert "phases[0].pricings[1].pricing_id" in response.json()["errors"]
    assert inline.status_code == 400
    assert "phases[0].pricings[0].pricing.currency" in inline.json()["errors"]
    assert not Contract.objects.exists()
    assert Product.objects.count() == products_before
    assert Pricing.objects.count() == pricings_before
    assert not AuditEntry.objects.filter(object_type="contract").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"customer_id": None}, "customer_id"),
        ({"customer_id": "00000000-0000-0000-0000-000000000000"}, "customer_id"),
        ({"currency": "US"}, "currency"),
        ({"status": "paused"}, "status"),
        ({"status": "expired"}, "status"),
        ({"start_date": None}, "start_date"),
        ({"start_date": "2026-02-30"}, "start_date"),
        ({"start_date": "01/02/2026"}, "start_date"),
        ({"end_date": "2025-12-31"}, "end_date"),
        ({"end_date": "2026-01-01"}, "end_date"),
        ({"renewal_policy": "forever"}, "renewal_policy"),
        ({"phases": {}}, "phases"),
        ({"phases": [{"name": ""}]}, "phases[0].name"),
        ({"phases": [{"name": "P", "phase_type": "free"}]}, "phases[0].phase_type"),
        ({"phases": [{"name": "P", "start_date": "2025-06-01"}]}, "phases[0].start_date"),
        ({"phases": [{"name": "P", "end_date": "2027-06-01"}]}, "phases[0].end_date"),
        (
            {"phases": [{"name": "A", "end_date": "2026-06-01"}, {"name": "B", "start_date": "2026-05-01"}]},
            "phases[1].start_date",
        ),
        ({"phases": [{"name": "P", "pricings": [{}]}]}, "phases[0].pricings[0].pricing_id"),
        ({"phases": [{"name": "P", "pricings": [{"pricing_id": "x"}]}]}, "phases[0].pricings[0].pricing_id"),
        (
            {"phases": [{"name": "P", "pricings": [{"pricing": {"pricing_data": TIERED}}]}]},
            "phases[0].pricings[0].product_id",
        ),
        (
            {
                "phases": [
                    {
                        "name": "P",
                        "pricings": [{"product": {"name": "X", "type": "fixed"}, "pricing": {"pricing_data": {}}}],
                    }
                ]
            },
            "phases[0].pricings[0].pricing.pricing_data.pricing_type",
        ),
        ({"plan_id": "nope"}, "plan_id"),
        ({"terms": "x"}, "terms"),
        ({"name": "a\x00"}, "name"),
        ({"custom_attributes": {"k\x00": 1}}, "custom_attributes.k\\u0000"),
        ({"phases": [{"name": "P", "phase_metadata": {"k": "\x00"}}]}, "phases[0].phase_metadata.k"),
    ],
)
def test_a_bad_contract_is_a_400_naming_the_field_and_stores_nothing(
    api: APIClient, customer_id: str, body: dict[str, Any], field: str
) -> None:
    products_before = Product.objects.count()

    response = api.post(URL, {**contract_body(customer_id), **body}, format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert not Contract.objects.exists()
    assert not ContractPhase.objects.exists()
    assert Product.objects.count() == products_before


def test_an_archived_customer_takes_no_contract(api: APIClient, customer_id: str) -> None:
    api.delete(f"/api/v1/customers/{customer_id}/")
    response = create(api, customer_id)
    assert response.status_code == 400
    assert "customer_id" in response.json()["errors"]


def test_a_customer_with_contracts_cannot_be_deleted(api: APIClient, customer_id: str) -> None:
    created(api, customer_id)
    response = api.delete(f"/api/v1/customers/{customer_id}/")
    assert response.status_code == 409
    assert "contract" in response.json()["detail"]
    assert api.get(f"/api/v1/customers/{customer_id}/").json()["archived"] is False


def test_phases_and_pricings_are_added_later_as_amendments(
    api: APIClient, organisation: Organisation, customer_id: str
) -> None:
    contract = created(api, customer_id)
    fee = flat_fee_make(organisation)

    phase = api.post(f"{URL}{contract['id']}/phases/", {"name": "Main", "reason": "signed"}, format="json")
    link = api.post(
        f"{URL}{contract['id']}/phases/{phase.json()['id']}/pricings/",
        {"pricing_id": str(fee.id), "start_date": "2026-03-01"},
        format="json",
    )
    again = api.post(
        f"{URL}{contract['id']}/phases/{phase.json()['id']}/pricings/", {"pricing_id": str(fee.id)}, format="json"
    )
    outside = api.post(
        f"{URL}{contract['id']}/phases/{phase.json()['id']}/pricings/",
        {"pricing_id": str(flat_fee_make(organisation).id), "start_date": "2025-03-01"},
        format="json",
    )

    assert phase.status_code == 201, phase.json()
    assert phase.json()["start_date"] == "2026-01-01"
    assert link.status_code == 201, link.json()
    assert link.json()["start_date"] == "2026-03-01"
    assert again.status_code == 400
    assert "pricing_id" in again.json()["errors"]
    assert outside.status_code == 400
    assert "start_date" in outside.json()["errors"]
    actions = [a["action"] for a in api.get(f"{URL}{contract['id']}/amendments/").json()["results"]]
    assert actions == ["contract.create", "contract.phase.create", "contract.pricing.add"]
    assert PhasePricing.objects.count() == 1


def test_pause_resume_and_expire(api: APIClient, customer_id: str) -> None:
    contract = created(api, customer_id)
    url = f"{URL}{contract['id']}/"

    paused = api.post(
        f"{url}pause/",
        {"start_date": "2026-03-01", "end_date": "2026-04-01", "unpause_extension_policy": "extend"},
        format="json",
    )
    twice = api.post(f"{url}pause/", {"start_date": "2026-05-01", "unpause_extension_policy": "overlap"}, format="json")
    patched = api.patch(url, {"status": "active"}, format="json")
    resumed = api.post(f"{url}resume/", {"resume_date": "2026-03-11"}, format="json")
    expired = api.post(f"{url}expire/", {"expiry_date": "2026-09-01", "reason": "churned"}, format="json")
    after = api.patch(url, {"name": "x"}, format="json")

    assert paused.status_code == 200, paused.json()
    assert paused.json()["status"] == "paused"
    assert paused.json()["end_date"] == "2027-02-01"  # extended by the 31 paused days
    assert twice.status_code == 409
    assert patched.status_code == 400
    assert resumed.status_code == 200, resumed.json()
    assert resumed.json()["status"] == "active"
    assert resumed.json()["pauses"] == [
        {"start_date": "2026-03-01", "end_date": "2026-03-11", "unpause_extension_policy": "extend"}
    ]
    assert resumed.json()["end_date"] == "2027-01-11"  # extended by the 10 days actually paused
    assert expired.status_code == 200
    assert expired.json()["status"] == "expired"
    assert expired.json()["expiry_date"] == "2026-09-01"
    assert expired.json()["end_date"] == "2026-09-01"
    assert after.status_code == 409
    amendments = api.get(f"{url}amendments/").json()["results"]
    assert [a["action"] for a in amendments] == [
        "contract.create",
        "contract.pause",
        "contract.resume",
        "contract.expire",
    ]
    assert amendments[-1]["reason"] == "churned"
    assert amendments[-1]["before"]["status"] == "active"
    assert amendments[-1]["after"]["status"] == "expired"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"unpause_extension_policy": "extend"}, "start_date"),
        ({"start_date": "2026-03-01"}, "unpause_extension_policy"),
        ({"start_date": "2026-03-01", "unpause_extension_policy": "sometimes"}, "unpause_extension_policy"),
        ({"start_date": "2025-03-01", "unpause_extension_policy": "extend"}, "start_date"),
        ({"start_date": "2026-03-01", "end_date": "2026-02-01", "unpause_extension_policy": "extend"}, "end_date"),
    ],
)
def test_a_bad_pause_is_a_400_naming_the_field(
    api: APIClient, customer_id: str, body: dict[str, Any], field: str
) -> None:
    contract = created(api, customer_id)
    response = api.post(f"{URL}{contract['id']}/pause/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert Contract.objects.get().status == "active"


def test_only_active_contracts_pause_and_only_paused_ones_resume(api: APIClient, customer_id: str) -> None:
    draft = created(api, customer_id, status="draft")
    pause = {"start_date": "2026-03-01", "unpause_extension_policy": "overlap"}
    assert api.post(f"{URL}{draft['id']}/pause/", pause, format="json").status_code == 409
    assert api.post(f"{URL}{draft['id']}/resume/").status_code == 409


def test_an_expiry_outside_the_contract_is_a_400(api: APIClient, customer_id: str) -> None:
    contract = created(api, customer_id)
    for day in ("2025-12-01", "2026-01-01", "2027-02-01", "soon"):
        response = api.post(f"{URL}{contract['id']}/expire/", {"expiry_date": day}, format="json")
        assert response.status_code == 400
        assert "expiry_date" in response.json()["errors"]


def test_edits_are_amendments_and_customer_or_currency_change_only_in_draft(
    api: APIClient, organisation: Organisation, customer_id: str
) -> None:
    contract = created(api, customer_id)
    other_customer = str(customer_make(organisation, external_id="cus_2").id)
    url = f"{URL}{contract['id']}/"

    renamed = api.patch(url, {"name": "Renamed", "end_date": None, "reason": "typo"}, format="json")
    moved = api.patch(url, {"customer_id": other_customer}, format="json")
    recurrency = api.patch(url, {"currency": "EUR"}, format="json")
    drafted = api.patch(url, {"status": "draft"}, format="json")
    now_moved = api.patch(url, {"customer_id": other_customer, "currency": "EUR"}, format="json")

    assert renamed.status_code == 200, renamed.json()
    assert renamed.json()["end_date"] is None
    assert moved.status_code == 400
    assert "customer_id" in moved.json()["errors"]
    assert recurrency.status_code == 400
    assert drafted.status_code == 200
    assert now_moved.status_code == 200, now_moved.json()
    assert now_moved.json()["customer_id"] == other_customer
    assert now_moved.json()["currency"] == "EUR"
    entries = list(AuditEntry.objects.filter(object_type="contract", action="contract.update").order_by("id"))
    assert len(entries) == 3
    assert entries[0].before["name"] == "Initech 2026"
    assert entries[0].after["name"] == "Renamed"
    assert entries[0].reason == "typo"


def test_a_start_date_change_keeps_phases_inside(api: APIClient, customer_id: str) -> None:
    contract = created(api, customer_id, phases=[{"name": "Main", "start_date": "2026-01-01"}])
    response = api.patch(f"{URL}{contract['id']}/", {"start_date": "2026-02-01"}, format="json")
    assert response.status_code == 400
    assert "start_date" in response.json()["errors"]


def test_only_a_draft_contract_is_deleted(api: APIClient, customer_id: str) -> None:
    draft = created(api, customer_id, status="draft")
    active = created(api, customer_id)
    assert api.delete(f"{URL}{active['id']}/").status_code == 409
    assert api.delete(f"{URL}{draft['id']}/").status_code == 204
    assert list(Contract.objects.values_list("id", flat=True)) == [Contract.objects.get(id=active["id"]).id]
    assert AuditEntry.objects.filter(action="contract.delete", object_id=draft["id"]).exists()


def test_list_filters(api: APIClient, organisation: Organisation, customer_id: str) -> None:
    other = str(customer_make(organisation, external_id="cus_2").id)
    created(api, customer_id, name="A")
    created(api, other, name="B", status="draft", start_date="2026-06-01")

    def names(**params: str) -> list[str]:
        response = api.get(URL, params)
        assert response.status_code == 200, response.json()
        return sorted(c["name"] for c in response.json()["results"])

    assert names() == ["A", "B"]
    assert names(customer_id=customer_id) == ["A"]
    assert names(status="draft") == ["B"]
    assert names(start_date_after="2026-03-01") == ["B"]
    assert names(name="a") == ["A"]
    for params in ({"start_date_after": "March"}, {"status": "sleeping"}, {"customer_id": "x"}):
        response = api.get(URL, params)
        assert response.status_code == 400
        assert next(iter(params)) in response.json()["errors"]


def test_the_database_refuses_inconsistent_contracts(organisation: Organisation) -> None:
    import datetime as dt

    customer = customer_make(organisation)
    base = {
        "organisation": organisation,
        "customer": customer,
        "name": "C",
        "currency": "USD",
        "start_date": dt.date(2026, 1, 1),
        "anchor_date": dt.date(2026, 1, 1),
    }
    for values in (
        {"end_date": dt.date(2026, 1, 1)},
        {"status": "sleeping"},
        {"status": "expired"},
        {"status": "active", "expiry_date": dt.date(2026, 2, 1)},
        {"renewal_policy": "forever"},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            Contract.objects.create(**{**base, **values})


def test_a_monthly_metric_needs_the_contract_anchored_on_the_first(
    api: APIClient, organisation: Organisation, customer_id: str
) -> None:
    from tests.billing.conftest import metric_make

    monthly = metric_make(organisation, slug="cpu_month", granularity="month")
    pricing = metered_pricing_make(organisation, monthly)
    phases = [{"name": "Main", "pricings": [{"pricing_id": str(pricing.id)}]}]

    mid_month = create(api, customer_id, anchor_date="2026-01-15", phases=phases)
    own_anchor = create(
        api,
        customer_id,
        anchor_date="2026-01-15",
        phases=[{"name": "Main", "pricings": [{"pricing_id": str(pricing.id), "anchor_date": "2026-02-01"}]}],
    )
    first = created(api, customer_id, phases=phases)
    moved = api.patch(f"{URL}{first['id']}/", {"anchor_date": "2026-01-10"}, format="json")

    assert mid_month.status_code == 400
    assert "anchor_date" in mid_month.json()["errors"]
    assert own_anchor.status_code == 201, own_anchor.json()
    assert moved.status_code == 400
    assert "anchor_date" in moved.json()["errors"]
    assert Contract.objects.get(id=first["id"]).anchor_date.isoformat() == "2026-01-01"


def test_the_openapi_document_lists_the_billing_endpoints(db: None) -> None:
    paths = APIClient().get("/api/v1/schema/", {"format": "json"}).json()["paths"]
    for path in (
        "/api/v1/customers/{customer_id}/",
        "/api/v1/products/{product_id}/pricings/",
        "/api/v1/plans/{plan_id}/pricings/",
        "/api/v1/contracts/{contract_id}/phases/{phase_id}/pricings/",
        "/api/v1/contracts/{contract_id}/pause/",
        "/api/v1/contracts/{contract_id}/amendments/",
    ):
        assert path in paths, path
