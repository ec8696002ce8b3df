"""Usage that changes after approval (SPEC §9): the drift of an approved invoice, the adjustment lines that
bill its increases on the contract's next draft, and the credit note its decreases suggest.

An approved invoice never changes. Its drift, per line of its own period (a line is keyed by its pricing
and its period), is

    net = fresh - billed - adjusted

where `fresh` is a fresh computation of the invoice's period (`invoice_compute`, from the current
metric values and the contract as it is now), `billed` its frozen line and `adjusted` what adjustment
lines on later approved (or paid) invoices already billed for that line. A positive net is an increase:
it is billed once, as an adjustment line naming the period it corrects, on the invoice that carries the
approved invoice's adjustments. A negative net is a decrease: a credit note is suggested for it (with
the invoice's tax), never issued automatically.

Which invoice carries an approved invoice's increases (deterministic, so that a draft always equals a
fresh computation): the contract's earliest draft (by period start, then creation) whose period starts
on or after the approved invoice's period end; with no such draft, the contract's upcoming invoice (the
current, open period), which will be that draft once its period closes. A draft that carries them and
is approved freezes them: from then on they count as `adjusted`, so the next draft carries only what
changed since. A discarded or voided carrier's adjustments were never owed: they move on to the next
draft (the services refresh the contract's drafts after a discard or a void). A void invoice has no
drift (it owes nothing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.invoicing.compute import (
    ComputedLine,
    InvoiceComputation,
    computation_of,
    decimal_text,
    invoice_compute,
)
from billing.invoicing.models import Invoice, InvoiceLine, InvoiceStatus
from billing.models import Contract
from billing.rating import money_round

# Approved invoices that are owed (not void): their lines drift, and adjustments on them count as billed.
BILLED_STATUSES = (InvoiceStatus.APPROVED, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAID)

LineKey = tuple[str, dt.date, dt.date]  # (pricing id, period start, period end exclusive)


@dataclass(frozen=True)
class DriftLine:
    """One line of an approved invoice whose fresh computation differs from what was billed for it.

    Quantities are exact decimals, amounts are money rounded to the currency. `quantity` and `amount`
    are the net still to settle: fresh - billed - adjusted (positive: an increase to bill; negative: a
    decrease to credit; zero: every change was already billed by adjustments).
    """

    description: str
    product_id: str | None
    pricing_id: str | None
    pricing_type: str
    period_start: dt.date
    period_end: dt.date  # exclusive
    unit: str
    billed_quantity: Decimal
    billed_amount: Decimal
    fresh_quantity: Decimal
    fresh_amount: Decimal
    adjusted_quantity: Decimal  # already billed by adjustment lines on later approved invoices
    adjusted_amount: Decimal
    quantity: Decimal
    amount: Decimal


@dataclass(frozen=True)
class InvoiceDrift:
    """What `invoice_drift` returns for an approved (or partially paid, or paid) invoice.

    - `lines`: every line whose fresh computation differs from what was billed (net may be 0 when later
      adjustments already billed the change); `increases` and `decreases` are those whose net is positive
      or negative.
    - `increase_amount`: the sum of the increases (before tax), not billed yet: the adjustment lines of
      `adjustment_invoice_id` (a draft of the same contract), or of the contract's upcoming invoice when
      it is None (then `adjustment_invoice_id` is None and the amount lands on the next draft).
    - `decrease_amount`: the sum of the decreases as a positive amount (before tax).
    - `credit_amount`: what a credit note must take off so that what the invoice asks (total - credited)
      equals its total recomputed with the decreases: the decrease with its tax, less what was already
      credited (any credit note counts), never below 0.
    - `suggested_credit_amount`: `credit_amount` capped at what the invoice still owes (a credit note
      cannot exceed it; a paid invoice owes nothing, so a refund is then a matter outside this system).
    """

    invoice_id: Any
    currency: str
    lines: tuple[DriftLine, ...]
    increase_amount: Decimal
    adjustment_invoice_id: Any
    decrease_amount: Decimal
    credit_amount: Decimal
    suggested_credit_amount: Decimal
    increases: tuple[DriftLine, ...] = field(default=())
    decreases: tuple[DriftLine, ...] = field(default=())

    @property
    def has_drift(self) -> bool:
        """Whether anything remains to settle: an increase not yet billed, or a decrease."""
        return bool(self.increases or self.decreases)


@dataclass
class _Sum:
    description: str
    product_id: str | None
    pricing_id: str | None
    pricing_type: str
    unit: str
    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)


def _id(value: Any) -> str | None:
    return str(value) if value else None


def _add(found: dict[LineKey, _Sum], key: LineKey, line: ComputedLine | InvoiceLine) -> None:
    entry = found.get(key)
    if entry is None:
        entry = found[key] = _Sum(
            line.description, _id(line.product_id), _id(line.pricing_id), line.pricing_type, line.unit
        )
    entry.quantity += Decimal(line.quantity or 0)
    entry.amount += Decimal(line.amount)


def _fresh(invoice: Invoice, contract: Contract) -> dict[LineKey, _Sum]:
    found: dict[LineKey, _Sum] = {}
    computation = invoice_compute(contract=contract, period_start=invoice.period_start, period_end=invoice.period_end)
    for line in computation.lines:
        _add(found, (str(line.pricing_id), line.period_start, line.period_end), line)
    return found


def _frozen(invoice_ids: Sequence[Any]) -> dict[Any, dict[LineKey, _Sum]]:
    """The approved invoices' own lines (not the adjustments they carry), by invoice and key."""
    found: dict[Any, dict[LineKey, _Sum]] = {key: {} for key in invoice_ids}
    lines = InvoiceLine.objects.filter(invoice_id__in=invoice_ids, adjustment_of_start__isnull=True)
    for line in lines.order_by("position", "id"):
        _add(found[line.invoice_id], (str(line.pricing_id), line.period_start, line.period_end), line)
    return found


