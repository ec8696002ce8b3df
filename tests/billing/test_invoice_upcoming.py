"""SPEC §9 upcoming invoices: a contract's current, open period so far, computed on read (service, API,
customer and contract pages); drafts follow contract edits; a customer with invoices is not deleted."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from billing.contracts import contract_phase_pricing_add, contract_update
from billing.invoicing.models import Invoice
from billing.invoicing.services import invoice_discard, invoice_generate, invoices_generate_due
from billing.invoicing.upcoming import contract_upcoming_invoice
from billing.models import Contract
from tests.billing.conftest import TIERED, customer_make, flat_fee_make, metric_make
from tests.billing.invoice_helpers import all_models_contract, contract_make, pricing_make, value_make
from tests.billing.zenskar_support import ZenskarClient
from tests.factories import ApiKeyBundle, organisation_admin
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.errors import ValidationFailed

UTC = dt.UTC


def small_contract(organisation: Organisation, *, start: dt.date) -> Contract:
    """Flat 10 a month and tiered CPU hours (0.10 up to 100, then 0.08); the customer's tax is 10%."""
    cpu = metric_make(organisation)
    customer = customer_make(organisation, external_id="cus_1", tax_rate="10")
    pricings = [
        pricing_make(organisation, "Platform", {"pricing_type": "flat_fee", "unit_amount": "10"}),
        pricing_make(organisation, "Compute", TIERED, cpu),
    ]
    return contract_make(organisation, customer, pricings, start=start.isoformat())


@pytest.mark.django_db
def test_the_upcoming_invoice_is_the_current_period_so_far(organisation: Organisation) -> None:
    contract = small_contract(organisation, start=dt.date(2024, 1, 1))
    cpu = contract.phases.get().phase_pricings.get(pricing__metric__isnull=False).pricing.metric
    assert cpu is not None
    value_make(cpu, "cus_1", dt.datetime(2024, 1, 3, tzinfo=UTC), "70")
    value_make(cpu, str(contract.customer_id), dt.datetime(2024, 1, 10, tzinfo=UTC), "50")  # by id: theirs too
    value_make(cpu, "cus_1", dt.datetime(2023, 12, 31, tzinfo=UTC), "1000")  # before the period

    upcoming = contract_upcoming_invoice(contract=contract, now=dt.datetime(2024, 1, 15, 12, tzinfo=UTC))

    assert upcoming is not None
    assert (upcoming.status, upcoming.serializable_value("id"), upcoming.number) == ("upcoming", None, None)
    assert (upcoming.period_start, upcoming.period_end) == (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    lines = {line.description: (line.quantity, line.amount) for line in upcoming.upcoming_lines}  # type: ignore[attr-defined]
    # 120 hours: 100 x 0.10 + 20 x 0.08 = 11.60; the flat fee for the whole period.
    assert lines == {"Compute: Compute": ("120", Decimal("11.60")), "Platform: Platform": ("1", Decimal("10.00"))}
    assert (upcoming.subtotal, upcoming.tax, upcoming.total) == (Decimal("21.60"), Decimal("2.16"), Decimal("23.76"))
    assert not Invoice.objects.exists()  # computed, not stored
    # Before the start, or on a draft contract: none.
    assert contract_upcoming_invoice(contract=contract, now=dt.datetime(2023, 12, 20, tzinfo=UTC)) is None
    Contract.objects.filter(id=contract.id).update(status="draft")
    contract.refresh_from_db()
    assert contract_upcoming_invoice(contract=contract, now=dt.datetime(2024, 1, 15, tzinfo=UTC)) is None


@pytest.fixture
def this_month(organisation: Organisation) -> Contract:
    """A contract from the first of this month with 120 CPU hours today (11.60) and its flat 10."""
    today = timezone.now().astimezone(UTC).date()
    contract = small_contract(organisation, start=today.replace(day=1))
    cpu = contract.phases.get().phase_pricings.get(pricing__metric__isnull=False).pricing.metric
    assert cpu is not None
    value_make(cpu, "cus_1", dt.datetime.combine(today, dt.time(), tzinfo=UTC), "120")
    return contract


@pytest.mark.django_db
def test_the_upcoming_invoice_on_the_api(api: APIClient, full_key: ApiKeyBundle, this_month: Contract) -> None:
    response = api.get(f"/api/v1/contracts/{this_month.id}/upcoming-invoice/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["total"], body["drift"]) == (None, "upcoming", "23.76", None)
    assert [(line["description"], line["amount"]) for line in body["line_items"]] == [
        ("Compute: Compute", "11.60"),
        ("Platform: Platform", "10.00"),
    ]
    listed = api.get("/api/v1/invoices/upcoming/", {"customer_id": str(this_month.customer_id)})
    assert listed.status_code == 200
    results = listed.json()["results"]
    assert [(r["contract_id"], r["total"], r["line_items"]) for r in results] == [
        (str(this_month.id), "23.76", body["line_items"])
    ]
    zenskar = ZenskarClient(full_key).get(
        "/invoices/internal", {"status": "upcoming", "customer_id": str(this_month.customer_id)}
    )
    assert [(r["status"], r["total"]) for r in zenskar.json()["results"]] == [("upcoming", "23.76")]
    assert api.get("/api/v1/invoices/upcoming/").status_code == 400
    assert api.get("/api/v1/invoices/upcoming/", {"customer_id": "nope"}).status_code == 400
    Contract.objects.filter(id=this_month.id).update(status="draft")
    assert api.get(f"/api/v1/contracts/{this_month.id}/upcoming-invoice/").status_code == 404


@pytest.mark.django_db
def test_the_customer_and_contract_pages_show_the_upcoming_invoice(
    client: Client, organisation: Organisation, this_month: Contract
) -> None:
    client.force_login(organisation_admin(organisation))
    for url in (f"/billing/customers/{this_month.customer_id}/", f"/billing/contracts/{this_month.id}/"):
        html = client.get(url).content.decode()
        assert "Upcoming invoice" in html
        row = re.search(r'<tr data-metric="cpu_hours">(.*?)</tr>', html, re.S)
        assert row is not None, html
        assert re.search(r"120 .*11\.60 USD", re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1))))
        assert re.search(r'class="num amount upcoming-total">23\.76 USD<', html), url
        assert "Tax (10%)" in html


