"""SPEC §9 usage that changes after approval: the approved invoice never changes; an increase is billed
once, as an adjustment line naming the period it corrects, on the contract's next draft; a decrease
suggests a credit note. The reconcile command stays clean (every draft equals a fresh computation)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from billing.invoicing.drift import invoice_drift
from billing.invoicing.models import Invoice
from billing.invoicing.services import (
    credit_note_create,
    invoice_approve,
    invoice_line_signatures,
    invoice_refresh,
    invoices_generate_due,
    invoices_reconcile,
)
from billing.invoicing.upcoming import contract_upcoming_invoice
from billing.models import Contract
from metrics.models import MetricValue
from tests.billing.invoice_helpers import all_models_contract, day, value_make
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation

d = dt.date


def approved_january(organisation: Organisation) -> tuple[Contract, Invoice]:
    """The all-models contract's January, approved (INV-000001), and February's draft."""
    contract = all_models_contract(organisation)
    invoices_generate_due(now=dt.datetime(2024, 3, 5, tzinfo=dt.UTC))
    january = Invoice.objects.get(contract=contract, period_start=d(2024, 1, 1))
    return contract, invoice_approve(actor=system_actor(organisation=organisation), invoice_id=january.id)


def adjustments(invoice: Invoice) -> list[tuple[str, Decimal, dt.date | None, dt.date | None]]:
    return [
        (line.description, line.amount, line.adjustment_of_start, line.adjustment_of_end)
        for line in invoice.lines.filter(adjustment_of_start__isnull=False).order_by("position")
    ]


@pytest.mark.django_db
def test_an_increase_after_approval_is_billed_once_on_the_next_draft(organisation: Organisation) -> None:
    actor = system_actor(organisation=organisation)
    contract, january = approved_january(organisation)
    frozen = (january.total, invoice_line_signatures(january))
    february = Invoice.objects.get(contract=contract, period_start=d(2024, 2, 1))
    cpu = contract.phases.get().phase_pricings.get(pricing__pricing_type="tiered").pricing.metric
    assert cpu is not None

    # 10 late CPU hours in Europe on January 25: tiered +10 x 0.08, matrix +10 x 0.025, packages still 3.
    value_make(cpu, "cus_1", day(2024, 1, 25), "10", "eu")
    assert invoice_refresh(invoice_id=february.id) is True

    january.refresh_from_db()
    assert (january.total, invoice_line_signatures(january)) == frozen
    january_label = "INV-000001 (2024-01-01 to 2024-01-31)"
    assert adjustments(february) == [
        (
            f"Adjustment to {january_label}: Compute by region: Compute by region",
            Decimal("0.25"),
            d(2024, 1, 1),
            d(2024, 2, 1),
        ),
        (
            f"Adjustment to {january_label}: Compute tiered: Compute tiered",
            Decimal("0.80"),
            d(2024, 1, 1),
            d(2024, 2, 1),
        ),
    ]
    drift = invoice_drift(invoice=january)
    assert drift is not None
    assert (drift.increase_amount, drift.adjustment_invoice_id, drift.decreases) == (Decimal("1.05"), february.id, ())
    assert invoices_reconcile() == ([], [january])  # the draft equals a fresh computation

    # February approved: the adjustment is billed. March's draft does not bill it again.
    invoice_approve(actor=actor, invoice_id=february.id)
    invoices_generate_due(now=dt.datetime(2024, 4, 5, tzinfo=dt.UTC))
    march = Invoice.objects.get(contract=contract, period_start=d(2024, 3, 1))
    assert adjustments(march) == []
    drift = invoice_drift(invoice=january)
    assert drift is not None
    assert not drift.has_drift
    # Packages: 10 more hours, the same 3 packs (a change of quantity, not of amount: nothing to bill).
    assert [(line.amount, line.adjusted_amount) for line in drift.lines] == [
        (Decimal(0), Decimal("0.25")),
        (Decimal(0), Decimal(0)),
        (Decimal(0), Decimal("0.80")),
    ]
    assert invoices_reconcile() == ([], [])

    # Later still, 100 more hours: only the new difference lands, on March (tiered +8.00, matrix +2.50, packs +9.99).
    value_make(cpu, "cus_1", day(2024, 1, 26), "100", "eu")
    invoice_refresh(invoice_id=march.id)
    assert [amount for _, amount, *_ in adjustments(march)] == [Decimal("2.50"), Decimal("9.99"), Decimal("8.00")]
    assert invoices_reconcile()[0] == []


@pytest.mark.django_db
def test_a_draft_the_generator_makes_carries_the_adjustments_owed_from_its_first_version(
    organisation: Organisation,
) -> None:
    contract, january = approved_january(organisation)
    february = Invoice.objects.get(contract=contract, period_start=d(2024, 2, 1))
    invoice_approve(actor=system_actor(organisation=organisation), invoice_id=february.id)
    cpu = contract.phases.get().phase_pricings.get(pricing__pricing_type="tiered").pricing.metric
    assert cpu is not None
    value_make(cpu, "cus_1", day(2024, 1, 25), "10", "eu")  # after both approvals: owed on March

    invoices_generate_due(now=dt.datetime(2024, 4, 5, tzinfo=dt.UTC))

    march = Invoice.objects.get(contract=contract, period_start=d(2024, 3, 1))
    assert [amount for _, amount, *_ in adjustments(march)] == [Decimal("0.25"), Decimal("0.80")]
    assert invoices_reconcile() == ([], [january])


@pytest.mark.django_db
def test_an_increase_with_no_draft_yet_shows_on_the_upcoming_invoice(organisation: Organisation) -> None:
    actor = system_actor(organisation=organisation)
    contract, january = approved_january(organisation)
    february = Invoice.objects.get(contract=contract, period_start=d(2024, 2, 1))
    invoice_approve(actor=actor, invoice_id=february.id)
    cpu = contract.phases.get().phase_pricings.get(pricing__pricing_type="tiered").pricing.metric
    assert cpu is not None
    value_make(cpu, "cus_1", day(2024, 1, 25), "10", "eu")

    upcoming = contract_upcoming_invoice(contract=contract, now=dt.datetime(2024, 3, 10, tzinfo=dt.UTC))

    assert upcoming is not None
    assert [
        (line.amount, line.adjustment_of_start)
        for line in upcoming.upcoming_lines  # type: ignore[attr-defined]
        if line.adjustment_of_start
    ] == [(Decimal("0.25"), d(2024, 1, 1)), (Decimal("0.80"), d(2024, 1, 1))]
    drift = invoice_drift(invoice=january)
    assert drift is not None
    assert drift.adjustment_invoice_id is None


@pytest.mark.django_db
def test_a_decrease_after_approval_suggests_a_credit_note(organisation: Organisation, api: APIClient) -> None:
    actor = system_actor(organisation=organisation)
    contract, january = approved_january(organisation)
    frozen = (january.total, invoice_line_signatures(january))
    assert (january.subtotal, january.tax, january.total) == (Decimal("137.71"), Decimal("13.77"), Decimal("151.48"))

    # 100 CPU hours in the US voided: tiered 27.04 -> 19.04, packages 3 -> 2 (-9.99), matrix -1.50.
    MetricValue.objects.filter(customer_id="cus_1", period_start=day(2024, 1, 3)).update(computed_value="50")

    drift = invoice_drift(invoice=january)
    assert drift is not None
    assert [(line.description, line.amount) for line in drift.decreases] == [
        ("Compute by region: Compute by region", Decimal("-1.50")),
        ("Compute packs: Compute packs", Decimal("-9.99")),
        ("Compute tiered: Compute tiered", Decimal("-8.00")),
    ]
    # 19.49 less, with its 10% tax: the total would have been 118.22 + 11.82 = 130.04; credit 151.48 - 130.04.
    assert (drift.decrease_amount, drift.suggested_credit_amount, drift.increases) == (
        Decimal("19.49"),
        Decimal("21.44"),
        (),
    )
    january.refresh_from_db()
    assert (january.total, invoice_line_signatures(january)) == frozen
    february = Invoice.objects.get(contract=contract, period_start=d(2024, 2, 1))
    invoice_refresh(invoice_id=february.id)
    assert adjustments(february) == []  # a decrease is never billed as a negative line
    body = api.get(f"/api/v1/invoices/{january.id}/").json()
    assert body["drift"]["suggested_credit_note"]["credit_note_amount"] == "21.44"
    assert body["drift"]["decrease_amount"] == "19.49"

    # Once credited, nothing more is suggested.
    credit_note_create(actor=actor, invoice_id=january.id, data={"credit_note_amount": "21.44", "reason": "usage"})
    january.refresh_from_db()
    drift = invoice_drift(invoice=january)
    assert drift is not None
    assert drift.suggested_credit_amount == 0
    assert api.get(f"/api/v1/invoices/{january.id}/").json()["drift"]["suggested_credit_note"] is None
