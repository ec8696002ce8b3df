"""Invoices, their lines, credit notes, payments and the organisation's document numbers (SPEC §9).

Money is stored rounded to the currency's minor unit (at most 4 places: CLF); 15 significant digits,
which SQLite's NUMERIC storage keeps exactly. Quantities and unit amounts are exact decimal texts:
a metric value or a unit price may carry more digits than a money column needs.

Approved invoices are frozen in the database (migration 0002_invoices_frozen): their lines and totals
refuse UPDATE and DELETE; only the settlement columns (status, credited, paid, due, void) move.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q

from billing.models import Contract, Customer, Pricing, Product
from zenskar_site.accounts.models import Organisation

MONEY_DIGITS = 15
MONEY_PLACES = 4


class InvoiceStatus(models.TextChoices):
    UPCOMING = "upcoming", "Upcoming"
    DRAFT = "draft", "Draft"
    APPROVED = "approved", "Approved"
    PARTIALLY_PAID = "partially_paid", "Partially paid"
    PAID = "paid", "Paid"
    VOID = "void", "Void"
    DISCARDED = "discarded", "Discarded"


# Statuses whose lines and totals are frozen (the database triggers list the same).
FROZEN_STATUSES = (InvoiceStatus.APPROVED, InvoiceStatus.PARTIALLY_PAID, InvoiceStatus.PAID, InvoiceStatus.VOID)
# Statuses whose lines follow the metric values.
LIVE_STATUSES = (InvoiceStatus.UPCOMING, InvoiceStatus.DRAFT)


class InvoiceKind(models.TextChoices):
    PERIOD = "period", "A contract's billing period"  # made by the generator: one per contract and period
    ON_DEMAND = "on_demand", "On demand"  # POST /invoices/generate_invoice: any range, any number


class Invoice(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="invoices")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    contract = models.ForeignKey(Contract, on_delete=models.PROTECT, related_name="invoices")
    kind = models.CharField(max_length=12, choices=InvoiceKind.choices, default=InvoiceKind.PERIOD)
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT)
    currency = models.CharField(max_length=3)
    period_start = models.DateField()
    period_end = models.DateField(help_text="Exclusive.")
    # Set at approval: the organisation's gap-free sequence (INV-000001).
    number = models.CharField(max_length=32, null=True, blank=True)
    issue_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    subtotal = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    tax_rate = models.DecimalField(max_digits=7, decimal_places=4, default=0)
    tax = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    total = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    amount_credited = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    amount_paid = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    amount_due = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    flagged = models.JSONField(default=list, blank=True)  # what a person must look at before approving
    void_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    # The seller and the customer as the document shows them (names, email, address lines), copied at
    # approval: renaming the organisation or the customer, or moving the customer, later never changes an
    # issued invoice or its credit notes. None while the invoice is live (the document then reads them
    # from the organisation and the customer). See billing.invoicing.document.invoice_parties.
    parties = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-period_start", "-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=InvoiceStatus.values), name="invoice_status_valid"),
            models.CheckConstraint(condition=Q(kind__in=InvoiceKind.values), name="invoice_kind_valid"),
            models.CheckConstraint(condition=Q(period_end__gt=F("period_start")), name="invoice_period_ordered"),
            # The generator's insert is the claim: a period's invoice is never made twice, and a discarded
            # one is not made again (generate one on demand instead).
            models.UniqueConstraint(
                fields=["contract", "period_start", "period_end"],
                condition=Q(kind="period"),
                name="invoice_one_per_contract_period",
            ),
            models.UniqueConstraint(
                fields=["organisation", "number"], condition=Q(number__isnull=False), name="invoice_number_unique"
            ),
            # A frozen invoice has its number and dates; a live one has none.
            models.CheckConstraint(
                condition=(
                    Q(status__in=[s.value for s in FROZEN_STATUSES], number__isnull=False, issue_date__isnull=False)
                    | (~Q(status__in=[s.value for s in FROZEN_STATUSES]) & Q(number__isnull=True))
                ),
                name="invoice_number_when_approved",
            ),
            models.CheckConstraint(
                condition=Q(amount_credited__gte=0, amount_paid__gte=0, amount_due__gte=0),
                name="invoice_settlement_not_negative",
            ),
            models.CheckConstraint(
                condition=~Q(status=InvoiceStatus.VOID) | Q(amount_due=0), name="invoice_void_owes_nothing"
            ),
        ]
        indexes = [
            models.Index(fields=["organisation", "created_at"], name="invoice_org_created_idx"),
            models.Index(fields=["organisation", "status"], name="invoice_org_status_idx"),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft {self.period_start} to {self.period_end}"


class InvoiceLine(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    description = models.CharField(max_length=500)
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    pricing = models.ForeignKey(Pricing, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    pricing_type = models.CharField(max_length=16, blank=True, default="")
    period_start = models.DateField()
    period_end = models.DateField()
    quantity = models.CharField(max_length=80, default="0")  # exact decimal text
    unit = models.CharField(max_length=64, blank=True, default="")
    unit_amount = models.CharField(max_length=80, blank=True, default="")  # exact decimal text; blank with a breakdown
    # Proration, tiers, packages or matrix cells: each part with its quantity, unit amount and exact amount.
    breakdown = models.JSONField(default=dict, blank=True)
    amount = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    # An adjustment line corrects an earlier, approved period: it names it.
    adjustment_of_start = models.DateField(null=True, blank=True)
    adjustment_of_end = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.description


class DocumentKind(models.TextChoices):
    INVOICE = "invoice", "INV"
    CREDIT_NOTE = "credit_note", "CN"


class DocumentSequence(models.Model):
    """The next number of an organisation's documents of one kind, locked by whoever takes it."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=12, choices=DocumentKind.choices)
    next_value = models.PositiveBigIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organisation", "kind"], name="document_sequence_unique"),
            models.CheckConstraint(condition=Q(next_value__gte=1), name="document_sequence_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} next {self.next_value}"


class CreditNote(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=32)
    amount = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    currency = models.CharField(max_length=3)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["organisation", "number"], name="credit_note_number_unique"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_note_amount_positive"),
        ]

    def __str__(self) -> str:
        return self.number


class Payment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    amount = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    currency_code = models.CharField(max_length=3)
    payment_method = models.CharField(max_length=64, blank=True, default="")
    timestamp = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-timestamp"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive")]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency_code}"


class PaymentPart(models.Model):
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="parts")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payment_parts")
    amount = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["payment", "invoice"], name="payment_part_unique"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_part_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.payment_id} -> {self.invoice_id}: {self.amount}"
