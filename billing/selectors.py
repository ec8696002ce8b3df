"""Reads for customers, the catalogue and contracts; every read is scoped to one organisation."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from billing.inputs import uuid_value
from billing.models import (
    Contract,
    ContractPause,
    ContractPhase,
    Customer,
    PhasePricing,
    Plan,
    PlanPricing,
    Pricing,
    Product,
)
from zenskar_site.accounts.models import AuditEntry, Organisation
from zenskar_site.lib.errors import NotFound


def _one(queryset: QuerySet[Any], *, key: Any, what: str) -> Any:
    """The row with id `key` in `queryset` (already scoped); a malformed or foreign id is not found."""
    parsed = uuid_value(key)
    found = queryset.filter(id=parsed).first() if parsed is not None else None
    if found is None:
        raise NotFound(f"No {what} with id {str(key)[:100]!r} in this organisation.")
    return found


def customers_list(*, organisation: Organisation, include_archived: bool = False) -> QuerySet[Customer]:
    customers = Customer.objects.filter(organisation=organisation)
    if not include_archived:
        customers = customers.filter(archived=False)
    return customers


def customer_get(*, organisation: Organisation, customer_id: Any) -> Customer:
    customer: Customer = _one(Customer.objects.filter(organisation=organisation), key=customer_id, what="customer")
    return customer


def products_list(*, organisation: Organisation) -> QuerySet[Product]:
    return Product.objects.filter(organisation=organisation)


def product_get(*, organisation: Organisation, product_id: Any) -> Product:
    product: Product = _one(Product.objects.filter(organisation=organisation), key=product_id, what="product")
    return product


def pricings_list(*, organisation: Organisation, product: Product | None = None) -> QuerySet[Pricing]:
    pricings = Pricing.objects.filter(organisation=organisation).select_related("product", "metric")
    if product is not None:
        pricings = pricings.filter(product=product)
    return pricings


def pricing_get(*, organisation: Organisation, pricing_id: Any, product: Product | None = None) -> Pricing:
    pricing: Pricing = _one(pricings_list(organisation=organisation, product=product), key=pricing_id, what="pricing")
    return pricing


def plans_list(*, organisation: Organisation) -> QuerySet[Plan]:
    return Plan.objects.filter(organisation=organisation).prefetch_related(
        Prefetch("plan_pricings", queryset=PlanPricing.objects.select_related("pricing__product", "pricing__metric"))
    )


def plan_get(*, organisation: Organisation, plan_id: Any) -> Plan:
    plan: Plan = _one(plans_list(organisation=organisation), key=plan_id, what="plan")
    return plan


def contracts_list(*, organisation: Organisation) -> QuerySet[Contract]:
    return (
        Contract.objects.filter(organisation=organisation)
        .select_related("customer")
        .prefetch_related(
            Prefetch(
                "phases",
                queryset=ContractPhase.objects.prefetch_related(
                    Prefetch(
                        "phase_pricings",
                        queryset=PhasePricing.objects.select_related("pricing__product", "pricing__metric"),
                    )
                ),
            ),
            Prefetch("pauses", queryset=ContractPause.objects.all()),
        )
    )


def contract_get(*, organisation: Organisation, contract_id: Any) -> Contract:
    contract: Contract = _one(contracts_list(organisation=organisation), key=contract_id, what="contract")
    return contract


def contract_phase_get(*, contract: Contract, phase_id: Any) -> ContractPhase:
    phase: ContractPhase = _one(contract.phases.all(), key=phase_id, what="phase of this contract")
    return phase


def contract_amendments(*, contract: Contract) -> QuerySet[AuditEntry]:
    """Every change to the contract, its phases, pricings and pauses: the audit entries filed under it."""
    return AuditEntry.objects.filter(
        organisation_id=contract.organisation_id, object_type="contract", object_id=str(contract.id)
    ).order_by("at", "id")
