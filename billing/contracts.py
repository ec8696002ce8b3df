"""Writes for contracts: create (optionally from a plan), edit, phases and their pricings, pause, resume,
expire. Every change is an amendment: an audit entry filed under the contract, with before and after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.catalogue import PRODUCT_FIELDS, pricing_build, product_build
from billing.customers import json_ready, snapshot
from billing.inputs import Fields, uuid_value
from billing.invoicing.dispatch import contract_drafts_refresh_on_commit
from billing.models import (
    Contract,
    ContractPause,
    ContractPhase,
    ContractStatus,
    Customer,
    PhasePricing,
    PhaseType,
    Plan,
    Pricing,
    Product,
    RenewalPolicy,
    UnpausePolicy,
)
from billing.periods import cadence_parse
from billing.quantities import metric_cadence_check
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.errors import Conflict, NotFound, ValidationFailed
from zenskar_site.lib.text import printable

CONTRACT_FIELDS = (
    "name",
    "description",
    "status",
    "currency",
    "start_date",
    "end_date",
    "anchor_date",
    "customer_id",
    "renewal_policy",
    "custom_attributes",
    "phases",
    "plan_id",
)
PHASE_FIELDS = ("name", "description", "start_date", "end_date", "phase_type", "pricings", "phase_metadata")
PHASE_PRICING_FIELDS = (
    "pricing_id",
    "product_id",
    "pricing",
    "product",
    "start_date",
    "end_date",
    "anchor_date",
    "external_id",
    "custom_data",
    "description",
)
# Statuses a client sets directly; paused and expired come from the pause and expire actions.
SETTABLE_STATUSES = (ContractStatus.DRAFT, ContractStatus.ACTIVE, ContractStatus.DISPUTED)
MAX_PHASES = 50
MAX_PHASE_PRICINGS = 200


def contract_snapshot(contract: Contract) -> dict[str, Any]:
    return {
        "id": str(contract.id),
        "customer_id": str(contract.customer_id),
        **snapshot(
            contract,
            (
                "name",
                "description",
                "status",
                "currency",
                "start_date",
                "end_date",
                "anchor_date",
                "renewal_policy",
                "custom_attributes",
                "expiry_date",
            ),
        ),
        "plan_id": json_ready(contract.plan_id),
        "phases": [
            {
                "id": str(phase.id),
                **snapshot(phase, ("name", "phase_type", "start_date", "end_date")),
                "pricings": [
                    {
                        "id": str(link.id),
                        "pricing_id": str(link.pricing_id),
                        **snapshot(link, ("start_date", "end_date")),
                    }
                    for link in phase.phase_pricings.order_by("created_at", "id")
                ],
            }
            for phase in contract.phases.order_by("start_date", "created_at")
        ],
        "pauses": [
            snapshot(pause, ("start_date", "end_date", "unpause_extension_policy"))
            for pause in contract.pauses.order_by("start_date", "id")
        ],
    }


def _amend(*, actor: Actor, contract: Contract, action: str, before: dict[str, Any] | None, reason: str = "") -> None:
    """File the change under the contract; any change to an existing contract may change what it bills, so
    its live invoices are recomputed after commit (the same path as a metric change)."""
    if before is not None:
        contract_drafts_refresh_on_commit(contract_id=contract.id)
    audit_record(
        actor=actor,
        action=action,
        object_type="contract",
        object_id=str(contract.id),
        before=before,
        after=contract_snapshot(contract),
        reason=reason,
    )


def _customer_read(*, actor: Actor, fields: Fields) -> Customer | None:
    key = fields.get("customer_id")
    if key in (None, ""):
        fields.fail("customer_id", "This field is required: the customer's id.")
        return None
    parsed = uuid_value(key)
    customer = (
        Customer.objects.filter(organisation=actor.organisation, id=parsed).first() if parsed is not None else None
    )
    if customer is None:
        fields.fail("customer_id", f"No customer with id {printable(str(key))[:100]!r} in this organisation.")
    elif customer.archived:
        fields.fail("customer_id", "This customer is archived.")
        return None
    return customer


def _plan_read(*, actor: Actor, fields: Fields, currency: str) -> Plan | None:
    key = fields.get("plan_id")
    if key in (None, ""):
        return None
    parsed = uuid_value(key)
    plan = Plan.objects.filter(organisation=actor.organisation, id=parsed).first() if parsed is not None else None
    if plan is None:
        fields.fail("plan_id", f"No plan with id {printable(str(key))[:100]!r} in this organisation.")
    elif currency and plan.currency != currency:
        fields.fail("plan_id", f"The plan is in {plan.currency}; the contract is in {currency}.")
    return plan


def _dates_check(
    fields: Fields, *, start: dt.date | None, end: dt.date | None, within: tuple[dt.date, dt.date | None], what: str
) -> None:
    """`[start, end)` ordered and inside `within` (the contract's or the phase's dates)."""
    low, high = within
    if start is not None and end is not None and end <= start:
        fields.fail("end_date", "end_date must be after start_date.")
    if start is not None and (start < low or (high is not None and start >= high)):
        fields.fail("start_date", f"start_date must fall within the {what} ({_span(low, high)}).")
    if end is not None and (end <= low or (high is not None and end > high)):
        fields.fail("end_date", f"end_date must fall within the {what} ({_span(low, high)}).")


def _span(low: dt.date, high: dt.date | None) -> str:
    return f"from {low.isoformat()}" + (f" to {high.isoformat()}" if high is not None else ", open-ended")


def _phase_pricing_pricing(*, actor: Actor, fields: Fields, currency: str) -> Pricing | None:
    """The pricing a phase pricing charges: a reference (`pricing_id`) or an inline pricing of an existing
    product (`product_id`) or of an inline `product`. Another currency than the contract's is refused."""
    pricing: Pricing | None = None
    if fields.has("pricing_id") and fields.get("pricing_id") is not None:
        if fields.has("pricing") or fields.has("product"):
            fields.fail("pricing_id", "Give pricing_id, or an inline pricing; not both.")
            return None
        key = fields.get("pricing_id")
        parsed = uuid_value(key)
        pricing = (
            Pricing.objects.filter(organisation=actor.organisation, id=parsed).first() if parsed is not None else None
        )
        if pricing is None:
            fields.fail("pricing_id", f"No pricing with id {printable(str(key))[:100]!r} in this organisation.")
            return None
        if pricing.currency and pricing.currency != currency:
            fields.fail("pricing_id", f"This pricing is in {pricing.currency}; the contract is in {currency}.")
            return None
        return pricing
    if not fields.has("pricing"):
        fields.fail("pricing_id", "Give a pricing_id, or an inline pricing with a product_id or product.")
        return None
    product: Product | None = None
    if fields.get("product_id") is not None:
        if fields.has("product"):
            fields.fail("product_id", "Give product_id, or an inline product; not both.")
            return None
        key = fields.get("product_id")
        parsed = uuid_value(key)
        product = (
            Product.objects.filter(organisation=actor.organisation, id=parsed).first() if parsed is not None else None
        )
        if product is None:
            fields.fail("product_id", f"No product with id {printable(str(key))[:100]!r} in this organisation.")
            return None
    elif fields.has("product"):
        product_fields = Fields(fields.get("product"), prefix=fields.path("product"), errors=fields.errors)
        product_fields.refuse_unknown(PRODUCT_FIELDS)
        product = product_build(actor=actor, fields=product_fields)
        if product is None:
            return None
    else:
        fields.fail("product_id", "An inline pricing needs the product it prices: product_id or product.")
        return None
    pricing_fields = Fields(fields.get("pricing"), prefix=fields.path("pricing"), errors=fields.errors)
    pricing = pricing_build(actor=actor, product=product, fields=pricing_fields)
    if pricing is not None and pricing.currency and pricing.currency != currency:
        fields.fail("pricing.currency", f"This pricing is in {pricing.currency}; the contract is in {currency}.")
        return None
    return pricing


