"""Customers, the catalogue (products, pricings, plans) and contracts (SPEC §8).

Every row belongs to one organisation. Child rows (pricings, phases, phase pricings) repeat the
organisation of their parent so that every read and every reference check is one filter on it; the
services refuse a reference that crosses organisations before anything is written.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q

from metrics.models import BillableMetric
from zenskar_site.accounts.models import Organisation


class Customer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="customers")
    # Usage records name a customer by this id (or by `id`); unique in the organisation when given.
    external_id = models.CharField(max_length=255, null=True, blank=True)
    customer_name = models.CharField(max_length=255)
    email = models.CharField(max_length=254, blank=True, default="")
    phone_number = models.CharField(max_length=64, blank=True, default="")
    address_line1 = models.CharField(max_length=255, blank=True, default="")
    address_line2 = models.CharField(max_length=255, blank=True, default="")
    address_line3 = models.CharField(max_length=255, blank=True, default="")
    address_city = models.CharField(max_length=255, blank=True, default="")
    address_state = models.CharField(max_length=255, blank=True, default="")
    address_zipCode = models.CharField(max_length=64, blank=True, default="")
    address_country = models.CharField(max_length=255, blank=True, default="")
    address_country_code = models.CharField(max_length=8, blank=True, default="")
    ship_to_line1 = models.CharField(max_length=255, blank=True, default="")
    ship_to_line2 = models.CharField(max_length=255, blank=True, default="")
    ship_to_line3 = models.CharField(max_length=255, blank=True, default="")
    ship_to_city = models.CharField(max_length=255, blank=True, default="")
    ship_to_state = models.CharField(max_length=255, blank=True, default="")
    ship_to_zipCode = models.CharField(max_length=64, blank=True, default="")
    ship_to_country = models.CharField(max_length=255, blank=True, default="")
    ship_to_country_code = models.CharField(max_length=8, blank=True, default="")
    tax_rate = models.DecimalField(max_digits=7, decimal_places=4, default=0, help_text="Percent, 0 to 100.")
    payment_terms_days = models.PositiveIntegerField(default=30)
    custom_data = models.JSONField(default=dict, blank=True)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "external_id"],
                condition=Q(external_id__isnull=False),
                name="customer_unique_external_id",
            ),
            models.CheckConstraint(condition=~Q(external_id=""), name="customer_external_id_not_empty"),
            models.CheckConstraint(condition=~Q(customer_name=""), name="customer_name_not_empty"),
            models.CheckConstraint(condition=Q(tax_rate__gte=0, tax_rate__lte=100), name="customer_tax_rate_percent"),
            models.CheckConstraint(condition=Q(payment_terms_days__lte=3650), name="customer_payment_terms_range"),
        ]
        indexes = [models.Index(fields=["organisation", "created_at"], name="customer_org_created_idx")]

    def __str__(self) -> str:
        return f"{self.customer_name} ({self.external_id})" if self.external_id else self.customer_name


class ProductType(models.TextChoices):
    FIXED = "fixed", "Fixed"
    METERED = "metered", "Metered"


class Product(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="products")
    name = models.CharField(max_length=255)
    sku = models.CharField(max_length=255, null=True, blank=True)
    description = models.TextField(blank=True, default="")
    type = models.CharField(max_length=8, choices=ProductType.choices)
    is_active = models.BooleanField(default=True)
    tax_codes = models.JSONField(default=list, blank=True)
    custom_attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "sku"], condition=Q(sku__isnull=False), name="product_unique_sku"
            ),
            models.CheckConstraint(condition=~Q(sku=""), name="product_sku_not_empty"),
            models.CheckConstraint(condition=~Q(name=""), name="product_name_not_empty"),
            models.CheckConstraint(condition=Q(type__in=ProductType.values), name="product_type_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class QuantityType(models.TextChoices):
    FIXED = "fixed", "Fixed"
    METERED = "metered", "Metered"


class Pricing(models.Model):
    """How a product is charged: a pricing model, a quantity (fixed, or a billable metric) and a cadence."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="pricings")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="pricings")
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    # Normalised by billing.rating.pricing_data_normalise: amounts as decimal strings, never floats.
    pricing_data = models.JSONField()
    pricing_type = models.CharField(max_length=16)
    # ISO 4217 when the pricing names one; a contract in another currency refuses it. Blank: any currency.
    currency = models.CharField(max_length=3, blank=True, default="")
    quantity_type = models.CharField(max_length=8, choices=QuantityType.choices)
    metric = models.ForeignKey(BillableMetric, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # At most 15 significant digits, which SQLite's NUMERIC storage keeps exactly (PostgreSQL's numeric
    # keeps any); money amounts live in pricing_data as decimal strings.
    quantity = models.DecimalField(max_digits=15, decimal_places=6, null=True, blank=True)
    unit = models.CharField(max_length=64, blank=True, default="")
    label = models.CharField(max_length=255, blank=True, default="")
    cadence = models.CharField(max_length=8, default="P1M", help_text="ISO 8601 duration: P1D, P1W, P1M, P3M...")
    is_recurring = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity_type__in=QuantityType.values), name="pricing_quantity_type"),
            # A quantity is stored once: a metric for a metered pricing, a number for a fixed one.
            models.CheckConstraint(
                condition=(
                    Q(quantity_type=QuantityType.METERED, metric__isnull=False, quantity__isnull=True)
                    | Q(quantity_type=QuantityType.FIXED, metric__isnull=True, quantity__isnull=False, quantity__gte=0)
                ),
                name="pricing_quantity_matches_type",
            ),
            models.CheckConstraint(condition=~Q(cadence=""), name="pricing_cadence_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.product.name}: {self.name or self.pricing_type}"


class PlanStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    ARCHIVED = "archived", "Archived"


class Plan(models.Model):
    """A reusable, named list of product pricings in one currency."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="plans")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=8, choices=PlanStatus.choices, default=PlanStatus.ACTIVE)
    custom_attributes = models.JSONField(default=dict, blank=True)
    pricings = models.ManyToManyField(Pricing, through="PlanPricing", related_name="plans")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=PlanStatus.values), name="plan_status_valid"),
            models.CheckConstraint(condition=~Q(name=""), name="plan_name_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.currency})"


class PlanPricing(models.Model):
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="plan_pricings")
    pricing = models.ForeignKey(Pricing, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["plan", "pricing"], name="plan_pricing_unique")]

    def __str__(self) -> str:
        return f"{self.plan_id} / {self.pricing_id}"


class ContractStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    EXPIRED = "expired", "Expired"
    DISPUTED = "disputed", "Disputed"


class RenewalPolicy(models.TextChoices):
    RENEW_WITH_DEFAULT_CONTRACT = "renew_with_default_contract", "Renew with the default contract"
    RENEW_WITH_EXISTING = "renew_with_existing", "Renew with the existing contract"
    DO_NOT_RENEW = "do_not_renew", "Do not renew"


class Contract(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="contracts")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="contracts")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=8, choices=ContractStatus.choices, default=ContractStatus.DRAFT)
    currency = models.CharField(max_length=3)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True, help_text="Exclusive: billing stops before this day.")
    # Billing periods step from this day (the start date unless given).
    anchor_date = models.DateField()
    renewal_policy = models.CharField(max_length=32, choices=RenewalPolicy.choices, default=RenewalPolicy.DO_NOT_RENEW)
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.SET_NULL, related_name="contracts")
    custom_attributes = models.JSONField(default=dict, blank=True)
    expiry_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=ContractStatus.values), name="contract_status_valid"),
            models.CheckConstraint(
                condition=Q(renewal_policy__in=RenewalPolicy.values), name="contract_renewal_policy_valid"
            ),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gt=F("start_date")), name="contract_dates_ordered"
            ),
            # An expired contract has its expiry date; no other status has one.
            models.CheckConstraint(
                condition=Q(status=ContractStatus.EXPIRED, expiry_date__isnull=False)
                | (~Q(status=ContractStatus.EXPIRED) & Q(expiry_date__isnull=True)),
                name="contract_expiry_matches_status",
            ),
            models.CheckConstraint(condition=~Q(name=""), name="contract_name_not_empty"),
        ]
        indexes = [models.Index(fields=["organisation", "created_at"], name="contract_org_created_idx")]

    def __str__(self) -> str:
        return self.name


class PhaseType(models.TextChoices):
    ACTIVE = "active", "Active"
    TRIAL = "trial", "Trial"
    PAUSE = "pause", "Pause"


class ContractPhase(models.Model):
    """A time slice of a contract with its own pricings; trial and pause phases charge nothing."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="phases")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    phase_type = models.CharField(max_length=8, choices=PhaseType.choices, default=PhaseType.ACTIVE)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    source_plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    phase_metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["start_date", "created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(phase_type__in=PhaseType.values), name="phase_type_valid"),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gt=F("start_date")), name="phase_dates_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.phase_type})"


