"""SPEC §9 through /api/v1/: generate, approve (INV-000001), credit note (CN-000001), partial then full
payment, the 409s of wrong transitions, 400s naming the field, and tenancy (another organisation's ids
are 404, its rows absent from lists). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.invoicing.models import Invoice, Payment
from billing.models import Contract, Customer
from tests.billing.conftest import customer_make
from tests.billing.invoice_helpers import contract_make, pricing_make
from zenskar_site.accounts.models import Organisation

V1 = "/api/v1"


def flat_fee_contract(organisation: Organisation, *, external_id: str = "cus_1") -> Contract:
    """49 USD a month, the customer's tax 10%: a January invoice is 49 + 4.90 = 53.90."""
    customer = customer_make(organisation, external_id=external_id, tax_rate="10", payment_terms_days=15)
    pricing = pricing_make(organisation, "Platform", {"pricing_type": "flat_fee", "unit_amount": "49"})
    return contract_make(organisation, customer, [pricing], start="2024-01-01")


def generate(api: APIClient, contract: Contract, start: str = "2024-01-01", end: str = "2024-02-01") -> dict[str, Any]:
    response = api.post(
        f"{V1}/invoices/generate/", {"contract_id": str(contract.id), "from_date": start, "to_date": end}, format="json"
    )
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def pay(api: APIClient, invoice_id: str, amount: str) -> Any:
    return api.post(
        f"{V1}/payments/",
        {
            "amount": amount,
            "currency_code": "USD",
            "payment_method": "bank_transfer",
            "timestamp": "2024-02-10T12:00:00Z",
            "payment_parts": [{"invoice_id": invoice_id, "amount": amount}],
        },
        format="json",
    )


@pytest.mark.django_db
def test_generate_approve_credit_and_pay_through_the_api(api: APIClient, organisation: Organisation) -> None:
    contract = flat_fee_contract(organisation)

    draft = generate(api, contract)
    assert (draft["status"], draft["number"], draft["kind"]) == ("draft", None, "on_demand")
    assert (draft["subtotal"], draft["tax"], draft["total"], draft["amount_due"]) == ("49.00", "4.90", "53.90", "53.90")
    assert [(line["description"], line["amount"]) for line in draft["line_items"]] == [
        (draft["line_items"][0]["description"], "49.00")
    ]
    invoice_id = draft["id"]

    approved = api.post(f"{V1}/invoices/{invoice_id}/approve/")
    assert approved.status_code == 200, approved.content
    assert (approved.json()["status"], approved.json()["number"]) == ("approved", "INV-000001")
    assert approved.json()["issue_date"]
    assert approved.json()["due_date"]
    again = api.post(f"{V1}/invoices/{invoice_id}/approve/")
    assert (again.status_code, again.json()["number"]) == (200, "INV-000001")  # approving twice is harmless

    too_much = api.post(
        f"{V1}/invoices/{invoice_id}/credit-notes/", {"credit_note_amount": "53.91", "reason": "x"}, format="json"
    )
    assert too_much.status_code == 409, too_much.content
    assert "53.9" in too_much.json()["detail"]

    note = api.post(
        f"{V1}/invoices/{invoice_id}/credit-notes/",
        {"credit_note_amount": "3.90", "reason": "goodwill"},
        format="json",
    )
    assert note.status_code == 201, note.content
    assert (note.json()["number"], note.json()["amount"], note.json()["invoice_id"]) == (
        "CN-000001",
        "3.90",
        invoice_id,
    )
    notes = api.get(f"{V1}/credit-notes/", {"invoice_id": invoice_id}).json()["results"]
    assert [n["number"] for n in notes] == ["CN-000001"]
    assert api.get(f"{V1}/credit-notes/{note.json()['id']}/").json()["reason"] == "goodwill"
    assert [n["id"] for n in api.get(f"{V1}/invoices/{invoice_id}/credit-notes/").json()["results"]] == [
        note.json()["id"]
    ]

    partial = pay(api, invoice_id, "20")
    assert partial.status_code == 201, partial.content
    assert partial.json()["payment_parts"] == [{"invoice_id": invoice_id, "amount": "20.00"}]
    shown = api.get(f"{V1}/invoices/{invoice_id}/").json()
    assert (shown["status"], shown["amount_credited"], shown["amount_paid"], shown["amount_due"]) == (
        "partially_paid",
        "3.90",
        "20.00",
        "30.00",
    )

    over = pay(api, invoice_id, "30.01")
    assert over.status_code == 409, over.content
    assert "30.01" in over.json()["detail"]
    assert "INV-000001" in over.json()["detail"]
    assert Payment.objects.count() == 1  # the refused payment left nothing

    full = pay(api, invoice_id, "30")
    assert full.status_code == 201, full.content
    shown = api.get(f"{V1}/invoices/{invoice_id}/").json()
    assert (shown["status"], shown["amount_paid"], shown["amount_due"]) == ("paid", "50.00", "0.00")
    assert {p["amount"] for p in api.get(f"{V1}/payments/", {"invoice_id": invoice_id}).json()["results"]} == {
        "20.00",
        "30.00",
    }
    paid_void = api.post(f"{V1}/invoices/{invoice_id}/void/", {"reason": "late"}, format="json")
    assert paid_void.status_code == 409
    assert "paid" in paid_void.json()["detail"]