def _adjusted(contract_id: Any) -> dict[tuple[str, LineKey], _Sum]:
    """Adjustment lines already billed (on the contract's approved invoices), by corrected invoice and key."""
    found: dict[tuple[str, LineKey], _Sum] = {}
    lines = InvoiceLine.objects.filter(
        invoice__contract_id=contract_id, invoice__status__in=BILLED_STATUSES, adjustment_of_start__isnull=False
    )
    for line in lines.order_by("position", "id"):
        source = (line.breakdown or {}).get("adjustment", {}).get("invoice_id")
        if source is None or line.adjustment_of_start is None or line.adjustment_of_end is None:
            continue
        key = (str(line.pricing_id), line.adjustment_of_start, line.adjustment_of_end)
        entry = found.setdefault(
            (str(source), key),
            _Sum(line.description, _id(line.product_id), _id(line.pricing_id), line.pricing_type, line.unit),
        )
        entry.quantity += Decimal(line.quantity or 0)
        entry.amount += Decimal(line.amount)
    return found


def _drift_lines(
    invoice: Invoice,
    fresh: dict[LineKey, _Sum],
    billed: dict[LineKey, _Sum],
    adjusted: dict[tuple[str, LineKey], _Sum],
) -> list[DriftLine]:
    lines: list[DriftLine] = []
    zero = _Sum("", None, None, "", "")

    def order(key: LineKey) -> tuple[dt.date, dt.date, str, str]:
        shown = fresh.get(key) or billed[key]
        return (key[1], key[2], shown.description, key[0])

    for key in sorted(set(fresh) | set(billed), key=order):
        now, then = fresh.get(key), billed.get(key)
        done = adjusted.get((str(invoice.id), key), zero)
        same = now is not None and then is not None and (now.quantity, now.amount) == (then.quantity, then.amount)
        if same and done is zero:
            continue
        shown = now or then
        assert shown is not None
        now, then = now or zero, then or zero
        lines.append(
            DriftLine(
                description=shown.description,
                product_id=shown.product_id,
                pricing_id=shown.pricing_id,
                pricing_type=shown.pricing_type,
                period_start=key[1],
                period_end=key[2],
                unit=shown.unit,
                billed_quantity=then.quantity,
                billed_amount=then.amount,
                fresh_quantity=now.quantity,
                fresh_amount=now.amount,
                adjusted_quantity=done.quantity,
                adjusted_amount=done.amount,
                quantity=now.quantity - then.quantity - done.quantity,
                amount=now.amount - then.amount - done.amount,
            )
        )
    return lines


def _ordered(invoices: Iterable[Invoice]) -> list[Invoice]:
    return sorted(invoices, key=lambda i: (i.period_start, i.created_at, str(i.id)))


def carrier_of(source: Invoice, drafts: Sequence[Invoice]) -> Any:
    """The id of the draft that carries `source`'s increases (None: the contract's upcoming invoice)."""
    for draft in _ordered(drafts):
        if draft.id != source.id and draft.period_start >= source.period_end:
            return draft.id
    return None


def _contract_of(invoice: Invoice) -> Contract:
    return Contract.objects.select_related("customer").get(id=invoice.contract_id)


