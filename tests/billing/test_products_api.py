"""SPEC §8: products and their pricings through /api/v1/products/: validation naming the field, the quantity
and cadence stored once, metrics of the organisation only, SKUs unique per organisation."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from billing.models import Pricing, Product
from metrics.models import BillableMetric
from tests.billing.conftest import TIERED, metric_make
from zenskar_site.accounts.models import AuditEntry, Organisation

URL = "/api/v1/products/"


def product(api: APIClient, **body: Any) -> Any:
    response = api.post(URL, {"name": "Compute", "type": "metered", **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def price(api: APIClient, product_id: str, **body: Any) -> Any:
    return api.post(f"{URL}{product_id}/pricings/", body, format="json")


def test_a_product_is_created_listed_and_edited(api: APIClient) -> None:
    created = product(api, sku="CPU-1", description="Compute", tax_codes=["txcd_1"], custom_attributes={"a": 1})

    listed = api.get(URL, {"type": "metered"}).json()["results"]
    edited = api.patch(f"{URL}{created['id']}/", {"is_active": False, "reason": "retired"}, format="json")

    assert [p["id"] for p in listed] == [created["id"]]
    assert created["sku"] == "CPU-1"
    assert created["tax_codes"] == ["txcd_1"]
    assert edited.status_code == 200
    assert edited.json()["is_active"] is False
    assert api.get(URL, {"is_active": "true"}).json()["results"] == []
    assert AuditEntry.objects.filter(object_type="product", object_id=created["id"]).count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"type": "weird"}, "type"),
        ({"type": None}, "type"),
        ({"tax_codes": "x"}, "tax_codes"),
        ({"tax_codes": [1]}, "tax_codes"),
        ({"custom_attributes": 3}, "custom_attributes"),
        ({"is_active": "yes"}, "is_active"),
        ({"sku": "a\x00"}, "sku"),
        ({"price": 3}, "price"),
    ],
)
def test_a_bad_product_is_a_400_naming_the_field(api: APIClient, body: dict[str, Any], field: str) -> None:
    response = api.post(URL, {"name": "Compute", "type": "fixed", **body}, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert not Product.objects.exists()


def test_a_sku_is_unique_in_the_organisation_only(api: APIClient, other_api: APIClient) -> None:
    product(api, sku="CPU-1")
    duplicate = api.post(URL, {"name": "Other", "type": "fixed", "sku": "CPU-1"}, format="json")
    assert duplicate.status_code == 400
    assert "sku" in duplicate.json()["errors"]
    assert other_api.post(URL, {"name": "Theirs", "type": "fixed", "sku": "CPU-1"}, format="json").status_code == 201


def test_the_database_refuses_a_duplicate_sku_and_an_unknown_type(organisation: Organisation) -> None:
    Product.objects.create(organisation=organisation, name="A", type="fixed", sku="S")
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(organisation=organisation, name="B", type="fixed", sku="S")
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(organisation=organisation, name="C", type="bundle")


def test_a_products_type_cannot_change(api: APIClient) -> None:
    created = product(api)
    response = api.patch(f"{URL}{created['id']}/", {"type": "fixed"}, format="json")
    assert response.status_code == 400
    assert "type" in response.json()["errors"]


def test_a_metered_tiered_pricing_is_stored_normalised_with_its_metric(api: APIClient, metric: BillableMetric) -> None:
    created = product(api)

    response = price(
        api,
        created["id"],
        name="CPU hours",
        pricing_data={"pricing_type": "tiered", "unit_amount": [0.1, "0.08"], "up_to": [100, None]},
        quantity={"type": "metered", "aggregate_id": "cpu_hours", "unit": "CPU hour"},
        billing_period={"cadence": "P1M"},
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["pricing_type"] == "tiered"
    assert body["pricing_data"]["unit_amount"] == ["0.1", "0.08"]
    assert body["pricing_data"]["up_to"] == ["100", None]
    assert body["quantity"] == {"type": "metered", "aggregate_id": metric.id, "metric": "cpu_hours", "unit": "CPU hour"}
    assert body["billing_period"] == {"cadence": "P1M"}
    assert body["is_recurring"] is True
    pricing = Pricing.objects.get(id=body["id"])
    assert pricing.metric == metric
    assert pricing.quantity is None
    assert "quantity" not in pricing.pricing_data
    assert AuditEntry.objects.filter(action="pricing.create", object_id=body["id"]).exists()
    assert [p["id"] for p in api.get(f"{URL}{created['id']}/pricings/").json()["results"]] == [body["id"]]
    assert api.get(f"{URL}{created['id']}/pricings/{body['id']}/").json()["id"] == body["id"]


def test_the_quantity_cadence_and_currency_may_come_inside_pricing_data(api: APIClient, metric: BillableMetric) -> None:
    created = product(api)

    response = price(
        api,
        created["id"],
        pricing_data={
            **TIERED,
            "quantity": {"type": "metered", "aggregate_id": metric.id},
            "pricing_period": {"cadence": "P1D"},
            "currency": "eur",
        },
    )

    assert response.status_code == 201, response.json()
    assert response.json()["quantity"]["aggregate_id"] == metric.id
    assert response.json()["billing_period"] == {"cadence": "P1D"}
    assert response.json()["currency"] == "EUR"
    assert set(response.json()["pricing_data"]) == {"pricing_type", "unit_amount", "up_to", "flat_amount"}


def test_a_fixed_products_flat_fee_defaults_to_a_quantity_of_one(api: APIClient) -> None:
    created = product(api, type="fixed", name="Platform fee")
    response = price(api, created["id"], pricing_data={"pricing_type": "flat_fee", "unit_amount": "49.00"})
    assert response.status_code == 201, response.json()
    assert response.json()["quantity"] == {"type": "fixed", "quantity": "1"}
    assert response.json()["pricing_data"] == {"pricing_type": "flat_fee", "unit_amount": "49"}


def test_return_existing_gives_back_an_identical_pricing(api: APIClient) -> None:
    created = product(api, type="fixed")
    body = {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": "49"}}
    first = price(api, created["id"], **body).json()
    again = api.post(f"{URL}{created['id']}/pricings/?return_existing=true", body, format="json").json()
    copy = price(api, created["id"], **body).json()
    assert again["id"] == first["id"]
    assert copy["id"] != first["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pricing_data": None}, "pricing_data"),
        ({"pricing_data": []}, "pricing_data"),
        ({"pricing_data": {"pricing_type": "bogus"}}, "pricing_data.pricing_type"),
        ({"pricing_data": {**TIERED, "up_to": [100, 50, None], "unit_amount": ["1", "2", "3"]}}, "pricing_data.up_to"),
        ({"pricing_data": {**TIERED, "unit_amount": ["-1", "2"]}}, "pricing_data.unit_amount"),
        ({"quantity": {"type": "metered"}}, "quantity.aggregate_id"),
        ({"quantity": {"type": "metered", "aggregate_id": "nope"}}, "quantity.aggregate_id"),
        ({"quantity": {"type": "metered", "aggregate_id": 999999}}, "quantity.aggregate_id"),
        ({"quantity": {"type": "fixed", "quantity": 1}}, "quantity.type"),
        ({"quantity": {"type": "lots"}}, "quantity.type"),
        ({"quantity": "cpu_hours"}, "quantity"),
        ({"quantity": None}, "quantity"),
        ({"billing_period": {"cadence": "monthly"}}, "billing_period.cadence"),
        ({"billing_period": "P1M"}, "billing_period"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "dollars"}, "currency"),
        ({"is_recurring": "no"}, "is_recurring"),
        ({"quantity": {"type": "metered", "aggregate_id": "cpu\x00"}}, "quantity.aggregate_id"),
        ({"quantity": {"type": "metered", "aggregate_id": "cpu_hours", "unit": "h\x00"}}, "quantity.unit"),
        ({"pricing_data": {**TIERED, "note\x00": 1}}, "pricing_data"),
        ({"discount": 1}, "discount"),
    ],
)
def test_a_bad_pricing_is_a_400_naming_the_field_and_stores_nothing(
    api: APIClient, metric: BillableMetric, body: dict[str, Any], field: str
) -> None:
    created = product(api)
    payload = {"pricing_data": TIERED, "quantity": {"type": "metered", "aggregate_id": "cpu_hours"}, **body}

    response = price(api, created["id"], **payload)

    assert response.status_code == 400, response.json()
    assert any(key.startswith(field) for key in response.json()["errors"]), response.json()
    assert not Pricing.objects.exists()


def test_a_metered_pricing_on_another_organisations_metric_is_a_400(
    api: APIClient, metric: BillableMetric, other_organisation: Organisation
) -> None:
    theirs = metric_make(other_organisation, slug="their_cpu")
    created = product(api)

    for reference in (theirs.id, str(theirs.id), "their_cpu"):
        response = price(
            api, created["id"], pricing_data=TIERED, quantity={"type": "metered", "aggregate_id": reference}
        )
        assert response.status_code == 400
        assert "quantity.aggregate_id" in response.json()["errors"]
    assert not Pricing.objects.exists()


def test_a_non_additive_metric_needs_its_granularity_as_the_cadence(api: APIClient, organisation: Organisation) -> None:
    metric_make(organisation, slug="peak_cpu", aggregation="max")  # granularity: day
    created = product(api)
    quantity = {"type": "metered", "aggregate_id": "peak_cpu"}

    monthly = price(api, created["id"], pricing_data=TIERED, quantity=quantity, billing_period={"cadence": "P1M"})
    daily = price(api, created["id"], pricing_data=TIERED, quantity=quantity, billing_period={"cadence": "P1D"})

    assert monthly.status_code == 400
    assert "billing_period.cadence" in monthly.json()["errors"]
    assert daily.status_code == 201, daily.json()


def test_a_matrix_pricing_names_the_metrics_group_by_fields(api: APIClient, metric: BillableMetric) -> None:
    created = product(api)
    matrix = {
        "pricing_type": "matrix",
        "dimensions": [{"name": "Region", "column_name": "zone"}],
        "values": [{"dimension_values": ["eu"], "unit_amount": "1"}],
    }
    quantity = {"type": "metered", "aggregate_id": "cpu_hours"}

    wrong = price(api, created["id"], pricing_data=matrix, quantity=quantity)
    matrix["dimensions"] = [{"name": "Region", "column_name": "region"}]
    right = price(api, created["id"], pricing_data=matrix, quantity=quantity)

    assert wrong.status_code == 400
    assert "pricing_data.dimensions[0].column_name" in wrong.json()["errors"]
    assert right.status_code == 201, right.json()


def test_the_database_keeps_a_quantity_once(organisation: Organisation, metric: BillableMetric) -> None:
    item = Product.objects.create(organisation=organisation, name="A", type="metered")
    base = {"organisation": organisation, "product": item, "pricing_data": TIERED, "pricing_type": "tiered"}
    with pytest.raises(IntegrityError), transaction.atomic():
        Pricing.objects.create(**base, quantity_type="metered", metric=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        Pricing.objects.create(**base, quantity_type="fixed", quantity=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        Pricing.objects.create(**base, quantity_type="metered", metric=metric, quantity=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Pricing.objects.create(**base, quantity_type="fixed", quantity=-1)
