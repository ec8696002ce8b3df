"""Management API for invoices, credit notes and payments (SPEC §9): /api/v1/invoices/, /credit-notes/,
/payments/.

Thin views over billing.invoicing.services (which validate the bodies, name each bad field and refuse
wrong transitions with a 409 naming the status) and billing.invoicing.selectors (organisation-scoped:
another organisation's id is a 404). Money is a string with the currency's minor-unit digits (`53.90`,
`1200` for JPY); quantities and unit amounts are the exact decimal texts the computation used.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.common import FilteredListApi, body_object
from billing.inputs import uuid_value
from billing.invoicing.compute import LINE_FIELDS, decimal_text
from billing.invoicing.document import credit_note_pdf, invoice_parties, invoice_pdf, pdf_filename
from billing.invoicing.drift import DriftLine, InvoiceDrift, invoice_drift
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, InvoiceStatus, Payment, PaymentPart
from billing.invoicing.selectors import (
    credit_note_get,
    credit_notes_list,
    invoice_get,
    invoices_list,
    payment_get,
    payments_list,
)
from billing.invoicing.services import (
    credit_note_create,
    invoice_approve,
    invoice_discard,
    invoice_generate,
    invoice_void,
    payment_record,
)
from billing.invoicing.upcoming import contract_upcoming_invoice, customer_upcoming_invoices
from billing.rating import CURRENCY_EXPONENTS
from billing.selectors import contract_get, customer_get
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import Conflict, NotFound, ValidationFailed
from zenskar_site.lib.openapi import error_response
from zenskar_site.lib.pagination import paginated_response
from zenskar_site.lib.text import printable

GENERATE_FIELDS = ("contract_id", "from_date", "to_date")


def money_text(amount: Decimal, currency: str) -> str:
    """`amount` with exactly the currency's minor-unit digits (stored with 4 places: `53.9000` -> `53.90`)."""
    places = CURRENCY_EXPONENTS.get(currency.upper(), 4)
    return format(Decimal(amount).quantize(Decimal(1).scaleb(-places)), "f")


@extend_schema_field(OpenApiTypes.STR)
class Money(serializers.Field):
    """An amount of the object's currency (`currency_of` reads it from the object), as a string."""

    def __init__(self, *, currency_of: Any = lambda obj: obj.currency, **kwargs: Any) -> None:
        kwargs["source"] = "*"
        kwargs["read_only"] = True
        self.currency_of = currency_of
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str:
        return money_text(getattr(value, str(self.field_name)), self.currency_of(value))


class InvoiceLineOutput(serializers.ModelSerializer[InvoiceLine]):
    product_id = serializers.UUIDField(read_only=True, allow_null=True)
    pricing_id = serializers.UUIDField(read_only=True, allow_null=True)
    amount = Money(currency_of=lambda line: line.invoice.currency)
    breakdown = serializers.JSONField(help_text="Proration, tiers, packages or matrix cells, each with its amount.")

    class Meta:
        model = InvoiceLine
        fields = ["id", *LINE_FIELDS]


INVOICE_MONEY = ("subtotal", "tax", "total", "amount_credited", "amount_paid", "amount_due")


class InvoiceOutput(serializers.ModelSerializer[Invoice]):
    customer_id = serializers.UUIDField(read_only=True)
    contract_id = serializers.UUIDField(read_only=True)
    tax_rate = serializers.SerializerMethodField(help_text="Percent.")
    subtotal = Money()
    tax = Money()
    total = Money()
    amount_credited = Money()
    amount_paid = Money()
    amount_due = Money()
    flagged = serializers.JSONField(help_text="What a person must look at before approving.")

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "status",
            "kind",
            "customer_id",
            "contract_id",
            "currency",
            "period_start",
            "period_end",
            "issue_date",
            "due_date",
            "tax_rate",
            *INVOICE_MONEY,
            "flagged",
            "void_reason",
            "created_at",
            "updated_at",
            "computed_at",
            "approved_at",
            "voided_at",
        ]

    def get_tax_rate(self, obj: Invoice) -> str:
        return format(Decimal(obj.tax_rate).normalize(), "f")


