"""Dashboard pages for invoices (SPEC §9): the list by status, the invoice page (the document itself, with
its actions), its PDF, credit notes, and the billing home's revenue chart.

Thin: forms shape the input, billing.invoicing.services validate and write; a service's field errors land
next to the form's fields, a wrong transition (409) is a message on the invoice page, never a 500.
Reads are scoped to the acting organisation (another organisation's id is a 404).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.db.models import Count, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing.invoicing.api import money_text
from billing.invoicing.document import (
    credit_note_document,
    credit_note_pdf,
    invoice_document,
    invoice_pdf,
    money_format,
    pdf_filename,
)
from billing.invoicing.drift import invoice_drift
from billing.invoicing.forms import (
    LISTED_STATUSES,
    CreditNoteForm,
    DiscardForm,
    InvoiceFilterForm,
    PaymentForm,
    VoidForm,
)
from billing.invoicing.models import FROZEN_STATUSES, CreditNote, Invoice, InvoiceStatus, PaymentPart
from billing.invoicing.selectors import (
    credit_note_get,
    credit_notes_list,
    invoice_get,
    invoices_list,
    revenue_by_month,
)
from billing.invoicing.services import (
    PAYABLE_STATUSES,
    credit_note_create,
    invoice_approve,
    invoice_discard,
    invoice_void,
    payment_record,
)
from billing.selectors import customers_list
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import member_view
from zenskar_site.lib.charts import BarChart, ChartPoint, bar_chart
from zenskar_site.lib.errors import Conflict, NotFound, ValidationFailed
from zenskar_site.lib.pages import not_found_page, refusal_messages

LIST_LIMIT = 200
REVENUE_MONTHS = 12
REVENUE_CURRENCIES = 3
PAST = {"approve": "approved", "void": "voided", "discard": "discarded"}


# --- the list ---


@dataclass(frozen=True)
class StatusTotal:
    status: str
    label: str
    count: int
    amounts: list[str]  # one per currency: "$1,234.00"


def status_totals(invoices: QuerySet[Invoice]) -> list[StatusTotal]:
    """Per listed status: how many invoices and their totals, per currency."""
    rows = invoices.values("status", "currency").annotate(count=Count("id"), total=Sum("total")).order_by("currency")
    counts: dict[str, int] = defaultdict(int)
    amounts: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        counts[row["status"]] += row["count"]
        amounts[row["status"]].append(money_format(row["total"] or Decimal(0), row["currency"]))
    return [StatusTotal(value, label, counts[value], amounts[value]) for value, label in LISTED_STATUSES]


@member_view()
def invoice_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    customers = list(customers_list(organisation=actor.organisation, include_archived=True)[:1000])
    filters = InvoiceFilterForm(request.GET or None, customers=customers)
    invoices = invoices_list(organisation=actor.organisation).exclude(status=InvoiceStatus.UPCOMING)
    status = ""
    if filters.is_valid():
        values = filters.cleaned_data
        if values["customer"]:
            invoices = invoices.filter(customer_id=values["customer"])
        if values["period"]:
            first, following = values["period"]
            invoices = invoices.filter(period_start__lt=following, period_end__gt=first)
        status = values["status"]
    # The totals strip counts every status under the other filters; the table shows the chosen status.
    totals = status_totals(invoices)
    if status:
        invoices = invoices.filter(status=status)
    shown = list(invoices.order_by("-period_start", "-created_at")[:LIST_LIMIT])
    return render(
        request,
        "billing/invoice_list.html",
        {
            "filters": filters,
            "status": status,
            "totals": totals,
            "rows": [
                (
                    invoice,
                    invoice.period_end - dt.timedelta(days=1),
                    money_format(invoice.total, invoice.currency),
                    money_format(invoice.amount_due, invoice.currency),
                )
                for invoice in shown
            ],
            "limited": len(shown) == LIST_LIMIT,
            "query": request.GET.urlencode(),
        },
    )


# --- the invoice page ---


def _invoice_context(request: HttpRequest, actor: Actor, invoice: Invoice, **forms: Any) -> dict[str, Any]:
    currency = invoice.currency
    notes = list(credit_notes_list(organisation=actor.organisation).filter(invoice=invoice).order_by("created_at"))
    drift = invoice_drift(invoice=invoice)
    drift_context = None
    credit_initial: dict[str, str] = {}
    if drift is not None and drift.has_drift:
        drift_context = {
            "drift": drift,
            "lines": [(line, money_format(line.amount, currency)) for line in (*drift.increases, *drift.decreases)],
            "increase": money_format(drift.increase_amount, currency),
            "suggested_credit": money_format(drift.suggested_credit_amount, currency),
        }
        if drift.suggested_credit_amount > 0:
            credit_initial = {
                "credit_note_amount": money_text(drift.suggested_credit_amount, currency),
                "reason": "Usage decreased after approval",
            }
    parts = list(PaymentPart.objects.filter(invoice=invoice).select_related("payment").order_by("payment__timestamp"))
    return {
        **invoice_document(invoice=invoice),
        "notes": [(note, money_format(note.amount, currency)) for note in notes],
        "payments": [(part, money_format(part.amount, currency)) for part in parts],
        "can_approve": invoice.status == InvoiceStatus.DRAFT,
        "can_discard": invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.UPCOMING),
        "can_void": invoice.status == InvoiceStatus.APPROVED,
        "can_settle": invoice.status in PAYABLE_STATUSES,
        "void_form": forms.get("void_form") or VoidForm(prefix="void"),
        "discard_form": DiscardForm(prefix="discard"),
        "credit_form": forms.get("credit_form") or CreditNoteForm(prefix="credit", initial=credit_initial),
        "payment_form": forms.get("payment_form")
        or PaymentForm(prefix="pay", initial={"payment_method": "bank_transfer"}),
        # Usage that changed after approval (SPEC §9): the banner, with its suggested credit note.
        "drift": drift_context,
    }


@member_view()
def invoice_detail(request: HttpRequest, actor: Actor, invoice_id: str) -> HttpResponse:
    try:
        invoice = invoice_get(organisation=actor.organisation, invoice_id=invoice_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    return render(request, "billing/invoice_detail.html", _invoice_context(request, actor, invoice))


@require_POST
@member_view(write=True)
def invoice_action(request: HttpRequest, actor: Actor, invoice_id: str, action: str) -> HttpResponse:
    """Approve, void (with a reason) or discard; a wrong transition is a message on the invoice page."""
    try:
        invoice = invoice_get(organisation=actor.organisation, invoice_id=invoice_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    try:
        if action == "approve":
            if invoice.status == InvoiceStatus.VOID:
                raise Conflict("Only a draft invoice can be approved; this one is void.")
            done = invoice_approve(actor=actor, invoice_id=invoice.id)
            messages.success(request, f"Invoice {done.number} approved: its lines and totals are frozen.")
        elif action == "void":
            form = VoidForm(request.POST, prefix="void")
            if not form.is_valid():
                context = _invoice_context(request, actor, invoice, void_form=form)
                return render(request, "billing/invoice_detail.html", context, status=400)
            done = invoice_void(actor=actor, invoice_id=invoice.id, reason=form.cleaned_data["reason"])
            messages.success(request, f"Invoice {done.number} voided: nothing is owed on it.")
        elif action == "discard":
            discard = DiscardForm(request.POST, prefix="discard")
            reason = discard.cleaned_data["reason"] if discard.is_valid() else ""
            invoice_discard(actor=actor, invoice_id=invoice.id, reason=reason)
            messages.success(request, "Draft discarded: it will not be approved.")
        else:
            return not_found_page(request, NotFound(f"No invoice action {action[:40]!r}."))
    except (ValidationFailed, Conflict) as exc:
        refusal_messages(request, exc, what=f"Not {PAST[action]}")
    return redirect("billing:invoice-detail", invoice_id=invoice.id)


@require_POST
@member_view(write=True)
def invoice_credit_note_new(request: HttpRequest, actor: Actor, invoice_id: str) -> HttpResponse:
    try:
        invoice = invoice_get(organisation=actor.organisation, invoice_id=invoice_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    form = CreditNoteForm(request.POST, prefix="credit")
    if form.is_valid():
        try:
            note = credit_note_create(actor=actor, invoice_id=invoice.id, data=form.body())
        except ValidationFailed as exc:
            for path, found in exc.errors.items():
                field = "credit_note_amount" if path in ("credit_note_amount", "amount") else "reason"
                for message in found:
                    form.add_error(field if path in ("credit_note_amount", "amount", "reason") else None, message)
        except Conflict as exc:
            refusal_messages(request, exc, what="No credit note")
            return redirect("billing:invoice-detail", invoice_id=invoice.id)
        else:
            shown = money_format(note.amount, note.currency)
            messages.success(request, f"Credit note {note.number} issued for {shown}.")
            return redirect("billing:invoice-detail", invoice_id=invoice.id)
    context = _invoice_context(request, actor, invoice, credit_form=form)
    return render(request, "billing/invoice_detail.html", context, status=400)


@require_POST
@member_view(write=True)
def invoice_payment_new(request: HttpRequest, actor: Actor, invoice_id: str) -> HttpResponse:
    try:
        invoice = invoice_get(organisation=actor.organisation, invoice_id=invoice_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    form = PaymentForm(request.POST, prefix="pay")
    if form.is_valid():
        try:
            payment = payment_record(actor=actor, data=form.body(invoice_id=invoice.id, currency=invoice.currency))
        except ValidationFailed as exc:
            for path, found in exc.errors.items():
                field = next((name for name in ("amount", "payment_method", "timestamp") if path.endswith(name)), None)
                for message in found:
                    form.add_error(field, message)
        except Conflict as exc:
            refusal_messages(request, exc, what="Payment not recorded")
            return redirect("billing:invoice-detail", invoice_id=invoice.id)
        else:
            shown = money_format(payment.amount, payment.currency_code)
            messages.success(request, f"Payment of {shown} recorded.")
            return redirect("billing:invoice-detail", invoice_id=invoice.id)
    context = _invoice_context(request, actor, invoice, payment_form=form)
    return render(request, "billing/invoice_detail.html", context, status=400)


def pdf_response(content: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["Content-Length"] = str(len(content))
    return response


def invoice_pdf_name(invoice: Invoice) -> str:
    if invoice.status in FROZEN_STATUSES and invoice.number:
        return pdf_filename(invoice.number)
    return pdf_filename(f"draft-{invoice.id}")


@member_view()
def invoice_pdf_download(request: HttpRequest, actor: Actor, invoice_id: str) -> HttpResponse:
    try:
        invoice = invoice_get(organisation=actor.organisation, invoice_id=invoice_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    return pdf_response(invoice_pdf(invoice=invoice), invoice_pdf_name(invoice))


# --- credit notes ---


@member_view()
def credit_note_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    notes = list(
        credit_notes_list(organisation=actor.organisation)
        .select_related("invoice__customer")
        .order_by("-created_at")[:LIST_LIMIT]
    )
    return render(
        request,
        "billing/credit_note_list.html",
        {"rows": [(note, money_format(note.amount, note.currency)) for note in notes]},
    )


def _note(actor: Actor, credit_note_id: str) -> CreditNote:
    note = credit_note_get(organisation=actor.organisation, credit_note_id=credit_note_id)
    return CreditNote.objects.select_related("invoice__customer", "invoice__organisation").get(id=note.id)


@member_view()
def credit_note_detail(request: HttpRequest, actor: Actor, credit_note_id: str) -> HttpResponse:
    try:
        note = _note(actor, credit_note_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    return render(request, "billing/credit_note_detail.html", credit_note_document(note=note))


@member_view()
def credit_note_pdf_download(request: HttpRequest, actor: Actor, credit_note_id: str) -> HttpResponse:
    try:
        note = _note(actor, credit_note_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    return pdf_response(credit_note_pdf(note=note), pdf_filename(note.number))


# --- the billing home ---


def month_add(month: dt.date, count: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


def revenue_chart(*, months: list[dt.date], totals: dict[dt.date, Decimal], currency: str) -> BarChart:
    points = [
        ChartPoint(
            amount=totals.get(month),
            text=str(totals[month]) if month in totals else "",
            title=f"{month:%B %Y}: {money_format(totals.get(month, Decimal(0)), currency)}",
            # Every other month labelled, counting back from the latest (always labelled).
            label=f"{month:%b %Y}" if (len(months) - 1 - index) % 2 == 0 or len(months) <= 6 else None,
        )
        for index, month in enumerate(months)
    ]
    return bar_chart(points=points, total=money_format(sum(totals.values(), Decimal(0)), currency))


@member_view()
def billing_home(request: HttpRequest, actor: Actor) -> HttpResponse:
    """Revenue by month (approved, partly paid and paid invoices by issue month), and what awaits a person."""
    this_month = timezone.now().astimezone(dt.UTC).date().replace(day=1)
    months = [month_add(this_month, offset) for offset in range(-REVENUE_MONTHS + 1, 1)]
    found = revenue_by_month(organisation=actor.organisation, start=months[0], end=month_add(this_month, 1))
    currencies = sorted(found, key=lambda code: (-sum(found[code].values(), Decimal(0)), code))[:REVENUE_CURRENCIES]
    charts = [(code, revenue_chart(months=months, totals=found[code], currency=code)) for code in currencies]
    invoices = invoices_list(organisation=actor.organisation)
    outstanding = (
        invoices.filter(status__in=PAYABLE_STATUSES)
        .values("currency")
        .annotate(due=Sum("amount_due"), count=Count("id"))
        .order_by("currency")
    )
    return render(
        request,
        "billing/home.html",
        {
            "charts": charts,
            "first_month": months[0],
            "drafts": invoices.filter(status=InvoiceStatus.DRAFT).count(),
            "outstanding": [(money_format(row["due"] or 0, row["currency"]), row["count"]) for row in outstanding],
            "overdue": invoices.filter(status__in=PAYABLE_STATUSES, due_date__lt=timezone.now().date())
            .filter(~Q(amount_due=0))
            .count(),
        },
    )
