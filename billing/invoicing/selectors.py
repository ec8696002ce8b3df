"""Reads for invoices, credit notes and payments; every read is scoped to one organisation.

A malformed id or another organisation's id is the same 404: nothing says whether it exists elsewhere.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch, QuerySet, Sum
from django.db.models.functions import TruncMonth

from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, InvoiceStatus, Payment, PaymentPart
from billing.selectors import _one
from zenskar_site.accounts.models import Organisation


def invoices_list(*, organisation: Organisation) -> QuerySet[Invoice]:
    return Invoice.objects.filter(organisation=organisation).select_related("customer")


def invoice_get(*, organisation: Organisation, invoice_id: Any) -> Invoice:
    """The invoice with its lines (each line's `invoice` is this object: no query per line)."""
    invoice: Invoice = _one(
        invoices_list(organisation=organisation).prefetch_related(
            Prefetch("lines", queryset=InvoiceLine.objects.order_by("position", "id"))
        ),
        key=invoice_id,
        what="invoice",
    )
    return invoice


def credit_notes_list(*, organisation: Organisation) -> QuerySet[CreditNote]:
    return CreditNote.objects.filter(organisation=organisation).select_related("invoice")


def credit_note_get(*, organisation: Organisation, credit_note_id: Any) -> CreditNote:
    note: CreditNote = _one(credit_notes_list(organisation=organisation), key=credit_note_id, what="credit note")
    return note


def payments_list(*, organisation: Organisation) -> QuerySet[Payment]:
    return Payment.objects.filter(organisation=organisation).prefetch_related(
        Prefetch("parts", queryset=PaymentPart.objects.order_by("id"))
    )


def payment_get(*, organisation: Organisation, payment_id: Any) -> Payment:
    payment: Payment = _one(payments_list(organisation=organisation), key=payment_id, what="payment")
    return payment


# Invoices that count as revenue: approved and not void (a credit note does not move the month's figure).
REVENUE_STATUSES = (InvoiceStatus.APPROVED, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAID)


def revenue_by_month(*, organisation: Organisation, start: dt.date, end: dt.date) -> dict[str, dict[dt.date, Decimal]]:
    """Per currency, per first day of the issue month in [start, end): the invoices' totals."""
    rows = (
        Invoice.objects.filter(
            organisation=organisation, status__in=REVENUE_STATUSES, issue_date__gte=start, issue_date__lt=end
        )
        .annotate(month=TruncMonth("issue_date"))
        .values("currency", "month")
        .annotate(total=Sum("total"))
        .order_by()
    )
    found: dict[str, dict[dt.date, Decimal]] = defaultdict(dict)
    for row in rows:
        month = row["month"]
        day = month.date() if isinstance(month, dt.datetime) else month
        found[row["currency"]][day] = found[row["currency"]].get(day, Decimal(0)) + Decimal(row["total"])
    return dict(found)