class DriftLineOutput(serializers.Serializer[Any]):
    """Documentation of a drift line (billing.invoicing.drift.DriftLine); quantities are exact decimal texts."""

    description = serializers.CharField()
    product_id = serializers.UUIDField(allow_null=True)
    pricing_id = serializers.UUIDField(allow_null=True)
    pricing_type = serializers.CharField()
    period_start = serializers.DateField(help_text="The period the line bills (and an adjustment corrects).")
    period_end = serializers.DateField(help_text="Exclusive.")
    unit = serializers.CharField()
    billed_quantity = serializers.CharField(help_text="On the approved invoice.")
    billed_amount = serializers.CharField()
    fresh_quantity = serializers.CharField(help_text="From the current metric values.")
    fresh_amount = serializers.CharField()
    adjusted_quantity = serializers.CharField(help_text="Already billed by adjustments on later approved invoices.")
    adjusted_amount = serializers.CharField()
    quantity = serializers.CharField(help_text="Still to settle: fresh - billed - adjusted.")
    amount = serializers.CharField(help_text="Still to settle: positive, billed on the next draft; negative, credited.")


class SuggestedCreditNoteOutput(serializers.Serializer[Any]):
    credit_note_amount = serializers.CharField(help_text="At most what the invoice still owes.")
    reason = serializers.CharField()


class DriftOutput(serializers.Serializer[Any]):
    """Documentation of an approved invoice's drift (billing.invoicing.drift.InvoiceDrift)."""

    increases = DriftLineOutput(many=True)
    decreases = DriftLineOutput(many=True)
    lines = DriftLineOutput(many=True, help_text="Every line whose fresh computation differs from what was billed.")
    increase_amount = serializers.CharField(help_text="Not billed yet (before tax).")
    adjustment_invoice_id = serializers.UUIDField(
        allow_null=True, help_text="The draft carrying the increases; null: the contract's upcoming invoice."
    )
    decrease_amount = serializers.CharField(help_text="Before tax, as a positive amount.")
    credit_amount = serializers.CharField(help_text="The decrease with tax, less what was already credited.")
    suggested_credit_note = SuggestedCreditNoteOutput(allow_null=True)


def drift_line_json(line: DriftLine, currency: str) -> dict[str, Any]:
    return {
        "description": line.description,
        "product_id": line.product_id,
        "pricing_id": line.pricing_id,
        "pricing_type": line.pricing_type,
        "period_start": line.period_start.isoformat(),
        "period_end": line.period_end.isoformat(),
        "unit": line.unit,
        "billed_quantity": decimal_text(line.billed_quantity),
        "billed_amount": money_text(line.billed_amount, currency),
        "fresh_quantity": decimal_text(line.fresh_quantity),
        "fresh_amount": money_text(line.fresh_amount, currency),
        "adjusted_quantity": decimal_text(line.adjusted_quantity),
        "adjusted_amount": money_text(line.adjusted_amount, currency),
        "quantity": decimal_text(line.quantity),
        "amount": money_text(line.amount, currency),
    }


def drift_json(drift: InvoiceDrift, *, number: str | None) -> dict[str, Any]:
    currency = drift.currency
    suggested = None
    if drift.suggested_credit_amount > 0:
        suggested = {
            "credit_note_amount": money_text(drift.suggested_credit_amount, currency),
            "reason": f"Usage decreased after {number or 'the invoice'} was approved.",
        }
    return {
        "increases": [drift_line_json(line, currency) for line in drift.increases],
        "decreases": [drift_line_json(line, currency) for line in drift.decreases],
        "lines": [drift_line_json(line, currency) for line in drift.lines],
        "increase_amount": money_text(drift.increase_amount, currency),
        "adjustment_invoice_id": str(drift.adjustment_invoice_id) if drift.adjustment_invoice_id else None,
        "decrease_amount": money_text(drift.decrease_amount, currency),
        "credit_amount": money_text(drift.credit_amount, currency),
        "suggested_credit_note": suggested,
    }


class SellerOutput(serializers.Serializer[Any]):
    name = serializers.CharField()


class BilledCustomerOutput(serializers.Serializer[Any]):
    customer_name = serializers.CharField()
    email = serializers.CharField(help_text="Empty when the customer has none.")
    address = serializers.ListField(child=serializers.CharField(), help_text="The address lines the document shows.")


