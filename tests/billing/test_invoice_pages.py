"""SPEC §9 dashboard: Billing > Invoices (list by status with totals and filters), the invoice page (the
document, its actions; wrong transitions as messages, never a 500), credit notes, the billing home's
revenue chart, the PDF (pdftotext reads the number, customer, every line and the total; the same bytes
twice), its API and Zenskar paths, the admin (read-only once approved), and tenancy (404s).

SQLite pass only: nothing here depends on the database (the PostgreSQL pass serves the PDF endpoints
through tests/test_openapi_conformance.py, and the frozen-invoice triggers have their own tests)."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from billing.customers import customer_update
from billing.invoicing.document import invoice_pdf, money_format
from billing.invoicing.models import CreditNote, Invoice, InvoiceStatus
from billing.invoicing.services import credit_note_create, invoice_approve, invoice_generate
from billing.models import Contract
from metrics.models import MetricValue
from tests.billing.invoice_helpers import all_models_contract, day, pdf_text
from tests.billing.test_invoice_api import flat_fee_contract
from tests.billing.zenskar_support import ZenskarClient
from tests.factories import ApiKeyBundle, organisation_admin
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Membership, Organisation

pytestmark = pytest.mark.sqlite_only


def text_of(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def document_of(html: str) -> str:
    """The text of the invoice document on a page (not the dashboard around it, which names the organisation)."""
    start = html.index('id="invoice-document"')
    return text_of(html[start : html.index("</article>", start)])


def messages_of(html: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'<div class="message (?:error|success)">(.*?)</div>', html)]


def draft_of(contract: Contract, start: str = "2024-01-01", end: str = "2024-02-01") -> Invoice:
    actor = system_actor(organisation=contract.organisation)
    return invoice_generate(actor=actor, contract_id=contract.id, from_date=start, to_date=end)


@pytest.fixture
def admin(client: Client, organisation: Organisation) -> Client:
    client.force_login(organisation_admin(organisation))
    return client


@pytest.fixture
def invoice(organisation: Organisation) -> Invoice:
    """January 2024 of the contract with a flat fee, per-unit, tiered, volume, package and matrix pricing."""
    contract = all_models_contract(organisation)
    customer = contract.customer
    customer.customer_name = "Initech Ltd"
    customer.address_line1 = "1 Loop Road"
    customer.address_city = "Austin"
    customer.address_zipCode = "78701"
    customer.address_country = "United States"
    customer.save()
    return draft_of(contract)


@pytest.fixture
def theirs(other_organisation: Organisation) -> Invoice:
    contract = flat_fee_contract(other_organisation, external_id="cus_globex")
    contract.customer.customer_name = "Globex"
    contract.customer.save()
    made = draft_of(contract)
    return invoice_approve(actor=system_actor(organisation=other_organisation), invoice_id=made.id)


def test_the_invoice_page_is_the_document(admin: Client, invoice: Invoice) -> None:
    html = admin.get(f"/billing/invoices/{invoice.id}/").content.decode()
    page = text_of(html)
    for expected in ("Acme", "Initech Ltd", "1 Loop Road", "78701 Austin", "United States", "Billing period"):
        assert expected in page, expected
    assert "DRAFT" in page
    assert "not yet numbered" in page
    # Every line with its amount in the currency's format; the tiered line's two tiers are broken down.
    lines = list(invoice.lines.all())
    assert len(lines) == 6
    for line in lines:
        assert unescape(line.description) in page
        assert money_format(line.amount, "USD") in page
    tiered = next(line for line in lines if line.pricing_type == "tiered")
    assert len(tiered.breakdown["parts"]) == 2
    assert html.count('class="doc-part"') >= 2 + 2 + 1  # tiered 2, volume and matrix cells, package
    assert f'id="doc-total">{money_format(invoice.total, "USD")}<' in html
    assert f'id="doc-due">{money_format(invoice.amount_due, "USD")}<' in html
    assert 'id="invoice-drift-slot"' in html
    assert 'id="approve-invoice"' in html
    assert 'id="void-invoice"' not in html


def test_usage_changed_after_approval_shows_the_drift_banner_and_fills_in_the_credit_note(
    admin: Client, invoice: Invoice
) -> None:
    page = f"/billing/invoices/{invoice.id}/"
    admin.post(f"{page}approve/")
    assert 'id="invoice-drift"' not in admin.get(page).content.decode()

    # 100 of January 3rd's 150 US CPU hours taken away after approval (SPEC §9: a suggested credit note).
    MetricValue.objects.filter(customer_id="cus_1", period_start=day(2024, 1, 3)).update(computed_value="50")
    html = admin.get(page).content.decode()

    banner = text_of(html[html.index('id="invoice-drift"') : html.index("</table>", html.index('id="invoice-drift"'))])
    assert f"Compute packs: Compute packs 250.5 150.5 {money_format(Decimal('-9.99'), 'USD')}" in banner
    assert "Suggested credit note: $21.44" in text_of(html)
    assert 'value="21.44"' in html  # the credit note form, filled in
    assert Invoice.objects.get(id=invoice.id).total == Decimal("151.48")  # the invoice itself never changes


def test_approve_then_credit_then_pay_move_the_invoice(admin: Client, invoice: Invoice) -> None:
    base = f"/billing/invoices/{invoice.id}/"
    response = admin.post(base + "approve/", follow=True)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.APPROVED
    assert invoice.number == "INV-000001"
    assert f"Invoice {invoice.number} approved: its lines and totals are frozen." in messages_of(
        response.content.decode()
    )

    response = admin.post(base + "credit-notes/", {"credit-credit_note_amount": "10", "credit-reason": "SLA"})
    assert response.status_code == 302
    note = CreditNote.objects.get(invoice=invoice)
    assert (note.number, note.amount) == ("CN-000001", Decimal("10"))

    due = invoice.total - Decimal(10)
    response = admin.post(base + "payments/", {"pay-amount": "5", "pay-payment_method": "card"})
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_due) == (InvoiceStatus.PARTIALLY_PAID, due - 5)
    response = admin.post(
        base + "payments/",
        {"pay-amount": str(due - 5), "pay-payment_method": "cash", "pay-timestamp": "2024-02-10T09:30"},
        follow=True,
    )
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_due) == (InvoiceStatus.PAID, Decimal(0))
    page = text_of(response.content.decode())
    assert "CN-000001" in page
    assert "Paid" in page
    assert "nothing more can be done with it" in page


def test_wrong_transitions_and_bad_input_are_shown_never_a_500(admin: Client, invoice: Invoice) -> None:
    base = f"/billing/invoices/{invoice.id}/"
    # A draft cannot be voided, credited or paid: each a message naming its status.
    html = admin.post(base + "void/", {"void-reason": "typo"}, follow=True).content.decode()
    assert "Not voided: Only an approved invoice can be voided; this one is draft." in messages_of(html)
    response = admin.post(base + "credit-notes/", {"credit-credit_note_amount": "1", "credit-reason": "x"}, follow=True)
    assert any("A credit note needs an approved, unpaid invoice" in m for m in messages_of(response.content.decode()))
    admin.post(base + "approve/")
    # Credit more than remains: the 409's reason as a message; a bad amount: an error next to the field.
    response = admin.post(
        base + "credit-notes/", {"credit-credit_note_amount": "99999", "credit-reason": "x"}, follow=True
    )
    assert any("more than what remains" in m for m in messages_of(response.content.decode()))
    response = admin.post(base + "credit-notes/", {"credit-credit_note_amount": "1.234", "credit-reason": "x"})
    assert response.status_code == 400
    assert "At most 2 decimal places." in response.content.decode()
    response = admin.post(base + "payments/", {"pay-amount": "ten", "pay-payment_method": "card"})
    assert response.status_code == 400
    assert "is not a decimal number" in unescape(response.content.decode())
    response = admin.post(base + "payments/", {"pay-amount": "99999", "pay-payment_method": "card"}, follow=True)
    assert any("Payment not recorded: Paying 99999" in m for m in messages_of(response.content.decode()))
    # Void needs a reason; discarding an approved invoice is refused; voiding twice, approving a void one.
    response = admin.post(base + "void/", {"void-reason": ""})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    html = admin.post(base + "discard/", follow=True).content.decode()
    assert "Not discarded: Only a draft invoice can be discarded; this one is approved." in messages_of(html)
    admin.post(base + "void/", {"void-reason": "wrong customer"})
    invoice.refresh_from_db()
    assert (invoice.status, invoice.void_reason, invoice.amount_due) == ("void", "wrong customer", Decimal(0))
    html = admin.post(base + "approve/", follow=True).content.decode()
    assert "Not approved: Only a draft invoice can be approved; this one is void." in messages_of(html)
    assert 'id="doc-stamp">VOID<' in html
    assert admin.post(base + "explode/").status_code == 404


def test_the_list_shows_totals_by_status_and_filters(admin: Client, organisation: Organisation) -> None:
    january = flat_fee_contract(organisation)
    other = flat_fee_contract(organisation, external_id="cus_2")
    other.customer.customer_name = "Hooli"
    other.customer.save()
    approved = draft_of(january)
    invoice_approve(actor=system_actor(organisation=organisation), invoice_id=approved.id)
    draft_of(january, "2024-02-01", "2024-03-01")
    draft_of(other, "2024-02-01", "2024-03-01")

    html = admin.get("/billing/invoices/").content.decode()
    assert html.count("data-invoice=") == 3
    tiles = dict(re.findall(r'data-status="(\w+)".*?class="tile-count">(\d+)<', html, re.S))
    assert (tiles["draft"], tiles["approved"], tiles["paid"]) == ("2", "1", "0")
    assert "$107.80" in html  # two drafts of 53.90

    assert admin.get("/billing/invoices/?status=draft").content.decode().count("data-invoice=") == 2
    html = admin.get(f"/billing/invoices/?customer={other.customer_id}").content.decode()
    assert html.count("data-invoice=") == 1
    assert "Hooli" in html
    assert admin.get("/billing/invoices/?period=2024-01").content.decode().count("data-invoice=") == 1
    assert admin.get("/billing/invoices/?period=2023-12").content.decode().count("data-invoice=") == 0
    response = admin.get("/billing/invoices/?period=January")
    assert response.status_code == 200
    assert "Expected a month as YYYY-MM." in response.content.decode()


def test_credit_notes_are_listed_with_their_page(admin: Client, organisation: Organisation) -> None:
    made = draft_of(flat_fee_contract(organisation))
    actor = system_actor(organisation=organisation)
    invoice_approve(actor=actor, invoice_id=made.id)
    note = credit_note_create(actor=actor, invoice_id=made.id, data={"credit_note_amount": "3.90", "reason": "Late"})
    html = admin.get("/billing/credit-notes/").content.decode()
    assert "CN-000001" in html
    assert "INV-000001" in html
    assert "$3.90" in html
    page = text_of(admin.get(f"/billing/credit-notes/{note.id}/").content.decode())
    assert "Credit note" in page
    assert "CN-000001" in page
    assert "Late" in page
    assert "$53.90" in page


def test_the_billing_home_charts_revenue_by_issue_month(admin: Client, organisation: Organisation) -> None:
    assert "revenue-empty" in admin.get("/billing/").content.decode()
    made = draft_of(flat_fee_contract(organisation))
    invoice_approve(actor=system_actor(organisation=organisation), invoice_id=made.id)
    html = admin.get("/billing/").content.decode()
    assert 'id="revenue-chart-USD"' in html
    # Twelve months, the last (this month, when it was approved) with the invoice's total.
    amounts = re.findall(r'class="bar"[^>]*data-amount="([^"]*)"', html)
    assert len(amounts) == 12
    assert Decimal(amounts[-1]) == Decimal("53.90")
    assert set(amounts[:-1]) == {""}
    assert f"{timezone.now():%b %Y}" in html
    assert "$53.90 in all" in html


def test_another_organisations_invoices_are_not_found(admin: Client, theirs: Invoice) -> None:
    note = credit_note_create(
        actor=system_actor(organisation=theirs.organisation),
        invoice_id=theirs.id,
        data={"credit_note_amount": "1", "reason": "x"},
    )
    for url in (
        f"/billing/invoices/{theirs.id}/",
        f"/billing/invoices/{theirs.id}/pdf/",
        f"/billing/credit-notes/{note.id}/",
        f"/billing/credit-notes/{note.id}/pdf/",
        "/billing/invoices/not-a-uuid/",
    ):
        assert admin.get(url).status_code == 404, url
    for action in ("approve/", "void/", "discard/", "credit-notes/", "payments/"):
        assert admin.post(f"/billing/invoices/{theirs.id}/{action}", {"void-reason": "x"}).status_code == 404
    theirs.refresh_from_db()
    assert (theirs.status, theirs.amount_credited) == (InvoiceStatus.APPROVED, Decimal(1))
    for url in ("/billing/invoices/", "/billing/credit-notes/", "/billing/"):
        assert "Globex" not in admin.get(url).content.decode()


def test_a_viewer_sees_invoices_but_cannot_act(organisation: Organisation, invoice: Invoice) -> None:
    user = User.objects.create_user(username="viewer@acme.test", password="pw-123456")
    Membership.objects.create(user=user, organisation=organisation, role="viewer")
    viewer = Client()
    viewer.force_login(user)
    html = viewer.get(f"/billing/invoices/{invoice.id}/").content.decode()
    assert "Only admins can change an invoice." in html
    assert 'id="approve-invoice"' not in html
    assert viewer.post(f"/billing/invoices/{invoice.id}/approve/").status_code == 403
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.DRAFT


# --- the PDF ---


def test_the_pdf_shows_the_number_customer_every_line_and_total_and_is_reproducible(
    admin: Client, invoice: Invoice, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)  # as in a fresh process
    draft = admin.get(f"/billing/invoices/{invoice.id}/pdf/")
    assert draft["Content-Type"] == "application/pdf"
    assert "DRAFT" in pdf_text(draft.content)

    admin.post(f"/billing/invoices/{invoice.id}/approve/")
    response = admin.get(f"/billing/invoices/{invoice.id}/pdf/")
    assert response.content.startswith(b"%PDF-")
    assert 'filename="INV-000001.pdf"' in response["Content-Disposition"]
    text = re.sub(r"[ \t]+", " ", pdf_text(response.content))
    assert "INV-000001" in text
    assert "Initech Ltd" in text
    assert "1 Loop Road" in text
    assert "Acme" in text
    assert "DRAFT" not in text
    frozen = Invoice.objects.get(id=invoice.id)
    for line in frozen.lines.all():
        assert line.description[:40] in text, line.description
        assert money_format(line.amount, "USD") in text, line.description
    assert f"Total {money_format(frozen.total, 'USD')}" in text

    # Byte for byte: rendered again from the frozen invoice (another object, another moment).
    assert invoice_pdf(invoice=Invoice.objects.get(id=invoice.id)) == response.content
    assert admin.get(f"/billing/invoices/{invoice.id}/pdf/").content == response.content
    # And an hour later: no clock reading goes into it (fontTools stamped each embedded font with one).
    clock = time.time
    monkeypatch.setattr(time, "time", lambda: clock() + 3600)
    assert invoice_pdf(invoice=Invoice.objects.get(id=invoice.id)) == response.content


def test_an_approved_invoice_and_its_credit_note_keep_the_parties_they_were_issued_to(
    admin: Client, organisation: Organisation, invoice: Invoice
) -> None:
    """Approval freezes the seller's and the customer's details with the lines: renaming or moving them
    afterwards changes live invoices only, not an issued document (its page, its PDF, its credit notes)."""
    actor = system_actor(organisation=organisation)
    approved = invoice_approve(actor=actor, invoice_id=invoice.id)
    note = credit_note_create(actor=actor, invoice_id=invoice.id, data={"credit_note_amount": "1", "reason": "x"})
    pdf = admin.get(f"/billing/invoices/{invoice.id}/pdf/").content
    note_pdf = admin.get(f"/billing/credit-notes/{note.id}/pdf/").content
    assert approved.parties == {
        "seller": {"name": "Acme"},
        "customer": {
            "customer_name": "Initech Ltd",
            "email": approved.customer.email,
            "address": ["1 Loop Road", "78701 Austin", "United States"],
        },
    }

    customer_update(
        actor=actor,
        customer_id=invoice.customer_id,
        changes={"customer_name": "Initrode GmbH", "address_line1": "9 Elm Street", "email": "ap@initrode.example"},
    )
    Organisation.objects.filter(id=organisation.id).update(name="Acme Renamed")

    page = document_of(admin.get(f"/billing/invoices/{invoice.id}/").content.decode())
    for issued in ("Initech Ltd", "1 Loop Road", "Acme"):
        assert issued in page, issued
    for later in ("Initrode GmbH", "9 Elm Street", "ap@initrode.example", "Acme Renamed"):
        assert later not in page, later
    assert admin.get(f"/billing/invoices/{invoice.id}/pdf/").content == pdf
    assert admin.get(f"/billing/credit-notes/{note.id}/pdf/").content == note_pdf
    assert "Initech Ltd" in pdf_text(note_pdf)
    # A live invoice of the same customer shows them as they are now.
    later_draft = draft_of(invoice.contract, start="2024-02-01", end="2024-03-01")
    draft_page = document_of(admin.get(f"/billing/invoices/{later_draft.id}/").content.decode())
    for now in ("Initrode GmbH", "9 Elm Street", "ap@initrode.example", "Acme Renamed"):
        assert now in draft_page, now
    assert Invoice.objects.get(id=later_draft.id).parties is None


def test_the_pdf_is_served_by_the_api_and_the_zenskar_path(
    organisation: Organisation, full_key: ApiKeyBundle, client_for: Any, theirs: Invoice
) -> None:
    made = draft_of(flat_fee_contract(organisation))
    invoice = invoice_approve(actor=system_actor(organisation=organisation), invoice_id=made.id)
    note = credit_note_create(
        actor=system_actor(organisation=organisation),
        invoice_id=invoice.id,
        data={"credit_note_amount": "1", "reason": "x"},
    )
    api = client_for(full_key.secret)
    response = api.get(f"/api/v1/invoices/{invoice.id}/pdf/", HTTP_ACCEPT="application/pdf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    notes = api.get(f"/api/v1/credit-notes/{note.id}/pdf/")
    assert notes.status_code == 200
    assert "CN-000001" in pdf_text(notes.content)
    missing = api.get(f"/api/v1/invoices/{theirs.id}/pdf/", HTTP_ACCEPT="application/pdf")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("No invoice with id")

    zenskar = ZenskarClient(full_key)
    found = zenskar.get(f"/invoices/{invoice.id}/download_invoice", {"customer_id": str(invoice.customer_id)})
    assert found.status_code == 200
    assert found.content == response.content
    assert zenskar.get(f"/invoices/{theirs.id}/download_invoice").status_code == 404
    wrong = zenskar.get(f"/invoices/{invoice.id}/download_invoice", {"customer_id": str(theirs.customer_id)})
    assert wrong.status_code == 400
    assert "customer_id" in wrong.json()["errors"]


# --- the admin ---


def test_the_admin_shows_invoices_read_only_once_approved(organisation: Organisation, theirs: Invoice) -> None:
    made = draft_of(flat_fee_contract(organisation))
    client = Client()
    client.force_login(organisation_admin(organisation))
    listing = client.get("/admin/billing/invoice/").content.decode()
    assert "Draft 2024-01-01 to 2024-02-01" in listing
    assert "Globex" not in listing
    assert client.get(f"/admin/billing/invoice/{theirs.id}/change/").status_code in (302, 404)

    # A draft changes through the actions only (approve, discard), which run the services.
    response = client.post(
        "/admin/billing/invoice/", {"action": "approve_selected", "_selected_action": [str(made.id)]}, follow=True
    )
    assert response.status_code == 200
    made.refresh_from_db()
    assert (made.status, made.number) == (InvoiceStatus.APPROVED, "INV-000001")
    # Approved: the change page is a view page, a POST changes nothing.
    page = client.get(f"/admin/billing/invoice/{made.id}/change/").content.decode()
    assert "INV-000001" in page
    assert 'name="_save"' not in page
    assert client.post(f"/admin/billing/invoice/{made.id}/change/", {"void_reason": "x"}).status_code == 403
    html = client.post(
        "/admin/billing/invoice/", {"action": "discard_selected", "_selected_action": [str(made.id)]}, follow=True
    ).content.decode()
    assert "Only a draft invoice can be discarded; this one is approved." in html
    made.refresh_from_db()
    assert made.status == InvoiceStatus.APPROVED
    assert client.get("/admin/billing/creditnote/").status_code == 200
    assert client.get("/admin/billing/payment/").status_code == 200