def _metered_anchor_check(
    errors: dict[str, list[str]], *, pricing: Pricing, anchor: dt.date, field: str, anchor_field: str
) -> None:
    assert pricing.metric is not None
    try:
        metric_cadence_check(
            metric=pricing.metric,
            cadence=cadence_parse(text=pricing.cadence),
            field=field,
            anchor=anchor,
            anchor_field=anchor_field,
        )
    except ValidationFailed as exc:
        for path, messages in exc.errors.items():
            errors.setdefault(path, []).extend(messages)


def _phase_pricing_add(
    *, actor: Actor, phase: ContractPhase, fields: Fields, currency: str, phase_end: dt.date | None
) -> PhasePricing | None:
    fields.refuse_unknown(PHASE_PRICING_FIELDS)
    pricing = _phase_pricing_pricing(actor=actor, fields=fields, currency=currency)
    start = fields.date("start_date")
    end = fields.date("end_date")
    anchor = fields.date("anchor_date")
    _dates_check(fields, start=start, end=end, within=(phase.start_date, phase_end), what="phase")
    values = {
        "external_id": fields.text("external_id", max_length=255),
        "description": fields.text("description", max_length=10_000),
        "custom_data": fields.json_object("custom_data"),
    }
    if pricing is not None and phase.phase_pricings.filter(pricing=pricing).exists():
        fields.fail("pricing_id", "This pricing is already in the phase.")
    if pricing is not None and pricing.metric is not None and not fields.errors:
        # Monthly metric values need periods of whole calendar months: the anchor on the 1st.
        _metered_anchor_check(
            fields.errors,
            pricing=pricing,
            anchor=anchor or phase.contract.anchor_date,
            field=fields.path("pricing_id"),
            anchor_field=fields.path("anchor_date") if anchor is not None else "anchor_date",
        )
    if fields.errors or pricing is None:
        return None
    return PhasePricing.objects.create(
        organisation=actor.organisation,
        phase=phase,
        pricing=pricing,
        start_date=start,
        end_date=end,
        anchor_date=anchor,
        **values,
    )