class PartiesOutput(serializers.Serializer[Any]):
    """Documentation of billing.invoicing.document.parties_of's value."""

    seller = SellerOutput()
    customer = BilledCustomerOutput()


class InvoiceDetailOutput(InvoiceOutput):
    line_items = InvoiceLineOutput(many=True, source="lines", read_only=True)
    parties = serializers.SerializerMethodField(
        help_text="The seller and the customer as the invoice document shows them: frozen at approval (a later "
        "change to the customer or the organisation's name does not reach an issued invoice); a draft shows "
        "them as they are now."
    )
    drift = serializers.SerializerMethodField(
        help_text="An approved invoice whose usage changed since approval (it never changes): increases billed "
        "as adjustment lines on the contract's next draft, decreases and the credit note they suggest. Null for "
        "any other status."
    )

    class Meta(InvoiceOutput.Meta):
        fields = [*InvoiceOutput.Meta.fields, "parties", "line_items", "drift"]

    @extend_schema_field(PartiesOutput())
    def get_parties(self, obj: Invoice) -> dict[str, Any]:
        return invoice_parties(obj)

    @extend_schema_field(DriftOutput(allow_null=True))
    def get_drift(self, obj: Invoice) -> dict[str, Any] | None:
        drift = invoice_drift(invoice=obj)
        return drift_json(drift, number=obj.number) if drift is not None else None


class UpcomingLineOutput(InvoiceLineOutput):
    id = serializers.UUIDField(read_only=True, allow_null=True, help_text="Null: an upcoming line is not stored.")


class UpcomingInvoiceOutput(InvoiceDetailOutput):
    """A contract's upcoming invoice (status `upcoming`): computed when asked, not stored, so no id."""

    id = serializers.UUIDField(read_only=True, allow_null=True, help_text="Null: an upcoming invoice is not stored.")
    line_items = UpcomingLineOutput(many=True, source="upcoming_lines", read_only=True)

    @extend_schema_field(DriftOutput(allow_null=True))
    def get_drift(self, obj: Invoice) -> dict[str, Any] | None:
        return None


class CreditNoteOutput(serializers.ModelSerializer[CreditNote]):
    invoice_id = serializers.UUIDField(read_only=True)
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)
    customer_id = serializers.UUIDField(source="invoice.customer_id", read_only=True)
    amount = Money()

    class Meta:
        model = CreditNote
        fields = ["id", "number", "invoice_id", "invoice_number", "customer_id", "amount", "currency", "reason"]
        fields += ["created_at"]


class PaymentPartOutput(serializers.ModelSerializer[PaymentPart]):
    invoice_id = serializers.UUIDField(read_only=True)
    amount = Money(currency_of=lambda part: part.payment.currency_code)

    class Meta:
        model = PaymentPart
        fields = ["invoice_id", "amount"]


class PaymentOutput(serializers.ModelSerializer[Payment]):
    amount = Money(currency_of=lambda payment: payment.currency_code)
    payment_parts = PaymentPartOutput(many=True, source="parts", read_only=True)

    class Meta:
        model = Payment
        fields = ["id", "amount", "currency_code", "payment_method", "timestamp", "payment_parts", "created_at"]


# --- request bodies (documentation: the services validate and name each bad field) ---


class GenerateInput(serializers.Serializer[Any]):
    contract_id = serializers.UUIDField()
    from_date = serializers.DateField(help_text="First day billed (or Unix seconds).")
    to_date = serializers.DateField(help_text="Exclusive: the day after the last day billed (or Unix seconds).")


class VoidInput(serializers.Serializer[Any]):
    reason = serializers.CharField(help_text="Why (kept on the invoice and in the audit trail).")


class DiscardInput(serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, help_text="Why (kept in the audit trail).")


class CreditNoteInput(serializers.Serializer[Any]):
    credit_note_amount = serializers.DecimalField(
        max_digits=15, decimal_places=4, coerce_to_string=True, help_text="At most what the invoice still owes."
    )
    reason = serializers.CharField()


class PaymentPartInput(serializers.Serializer[Any]):
    invoice_id = serializers.UUIDField()
    amount = serializers.DecimalField(max_digits=15, decimal_places=4, coerce_to_string=True)


