"""SPEC §8: customers through /api/v1/customers/: fields, validation naming the field, audit, archive."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.models import Customer
from zenskar_site.accounts.models import AuditEntry, Organisation

URL = "/api/v1/customers/"


def create(api: APIClient, **body: Any) -> Any:
    return api.post(URL, {"customer_name": "Initech", **body}, format="json")


def test_a_customer_is_created_with_every_field_and_audited(api: APIClient, organisation: Organisation) -> None:
    body = {
        "external_id": "cus_123",
        "customer_name": "Initech",
        "email": "billing@initech.example",
        "phone_number": "+1 555 0100",
        "address_line1": "1 Main St",
        "address_city": "Austin",
        "address_zipCode": "78701",
        "address_country_code": "US",
        "ship_to_line1": "2 Dock Rd",
        "ship_to_zipCode": "78702",
        "tax_rate": "8.25",
        "payment_terms_days": 45,
        "custom_data": {"segment": "smb"},
    }

    response = api.post(URL, body, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert {key: data[key] for key in body} == body
    assert data["archived"] is False
    customer = Customer.objects.get(id=data["id"])
    assert customer.organisation == organisation
    assert str(customer.tax_rate) == "8.2500"
    entry = AuditEntry.objects.get(action="customer.create")
    assert entry.object_id == data["id"]
    assert entry.after["tax_rate"] == "8.25"


def test_defaults_are_zero_tax_and_thirty_days(api: APIClient) -> None:
    data = create(api).json()
    assert data["tax_rate"] == "0"
    assert data["payment_terms_days"] == 30
    assert data["external_id"] is None
    assert data["custom_data"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_name": ""}, "customer_name"),
        ({"customer_name": None}, "customer_name"),
        ({"customer_name": 12}, "customer_name"),
        ({"customer_name": "x" * 256}, "customer_name"),
        ({"customer_name": "a\x00b"}, "customer_name"),
        ({"tax_rate": "-1"}, "tax_rate"),
        ({"tax_rate": "100.5"}, "tax_rate"),
        ({"tax_rate": "abc"}, "tax_rate"),
        ({"tax_rate": "NaN"}, "tax_rate"),
        ({"tax_rate": True}, "tax_rate"),
        ({"tax_rate": "1.00001"}, "tax_rate"),
        ({"payment_terms_days": -1}, "payment_terms_days"),
        ({"payment_terms_days": 1.5}, "payment_terms_days"),
        ({"payment_terms_days": "30"}, "payment_terms_days"),
        ({"custom_data": []}, "custom_data"),
        ({"custom_data": {"k": "\x00"}}, "custom_data.k"),
        ({"email": ["a"]}, "email"),
        ({"external_id": 5}, "external_id"),
        ({"external_id": "cus\x00"}, "external_id"),
        ({"phone_number": "\ud800"}, "phone_number"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(
    api: APIClient, body: dict[str, Any], field: str
) -> None:
    # Sent as JSON text with escapes, as a client would send a lone surrogate.
    response = api.post(URL, json.dumps({"customer_name": "Initech", **body}), content_type="application/json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert not Customer.objects.exists()
    assert not AuditEntry.objects.filter(object_type="customer").exists()


def test_a_body_that_is_not_an_object_is_a_400(api: APIClient) -> None:
    assert api.post(URL, ["x"], format="json").status_code == 400


def test_an_external_id_is_unique_in_the_organisation_only(
    api: APIClient, client_for: Any, other_organisation: Organisation
) -> None:
    from tests.factories import api_key_make

    other = client_for(api_key_make(organisation=other_organisation).secret)
    assert create(api, external_id="cus_1").status_code == 201

    duplicate = create(api, external_id="cus_1")
    elsewhere = create(other, external_id="cus_1")

    assert duplicate.status_code == 400
    assert "external_id" in duplicate.json()["errors"]
    assert elsewhere.status_code == 201


def test_the_database_refuses_a_duplicate_external_id(organisation: Organisation) -> None:
    from django.db import IntegrityError, transaction

    Customer.objects.create(organisation=organisation, customer_name="A", external_id="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(organisation=organisation, customer_name="B", external_id="x")


@pytest.mark.parametrize(
    "values",
    [
        {"tax_rate": -1},
        {"tax_rate": 101},
        {"payment_terms_days": 4000},
        {"customer_name": ""},
        {"external_id": ""},
    ],
)
def test_the_database_refuses_out_of_range_values(organisation: Organisation, values: dict[str, Any]) -> None:
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(organisation=organisation, **{"customer_name": "A", **values})


def test_a_patch_changes_the_given_fields_and_is_audited_with_before_and_after(api: APIClient) -> None:
    created = create(api, external_id="cus_1", email="a@example.com").json()

    response = api.patch(
        f"{URL}{created['id']}/", {"email": "b@example.com", "tax_rate": 20, "reason": "moved"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["email"] == "b@example.com"
    assert response.json()["tax_rate"] == "20"
    assert response.json()["external_id"] == "cus_1"
    entry = AuditEntry.objects.get(action="customer.update")
    assert entry.before["email"] == "a@example.com"
    assert entry.after["email"] == "b@example.com"
    assert entry.reason == "moved"


def test_a_patch_to_a_taken_external_id_is_a_400(api: APIClient) -> None:
    create(api, external_id="cus_1")
    second = create(api, external_id="cus_2").json()

    response = api.patch(f"{URL}{second['id']}/", {"external_id": "cus_1"}, format="json")

    assert response.status_code == 400
    assert "external_id" in response.json()["errors"]
    assert Customer.objects.get(id=second["id"]).external_id == "cus_2"


def test_a_patch_cannot_blank_the_name(api: APIClient) -> None:
    created = create(api).json()
    for value in ("", None):
        response = api.patch(f"{URL}{created['id']}/", {"customer_name": value}, format="json")
        assert response.status_code == 400
        assert "customer_name" in response.json()["errors"]


def test_delete_archives_a_customer_without_contracts(api: APIClient) -> None:
    created = create(api).json()

    response = api.delete(f"{URL}{created['id']}/")

    assert response.status_code == 204
    assert Customer.objects.get(id=created["id"]).archived is True
    assert api.get(URL).json()["results"] == []
    assert [c["id"] for c in api.get(URL, {"include_archived": "true"}).json()["results"]] == [created["id"]]
    assert AuditEntry.objects.filter(action="customer.archive", object_id=created["id"]).exists()


def test_list_filters(api: APIClient) -> None:
    create(api, customer_name="Initech", external_id="cus_1", email="a@initech.example")
    create(api, customer_name="Globex", external_id="cus_2")

    def names(**params: str) -> list[str]:
        response = api.get(URL, params)
        assert response.status_code == 200, response.json()
        return sorted(c["customer_name"] for c in response.json()["results"])

    assert names() == ["Globex", "Initech"]
    assert names(external_id="cus_2") == ["Globex"]
    assert names(customer_name="init") == ["Initech"]
    assert names(search="cus_1") == ["Initech"]
    assert names(email="A@INITECH.example") == ["Initech"]
    assert names(created_at_after="2000-01-01T00:00:00Z") == ["Globex", "Initech"]
    assert names(created_at_before="2000-01-01T00:00:00Z") == []


def test_a_bad_filter_is_a_400_naming_it(api: APIClient) -> None:
    response = api.get(URL, {"created_at_after": "yesterday"})
    assert response.status_code == 400
    assert "created_at_after" in response.json()["errors"]


def test_the_list_is_cursor_paginated(api: APIClient) -> None:
    for n in range(5):
        create(api, customer_name=f"C{n}")

    first = api.get(URL, {"page_size": 2}).json()
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json()

    seen = [c["customer_name"] for page in (first, second, third) for c in page["results"]]
    assert sorted(seen) == [f"C{n}" for n in range(5)]
    assert third["next"] is None


def test_an_unknown_or_malformed_id_is_a_404(api: APIClient) -> None:
    assert api.get(f"{URL}00000000-0000-0000-0000-000000000000/").status_code == 404
    assert api.get(f"{URL}not-a-uuid/").status_code == 404
    assert api.patch(f"{URL}not-a-uuid/", {}, format="json").status_code == 404
