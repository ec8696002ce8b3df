"""Bad input on the Zenskar-compatible paths: every bad argument is a 400 whose `errors` name it (path,
query or body, nested ones by their path), never a 500, and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest

from billing.catalogue import plan_create
from billing.contracts import contract_create
from billing.models import Contract, Customer, Plan, Pricing, Product
from tests.billing.conftest import customer_make, flat_fee_make, metric_make, product_make
from tests.billing.zenskar_support import SCHEMA, ZenskarClient
from tests.factories import ApiKeyBundle
from usage.models import UsageEvent
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Organisation

HUGE = 10**30
NUL = "a\x00b"


@pytest.fixture(autouse=True)
def _unthrottled(settings: Any) -> None:
    """These tests send many requests a second; the rate limits have their own tests."""
    settings.API_RATE_LIMIT = 0
    settings.INGEST_RATE_LIMIT = 0


@pytest.fixture
def zenskar(full_key: ApiKeyBundle) -> ZenskarClient:
    return ZenskarClient(full_key)


@pytest.fixture
def world(organisation: Organisation) -> dict[str, Any]:
    actor = system_actor(organisation=organisation)
    metric = metric_make(organisation)
    customer = customer_make(organisation, external_id="cus_1")
    fee = flat_fee_make(organisation)
    metered = product_make(organisation, type="metered", name="Compute")
    plan = plan_create(actor=actor, data={"name": "Plan", "currency": "USD", "pricing_ids": [str(fee.id)]})
    contract = contract_create(
        actor=actor,
        data={
            "name": "Active",
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "active",
            "start_date": "2026-01-01",
        },
    )
    return {
        "metric": metric,
        "customer": str(customer.id),
        "product": str(fee.product_id),
        "metered": str(metered.id),
        "plan": str(plan.id),
        "contract": str(contract.id),
        "usage_event": metric.usage_event_id,
    }


def query_cases(w: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    estimate = {
        "aggregate_id": w["metric"].id,
        "customer_id": w["customer"],
        "start_date": "2026-01-01",
        "end_date": "2026-02-01",
    }
    return [
        ("/rawmetric", {"limit": "ten"}, "limit"),
        ("/rawmetric", {"limit": 0}, "limit"),
        ("/rawmetric", {"limit": HUGE}, "limit"),
        ("/rawmetric", {"cursor": "not-a-cursor"}, "cursor"),
        ("/rawmetric", {"sort_key": "password"}, "sort_key"),
        ("/rawmetric", {"sort_type": "sideways"}, "sort_type"),
        ("/rawmetric", {"id": "abc"}, "id"),
        ("/rawmetric", {"id": HUGE}, "id"),
        ("/aggregates", {"created_at__gte": "last tuesday"}, "created_at__gte"),
        ("/aggregates", {"created_at__gte": HUGE}, "created_at__gte"),
        ("/aggregates", {"id__in": "1,x"}, "id__in"),
        ("/aggregates/estimates", {k: v for k, v in estimate.items() if k != "aggregate_id"}, "aggregate_id"),
        ("/aggregates/estimates", {k: v for k, v in estimate.items() if k != "customer_id"}, "customer_id"),
        ("/aggregates/estimates", {k: v for k, v in estimate.items() if k != "start_date"}, "start_date"),
        ("/aggregates/estimates", {k: v for k, v in estimate.items() if k != "end_date"}, "end_date"),
        ("/aggregates/estimates", {**estimate, "start_date": "yesterday"}, "start_date"),
        ("/aggregates/estimates", {**estimate, "start_date": "2026-02-30"}, "start_date"),
        ("/aggregates/estimates", {**estimate, "start_date": HUGE}, "start_date"),
        ("/aggregates/estimates", {**estimate, "end_date": "9999-12-31T23:59:59-23:00"}, "end_date"),
        ("/aggregates/estimates", {**estimate, "end_date": "2025-12-01"}, "end_date"),
        ("/aggregates/estimates", {**estimate, "get_single": "maybe"}, "get_single"),
        ("/aggregates/estimates", {**estimate, "customer_id": "x" * 300}, "customer_id"),
        (f"/aggregates/logs/{w['metric'].id}", {"month": "2026-13"}, "month"),
        (f"/aggregates/logs/{w['metric'].id}", {"query_limit": -1}, "query_limit"),
        (f"/aggregates/logs/{w['metric'].id}", {"start_date": "soon"}, "start_date"),
        ("/customer", {"id": "not-a-uuid"}, "id"),
        ("/customer", {"id__in": f"{w['customer']},nope"}, "id__in"),
        ("/customer", {"created_at__lte": "2026-99-01"}, "created_at__lte"),
        ("/customer", {"email__ilike": "x" * 2000}, "email__ilike"),
        ("/templates/plan", {"status": "retired"}, "status"),
        ("/contract_v2", {"status": "sleeping"}, "status"),
        ("/contract_v2", {"status__in": "active,sleeping"}, "status__in"),
        ("/contract_v2", {"start_date__gte": "2026-01-32"}, "start_date__gte"),
        ("/contract_v2", {"customer_id": "42"}, "customer_id"),
        ("/contract_v2", {"end_date__isnull": "perhaps"}, "end_date__isnull"),
    ]


def test_bad_query_arguments_are_400s_naming_them(zenskar: ZenskarClient, world: dict[str, Any]) -> None:
    for path, params, field in query_cases(world):
        response = zenskar.get(path, params)
        assert response.status_code == 400, (path, params, response.status_code, response.content[:300])
        assert field in response.json()["errors"], (path, params, response.json())


def test_a_nul_in_a_query_argument_is_a_400_naming_it(zenskar: ZenskarClient, world: dict[str, Any]) -> None:
    for path, name in (
        ("/customer", "customer_name__ilike"),
        ("/aggregates/estimates", "customer_id"),
        ("/rawmetric", "search"),
    ):
        response = zenskar.get(path, {name: NUL})
        assert response.status_code == 400, (path, response.content[:200])
        assert name in response.json()["errors"]


def body_cases(w: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    contract = {
        "name": "C",
        "status": "active",
        "currency": "USD",
        "start_date": "2026-01-01",
        "customer_id": w["customer"],
    }
    c = f"/contract_v2/{w['contract']}"
    return [
        ("POST", "/rawmetric", {"name": "X", "dataschema": SCHEMA}, "api_slug"),
        ("POST", "/rawmetric", {"name": NUL, "api_slug": "x", "dataschema": SCHEMA}, "name"),
        ("POST", "/rawmetric", {"name": "X", "api_slug": "x", "dataschema": "Float64"}, "dataschema"),
        ("POST", "/rawmetric", {"name": "X", "api_slug": "bad slug!", "dataschema": SCHEMA}, "api_slug"),
        (
            "POST",
            "/aggregates",
            {"name": "M", "slug": "m", "usage_event": "compute_hours", "aggregation": "median"},
            "aggregation",
        ),
        (
            "POST",
            "/aggregates",
            {"name": NUL, "slug": "m", "usage_event": "compute_hours", "aggregation": "count"},
            "name",
        ),
        ("POST", "/customer", {"email": "a@b.c"}, "customer_name"),
        ("POST", "/customer", {"customer_name": 123}, "customer_name"),
        ("POST", "/customer", {"customer_name": "N", "email": NUL}, "email"),
        ("POST", "/customer", {"customer_name": "N", "external_id": "cus_1"}, "external_id"),
        ("POST", "/customer", {"customer_name": "x" * 300}, "customer_name"),
        ("PATCH", f"/customers/{w['customer']}", {"customer_name": None}, "customer_name"),
        ("PATCH", f"/customers/{w['customer']}", {"phone_number": ["1"]}, "phone_number"),
        ("POST", "/products", {"name": "P"}, "type"),
        ("POST", "/products", {"name": "P", "type": "subscription"}, "type"),
        ("POST", "/products", {"type": "fixed"}, "name"),
        ("POST", "/products", {"name": "P", "type": "fixed", "tax_codes": "GST"}, "tax_codes"),
        ("PATCH", f"/products/{w['product']}", {"is_active": "yes please"}, "is_active"),
        ("POST", f"/products/{w['product']}/pricing", {"name": "No model"}, "pricing_data"),
        (
            "POST",
            f"/products/{w['product']}/pricing",
            {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": -1}},
            "pricing_data.unit_amount",
        ),
        (
            "POST",
            f"/products/{w['product']}/pricing",
            {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": HUGE}},
            "pricing_data.unit_amount",
        ),
        (
            "POST",
            f"/products/{w['product']}/pricing",
            {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": 1}, "billing_period": {"cadence": "P2X"}},
            "billing_period.cadence",
        ),
        (
            "POST",
            f"/products/{w['metered']}/pricing",
            {
                "pricing_data": {"pricing_type": "tiered", "unit_amount": ["1"], "up_to": [5, None]},
                "quantity": {"type": "metered", "aggregate_id": w["metric"].id},
            },
            "pricing_data.up_to",
        ),
        (
            "POST",
            f"/products/{w['metered']}/pricing",
            {"pricing_data": {"pricing_type": "per_unit", "unit_amount": 1}},
            "quantity",
        ),
        ("POST", "/templates/plan", {"name": "P"}, "currency"),
        ("POST", "/templates/plan", {"name": "P", "currency": "XYZ"}, "currency"),
        ("POST", "/templates/plan", {"name": "P", "currency": "USD", "products": "all"}, "products"),
        ("POST", "/templates/plan", {"name": "P", "currency": "USD", "products": ["nope"]}, "products[0]"),
        (
            "POST",
            "/templates/plan",
            {"name": "P", "currency": "USD", "products": [{"product_id": w["product"]}]},
            "products[0].pricing_id",
        ),
        ("POST", f"/templates/plan/{w['plan']}/products", {}, "products"),
        ("POST", f"/templates/plan/{w['plan']}/preview", {}, "start_date"),
        (
            "POST",
            f"/templates/plan/{w['plan']}/preview",
            {"start_date": "2026-01-01", "end_date": "2025-01-01"},
            "end_date",
        ),
        ("POST", f"/templates/plan/{w['plan']}/preview", {"start_date": "9999-12-31"}, "start_date"),
        (
            "POST",
            f"/templates/plan/{w['plan']}/preview",
            {"start_date": "2026-01-01", "end_date": "2126-01-01"},
            "end_date",
        ),
        ("POST", "/contract_v2", {k: v for k, v in contract.items() if k != "status"}, "status"),
        ("POST", "/contract_v2", {**contract, "status": "paused"}, "status"),
        ("POST", "/contract_v2", {**contract, "start_date": "the first"}, "start_date"),
        ("POST", "/contract_v2", {**contract, "start_date": HUGE}, "start_date"),
        ("POST", "/contract_v2", {**contract, "end_date": "2025-01-01"}, "end_date"),
        ("POST", "/contract_v2", {**contract, "currency": 840}, "currency"),
        ("POST", "/contract_v2", {**contract, "renewal_policy": "forever"}, "renewal_policy"),
        ("POST", "/contract_v2", {**contract, "phases": {"name": "P"}}, "phases"),
        ("POST", "/contract_v2", {**contract, "phases": [{"name": "P", "start_date": "soon"}]}, "phases[0].start_date"),
        (
            "POST",
            "/contract_v2",
            {**contract, "phases": [{"name": "P", "phase_type": "holiday"}]},
            "phases[0].phase_type",
        ),
        (
            "POST",
            "/contract_v2",
            {**contract, "phases": [{"name": "P", "pricings": [{"pricing_id": "x", "start_date": 1.5e300}]}]},
            "phases[0].pricings[0].start_date",
        ),
        ("PUT", c, {k: v for k, v in contract.items() if k != "name"}, "name"),
        ("PUT", c, {**contract, "phases": [{"name": "New"}]}, "phases"),
        ("PUT", c, {**contract, "end_date": "2026-13-01"}, "end_date"),
        ("POST", f"{c}/phases", {"name": NUL}, "name"),
        ("POST", f"{c}/phases", {"name": "P", "end_date": "whenever"}, "end_date"),
        ("PATCH", f"{c}/expire", {"expiry_date": "never"}, "expiry_date"),
        ("PATCH", f"{c}/expire", {"expiry_date": "2020-01-01"}, "expiry_date"),
        ("POST", f"{c}/pause", {"start_date": "2026-03-01"}, "unpause_extension_policy"),
        (
            "POST",
            f"{c}/pause",
            {"start_date": "2026-03-01", "unpause_extension_policy": "stretch"},
            "unpause_extension_policy",
        ),
        ("POST", f"{c}/pause", {"unpause_extension_policy": "extend"}, "start_date"),
        ("POST", "/customer", ["not", "an", "object"], ""),
        ("POST", "/rawmetric", "{not json", ""),
    ]


def test_bad_bodies_are_400s_naming_the_field_and_store_nothing(
    zenskar: ZenskarClient, world: dict[str, Any], organisation: Organisation
) -> None:
    counts = [model.objects.count() for model in (UsageEvent, Customer, Product, Pricing, Plan, Contract)]
    audit = AuditEntry.objects.filter(organisation=organisation).count()

    for method, path, body, field in body_cases(world):
        response = zenskar.send(method, path, body)
        assert response.status_code == 400, (method, path, body, response.status_code, response.content[:400])
        payload = response.json()
        assert payload["detail"]
        if field:
            assert field in payload.get("errors", {}), (method, path, payload)

    assert [model.objects.count() for model in (UsageEvent, Customer, Product, Pricing, Plan, Contract)] == counts
    assert AuditEntry.objects.filter(organisation=organisation).count() == audit


def test_a_nul_or_a_bad_id_in_a_path_is_never_a_500(zenskar: ZenskarClient, world: dict[str, Any]) -> None:
    for path in (
        "/rawmetric/%00",
        "/rawmetric/99999999999999999999999999",
        "/rawmetric/slug/%00",
        "/aggregates/99999999999999999999999999",
        "/aggregates/logs/not-there",
        "/customers/not-a-uuid",
        "/products/123",
        "/templates/plan/00000000-0000-0000-0000-000000000000",
        "/contract_v2/%F0%9F%98%80",
    ):
        response = zenskar.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert response.json()["detail"]


def test_an_unknown_zenskar_path_is_a_json_404(zenskar: ZenskarClient) -> None:
    response = zenskar.get("/contract_v2/a/b/c/d")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


def test_an_ingest_key_cannot_use_the_management_paths(ingest_key: ApiKeyBundle, world: dict[str, Any]) -> None:
    client = ZenskarClient(ingest_key)

    assert client.get("/customer").status_code == 403
    assert client.post("/customer", {"customer_name": "X"}).status_code == 403


def test_no_key_is_401_and_another_organisations_header_is_403(
    full_key: ApiKeyBundle, other_organisation: Organisation
) -> None:
    anonymous = ZenskarClient(full_key)
    anonymous.headers = {}
    wrong_header = ZenskarClient(full_key)
    wrong_header.headers["HTTP_ORGANISATION"] = str(other_organisation.id)

    assert anonymous.get("/customer").status_code == 401
    assert wrong_header.get("/customer").status_code == 403