@pytest.mark.django_db
def test_void_and_discard_and_their_wrong_transitions(api: APIClient, organisation: Organisation) -> None:
    contract = flat_fee_contract(organisation)
    first = generate(api, contract)["id"]
    second = generate(api, contract, "2024-02-01", "2024-03-01")["id"]

    assert api.post(f"{V1}/invoices/{first}/void/", {"reason": "x"}, format="json").status_code == 409  # a draft
    api.post(f"{V1}/invoices/{first}/approve/")
    missing_reason = api.post(f"{V1}/invoices/{first}/void/", {}, format="json")
    assert missing_reason.status_code == 400
    assert "reason" in missing_reason.json()["errors"]
    voided = api.post(f"{V1}/invoices/{first}/void/", {"reason": "wrong customer"}, format="json")
    assert voided.status_code == 200, voided.content
    assert (voided.json()["status"], voided.json()["amount_due"], voided.json()["number"]) == (
        "void",
        "0.00",
        "INV-000001",
    )

    approve_void = api.post(f"{V1}/invoices/{first}/approve/")
    assert approve_void.status_code == 409
    assert "void" in approve_void.json()["detail"]
    credit_void = api.post(
        f"{V1}/invoices/{first}/credit-notes/", {"credit_note_amount": "1", "reason": "x"}, format="json"
    )
    assert credit_void.status_code == 409
    assert "void" in credit_void.json()["detail"]
    pay_void = pay(api, first, "1")
    assert pay_void.status_code == 409
    assert "void" in pay_void.json()["detail"]

    discarded = api.post(f"{V1}/invoices/{second}/discard/")
    assert (discarded.status_code, discarded.json()["status"]) == (200, "discarded")
    approve_discarded = api.post(f"{V1}/invoices/{second}/approve/")
    assert approve_discarded.status_code == 409
    assert "discarded" in approve_discarded.json()["detail"]
    assert Invoice.objects.get(id=second).number is None  # no number taken: the next approval is INV-000002

    statuses = {row["id"]: row["status"] for row in api.get(f"{V1}/invoices/").json()["results"]}
    assert statuses == {first: "void", second: "discarded"}
    assert [row["id"] for row in api.get(f"{V1}/invoices/", {"status": "void"}).json()["results"]] == [first]


