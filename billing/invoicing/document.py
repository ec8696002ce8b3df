"""The invoice and credit note as documents (SPEC §9): what the dashboard page shows and the PDF prints.

One template partial (templates/billing/_invoice_document.html) is the document; the page includes it
inside the dashboard, the PDF wraps it in templates/billing/invoice_pdf.html with the same stylesheet
(static/zenskar/invoice.css) and WeasyPrint renders it. The PDF is not stored: it is rendered from the
frozen invoice and is the same bytes every time (WeasyPrint's creation date is the approval instant,
its file identifier derived from the invoice's id; nothing reads the clock). A draft renders too,
marked DRAFT across the page and dated by its last computation.

The parties are frozen too: approving copies the seller's name and the customer's name, email and
address lines into the invoice (`Invoice.parties`, refused any change by the database like the lines),
and the document of an approved invoice, and of its credit notes, shows that copy. Renaming the
organisation or the customer, or moving the customer, changes only live invoices (upcoming, draft).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from django.contrib.staticfiles import finders
from django.template.loader import render_to_string

from billing.invoicing.models import FROZEN_STATUSES, CreditNote, Invoice, InvoiceLine, InvoiceStatus
from billing.rating import CURRENCY_EXPONENTS

CURRENCY_SYMBOLS = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "INR": "₹",
    "CAD": "CA$",
    "AUD": "A$",
    "CHF": "CHF ",
    "CNY": "CN¥",
    "SEK": "SEK ",
}
STYLESHEET = "zenskar/invoice.css"
STAMPS: dict[str, str] = {
    InvoiceStatus.UPCOMING: "DRAFT",
    InvoiceStatus.DRAFT: "DRAFT",
    InvoiceStatus.DISCARDED: "DISCARDED",
    InvoiceStatus.VOID: "VOID",
}
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def money_format(amount: Decimal | str | int, currency: str) -> str:
    """`amount` in the currency's format: its symbol (or code), thousands separators and exactly its
    minor-unit digits (`$1,234.50`, `¥1,200`, `KWD 1.250`; a negative amount starts with a minus sign)."""
    places = CURRENCY_EXPONENTS.get(currency.upper(), 2)
    value = Decimal(amount).quantize(Decimal(1).scaleb(-places))
    symbol = CURRENCY_SYMBOLS.get(currency.upper(), f"{currency.upper()} ")
    sign = "\u2212" if value < 0 else ""
    return f"{sign}{symbol}{abs(value):,.{places}f}"


def number_format(text: str) -> str:
    """An exact decimal text with thousands separators, every digit kept (`12345.678` -> `12,345.678`)."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        return str(text)
    if not value.is_finite():
        return str(text)
    places = max(0, -value.as_tuple().exponent)  # type: ignore[operator]
    return f"{value:,.{places}f}"


@dataclass(frozen=True)
class BreakdownRow:
    description: str
    quantity: str
    unit_amount: str
    flat_amount: str
    amount: str


@dataclass(frozen=True)
class DocumentLine:
    line: InvoiceLine
    quantity: str
    unit_amount: str
    amount: str
    parts: list[BreakdownRow]
    proration: str
    adjustment: str

    @property
    def last_day(self) -> dt.date:
        """The line's last day (its `period_end` is exclusive), as a person reads a period."""
        return self.line.period_end - dt.timedelta(days=1)


def _line(line: InvoiceLine, currency: str) -> DocumentLine:
    breakdown = line.breakdown if isinstance(line.breakdown, dict) else {}
    parts = [
        BreakdownRow(
            description=str(part.get("description", "")),
            quantity=number_format(str(part.get("quantity", ""))),
            unit_amount=number_format(str(part["unit_amount"])) if part.get("unit_amount") is not None else "",
            flat_amount=number_format(str(part["flat_amount"])) if part.get("flat_amount") else "",
            amount=number_format(str(part.get("amount", ""))),
        )
        for part in breakdown.get("parts") or []
        if isinstance(part, dict)
    ]
    proration = breakdown.get("proration")
    prorated = (
        f"prorated {proration.get('days')} of {proration.get('period_days')} days"
        f" (full period {number_format(str(proration.get('full_amount')))})"
        if isinstance(proration, dict)
        else ""
    )
    adjustment = (
        f"adjusts {line.adjustment_of_start:%Y-%m-%d} to {line.adjustment_of_end - dt.timedelta(days=1):%Y-%m-%d}"
        if line.adjustment_of_start and line.adjustment_of_end
        else ""
    )
    return DocumentLine(
        line=line,
        quantity=number_format(line.quantity),
        unit_amount=number_format(line.unit_amount) if line.unit_amount else "",
        amount=money_format(line.amount, currency),
        parts=parts,
        proration=prorated,
        adjustment=adjustment,
    )