class PaymentInput(serializers.Serializer[Any]):
    amount = serializers.DecimalField(
        max_digits=15, decimal_places=4, coerce_to_string=True, help_text="The sum of the parts."
    )
    currency_code = serializers.CharField(help_text="ISO 4217; every invoice paid must be in it.")
    payment_method = serializers.CharField(required=False, help_text="card, cash, bank_transfer, ...")
    timestamp = serializers.DateTimeField(required=False, help_text="When it was paid (now if absent).")
    payment_parts = PaymentPartInput(many=True, help_text="Each part at most what its invoice still owes.")


# --- filters ---


class InvoiceFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=InvoiceStatus.choices)
    customer_id = django_filters.UUIDFilter()
    contract_id = django_filters.UUIDFilter()
    number = django_filters.CharFilter()

    class Meta:
        model = Invoice
        fields = ["status", "customer_id", "contract_id", "number"]


class CreditNoteFilter(django_filters.FilterSet):
    invoice_id = django_filters.UUIDFilter()
    customer_id = django_filters.UUIDFilter(field_name="invoice__customer_id")

    class Meta:
        model = CreditNote
        fields = ["invoice_id"]


class PaymentFilter(django_filters.FilterSet):
    invoice_id = django_filters.UUIDFilter(method="filter_invoice", help_text="Payments with a part on this invoice.")
    customer_id = django_filters.UUIDFilter(method="filter_customer", help_text="Payments of this customer's invoices.")
    currency_code = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Payment
        fields = ["currency_code"]

    # A subquery, not a join: a payment with two parts would otherwise be listed twice.
    def filter_invoice(self, queryset: QuerySet[Payment], name: str, value: Any) -> QuerySet[Payment]:
        return queryset.filter(id__in=PaymentPart.objects.filter(invoice_id=value).values("payment_id"))

    def filter_customer(self, queryset: QuerySet[Payment], name: str, value: Any) -> QuerySet[Payment]:
        return queryset.filter(id__in=PaymentPart.objects.filter(invoice__customer_id=value).values("payment_id"))


def fields_refused(body: dict[str, Any], known: tuple[str, ...]) -> None:
    """A 400 naming every field the operation does not read (a typo is not silently ignored)."""
    unknown = sorted((printable(str(key)) for key in body if key not in known), key=str)
    if unknown:
        raise ValidationFailed({key: ["Unknown field."] for key in unknown})


def invoice_approve_refusing_void(*, request: Request, invoice_id: Any) -> Invoice:
    """Approve; a void invoice is a 409 (the service returns any frozen invoice unchanged, which suits
    approving twice, but a client that approves a void invoice must not read a 200 as done). Nothing
    changed when the service returned it, so refusing afterwards leaves no partial state."""
    invoice = invoice_approve(actor=request_actor(request), invoice_id=invoice_id)
    if invoice.status == InvoiceStatus.VOID:
        raise Conflict("Only a draft invoice can be approved; this one is void.")
    return invoice


def invoice_body(request: Request, invoice_id: Any) -> dict[str, Any]:
    invoice = invoice_get(organisation=request_actor(request).organisation, invoice_id=invoice_id)
    return dict(InvoiceDetailOutput(invoice).data)


# --- views ---


