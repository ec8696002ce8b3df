"""SPEC §10 for invoices, credit notes and payments: the §9 flow through the Zenskar-compatible paths only
(no trailing slash, `x-api-key`), their arguments (Unix seconds, filters, enums), 409s, 400s naming the
argument, and tenancy. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from billing.invoicing.models import Invoice, Payment
from tests.billing.invoice_helpers import pdf_text
from tests.billing.test_invoice_api import flat_fee_contract
from tests.billing.zenskar_support import ZenskarClient, created
from tests.factories import ApiKeyBundle
from zenskar_site.accounts.models import Organisation

JAN_1 = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
JAN_31_END = int(dt.datetime(2024, 1, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp())
FEB_1 = int(dt.datetime(2024, 2, 1, tzinfo=dt.UTC).timestamp())


@pytest.fixture
def zenskar(full_key: ApiKeyBundle) -> ZenskarClient:
    return ZenskarClient(full_key)


@pytest.fixture
def other_zenskar(other_key: ApiKeyBundle) -> ZenskarClient:
    return ZenskarClient(other_key)


def generate(zenskar: ZenskarClient, contract: Any, start: int = JAN_1, end: int = FEB_1) -> dict[str, Any]:
    body = {"contract_id": str(contract.id), "customer_id": str(contract.customer_id), "from_date": start}
    return created(zenskar.post("/invoices/generate_invoice", {**body, "to_date": end}))


def pay(zenskar: ZenskarClient, invoice_id: str, amount: str, **extra: Any) -> Any:
    body = {
        "amount": amount,
        "currency_code": "USD",
        "payment_method": "bank_transfer",
        "type": "payment",
        "timestamp": JAN_1 + 40 * 86400,
        "payment_parts": [{"invoice_id": invoice_id, "amount": amount}],
        **extra,
    }
    return zenskar.post("/payments", body)


@pytest.mark.django_db
def test_the_invoice_flow_through_the_zenskar_paths(zenskar: ZenskarClient, organisation: Organisation) -> None:
    contract = flat_fee_contract(organisation)

    # The last second of January as the end: January is billed whole (to_date is exclusive, by day).
    draft = generate(zenskar, contract, JAN_1, JAN_31_END)
    invoice_id = draft["id"]
    assert (draft["status"], draft["period_start"], draft["period_end"], draft["total"]) == (
        "draft",
        "2024-01-01",
        "2024-02-01",
        "53.90",
    )
    status = zenskar.get(f"/invoices/invoice_generation_status/{invoice_id}", {"contract_id": str(contract.id)})
    assert (status.status_code, status.json()["status"], status.json()["invoice_status"]) == (200, "completed", "draft")
    assert "line_items" not in zenskar.get(f"/invoices/{invoice_id}").json()
    with_lines = zenskar.get(f"/invoices/{invoice_id}", {"include_line_items": "true"}).json()
    lines = zenskar.get(f"/invoices/{invoice_id}/line_items").json()["line_items"]
    assert [line["amount"] for line in with_lines["line_items"]] == [line["amount"] for line in lines] == ["49.00"]

    approved = zenskar.patch(f"/invoices/{invoice_id}/approve", {"check_duplicate_invoice": True})
    assert approved.status_code == 200, approved.content
    assert (approved.json()["status"], approved.json()["number"]) == ("approved", "INV-000001")

    too_much = zenskar.post(f"/invoices/{invoice_id}/credit_note", {"credit_note_amount": 54, "reason": "x"})
    assert too_much.status_code == 409, too_much.content
    note = created(zenskar.post(f"/invoices/{invoice_id}/credit_note", {"credit_note_amount": 3.9, "reason": "sla"}))
    assert (note["number"], note["amount"], note["status"]) == ("CN-000001", "3.90", "issued")
    assert zenskar.get(f"/credit_notes/{note['id']}").json()["number"] == "CN-000001"
    assert [n["id"] for n in zenskar.get("/credit_notes", {"invoice_id": invoice_id}).json()["results"]] == [note["id"]]
    assert zenskar.get("/credit_notes", {"status": "void"}).json()["results"] == []

    partial = created(pay(zenskar, invoice_id, "20", customer_id=str(contract.customer_id)))
    assert (partial["type"], partial["status"], partial["amount"]) == ("payment", "success", "20.00")
    summary = zenskar.get(f"/invoices/{invoice_id}/summary").json()
    assert (summary["status"], summary["amount_credited"], summary["amount_paid"], summary["amount_due"]) == (
        "partially_paid",
        "3.90",
        "20.00",
        "30.00",
    )
    assert [p["id"] for p in summary["payments"]] == [partial["id"]]
    assert [n["number"] for n in summary["credit_notes"]] == ["CN-000001"]

    over = pay(zenskar, invoice_id, "30.01")
    assert over.status_code == 409, over.content
    assert "30.01" in over.json()["detail"]
    created(pay(zenskar, invoice_id, "30"))
    paid = zenskar.get(f"/invoices/{invoice_id}").json()
    assert (paid["status"], paid["amount_due"]) == ("paid", "0.00")
    of_invoice = zenskar.get(f"/payments/invoice/{invoice_id}").json()["results"]
    assert sorted(p["amount"] for p in of_invoice) == ["20.00", "30.00"]
    assert [p["amount"] for p in zenskar.get("/payments", {"amount__gte": "25"}).json()["results"]] == ["30.00"]
    assert zenskar.get("/payments", {"type": "refund"}).json()["results"] == []

    listed = zenskar.get("/invoices/internal", {"status": "paid", "invoice_number__like": "INV-%"}).json()["results"]
    assert [row["id"] for row in listed] == [invoice_id]
    assert zenskar.get("/invoices/internal", {"status__in": "draft,void"}).json()["results"] == []
    assert zenskar.get("/invoices/internal", {"status": "edited"}).json()["results"] == []

    # The PDF of the paid invoice: its number, the customer, the line and the total.
    pdf = zenskar.get(f"/invoices/{invoice_id}/download_invoice")
    assert (pdf.status_code, pdf["Content-Type"]) == (200, "application/pdf")
    text = re.sub(r"[ \t]+", " ", pdf_text(pdf.content))
    assert "INV-000001" in text
    assert contract.customer.customer_name in text
    assert lines[0]["description"][:40] in text
    assert "Total $53.90" in text


@pytest.mark.django_db
def test_void_and_wrong_transitions_through_the_zenskar_paths(
    zenskar: ZenskarClient, organisation: Organisation
) -> None:
    contract = flat_fee_contract(organisation)
    invoice_id = generate(zenskar, contract)["id"]

    draft_void = zenskar.patch(f"/invoices/{invoice_id}/void")
    assert draft_void.status_code == 409, draft_void.content
    zenskar.patch(f"/invoices/{invoice_id}/approve")
    voided = zenskar.patch(f"/invoices/{invoice_id}/void")  # no reason: Zenskar sends none
    assert (voided.status_code, voided.json()["status"], voided.json()["amount_due"]) == (200, "void", "0.00")
    assert Invoice.objects.get(id=invoice_id).void_reason

    approve_void = zenskar.patch(f"/invoices/{invoice_id}/approve")
    assert approve_void.status_code == 409
    assert "void" in approve_void.json()["detail"]
    credit_void = zenskar.post(f"/invoices/{invoice_id}/credit_note", {"credit_note_amount": 1, "reason": "x"})
    assert credit_void.status_code == 409
    pay_void = pay(zenskar, invoice_id, "1")
    assert pay_void.status_code == 409
    assert not Payment.objects.exists()


@pytest.mark.django_db
def test_bad_arguments_are_400s_naming_them(
    zenskar: ZenskarClient, organisation: Organisation, other_organisation: Organisation
) -> None:
    contract = flat_fee_contract(organisation)
    someone_else = flat_fee_contract(organisation, external_id="cus_2")
    base = {"contract_id": str(contract.id), "customer_id": str(contract.customer_id), "from_date": JAN_1}
    cases = [
        ({**base, "to_date": JAN_1 - 86400}, "to_date"),
        ({**base, "to_date": "tomorrow"}, "to_date"),
        ({**base, "to_date": 10**15}, "to_date"),
        ({**base, "from_date": None, "to_date": FEB_1}, "from_date"),
        ({**base, "customer_id": "x", "to_date": FEB_1}, "customer_id"),
        ({**base, "customer_id": str(someone_else.customer_id), "to_date": FEB_1}, "customer_id"),
    ]
    for body, name in cases:
        response = zenskar.post("/invoices/generate_invoice", body)
        assert response.status_code == 400, (body, response.content)
        assert name in response.json()["errors"], (body, response.json())
    assert not Invoice.objects.exists()

    invoice_id = generate(zenskar, contract)["id"]
    no_contract = zenskar.get(f"/invoices/invoice_generation_status/{invoice_id}")
    assert no_contract.status_code == 400
    assert "contract_id" in no_contract.json()["errors"]
    for params, name in [
        ({"status": "sent"}, "status"),
        ({"invoice_total__gte": "lots"}, "invoice_total__gte"),
        ({"due_date__lte": "soon"}, "due_date__lte"),
        ({"limit": "0"}, "limit"),
        ({"sort_key": "secret"}, "sort_key"),
    ]:
        response = zenskar.get("/invoices/internal", params)
        assert response.status_code == 400, (params, response.content)
        assert name in response.json()["errors"]
    assert zenskar.get(f"/invoices/{invoice_id}", {"include_line_items": "maybe"}).status_code == 400

    zenskar.patch(f"/invoices/{invoice_id}/approve")
    refund = pay(zenskar, invoice_id, "1", type="refund")
    assert refund.status_code == 400
    assert "type" in refund.json()["errors"]
    wrong_customer = pay(zenskar, invoice_id, "1", customer_id=str(someone_else.customer_id))
    assert wrong_customer.status_code == 400
    assert "customer_id" in wrong_customer.json()["errors"]
    no_amount = zenskar.post(f"/invoices/{invoice_id}/credit_note", {"reason": "x"})
    assert no_amount.status_code == 400
    assert "credit_note_amount" in no_amount.json()["errors"]
    assert not Payment.objects.exists()


@pytest.mark.django_db
def test_another_organisations_invoices_are_404_through_the_zenskar_paths(
    zenskar: ZenskarClient, other_zenskar: ZenskarClient, organisation: Organisation
) -> None:
    contract = flat_fee_contract(organisation)
    invoice_id = generate(zenskar, contract)["id"]
    zenskar.patch(f"/invoices/{invoice_id}/approve")
    note_id = created(zenskar.post(f"/invoices/{invoice_id}/credit_note", {"credit_note_amount": 1, "reason": "x"}))[
        "id"
    ]
    created(pay(zenskar, invoice_id, "2"))

    for method, path, body in [
        ("get", f"/invoices/{invoice_id}", None),
        ("get", f"/invoices/{invoice_id}/line_items", None),
        ("get", f"/invoices/{invoice_id}/summary", None),
        ("patch", f"/invoices/{invoice_id}/approve", None),
        ("patch", f"/invoices/{invoice_id}/void", None),
        ("post", f"/invoices/{invoice_id}/credit_note", {"credit_note_amount": 1, "reason": "x"}),
        ("get", f"/credit_notes/{note_id}", None),
        ("get", f"/payments/invoice/{invoice_id}", None),
    ]:
        response = getattr(other_zenskar, method)(path) if body is None else other_zenskar.post(path, body)
        assert response.status_code == 404, (path, response.content)
    status = other_zenskar.get(f"/invoices/invoice_generation_status/{invoice_id}", {"contract_id": str(contract.id)})
    assert status.status_code == 404
    stolen = other_zenskar.post(
        "/invoices/generate_invoice",
        {
            "contract_id": str(contract.id),
            "customer_id": str(contract.customer_id),
            "from_date": JAN_1,
            "to_date": FEB_1,
        },
    )
    assert stolen.status_code == 404
    for path in ("/invoices/internal", "/credit_notes", "/payments"):
        assert other_zenskar.get(path).json()["results"] == [], path
    assert Invoice.objects.get(id=invoice_id).status == "partially_paid"
    assert Invoice.objects.count() == 1