def _phase_add(*, actor: Actor, contract: Contract, fields: Fields, plan: Plan | None = None) -> ContractPhase | None:
    """Validate and add one phase (with its pricings) to `contract`; errors collect in `fields`."""
    fields.refuse_unknown(PHASE_FIELDS)
    name = fields.text("name", max_length=255, required=True)
    phase_type = fields.choice("phase_type", choices=PhaseType.values, default=PhaseType.ACTIVE) or PhaseType.ACTIVE
    start = fields.date("start_date")
    if start is None and fields.get("start_date") in (None, ""):  # absent or null: after the previous phase
        latest = contract.phases.order_by("-start_date").first()
        if latest is None:
            start = contract.start_date
        elif latest.end_date is not None:
            start = latest.end_date
        else:
            fields.fail("start_date", "Required: the previous phase has no end date.")
    end = fields.date("end_date")
    _dates_check(fields, start=start, end=end, within=(contract.start_date, contract.end_date), what="contract")
    if start is not None and not fields.errors:
        phase_end = end or contract.end_date
        for other in contract.phases.all():
            other_end = other.end_date or contract.end_date
            if (phase_end is None or other.start_date < phase_end) and (other_end is None or start < other_end):
                fields.fail("start_date", f"This phase overlaps the phase {other.name!r} ({other.start_date}).")
                break
    values = {
        "description": fields.text("description", max_length=10_000),
        "phase_metadata": fields.json_object("phase_metadata"),
    }
    raw_pricings = fields.get("pricings")
    if raw_pricings is not None and (not isinstance(raw_pricings, list) or len(raw_pricings) > MAX_PHASE_PRICINGS):
        fields.fail("pricings", f"Expected a list of at most {MAX_PHASE_PRICINGS} pricings.")
    if fields.errors:
        return None
    assert start is not None  # a date, or an error above
    phase = ContractPhase.objects.create(
        organisation=actor.organisation,
        contract=contract,
        name=name,
        phase_type=phase_type,
        start_date=start,
        end_date=end,
        source_plan=plan,
        **values,
    )
    phase_end = end or contract.end_date
    if plan is not None:
        for link in plan.plan_pricings.select_related("pricing").order_by("position", "id"):
            if link.pricing.currency and link.pricing.currency != contract.currency:
                fields.fail("plan_id", f"The plan's pricing {link.pricing_id} is in {link.pricing.currency}.")
                continue
            PhasePricing.objects.create(organisation=actor.organisation, phase=phase, pricing=link.pricing)
    for index, raw in enumerate(raw_pricings or []):
        _phase_pricing_add(
            actor=actor,
            phase=phase,
            fields=Fields(raw, prefix=fields.path(f"pricings[{index}]"), errors=fields.errors),
            currency=contract.currency,
            phase_end=phase_end,
        )
    return phase