class InvoiceListApi(FilteredListApi):
    filterset_class = InvoiceFilter

    def get_queryset(self) -> QuerySet[Invoice]:
        if getattr(self, "swagger_fake_view", False):
            return Invoice.objects.none()
        return invoices_list(organisation=request_actor(self.request).organisation)

    @extend_schema(responses=InvoiceOutput(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(request, lambda page: InvoiceOutput(page, many=True).data)


class InvoiceGenerateApi(APIView):
    @extend_schema(
        request=GenerateInput,
        responses={
            201: InvoiceDetailOutput,
            404: error_response("No contract with that `contract_id` in this organisation."),
            409: error_response("A draft contract bills nothing: activate it."),
        },
    )
    def post(self, request: Request) -> Response:
        body = body_object(request)
        fields_refused(body, GENERATE_FIELDS)
        invoice = invoice_generate(
            actor=request_actor(request),
            contract_id=body.get("contract_id"),
            from_date=body.get("from_date"),
            to_date=body.get("to_date"),
        )
        return Response(invoice_body(request, invoice.id), status=status.HTTP_201_CREATED)


class InvoiceDetailApi(APIView):
    @extend_schema(responses=InvoiceDetailOutput)
    def get(self, request: Request, invoice_id: str) -> Response:
        return Response(invoice_body(request, invoice_id))


class InvoiceApproveApi(APIView):
    @extend_schema(
        request=None,
        responses={
            200: InvoiceDetailOutput,
            409: error_response("Only a draft can be approved (approving an approved invoice returns it)."),
        },
    )
    def post(self, request: Request, invoice_id: str) -> Response:
        invoice = invoice_approve_refusing_void(request=request, invoice_id=invoice_id)
        return Response(invoice_body(request, invoice.id))


class InvoiceVoidApi(APIView):
    @extend_schema(
        request=VoidInput,
        responses={200: InvoiceDetailOutput, 409: error_response("Only an approved invoice without payments.")},
    )
    def post(self, request: Request, invoice_id: str) -> Response:
        body = body_object(request)
        fields_refused(body, ("reason",))
        invoice = invoice_void(actor=request_actor(request), invoice_id=invoice_id, reason=body.get("reason"))
        return Response(invoice_body(request, invoice.id))


class InvoiceDiscardApi(APIView):
    @extend_schema(
        request=DiscardInput,
        responses={200: InvoiceDetailOutput, 409: error_response("Only a draft (or upcoming) invoice.")},
    )
    def post(self, request: Request, invoice_id: str) -> Response:
        body = body_object(request)
        fields_refused(body, ("reason",))
        invoice = invoice_discard(actor=request_actor(request), invoice_id=invoice_id, reason=body.get("reason", ""))
        return Response(invoice_body(request, invoice.id))


class InvoiceCreditNoteListApi(APIView):
    @extend_schema(responses=CreditNoteOutput(many=True))
    def get(self, request: Request, invoice_id: str) -> Response:
        organisation = request_actor(request).organisation
        invoice = invoice_get(organisation=organisation, invoice_id=invoice_id)
        return paginated_response(
            request=request,
            view=self,
            queryset=credit_notes_list(organisation=organisation).filter(invoice=invoice),
            serialize=lambda page: CreditNoteOutput(page, many=True).data,
            ordering="-created_at",
        )

    @extend_schema(
        request=CreditNoteInput,
        responses={
            201: CreditNoteOutput,
            409: error_response("The invoice is not approved and unpaid, or the amount is more than remains."),
        },
    )
    def post(self, request: Request, invoice_id: str) -> Response:
        note = credit_note_create(actor=request_actor(request), invoice_id=invoice_id, data=body_object(request))
        found = credit_note_get(organisation=request_actor(request).organisation, credit_note_id=note.id)
        return Response(CreditNoteOutput(found).data, status=status.HTTP_201_CREATED)


class CreditNoteListApi(FilteredListApi):
    filterset_class = CreditNoteFilter

    def get_queryset(self) -> QuerySet[CreditNote]:
        if getattr(self, "swagger_fake_view", False):
            return CreditNote.objects.none()
        return credit_notes_list(organisation=request_actor(self.request).organisation)

    @extend_schema(responses=CreditNoteOutput(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(request, lambda page: CreditNoteOutput(page, many=True).data)


class CreditNoteDetailApi(APIView):
    @extend_schema(responses=CreditNoteOutput)
    def get(self, request: Request, credit_note_id: str) -> Response:
        note = credit_note_get(organisation=request_actor(request).organisation, credit_note_id=credit_note_id)
        return Response(CreditNoteOutput(note).data)


class PaymentListApi(FilteredListApi):
    filterset_class = PaymentFilter
    ordering = "-timestamp"

    def get_queryset(self) -> QuerySet[Payment]:
        if getattr(self, "swagger_fake_view", False):
            return Payment.objects.none()
        return payments_list(organisation=request_actor(self.request).organisation)

    @extend_schema(responses=PaymentOutput(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(request, lambda page: PaymentOutput(page, many=True).data)

    @extend_schema(
        request=PaymentInput,
        responses={201: PaymentOutput, 409: error_response("An invoice is not payable, or a part is more than due.")},
    )
    def post(self, request: Request) -> Response:
        actor = request_actor(request)
        payment = payment_record(actor=actor, data=body_object(request))
        return Response(
            PaymentOutput(payment_get(organisation=actor.organisation, payment_id=payment.id)).data,
            status=status.HTTP_201_CREATED,
        )


class PaymentDetailApi(APIView):
    @extend_schema(responses=PaymentOutput)
    def get(self, request: Request, payment_id: str) -> Response:
        payment = payment_get(organisation=request_actor(request).organisation, payment_id=payment_id)
        return Response(PaymentOutput(payment).data)


class UpcomingInvoicesOutput(serializers.Serializer[Any]):
    results = UpcomingInvoiceOutput(many=True, help_text="One per billed contract of the customer, oldest first.")


class ContractUpcomingInvoiceApi(APIView):
    @extend_schema(
        responses={
            200: UpcomingInvoiceOutput,
            404: error_response("No contract with that id, or it bills nothing today (draft, disputed, ended)."),
        }
    )
    def get(self, request: Request, contract_id: str) -> Response:
        """The contract's upcoming invoice: its current, open period so far (computed now, not stored)."""
        contract = contract_get(organisation=request_actor(request).organisation, contract_id=contract_id)
        invoice = contract_upcoming_invoice(contract=contract)
        if invoice is None:
            raise NotFound(f"Contract {contract.id} has no open billing period today (it is {contract.status}).")
        return Response(UpcomingInvoiceOutput(invoice).data)


class UpcomingInvoiceListApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "customer_id", OpenApiTypes.UUID, required=True, description="The customer whose invoices to compute."
            )
        ],
        responses={
            200: UpcomingInvoicesOutput,
            404: error_response("No customer with that `customer_id` in this organisation."),
        },
    )
    def get(self, request: Request) -> Response:
        """The upcoming invoice of each of the customer's billed contracts: `{"results": [...]}`, one per
        contract with an open period today (computed now, not stored)."""
        raw = request.query_params.get("customer_id")
        if raw in (None, ""):
            raise ValidationFailed({"customer_id": ["This field is required: the customer's id."]})
        if uuid_value(raw) is None:
            raise ValidationFailed({"customer_id": ["Expected a UUID."]})
        customer = customer_get(organisation=request_actor(request).organisation, customer_id=raw)
        invoices = customer_upcoming_invoices(customer=customer)
        return Response({"results": UpcomingInvoiceOutput(invoices, many=True).data})


# --- PDFs ---


class FirstRenderer(BaseContentNegotiation):
    """The PDF views answer a PDF or a JSON error whatever `Accept` says (no 406 for `application/pdf`)."""

    def select_parser(self, request: Any, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return (renderers[0], renderers[0].media_type)


PDF_RESPONSE = OpenApiResponse(response=OpenApiTypes.BINARY, description="The PDF (application/pdf).")


def pdf_response(content: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def invoice_pdf_response(invoice: Invoice) -> HttpResponse:
    name = invoice.number if invoice.number else f"draft-{invoice.id}"
    return pdf_response(invoice_pdf(invoice=invoice), pdf_filename(name))


class InvoicePdfApi(APIView):
    content_negotiation_class = FirstRenderer

    @extend_schema(
        responses={(200, "application/pdf"): PDF_RESPONSE},
        description="The invoice as a PDF, rendered from the invoice page's document: the same bytes every "
        "time for an approved invoice. A draft's PDF is marked DRAFT (and changes with its lines).",
    )
    def get(self, request: Request, invoice_id: str) -> HttpResponse:
        invoice = invoice_get(organisation=request_actor(request).organisation, invoice_id=invoice_id)
        return invoice_pdf_response(invoice)


class CreditNotePdfApi(APIView):
    content_negotiation_class = FirstRenderer

    @extend_schema(responses={(200, "application/pdf"): PDF_RESPONSE}, description="The credit note as a PDF.")
    def get(self, request: Request, credit_note_id: str) -> HttpResponse:
        note = credit_note_get(organisation=request_actor(request).organisation, credit_note_id=credit_note_id)
        return pdf_response(credit_note_pdf(note=note), pdf_filename(note.number))