def customer_address(customer: Any) -> list[str]:
    """The customer's postal address as the document's lines (a historical model's instance will do)."""
    place = " ".join(p for p in (customer.address_zipCode, customer.address_city) if p)
    lines = [
        customer.address_line1,
        customer.address_line2,
        customer.address_line3,
        ", ".join(p for p in (place, customer.address_state) if p),
        customer.address_country or customer.address_country_code,
    ]
    return [line for line in lines if line]


def parties_of(*, seller_name: str, customer: Any) -> dict[str, Any]:
    """What the document shows of the seller and the customer, as `Invoice.parties` keeps it (JSON)."""
    return {
        "seller": {"name": seller_name},
        "customer": {
            "customer_name": customer.customer_name,
            "email": customer.email,
            "address": customer_address(customer),
        },
    }


def invoice_parties(invoice: Invoice) -> dict[str, Any]:
    """The parties of `invoice`'s document: the copy taken at approval, else (a live invoice) the
    organisation's and the customer's details as they are now."""
    if invoice.parties is not None:
        return invoice.parties
    return parties_of(seller_name=invoice.organisation.name, customer=invoice.customer)


def invoice_document(*, invoice: Invoice) -> dict[str, Any]:
    """The template context of the invoice document (`invoice` with its lines, and its parties)."""
    currency = invoice.currency
    money = {
        name: money_format(getattr(invoice, name), currency)
        for name in ("subtotal", "tax", "total", "amount_credited", "amount_paid", "amount_due")
    }
    parties = invoice_parties(invoice)
    return {
        "invoice": invoice,
        "seller": parties["seller"],
        "customer": parties["customer"],
        "address": parties["customer"]["address"],
        "lines": [_line(line, currency) for line in invoice.lines.all()],
        "money": money,
        "tax_rate": number_format(format(Decimal(invoice.tax_rate).normalize(), "f")),
        "last_day": invoice.period_end - dt.timedelta(days=1),
        "draft": invoice.status not in FROZEN_STATUSES,
        "void": invoice.status == InvoiceStatus.VOID,
        # Across the page of a document that is not (or no longer) owed: DRAFT, DISCARDED or VOID.
        "stamp": STAMPS.get(invoice.status, ""),
    }


def credit_note_document(*, note: CreditNote) -> dict[str, Any]:
    invoice = note.invoice
    parties = invoice_parties(invoice)  # a credit note's invoice is approved: the parties it was issued to
    return {
        "note": note,
        "invoice": invoice,
        "seller": parties["seller"],
        "customer": parties["customer"],
        "address": parties["customer"]["address"],
        "amount": money_format(note.amount, note.currency),
        "invoice_total": money_format(invoice.total, invoice.currency),
    }


@cache
def _stylesheet() -> str:
    path = finders.find(STYLESHEET)
    assert isinstance(path, str), f"{STYLESHEET} is missing"
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _pdf(*, html: str, identifier: str) -> bytes:
    # fontTools, which subsets the embedded fonts where HarfBuzz-Subset is missing (Debian 12), stamps each
    # subset font with the moment it was made unless SOURCE_DATE_EPOCH (reproducible builds) names one:
    # without it an approved invoice's PDF differed from one second to the next. A fixed stamp, as the
    # documents' other dates are theirs, not the clock's.
    os.environ.setdefault("SOURCE_DATE_EPOCH", str(int(EPOCH.timestamp())))
    # Imported here: WeasyPrint loads Pango through cffi, which only the PDF needs.
    from weasyprint import CSS, HTML

    return bytes(
        HTML(string=html).write_pdf(
            stylesheets=[CSS(string=_stylesheet())],
            pdf_identifier=hashlib.sha256(identifier.encode()).hexdigest()[:32].encode(),
        )
    )


def _stamp(moment: dt.datetime | None) -> str:
    return (moment or EPOCH).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def invoice_pdf(*, invoice: Invoice) -> bytes:
    """The invoice's PDF: the same bytes for the same invoice (a draft: for the same computation)."""
    context = invoice_document(invoice=invoice)
    context["created"] = _stamp(invoice.approved_at or invoice.computed_at or invoice.created_at)
    context["title"] = invoice.number or f"Draft invoice {invoice.id}"
    html = render_to_string("billing/invoice_pdf.html", context)
    return _pdf(html=html, identifier=f"invoice:{invoice.id}:{invoice.number or 'draft'}")


def credit_note_pdf(*, note: CreditNote) -> bytes:
    context = credit_note_document(note=note)
    context["created"] = _stamp(note.created_at)
    context["title"] = note.number
    html = render_to_string("billing/credit_note_pdf.html", context)
    return _pdf(html=html, identifier=f"credit_note:{note.id}")


def pdf_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:80] + ".pdf"