class PhasePricing(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    phase = models.ForeignKey(ContractPhase, on_delete=models.CASCADE, related_name="phase_pricings")
    pricing = models.ForeignKey(Pricing, on_delete=models.PROTECT, related_name="phase_pricings")
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    anchor_date = models.DateField(null=True, blank=True)
    external_id = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    custom_data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["phase", "pricing"], name="phase_pricing_unique"),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(start_date__isnull=True) | Q(end_date__gt=F("start_date")),
                name="phase_pricing_dates_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.phase_id} / {self.pricing_id}"


class UnpausePolicy(models.TextChoices):
    EXTEND = "extend", "Extend the contract by the paused time"
    OVERLAP = "overlap", "Keep the contract's end date"


class ContractPause(models.Model):
    """A pause: fixed fees stop for [start_date, end_date); usage in it is still billed."""

    contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="pauses")
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    unpause_extension_policy = models.CharField(max_length=8, choices=UnpausePolicy.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["start_date", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(unpause_extension_policy__in=UnpausePolicy.values), name="pause_policy_valid"
            ),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gt=F("start_date")), name="pause_dates_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contract_id} paused {self.start_date}"


# Invoices live in their own module; Django finds models through the app's models module.
from billing.invoicing.models import (  # noqa: E402, F401
    CreditNote,
    DocumentSequence,
    Invoice,
    InvoiceLine,
    Payment,
    PaymentPart,
)