@transaction.atomic
def contract_create(*, actor: Actor, data: Mapping[str, Any]) -> Contract:
    """Create a contract; with `plan_id` (and no phases) its first phase copies the plan's pricings.

    Nothing is stored unless everything is valid (one transaction: inline products and pricings too).
    """
    fields = Fields(data)
    fields.refuse_unknown(CONTRACT_FIELDS)
    name = fields.text("name", max_length=255, required=True)
    currency = fields.currency("currency", required=True)
    customer = _customer_read(actor=actor, fields=fields)
    status = fields.choice("status", choices=SETTABLE_STATUSES, default=ContractStatus.DRAFT)
    start = fields.date("start_date", required=True)
    end = fields.date("end_date")
    anchor = fields.date("anchor_date")
    if start is not None and end is not None and end <= start:
        fields.fail("end_date", "end_date must be after start_date.")
    values = {
        "description": fields.text("description", max_length=10_000),
        "renewal_policy": fields.choice(
            "renewal_policy", choices=RenewalPolicy.values, default=RenewalPolicy.DO_NOT_RENEW
        ),
        "custom_attributes": fields.json_object("custom_attributes"),
    }
    plan = _plan_read(actor=actor, fields=fields, currency=currency)
    raw_phases = fields.get("phases")
    if raw_phases is not None and (not isinstance(raw_phases, list) or len(raw_phases) > MAX_PHASES):
        fields.fail("phases", f"Expected a list of at most {MAX_PHASES} phases.")
    fields.raise_if_errors()
    assert customer is not None
    assert start is not None
    assert status is not None
    contract = Contract.objects.create(
        organisation=actor.organisation,
        customer=customer,
        name=name,
        currency=currency,
        status=status,
        start_date=start,
        end_date=end,
        anchor_date=anchor or start,
        plan=plan,
        **values,
    )
    if raw_phases:
        for index, raw in enumerate(raw_phases):
            _phase_add(
                actor=actor,
                contract=contract,
                fields=Fields(raw, prefix=f"phases[{index}]", errors=fields.errors),
                plan=plan if index == 0 else None,
            )
    elif plan is not None:
        _phase_add(actor=actor, contract=contract, fields=Fields({"name": plan.name}, errors=fields.errors), plan=plan)
    # A later phase's error leaves earlier rows written: the whole transaction is rolled back.
    fields.raise_if_errors()
    _amend(actor=actor, contract=contract, action="contract.create", before=None)
    return contract


def contract_locked(*, actor: Actor, contract_id: Any) -> Contract:
    key = uuid_value(contract_id)
    contract = (
        Contract.objects.select_for_update().filter(organisation=actor.organisation, id=key).first()
        if key is not None
        else None
    )
    if contract is None:
        raise NotFound(f"No contract with id {printable(str(contract_id))[:100]!r} in this organisation.")
    return contract


def _not_expired(contract: Contract) -> None:
    if contract.status == ContractStatus.EXPIRED:
        raise Conflict("This contract has expired; it can no longer change.")


def _phases_fit(fields: Fields, contract: Contract) -> None:
    """After a change of the contract's dates, every phase must still lie inside them."""
    for phase in contract.phases.all():
        if phase.start_date < contract.start_date or (
            contract.end_date is not None and phase.start_date >= contract.end_date
        ):
            fields.fail(
                "start_date" if phase.start_date < contract.start_date else "end_date",
                f"The phase {phase.name!r} starts on {phase.start_date}, outside the new dates.",
            )
        elif contract.end_date is not None and phase.end_date is not None and phase.end_date > contract.end_date:
            fields.fail("end_date", f"The phase {phase.name!r} ends on {phase.end_date}, after the new end date.")