def invoice_drift(*, invoice: Invoice) -> InvoiceDrift | None:
    """The drift of an approved, partially paid or paid invoice (see `InvoiceDrift`); None for any other
    status (a live invoice follows the values, a void or discarded one owes nothing). Reads only."""
    if invoice.status not in BILLED_STATUSES:
        return None
    contract = _contract_of(invoice)
    lines = _drift_lines(
        invoice, _fresh(invoice, contract), _frozen([invoice.id])[invoice.id], _adjusted(invoice.contract_id)
    )
    increases = tuple(line for line in lines if line.amount > 0)
    decreases = tuple(line for line in lines if line.amount < 0)
    drafts = Invoice.objects.filter(contract_id=invoice.contract_id, status=InvoiceStatus.DRAFT)
    decrease = -sum((line.amount for line in decreases), Decimal(0))
    # The invoice's total had the decreases not been billed, with its own (frozen) tax rate.
    subtotal = Decimal(invoice.subtotal) - decrease
    total = subtotal + money_round(amount=subtotal * Decimal(invoice.tax_rate) / 100, currency=invoice.currency)
    credit = Decimal(0)
    if decrease:
        credit = max(Decimal(invoice.total) - total - Decimal(invoice.amount_credited), Decimal(0))
    return InvoiceDrift(
        invoice_id=invoice.id,
        currency=invoice.currency,
        lines=tuple(lines),
        increases=increases,
        decreases=decreases,
        increase_amount=sum((line.amount for line in increases), Decimal(0)),
        adjustment_invoice_id=carrier_of(invoice, list(drafts)) if increases else None,
        decrease_amount=decrease,
        credit_amount=credit,
        suggested_credit_amount=min(credit, Decimal(invoice.amount_due)),
    )


def _adjustment_line(source: Invoice, line: DriftLine) -> ComputedLine:
    last_day = line.period_end - dt.timedelta(days=1)
    label = source.number or str(source.id)
    return ComputedLine(
        description=f"Adjustment to {label} ({line.period_start} to {last_day}): {line.description}"[:500],
        product_id=line.product_id,
        pricing_id=line.pricing_id,
        pricing_type=line.pricing_type,
        period_start=line.period_start,
        period_end=line.period_end,
        quantity=decimal_text(line.quantity),
        unit=line.unit,
        unit_amount="",
        breakdown={
            "adjustment": {
                "invoice_id": str(source.id),
                "invoice_number": source.number,
                "billed_quantity": decimal_text(line.billed_quantity),
                "billed_amount": decimal_text(line.billed_amount),
                "fresh_quantity": decimal_text(line.fresh_quantity),
                "fresh_amount": decimal_text(line.fresh_amount),
                "adjusted_quantity": decimal_text(line.adjusted_quantity),
                "adjusted_amount": decimal_text(line.adjusted_amount),
            }
        },
        amount=line.amount,
        adjustment_of_start=line.period_start,
        adjustment_of_end=line.period_end,
    )


def adjustment_lines(*, contract: Contract, carrier: Invoice | None, period_start: dt.date) -> list[ComputedLine]:
    """The adjustment lines a live invoice of `contract` carries: the unbilled increases of every approved
    invoice whose carrier it is (`carrier` a draft; None: the upcoming invoice starting `period_start`)."""
    invoices = list(Invoice.objects.filter(contract_id=contract.id, status__in=(InvoiceStatus.DRAFT, *BILLED_STATUSES)))
    drafts = [invoice for invoice in invoices if invoice.status == InvoiceStatus.DRAFT]
    target = carrier.id if carrier is not None else None
    sources = [
        invoice
        for invoice in _ordered(invoices)
        if invoice.status in BILLED_STATUSES
        and invoice.period_end <= period_start
        and carrier_of(invoice, drafts) == target
    ]
    if not sources:
        return []
    frozen = _frozen([source.id for source in sources])
    adjusted = _adjusted(contract.id)
    lines: list[ComputedLine] = []
    for source in sources:
        for line in _drift_lines(source, _fresh(source, contract), frozen[source.id], adjusted):
            if line.amount > 0:
                lines.append(_adjustment_line(source, line))
    return lines


def live_invoice_compute(
    *, contract: Contract, period_start: dt.date, period_end: dt.date, carrier: Invoice | None
) -> InvoiceComputation:
    """A live invoice's lines and totals: its period's fresh computation, then the adjustment lines it
    carries (`carrier` the draft itself; None for the upcoming invoice). What a draft must always equal."""
    computation = invoice_compute(contract=contract, period_start=period_start, period_end=period_end)
    extra = adjustment_lines(contract=contract, carrier=carrier, period_start=period_start)
    if not extra:
        return computation
    return computation_of(
        currency=computation.currency,
        lines=[*computation.lines, *extra],
        tax_rate=computation.tax_rate,
        flagged=computation.flagged,
    )
