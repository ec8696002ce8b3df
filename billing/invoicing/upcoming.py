"""Upcoming invoices (SPEC §9): the live invoice of a contract's current, still open period, "usage so
far, amount so far".

Computed on every read, never stored. An upcoming invoice changes with every record ingested: storing it
would turn each ingestion into an invoice write for its customer (the metric-change refresh would
recompute it thousands of times a day) and fill every invoice list and count with rows nobody issued.
Computed at read time it costs one `live_invoice_compute`, the very function a draft is made and kept
with, so the upcoming invoice is exactly the draft its period will get if no more usage arrives: its
period's lines (fixed fees for the whole period, metered quantities over the period's values so far)
and the adjustments of approved invoices that no draft carries yet (drift.py).

An upcoming invoice is an unsaved `Invoice` (status `upcoming`, no id, no number) whose lines are unsaved
`InvoiceLine`s in `invoice.upcoming_lines`; the API and the pages show it as they show any invoice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.utils import timezone

from billing.invoicing.compute import contract_pricing_links, invoice_line_rows, invoice_periods
from billing.invoicing.drift import live_invoice_compute
from billing.invoicing.models import Invoice, InvoiceKind, InvoiceStatus
from billing.models import Contract, ContractStatus, Customer

# The contracts that will be invoiced for their current period (as the generator bills them).
UPCOMING_CONTRACT_STATUSES = (ContractStatus.ACTIVE, ContractStatus.PAUSED, ContractStatus.EXPIRED)


def contract_upcoming_invoice(*, contract: Contract, now: dt.datetime | None = None) -> Invoice | None:
    """The contract's upcoming invoice as of `now` (default: now): None when the contract bills nothing
    today (a draft or disputed contract, before its start, after its end or expiry)."""
    moment = now or timezone.now()
    today = moment.astimezone(dt.UTC).date()
    if contract.status not in UPCOMING_CONTRACT_STATUSES:
        return None
    links = contract_pricing_links(contract=contract)
    periods = invoice_periods(contract=contract, until=today + dt.timedelta(days=1), links=links)
    current = next((p for p in reversed(periods) if p.period_start <= today < p.period_end), None)
    if current is None:
        return None
    computation = live_invoice_compute(
        contract=contract, period_start=current.period_start, period_end=current.period_end, carrier=None
    )
    invoice = Invoice(
        id=None,
        organisation=contract.organisation,  # the document's seller (its `parties`)
        customer=contract.customer,
        contract=contract,
        kind=InvoiceKind.PERIOD,
        status=InvoiceStatus.UPCOMING,
        currency=computation.currency,
        period_start=current.period_start,
        period_end=current.period_end,
        subtotal=computation.subtotal,
        tax_rate=computation.tax_rate,
        tax=computation.tax,
        total=computation.total,
        amount_due=computation.total,
        flagged=list(computation.flagged),
        created_at=moment,
        updated_at=moment,
        computed_at=moment,
    )
    lines = invoice_line_rows(invoice, computation)
    for line in lines:
        line.id = None  # never stored: no id to show (the model's default would make one up)
    invoice.upcoming_lines = lines  # type: ignore[attr-defined]
    return invoice


def customer_upcoming_invoices(
    *, customer: Customer, contracts: Sequence[Contract] | None = None, now: dt.datetime | None = None
) -> list[Invoice]:
    """The upcoming invoice of each of the customer's billed contracts (oldest contract first)."""
    moment = now or timezone.now()
    if contracts is None:
        contracts = list(
            Contract.objects.filter(
                organisation_id=customer.organisation_id, customer=customer, status__in=UPCOMING_CONTRACT_STATUSES
            )
            .select_related("customer", "organisation")
            .order_by("start_date", "created_at", "id")
        )
    found = [contract_upcoming_invoice(contract=contract, now=moment) for contract in contracts]
    return [invoice for invoice in found if invoice is not None]