@transaction.atomic
def contract_update(*, actor: Actor, contract_id: Any, changes: Mapping[str, Any], reason: str = "") -> Contract:
    """Edit a contract's terms. Customer and currency change only while it is a draft."""
    contract = contract_locked(actor=actor, contract_id=contract_id)
    _not_expired(contract)
    before = contract_snapshot(contract)
    before_anchor = contract.anchor_date
    fields = Fields(changes)
    fields.refuse_unknown(set(CONTRACT_FIELDS) - {"phases", "plan_id"})
    if fields.has("name"):
        contract.name = fields.text("name", max_length=255, required=True)
    if fields.has("description"):
        contract.description = fields.text("description", max_length=10_000)
    if fields.has("renewal_policy"):
        contract.renewal_policy = (
            fields.choice("renewal_policy", choices=RenewalPolicy.values, default=contract.renewal_policy)
            or contract.renewal_policy
        )
    if fields.has("custom_attributes"):
        contract.custom_attributes = fields.json_object("custom_attributes")
    if fields.has("status") and fields.get("status") != contract.status:
        if contract.status == ContractStatus.PAUSED:
            fields.fail("status", "This contract is paused: resume it (POST .../resume/) to change its status.")
        else:
            contract.status = fields.choice("status", choices=SETTABLE_STATUSES, default=contract.status) or ""
    draft_only = [name for name in ("customer_id", "currency") if fields.has(name)]
    invoiced = bool(draft_only) and contract.invoices.exclude(status="discarded").exists()
    if draft_only and (before["status"] != ContractStatus.DRAFT or invoiced):
        for name in draft_only:
            if str(fields.get(name)) != str(before[name]):
                fields.fail(
                    name,
                    "This contract has invoices: its customer and currency stay."
                    if invoiced
                    else "Only a draft contract's customer or currency can change.",
                )
    elif draft_only:
        if fields.has("customer_id"):
            customer = _customer_read(actor=actor, fields=fields)
            if customer is not None:
                contract.customer = customer
        if fields.has("currency"):
            currency = fields.currency("currency", required=True)
            if currency and currency != contract.currency:
                clash = (
                    PhasePricing.objects.filter(phase__contract=contract)
                    .exclude(pricing__currency="")
                    .exclude(pricing__currency=currency)
                    .exists()
                )
                if clash:
                    fields.fail("currency", f"The contract has pricings in {contract.currency}.")
                contract.currency = currency or contract.currency
    for name in ("start_date", "end_date", "anchor_date"):
        if fields.has(name):
            value = fields.date(name, required=name == "start_date")
            if name != "end_date" and value is None:
                continue
            setattr(contract, name, value)
    if contract.end_date is not None and contract.end_date <= contract.start_date:
        fields.fail("end_date", "end_date must be after start_date.")
    elif not fields.errors:
        _phases_fit(fields, contract)
    if contract.anchor_date != before_anchor and not fields.errors:
        metered = PhasePricing.objects.filter(
            phase__contract=contract, anchor_date__isnull=True, pricing__metric__isnull=False
        ).select_related("pricing__metric")
        for link in metered:
            _metered_anchor_check(
                fields.errors,
                pricing=link.pricing,
                anchor=contract.anchor_date,
                field="anchor_date",
                anchor_field="anchor_date",
            )
    fields.raise_if_errors()
    contract.save()
    if contract_snapshot(contract) != before:
        _amend(actor=actor, contract=contract, action="contract.update", before=before, reason=reason)
    return contract


@transaction.atomic
def contract_delete(*, actor: Actor, contract_id: Any, reason: str = "") -> None:
    """Delete a draft contract (it never billed); any other is refused (409): expire it instead."""
    contract = contract_locked(actor=actor, contract_id=contract_id)
    if contract.status != ContractStatus.DRAFT:
        raise Conflict(f"Only a draft contract can be deleted; this one is {contract.status}: expire it instead.")
    if count := contract.invoices.count():
        # Invoices keep their contract (even discarded ones: the audit trail names them).
        raise Conflict(f"This contract has {count} invoice(s): it cannot be deleted; expire it instead.")
    before = contract_snapshot(contract)
    contract.delete()
    audit_record(
        actor=actor,
        action="contract.delete",
        object_type="contract",
        object_id=before["id"],
        before=before,
        reason=reason,
    )


@transaction.atomic
def contract_phase_create(
    *, actor: Actor, contract_id: Any, data: Mapping[str, Any], reason: str = ""
) -> ContractPhase:
    contract = contract_locked(actor=actor, contract_id=contract_id)
    _not_expired(contract)
    before = contract_snapshot(contract)
    fields = Fields(data)
    phase = _phase_add(actor=actor, contract=contract, fields=fields)
    fields.raise_if_errors()
    assert phase is not None
    _amend(actor=actor, contract=contract, action="contract.phase.create", before=before, reason=reason)
    return phase


@transaction.atomic
def contract_phase_pricing_add(
    *, actor: Actor, contract_id: Any, phase_id: Any, data: Mapping[str, Any], reason: str = ""
) -> PhasePricing:
    contract = contract_locked(actor=actor, contract_id=contract_id)
    _not_expired(contract)
    key = uuid_value(phase_id)
    phase = contract.phases.filter(id=key).first() if key is not None else None
    if phase is None:
        raise NotFound(f"No phase with id {printable(str(phase_id))[:100]!r} in this contract.")
    before = contract_snapshot(contract)
    fields = Fields(data)
    link = _phase_pricing_add(
        actor=actor,
        phase=phase,
        fields=fields,
        currency=contract.currency,
        phase_end=phase.end_date or contract.end_date,
    )
    fields.raise_if_errors()
    assert link is not None
    _amend(actor=actor, contract=contract, action="contract.pricing.add", before=before, reason=reason)
    return link


