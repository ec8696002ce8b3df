"""Zenskar's invoices, credit notes and payments (`/invoices/...`, `/credit_notes`, `/payments`) over
billing.invoicing.services and billing.invoicing.selectors, answering the /api/v1 representations.

Where Zenskar's list is silent or has no counterpart here:
- `generate_invoice` is synchronous: it answers the draft (201); `invoice_generation_status` then says
  `completed` for it. `from_date` is read as its UTC day; `to_date` is exclusive, so an instant after
  a UTC midnight (`...T23:59:59Z`, the end of a day) bills that whole day.
- `void` takes an optional `reason` (the service requires one: a fixed text when absent).
- credit notes are issued at once: their `status` is `issued`; `in_progress`, `void` and `paid` match none.
- payments are recorded by hand: `type` is `payment` (a refund or reversal is a 400 naming `type`),
  `status` `success`; `customer_id`, when sent, must be the customer of every invoice paid.
- `GET /invoices/internal?status=upcoming` computes each billed contract's upcoming invoice (its open
  period so far: they are not stored), paged over the contracts; it takes the customer and contract
  filters (`customer_id`, `customer__external_id`, `customer__customer_name`, `contract_id`) only.
- `download_invoice` answers the PDF itself (`application/pdf`, the invoice page's document; a draft's is
  marked DRAFT); `invoice_json_key` is ignored; `customer_id`, when sent, must be the invoice's customer.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpResponse
from django.urls import URLPattern, re_path
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.inputs import uuid_value
from billing.invoicing.api import (
    CreditNoteOutput,
    FirstRenderer,
    InvoiceDetailOutput,
    InvoiceLineOutput,
    InvoiceOutput,
    PaymentOutput,
    UpcomingInvoiceOutput,
    invoice_approve_refusing_void,
    invoice_pdf_response,
    money_text,
)
from billing.invoicing.models import CreditNote, Invoice, InvoiceStatus, Payment, PaymentPart
from billing.invoicing.selectors import (
    credit_note_get,
    credit_notes_list,
    invoice_get,
    invoices_list,
    payment_get,
    payments_list,
)
from billing.invoicing.services import (
    PAYMENT_FIELDS,
    credit_note_create,
    invoice_generate,
    invoice_void,
    payment_record,
)
from billing.invoicing.upcoming import UPCOMING_CONTRACT_STATUSES, contract_upcoming_invoice
from billing.models import Contract
from billing.selectors import contract_get
from billing.zenskar.common import (
    ORDERED_OPS,
    Filter,
    ZenskarApi,
    body_object,
    boolean_value,
    choice_filter,
    date_filter,
    datetime_filter,
    datetime_value,
    filters_apply,
    ordering_from,
    picked,
    query_text,
    text_filter,
    uuid_argument,
    uuid_filter,
    zenskar_page,
)
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed

VOID_REASON = "Voided through the Zenskar-compatible API (no reason given)."
EDITED = "edited"  # a Zenskar status with no counterpart here: accepted as a filter value, matches nothing
CREDIT_NOTE_STATUSES = ("in_progress", "issued", "void", "paid")
PAYMENT_TYPES = ("payment", "refund", "payment_reversal", "authorization", "tax_withheld")
PAYMENT_STATUSES = (
    "in_progress",
    "requires_action",
    "pending_charge",
    "authorized",
    "created",
    "success",
    "voided",
    "failed",
    "canceled",
    "refunded",
    "partially_refunded",
    "other",
)


def decimal_argument(value: Any, name: str) -> Decimal:
    text = query_text(value, name, max_length=40).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValidationFailed({name: ["Expected a decimal number such as 12.50."]}) from None
    if not number.is_finite():
        raise ValidationFailed({name: ["Expected a decimal number such as 12.50."]})
    return number


def decimal_filter(lookup: str) -> Filter:
    return Filter(lookup, decimal_argument, ORDERED_OPS)


INVOICE_FILTERS = {
    "id": uuid_filter("id"),
    "customer_id": uuid_filter("customer_id"),
    "customer__external_id": text_filter("customer__external_id"),
    "customer__customer_name": text_filter("customer__customer_name"),
    "contract_id": uuid_filter("contract_id"),
    "status": choice_filter("status", [*InvoiceStatus.values, EDITED]),
    "invoice_total": decimal_filter("total"),
    "amount_due": decimal_filter("amount_due"),
    "due_date": date_filter("due_date"),
    "created_at": datetime_filter("created_at"),
    "invoice_number": text_filter("number"),
}
INVOICE_SORT_KEYS = {"created_at": "created_at", "due_date": "due_date", "invoice_total": "total"}
PAYMENT_FILTERS = {
    "id": uuid_filter("id"),
    "payment_method": text_filter("payment_method"),
    "amount": decimal_filter("amount"),
    "currency_code": text_filter("currency_code"),
    "timestamp": datetime_filter("timestamp"),
    "created_at": datetime_filter("created_at"),
}
PAYMENT_SORT_KEYS = {"timestamp": "timestamp", "created_at": "created_at", "amount": "amount"}


def credit_note_output(note: CreditNote) -> dict[str, Any]:
    return {**CreditNoteOutput(note).data, "status": "issued"}


def payment_output(payment: Payment) -> dict[str, Any]:
    return {**PaymentOutput(payment).data, "type": "payment", "status": "success"}


def only_value(params: Any, name: str, allowed: tuple[str, ...], present: str) -> bool | None:
    """For a Zenskar enum with one value here (`present`): None without the argument, else whether it
    asks for `present` (another allowed value matches nothing; an unknown one is a 400)."""
    raw = params.get(name)
    if raw in (None, ""):
        return None
    if raw not in allowed:
        raise ValidationFailed({name: [f"Must be one of: {', '.join(allowed)}."]})
    return bool(raw == present)


UPCOMING_FILTERS = {
    "customer_id": uuid_filter("customer_id"),
    "customer__external_id": text_filter("customer__external_id"),
    "customer__customer_name": text_filter("customer__customer_name"),
    "contract_id": uuid_filter("id"),
}


def upcoming_page(request: Request, view: Any) -> Response:
    """`status=upcoming`: the upcoming invoice of each billed contract, computed now (they are not stored),
    paged over the contracts (one with no open period today gives none, so a page may hold fewer)."""
    contracts: QuerySet[Contract] = filters_apply(
        Contract.objects.filter(
            organisation=request_actor(request).organisation, status__in=UPCOMING_CONTRACT_STATUSES
        ).select_related("customer"),
        request.query_params,
        UPCOMING_FILTERS,
    )

    def serialize(page: list[Contract]) -> list[Any]:
        found = (contract_upcoming_invoice(contract=contract) for contract in page)
        return [UpcomingInvoiceOutput(invoice).data for invoice in found if invoice is not None]

    return zenskar_page(request=request, view=view, queryset=contracts, serialize=serialize, ordering="-created_at")


class InvoicesInternalApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        if params.get("status") == InvoiceStatus.UPCOMING:
            return upcoming_page(request, self)
        invoices: QuerySet[Invoice] = filters_apply(
            invoices_list(organisation=request_actor(request).organisation), params, INVOICE_FILTERS
        )
        return zenskar_page(
            request=request,
            view=self,
            queryset=invoices,
            serialize=lambda page: InvoiceOutput(page, many=True).data,
            ordering=ordering_from(params, allowed=INVOICE_SORT_KEYS, default="-created_at"),
        )


class InvoiceApi(ZenskarApi):
    def get(self, request: Request, invoice_id: str) -> Response:
        invoice = invoice_get(organisation=request_actor(request).organisation, invoice_id=invoice_id)
        raw = request.query_params.get("include_line_items")
        with_lines = raw not in (None, "") and boolean_value(raw, "include_line_items")
        return Response((InvoiceDetailOutput if with_lines else InvoiceOutput)(invoice).data)


class InvoiceLineItemsApi(ZenskarApi):
    def get(self, request: Request, invoice_id: str) -> Response:
        invoice = invoice_get(organisation=request_actor(request).organisation, invoice_id=invoice_id)
        lines = list(invoice.lines.all())
        return Response({"invoice_id": str(invoice.id), "line_items": InvoiceLineOutput(lines, many=True).data})


class InvoiceSummaryApi(ZenskarApi):
    def get(self, request: Request, invoice_id: str) -> Response:
        """The totals, settlement and the credit notes and payments that moved them."""
        organisation = request_actor(request).organisation
        invoice = invoice_get(organisation=organisation, invoice_id=invoice_id)
        money = {
            name: money_text(getattr(invoice, name), invoice.currency)
            for name in ("subtotal", "tax", "total", "amount_credited", "amount_paid", "amount_due")
        }
        notes = credit_notes_list(organisation=organisation).filter(invoice=invoice).order_by("created_at")
        parts = PaymentPart.objects.filter(invoice=invoice).select_related("payment").order_by("payment__timestamp")
        return Response(
            {
                "id": str(invoice.id),
                "number": invoice.number,
                "status": invoice.status,
                "currency": invoice.currency,
                "period_start": invoice.period_start.isoformat(),
                "period_end": invoice.period_end.isoformat(),
                "issue_date": invoice.issue_date.isoformat() if invoice.issue_date else None,
                "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
                **money,
                "line_item_count": invoice.lines.count(),
                "credit_notes": [
                    {"id": str(n.id), "number": n.number, "amount": money_text(n.amount, n.currency)} for n in notes
                ],
                "payments": [
                    {
                        "id": str(part.payment_id),
                        "timestamp": part.payment.timestamp.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                        "amount": money_text(part.amount, invoice.currency),
                    }
                    for part in parts
                ],
            }
        )


class InvoiceDownloadApi(ZenskarApi):
    content_negotiation_class = FirstRenderer

    def get(self, request: Request, invoice_id: str) -> HttpResponse:
        invoice = invoice_get(organisation=request_actor(request).organisation, invoice_id=invoice_id)
        customer = request.query_params.get("customer_id")
        if customer not in (None, "") and uuid_argument(customer, "customer_id") != invoice.customer_id:
            raise ValidationFailed({"customer_id": ["This invoice is another customer's."]})
        return invoice_pdf_response(invoice)


def day_of(value: Any, name: str, *, end: bool) -> str:
    """A Zenskar date argument as the day the service reads; an end instant past midnight bills that day."""
    if value is None or value == "":
        raise ValidationFailed({name: ["This field is required: Unix seconds, a date or an ISO 8601 date-time."]})
    moment = datetime_value(value, name)
    day = moment.date()
    if end and moment != dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC):
        day += dt.timedelta(days=1)
    return day.isoformat()


class InvoiceGenerateApi(ZenskarApi):
    def post(self, request: Request) -> Response:
        actor = request_actor(request)
        body = body_object(request)
        errors: dict[str, list[str]] = {}
        dates: dict[str, str] = {}
        for name, end in (("from_date", False), ("to_date", True)):
            try:
                dates[name] = day_of(body.get(name), name, end=end)
            except ValidationFailed as exc:
                errors.update(exc.errors)
        for name in ("contract_id", "customer_id"):
            try:
                uuid_argument(body.get(name), name)
            except ValidationFailed as exc:
                errors.update(exc.errors)
        if errors:
            raise ValidationFailed(errors)
        # Another organisation's contract is a 404 (before the customer is compared with it).
        contract = contract_get(organisation=actor.organisation, contract_id=body["contract_id"])
        if contract.customer_id != uuid_value(body["customer_id"]):
            raise ValidationFailed({"customer_id": ["The contract belongs to another customer."]})
        invoice = invoice_generate(
            actor=actor, contract_id=contract.id, from_date=dates["from_date"], to_date=dates["to_date"]
        )
        return Response(
            InvoiceDetailOutput(invoice_get(organisation=actor.organisation, invoice_id=invoice.id)).data,
            status=status.HTTP_201_CREATED,
        )


class InvoiceGenerationStatusApi(ZenskarApi):
    def get(self, request: Request, invoice_id: str) -> Response:
        contract_id = uuid_argument(request.query_params.get("contract_id"), "contract_id")
        invoice = invoice_get(organisation=request_actor(request).organisation, invoice_id=invoice_id)
        if invoice.contract_id != contract_id:
            raise ValidationFailed({"contract_id": ["This invoice is not of that contract."]})
        # Generation is synchronous: an invoice that exists is generated.
        return Response(
            {
                "id": str(invoice.id),
                "invoice_id": str(invoice.id),
                "contract_id": str(invoice.contract_id),
                "status": "completed",
                "invoice_status": invoice.status,
            }
        )


class InvoiceApproveApi(ZenskarApi):
    def patch(self, request: Request, invoice_id: str) -> Response:
        """`send_email` and `check_duplicate_invoice` are accepted and ignored (no e-mails; a period's
        invoice is never made twice)."""
        invoice = invoice_approve_refusing_void(request=request, invoice_id=invoice_id)
        return Response(InvoiceOutput(invoice).data)


class InvoiceVoidApi(ZenskarApi):
    def patch(self, request: Request, invoice_id: str) -> Response:
        body = body_object(request, optional=True)
        reason = body.get("reason") or VOID_REASON
        invoice = invoice_void(actor=request_actor(request), invoice_id=invoice_id, reason=reason)
        return Response(InvoiceOutput(invoice).data)


class InvoiceCreditNoteApi(ZenskarApi):
    def post(self, request: Request, invoice_id: str) -> Response:
        actor = request_actor(request)
        body = picked(body_object(request), ("credit_note_amount", "reason"))
        note = credit_note_create(actor=actor, invoice_id=invoice_id, data=body)
        return Response(
            credit_note_output(credit_note_get(organisation=actor.organisation, credit_note_id=note.id)),
            status=status.HTTP_201_CREATED,
        )


class CreditNotesApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        notes: QuerySet[CreditNote] = credit_notes_list(organisation=request_actor(request).organisation)
        notes = filters_apply(
            notes,
            params,
            {"customer_id": uuid_filter("invoice__customer_id"), "invoice_id": uuid_filter("invoice_id")},
        )
        if only_value(params, "status", CREDIT_NOTE_STATUSES, "issued") is False:
            notes = notes.none()
        return zenskar_page(
            request=request,
            view=self,
            queryset=notes,
            serialize=lambda page: [credit_note_output(note) for note in page],
            ordering="-created_at",
        )


class CreditNoteApi(ZenskarApi):
    def get(self, request: Request, credit_note_id: str) -> Response:
        note = credit_note_get(organisation=request_actor(request).organisation, credit_note_id=credit_note_id)
        return Response(credit_note_output(note))


def payments_filtered(payments: QuerySet[Payment], params: Any) -> QuerySet[Payment]:
    payments = filters_apply(payments, params, PAYMENT_FILTERS)
    # Subqueries, not joins: a payment with parts on two invoices of one customer is listed once.
    for name, lookup in (("customer_id", "invoice__customer_id"), ("invoice__id", "invoice_id")):
        if params.get(name) not in (None, ""):
            key = uuid_argument(params.get(name), name)
            payments = payments.filter(id__in=PaymentPart.objects.filter(**{lookup: key}).values("payment_id"))
    if params.get("search") not in (None, ""):
        text = query_text(params.get("search"), "search")
        payments = payments.filter(Q(payment_method__icontains=text) | Q(currency_code__iexact=text))
    if only_value(params, "type", PAYMENT_TYPES, "payment") is False:
        payments = payments.none()
    if only_value(params, "status", PAYMENT_STATUSES, "success") is False:
        payments = payments.none()
    return payments


class PaymentsApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        payments = payments_filtered(payments_list(organisation=request_actor(request).organisation), params)
        return zenskar_page(
            request=request,
            view=self,
            queryset=payments,
            serialize=lambda page: [payment_output(payment) for payment in page],
            ordering=ordering_from(params, allowed=PAYMENT_SORT_KEYS, default="-timestamp"),
        )

    def post(self, request: Request) -> Response:
        actor = request_actor(request)
        body = body_object(request)
        kind = body.get("type")
        if kind not in (None, "", "payment"):
            raise ValidationFailed({"type": ["Only payments are recorded here (no refunds or reversals)."]})
        data = picked(body, PAYMENT_FIELDS)
        customer = body.get("customer_id")
        if customer not in (None, ""):
            customer_key = uuid_argument(customer, "customer_id")
            raw_parts = data.get("payment_parts")
            parts: list[Any] = raw_parts if isinstance(raw_parts, list) else []
            keys = [uuid_value(part.get("invoice_id")) for part in parts if isinstance(part, dict)]
            others = (
                invoices_list(organisation=actor.organisation)
                .filter(id__in=[key for key in keys if key is not None])
                .exclude(customer_id=customer_key)
            )
            if others.exists():
                raise ValidationFailed({"customer_id": ["An invoice paid is another customer's."]})
        payment = payment_record(actor=actor, data=data)
        return Response(
            payment_output(payment_get(organisation=actor.organisation, payment_id=payment.id)),
            status=status.HTTP_201_CREATED,
        )


class InvoicePaymentsApi(ZenskarApi):
    def get(self, request: Request, invoice_id: str) -> Response:
        organisation = request_actor(request).organisation
        invoice = invoice_get(organisation=organisation, invoice_id=invoice_id)
        payments = payments_list(organisation=organisation).filter(
            id__in=PaymentPart.objects.filter(invoice=invoice).values("payment_id")
        )
        return zenskar_page(
            request=request,
            view=self,
            queryset=payments,
            serialize=lambda page: [payment_output(payment) for payment in page],
            ordering="-timestamp",
        )


def _route(pattern: str, view: Any) -> URLPattern:
    """As billing.zenskar.urls.route: with or without a trailing slash (kept here to spare that module an
    import cycle)."""
    return re_path(rf"^{pattern}/?$", view)


INVOICE = "invoices/(?P<invoice_id>[^/]+)"

# Fixed segments (`internal`, `generate_invoice`, ...) before the id patterns that would take them as ids.
urlpatterns = [
    _route("invoices/internal", InvoicesInternalApi.as_view()),
    _route("invoices/generate_invoice", InvoiceGenerateApi.as_view()),
    _route("invoices/invoice_generation_status/(?P<invoice_id>[^/]+)", InvoiceGenerationStatusApi.as_view()),
    _route(INVOICE + "/line_items", InvoiceLineItemsApi.as_view()),
    _route(INVOICE + "/summary", InvoiceSummaryApi.as_view()),
    _route(INVOICE + "/download_invoice", InvoiceDownloadApi.as_view()),
    _route(INVOICE + "/approve", InvoiceApproveApi.as_view()),
    _route(INVOICE + "/void", InvoiceVoidApi.as_view()),
    _route(INVOICE + "/credit_note", InvoiceCreditNoteApi.as_view()),
    _route(INVOICE, InvoiceApi.as_view()),
    _route("credit_notes", CreditNotesApi.as_view()),
    _route("credit_notes/(?P<credit_note_id>[^/]+)", CreditNoteApi.as_view()),
    _route("payments", PaymentsApi.as_view()),
    _route("payments/invoice/(?P<invoice_id>[^/]+)", InvoicePaymentsApi.as_view()),
]
