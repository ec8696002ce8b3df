"""Invoices in a real browser (SPEC §9): the list, the draft invoice page, approval, the PDF downloaded and
read back with pdftotext, a credit note issued from the page, and the billing home's revenue chart."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from billing.customers import customer_update
from billing.invoicing.models import Invoice, InvoiceStatus
from billing.invoicing.services import invoice_approve, invoice_generate
from metrics.models import MetricValue
from tests.billing.conftest import customer_make
from tests.billing.invoice_helpers import all_models_contract, contract_make, day, pricing_make
from tests.browser.conftest import SCREENSHOTS
from tests.browser.pages import PASSWORD, sign_in
from tests.factories import organisation_make
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "ar@example.com"
# Where the screenshots go: the browser tests' folder (git-ignored), or BILLING_SCREENS when set.
SCREENS = Path(os.environ.get("BILLING_SCREENS") or SCREENSHOTS)


@pytest.fixture
def org(transactional_db: None) -> Organisation:
    return organisation_make(name="Umbrella Metering Inc.", admin_email=ADMIN_EMAIL, password=PASSWORD)


@pytest.fixture
def shot(page: Page) -> Callable[[str], Path]:
    SCREENS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def test_an_invoice_is_approved_downloaded_and_credited_in_the_browser(
    page: Page, live_server: Any, org: Organisation, shot: Callable[[str], Path]
) -> None:
    actor = system_actor(organisation=org)
    contract = all_models_contract(org)
    customer = contract.customer
    customer.customer_name = "Initech Ltd"
    customer.address_line1 = "1 Loop Road"
    customer.address_city = "Austin"
    customer.address_zipCode = "78701"
    customer.address_country = "United States"
    customer.email = "billing@initech.test"
    customer.save()
    draft = invoice_generate(actor=actor, contract_id=contract.id, from_date="2024-01-01", to_date="2024-02-01")
    # Another customer's approved invoice and a draft, so the list has statuses to total.
    hooli = customer_make(org, customer_name="Hooli", external_id="cus_hooli")
    flat = pricing_make(org, "Support", {"pricing_type": "flat_fee", "unit_amount": "1250"})
    other = contract_make(org, hooli, [flat], start="2024-01-01")
    billed = invoice_generate(actor=actor, contract_id=other.id, from_date="2024-01-01", to_date="2024-02-01")
    invoice_approve(actor=actor, invoice_id=billed.id)
    invoice_generate(actor=actor, contract_id=other.id, from_date="2024-02-01", to_date="2024-03-01")

    sign_in(page, live_server, email=ADMIN_EMAIL)
    page.goto(live_server.url + "/billing/invoices/")
    expect(page.locator("#invoices-table tbody tr")).to_have_count(3)
    expect(page.locator('.status-tile[data-status="draft"] .tile-count')).to_have_text("2")
    shot("invoice_list")

    page.locator(f'tr[data-invoice="{draft.id}"] a').first.click()
    expect(page.locator("#doc-stamp")).to_have_text("DRAFT")
    expect(page.locator("#doc-customer")).to_have_text("Initech Ltd")
    expect(page.locator("#doc-lines tr.doc-line")).to_have_count(6)
    shot("invoice_draft")

    page.locator("#approve-invoice").click()
    expect(page.locator(".message.success")).to_contain_text("Invoice INV-000002 approved")
    expect(page.locator("#doc-number")).to_have_text("INV-000002")
    expect(page.locator("#doc-stamp")).to_have_count(0)
    assert Invoice.objects.get(id=draft.id).status == InvoiceStatus.APPROVED
    shot("invoice_approved")

    with page.expect_download() as download:
        page.locator("#download-pdf").click()
    assert download.value.suggested_filename == "INV-000002.pdf"
    pdf = SCREENS / "invoice.pdf"
    download.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF-")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, check=True, text=True).stdout
        assert "INV-000002" in text
        assert "Initech Ltd" in text
        assert "Umbrella Metering Inc." in text

    # Usage taken away after approval: the banner shows the drift and fills in the suggested credit note.
    MetricValue.objects.filter(customer_id="cus_1", period_start=day(2024, 1, 3)).update(computed_value="50")
    page.reload()
    expect(page.locator("#invoice-drift")).to_contain_text("Suggested credit note: $21.44")
    expect(page.locator("#id_credit-credit_note_amount")).to_have_value("21.44")
    expect(page.locator("#doc-total")).to_have_text("$151.48")
    shot("invoice_drift")

    page.locator("#id_credit-credit_note_amount").fill("12.50")
    page.locator("#id_credit-reason").fill("Two hours of downtime on 14 January")
    page.locator("#issue-credit-note").click()
    expect(page.locator(".message.success")).to_contain_text("Credit note CN-000001 issued for $12.50")
    expect(page.locator("#doc-credited")).to_have_text("\u2212$12.50")
    page.locator("#id_pay-amount").fill("100")
    page.locator("#id_pay-payment_method").select_option("card")
    page.locator("#record-payment").click()
    expect(page.locator(".message.success")).to_contain_text("Payment of $100.00 recorded.")
    expect(page.locator("h1 .invoice-status")).to_have_text("Partially paid")
    expect(page.locator("#doc-due")).to_have_text("$38.98")
    shot("invoice_partially_paid")
    page.get_by_role("link", name="CN-000001").click()
    expect(page.locator("#doc-number")).to_have_text("CN-000001")
    expect(page.locator("#doc-reason")).to_have_text("Two hours of downtime on 14 January")
    shot("credit_note")

    # Renamed and moved after approval: the issued invoice keeps the parties it was issued to.
    customer_update(
        actor=actor,
        customer_id=customer.id,
        changes={"customer_name": "Initrode GmbH", "address_line1": "9 Elm Street"},
    )
    page.goto(live_server.url + f"/billing/invoices/{draft.id}/")
    expect(page.locator("#doc-customer")).to_have_text("Initech Ltd")
    expect(page.locator("#invoice-document")).to_contain_text("1 Loop Road")
    expect(page.locator("#invoice-document")).not_to_contain_text("Initrode")
    shot("invoice_approved_customer_renamed_since")

    page.goto(live_server.url + "/billing/")
    chart = page.locator("#revenue-chart-USD")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar[data-amount]:not([data-amount=''])")).to_have_count(1)
    shot("billing_home")