def _today() -> dt.date:
    return timezone.now().date()


@transaction.atomic
def contract_pause(
    *,
    actor: Actor,
    contract_id: Any,
    start_date: Any,
    unpause_extension_policy: Any,
    end_date: Any = None,
    reason: str = "",
) -> Contract:
    """Pause an active contract from `start_date` (to `end_date`, or until resumed): fixed fees stop for
    the paused time, usage in it is still billed. `extend` moves the contract's end by the paused time."""
    contract = contract_locked(actor=actor, contract_id=contract_id)
    if contract.status != ContractStatus.ACTIVE:
        raise Conflict(f"Only an active contract can be paused; this one is {contract.status}.")
    fields = Fields(
        {"start_date": start_date, "end_date": end_date, "unpause_extension_policy": unpause_extension_policy}
    )
    start = fields.date("start_date", required=True)
    end = fields.date("end_date")
    policy = fields.choice("unpause_extension_policy", choices=UnpausePolicy.values)
    _dates_check(fields, start=start, end=end, within=(contract.start_date, contract.end_date), what="contract")
    fields.raise_if_errors()
    assert start is not None
    assert policy is not None
    before = contract_snapshot(contract)
    ContractPause.objects.create(contract=contract, start_date=start, end_date=end, unpause_extension_policy=policy)
    if policy == UnpausePolicy.EXTEND and end is not None and contract.end_date is not None:
        contract.end_date += end - start
    contract.status = ContractStatus.PAUSED
    contract.save()
    _amend(actor=actor, contract=contract, action="contract.pause", before=before, reason=reason)
    return contract


@transaction.atomic
def contract_resume(*, actor: Actor, contract_id: Any, resume_date: Any = None, reason: str = "") -> Contract:
    """Resume a paused contract on `resume_date` (today by default): the open pause ends then."""
    contract = contract_locked(actor=actor, contract_id=contract_id)
    if contract.status != ContractStatus.PAUSED:
        raise Conflict(f"Only a paused contract can be resumed; this one is {contract.status}.")
    fields = Fields({"resume_date": resume_date})
    on = fields.date("resume_date") or _today()
    fields.raise_if_errors()
    before = contract_snapshot(contract)
    pause = contract.pauses.order_by("-start_date", "-id").first()
    if pause is not None and (pause.end_date is None or pause.end_date > on):
        old_length = (pause.end_date - pause.start_date) if pause.end_date is not None else dt.timedelta(0)
        if on <= pause.start_date:
            new_length = dt.timedelta(0)
            pause.delete()  # resumed before the pause began: it never took effect
        else:
            new_length = on - pause.start_date
            pause.end_date = on
            pause.save(update_fields=["end_date"])
        if pause.unpause_extension_policy == UnpausePolicy.EXTEND and contract.end_date is not None:
            contract.end_date += new_length - old_length
    contract.status = ContractStatus.ACTIVE
    contract.save()
    _amend(actor=actor, contract=contract, action="contract.resume", before=before, reason=reason)
    return contract


@transaction.atomic
def contract_expire(*, actor: Actor, contract_id: Any, expiry_date: Any = None, reason: str = "") -> Contract:
    """End a contract at `expiry_date` (today by default): billing stops there, the last period prorated."""
    contract = contract_locked(actor=actor, contract_id=contract_id)
    _not_expired(contract)
    fields = Fields({"expiry_date": expiry_date})
    on = fields.date("expiry_date") or _today()
    if on <= contract.start_date:
        fields.fail("expiry_date", f"expiry_date must be after the contract's start date ({contract.start_date}).")
    elif contract.end_date is not None and on > contract.end_date:
        fields.fail("expiry_date", f"expiry_date must not be after the contract's end date ({contract.end_date}).")
    fields.raise_if_errors()
    before = contract_snapshot(contract)
    contract.status = ContractStatus.EXPIRED
    contract.expiry_date = on
    contract.end_date = on
    contract.save()
    _amend(actor=actor, contract=contract, action="contract.expire", before=before, reason=reason)
    return contract
