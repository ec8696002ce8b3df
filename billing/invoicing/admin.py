"""The Django admin for invoices, credit notes and payments, scoped to the organisation (imported by
billing.admin, which Django discovers).

A draft's lines and totals are a computation from the metric values (a hand edit would be undone by the
next recompute), so a draft changes through its services only: the actions approve and discard it. Once
approved an invoice is read-only here, as in the database (its triggers refuse changes to its lines and
totals). Credit notes and payments are issued from the invoice page or the API, which validate them;
here they are shown.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.invoicing.models import LIVE_STATUSES, CreditNote, Invoice, InvoiceLine, Payment, PaymentPart
from billing.invoicing.services import invoice_approve, invoice_discard
from zenskar_site.accounts.admin_scoping import OrganisationScopedAdmin, ShownInline, admin_actor, organisation_ids
from zenskar_site.lib.errors import DomainError

ACTION_LIMIT = 500


class InvoiceLineInline(ShownInline):
    model = InvoiceLine
    fields = ("position", "description", "period_start", "period_end", "quantity", "unit", "unit_amount", "amount")
    readonly_fields = fields


class CreditNoteInline(ShownInline):
    model = CreditNote
    fields = ("number", "amount", "reason", "created_at")
    readonly_fields = fields


class PaymentPartInline(ShownInline):
    model = PaymentPart
    fields = ("invoice", "amount")
    readonly_fields = fields


class ReadOnlyAdmin(OrganisationScopedAdmin):
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(OrganisationScopedAdmin):
    list_display = ["__str__", "customer", "organisation", "status", "period_start", "period_end", "total", "currency"]
    list_filter = ["status", "kind"]
    list_select_related = ["customer", "organisation"]
    search_fields = ["number", "customer__customer_name", "customer__external_id"]
    date_hierarchy = "period_start"
    inlines = [InvoiceLineInline, CreditNoteInline]
    actions = ["approve_selected", "discard_selected"]
    fields = (
        "organisation",
        "customer",
        "contract",
        "kind",
        "status",
        "number",
        "currency",
        "period_start",
        "period_end",
        "issue_date",
        "due_date",
        "subtotal",
        "tax_rate",
        "tax",
        "total",
        "amount_credited",
        "amount_paid",
        "amount_due",
        "flagged",
        "void_reason",
        "computed_at",
        "approved_at",
        "voided_at",
    )
    readonly_fields = fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Only a live invoice may change, and only through the actions (approve, discard).
        if obj is not None and obj.status not in LIVE_STATUSES:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _each(self, request: HttpRequest, queryset: QuerySet[Invoice], action: Any, verb: str) -> None:
        allowed = None if request.user.is_superuser else set(organisation_ids(request, admin_only=True))
        done = 0
        for invoice in queryset.select_related("organisation")[:ACTION_LIMIT]:
            if allowed is not None and invoice.organisation_id not in allowed:
                messages.error(request, f"{invoice}: only an admin of its organisation may change it.")
                continue
            try:
                action(actor=admin_actor(request, invoice.organisation), invoice_id=invoice.pk)
                done += 1
            except DomainError as exc:
                messages.error(request, f"{invoice}: {exc.detail}")
        messages.success(request, f"{done} invoice(s) {verb}.")

    @admin.action(description="Approve selected drafts", permissions=["change"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(request, queryset, invoice_approve, "approved")

    @admin.action(description="Discard selected drafts", permissions=["change"])
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(request, queryset, invoice_discard, "discarded")


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin):
    list_display = ["number", "invoice", "organisation", "amount", "currency", "created_at"]
    list_select_related = ["invoice", "organisation"]
    search_fields = ["number", "invoice__number"]
    fields = ("organisation", "invoice", "number", "amount", "currency", "reason", "created_at")
    readonly_fields = fields


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "organisation", "payment_method", "timestamp"]
    list_select_related = ["organisation"]
    list_filter = ["payment_method"]
    inlines = [PaymentPartInline]
    fields = ("organisation", "amount", "currency_code", "payment_method", "timestamp", "created_at")
    readonly_fields = fields