@pytest.mark.django_db
def test_bad_input_is_a_400_naming_the_field(api: APIClient, organisation: Organisation) -> None:
    contract = flat_fee_contract(organisation)
    cases = [
        ({"contract_id": str(contract.id), "from_date": "2024-02-01", "to_date": "2024-01-01"}, "to_date"),
        ({"contract_id": "nope", "from_date": "2024-01-01", "to_date": "2024-02-01"}, "contract_id"),
        ({"contract_id": str(contract.id), "from_date": "soon", "to_date": "2024-02-01"}, "from_date"),
        ({"contract_id": str(contract.id), "from_date": "2024-01-01", "to_date": "2024-02-01", "x": 1}, "x"),
    ]
    for body, field in cases:
        response = api.post(f"{V1}/invoices/generate/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in response.json()["errors"], (body, response.json())
    assert not Invoice.objects.exists()

    invoice_id = generate(api, contract)["id"]
    api.post(f"{V1}/invoices/{invoice_id}/approve/")
    note = api.post(f"{V1}/invoices/{invoice_id}/credit-notes/", {"credit_note_amount": "-1"}, format="json")
    assert note.status_code == 400
    assert {"credit_note_amount", "reason"} <= set(note.json()["errors"])
    cents = api.post(
        f"{V1}/invoices/{invoice_id}/credit-notes/", {"credit_note_amount": "1.001", "reason": "x"}, format="json"
    )
    assert cents.status_code == 400
    assert "credit_note_amount" in cents.json()["errors"]
    parts = api.post(
        f"{V1}/payments/",
        {"amount": "10", "currency_code": "USD", "payment_parts": [{"invoice_id": invoice_id, "amount": "9"}]},
        format="json",
    )
    assert parts.status_code == 400
    assert "payment_parts" in parts.json()["errors"]
    currency = pay(api, invoice_id, "1").json()  # sanity: a valid payment passes
    assert currency["amount"] == "1.00"
    wrong_currency = api.post(
        f"{V1}/payments/",
        {"amount": "1", "currency_code": "EUR", "payment_parts": [{"invoice_id": invoice_id, "amount": "1"}]},
        format="json",
    )
    assert wrong_currency.status_code == 400
    assert "payment_parts[0].amount" in wrong_currency.json()["errors"]
    bad_filter = api.get(f"{V1}/invoices/", {"status": "sent"})
    assert bad_filter.status_code == 400
    assert "status" in bad_filter.json()["errors"]


@pytest.mark.django_db
def test_another_organisations_invoices_are_404_and_absent_from_lists(
    api: APIClient, other_api: APIClient, organisation: Organisation, other_organisation: Organisation
) -> None:
    contract = flat_fee_contract(organisation)
    invoice_id = generate(api, contract)["id"]
    api.post(f"{V1}/invoices/{invoice_id}/approve/")
    note_id = api.post(
        f"{V1}/invoices/{invoice_id}/credit-notes/", {"credit_note_amount": "1", "reason": "x"}, format="json"
    ).json()["id"]
    payment_id = pay(api, invoice_id, "2").json()["id"]
    theirs = flat_fee_contract(other_organisation)

    for method, path, body in [
        ("get", f"/invoices/{invoice_id}/", None),
        ("post", f"/invoices/{invoice_id}/approve/", None),
        ("post", f"/invoices/{invoice_id}/void/", {"reason": "x"}),
        ("post", f"/invoices/{invoice_id}/discard/", {}),
        ("post", f"/invoices/{invoice_id}/credit-notes/", {"credit_note_amount": "1", "reason": "x"}),
        ("get", f"/invoices/{invoice_id}/credit-notes/", None),
        ("get", f"/credit-notes/{note_id}/", None),
        ("get", f"/payments/{payment_id}/", None),
        (
            "post",
            "/invoices/generate/",
            {"contract_id": str(contract.id), "from_date": "2024-01-01", "to_date": "2024-02-01"},
        ),
    ]:
        response = getattr(other_api, method)(f"{V1}{path}", body, format="json")
        assert response.status_code == 404, (path, response.content)
    paid_by_them = pay(other_api, invoice_id, "1")
    assert paid_by_them.status_code == 400
    assert "payment_parts[0].invoice_id" in paid_by_them.json()["errors"]

    for path in ("/invoices/", "/credit-notes/", "/payments/"):
        assert other_api.get(f"{V1}{path}").json()["results"] == [], path
    generate(other_api, theirs)
    assert [row["contract_id"] for row in other_api.get(f"{V1}/invoices/").json()["results"]] == [str(theirs.id)]
    assert [row["id"] for row in api.get(f"{V1}/invoices/").json()["results"]] == [invoice_id]
    shown = api.get(f"{V1}/invoices/{invoice_id}/").json()
    assert (shown["status"], shown["amount_due"]) == ("partially_paid", "50.90")  # untouched by the other org


@pytest.mark.django_db
def test_an_invoice_shows_its_parties_frozen_at_approval(api: APIClient, organisation: Organisation) -> None:
    contract = flat_fee_contract(organisation)
    Customer.objects.filter(id=contract.customer_id).update(
        email="ap@initech.example", address_line1="1 Main St", address_country="Portugal"
    )
    first = generate(api, contract)
    issued = {
        "seller": {"name": organisation.name},
        "customer": {"customer_name": "Initech", "email": "ap@initech.example", "address": ["1 Main St", "Portugal"]},
    }
    assert first["parties"] == issued  # a draft: the details as they are now
    assert api.post(f"{V1}/invoices/{first['id']}/approve/").status_code == 200

    Customer.objects.filter(id=contract.customer_id).update(customer_name="Initrode", email="", address_line1="")
    Organisation.objects.filter(id=organisation.id).update(name="Renamed Seller")
    assert api.get(f"{V1}/invoices/{first['id']}/").json()["parties"] == issued
    later = generate(api, contract, start="2024-02-01", end="2024-03-01")
    assert later["parties"] == {
        "seller": {"name": "Renamed Seller"},
        "customer": {"customer_name": "Initrode", "email": "", "address": ["Portugal"]},
    }