# --- drafts follow contract edits ---


@pytest.mark.django_db
def test_a_pricing_added_to_the_contract_recomputes_its_draft(
    organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    actor = system_actor(organisation=organisation)
    contract = all_models_contract(organisation)
    invoices_generate_due(now=dt.datetime(2024, 2, 5, tzinfo=UTC))
    draft = Invoice.objects.get(contract=contract)
    before = draft.subtotal
    support = flat_fee_make(organisation, amount="25")

    with django_capture_on_commit_callbacks(execute=True):
        contract_phase_pricing_add(
            actor=actor,
            contract_id=contract.id,
            phase_id=contract.phases.get().id,
            data={"pricing_id": str(support.id)},
        )

    draft.refresh_from_db()
    assert draft.subtotal == before + Decimal("25.00")
    assert draft.lines.filter(pricing=support, amount=Decimal("25.00")).count() == 1


# --- what a contract or a customer with invoices refuses ---


@pytest.mark.django_db
def test_a_customer_with_invoices_is_not_deleted(
    organisation: Organisation, api: APIClient, full_key: ApiKeyBundle
) -> None:
    actor = system_actor(organisation=organisation)
    contract = all_models_contract(organisation)
    invoice = invoice_generate(actor=actor, contract_id=contract.id, from_date="2024-01-01", to_date="2024-02-01")
    customer = contract.customer
    # The contract cannot leave the customer while it has invoices, nor be deleted (not a 500: a 409).
    Contract.objects.filter(id=contract.id).update(status="draft")
    other = customer_make(organisation, customer_name="Hooli")
    with pytest.raises(ValidationFailed, match="has invoices"):
        contract_update(actor=actor, contract_id=contract.id, changes={"customer_id": str(other.id)})
    assert api.delete(f"/api/v1/contracts/{contract.id}/").status_code == 409
    # A customer whose contract went to someone else (before this rule) still has its invoices.
    Contract.objects.filter(id=contract.id).update(customer=other)

    response = api.delete(f"/api/v1/customers/{customer.id}/")
    zenskar = ZenskarClient(full_key).delete(f"/customers/{customer.id}")

    assert response.status_code == 409
    assert "1 invoice(s)" in response.json()["detail"]
    assert zenskar.status_code == 409
    customer.refresh_from_db()
    assert not customer.archived
    # Discarded invoices were never sent: they do not hold the customer.
    invoice_discard(actor=actor, invoice_id=invoice.id, reason="wrong customer")
    assert api.delete(f"/api/v1/customers/{customer.id}/").status_code == 204
    customer.refresh_from_db()
    assert customer.archived
