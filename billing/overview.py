"""Reads the billing dashboard shows beyond plain rows (SPEC §8): a customer's usage in the current
billing period, priced by the rating engine; the usage customer ids that match no customer; and the
curve of a pricing's amount against quantity. Every read is scoped to one organisation.

The amounts come from billing.rating.rate and the quantities from billing.quantities, the functions
invoices use, so the dashboard can never show another figure than billing would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Max, QuerySet

from billing.inputs import uuid_value
from billing.models import Contract, ContractStatus, Customer, PhasePricing, Pricing, QuantityType
from billing.periods import BillingPeriod, PauseSpan, PhaseSpan, billing_periods, cadence_parse
from billing.quantities import metered_quantities_by_dimension, metered_quantity, period_datetimes
from billing.rating import PricingModel, PricingType, Rating, money_round, pricing_parse, rate
from usage.models import UsageRecord
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.errors import ValidationFailed

# Contracts whose usage is billed: drafts bill nothing, expired ones stopped (SPEC §8); usage in a
# pause is still billed.
BILLING_STATUSES = (ContractStatus.ACTIVE, ContractStatus.PAUSED, ContractStatus.DISPUTED)
UNMATCHED_SHOWN = 50
UNMATCHED_WINDOW_DAYS = 90
CURVE_SAMPLES = 80


def customer_usage_keys(customer: Customer) -> list[str]:
    """The customer_id values a usage record may carry for this customer: its external id, and its id."""
    keys = [str(customer.id)]
    if customer.external_id:
        keys.insert(0, customer.external_id)
    return keys


# --- a customer's current-period usage ---


@dataclass(frozen=True)
class UsageLine:
    """One priced metric of a customer's contract over the current billing period (amount so far)."""

    contract: Contract
    link: PhasePricing
    pricing: Pricing
    period: BillingPeriod | None
    quantity: Decimal | None = None
    amount: Decimal | None = None  # rounded to the contract's currency
    charges: bool = True  # False in a trial or pause phase: usage is shown, nothing is charged
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def last_day(self) -> dt.date | None:
        """The period's last day (its `end` is exclusive), as a person reads a period."""
        return self.period.end - dt.timedelta(days=1) if self.period is not None else None


def _current_piece(contract: Contract, pricing: Pricing, phase_key: str, today: dt.date) -> BillingPeriod | None:
    """The billing-period piece of `pricing` in its phase that holds `today` (None: not billing today)."""
    cadence = cadence_parse(text=pricing.cadence)
    end = contract.expiry_date or contract.end_date
    phases = [
        PhaseSpan(start=p.start_date, end=p.end_date, phase_type=p.phase_type, key=str(p.id))
        for p in contract.phases.all()
    ]
    pauses = [PauseSpan(start=p.start_date, end=p.end_date) for p in contract.pauses.all()]
    pieces = billing_periods(
        cadence=cadence,
        anchor=contract.anchor_date,
        start=contract.start_date,
        end=end,
        until=today + dt.timedelta(days=1),
        phases=phases,
        pauses=pauses,
    )
    for piece in reversed(pieces):
        if piece.phase_key == phase_key and piece.start <= today < piece.end:
            return piece
    return None


def _priced(
    model: PricingModel, pricing: Pricing, keys: Sequence[str], period: BillingPeriod
) -> tuple[Decimal, Rating]:
    assert pricing.metric is not None
    start, end = period_datetimes(start=period.start, end=period.end)
    if model.pricing_type == PricingType.MATRIX:
        columns = [d.column_name for d in model.dimensions]
        totals: dict[tuple[str | None, ...], Decimal] = {}
        for key in keys:
            found = metered_quantities_by_dimension(
                metric=pricing.metric, customer_id=key, start=start, end=end, columns=columns
            )
            for cell, amount in found.items():
                totals[cell] = totals.get(cell, Decimal(0)) + amount
        return sum(totals.values(), Decimal(0)), rate(model=model, dimensions=totals)
    quantity = sum(
        (metered_quantity(metric=pricing.metric, customer_id=key, start=start, end=end) for key in keys), Decimal(0)
    )
    return quantity, rate(model=model, quantity=quantity)


def customer_current_usage(*, customer: Customer, today: dt.date) -> list[UsageLine]:
    """Per metered pricing of the customer's billing contracts, in the phase holding `today`: the metric's
    quantity over the current billing period so far and the amount it rates to (rounded)."""
    keys = customer_usage_keys(customer)
    contracts = (
        Contract.objects.filter(
            organisation_id=customer.organisation_id, customer=customer, status__in=BILLING_STATUSES
        )
        .prefetch_related("phases", "pauses")
        .order_by("start_date", "created_at")
    )
    lines: list[UsageLine] = []
    for contract in contracts:
        links = (
            PhasePricing.objects.filter(
                organisation_id=customer.organisation_id,
                phase__contract=contract,
                pricing__quantity_type=QuantityType.METERED,
                phase__start_date__lte=today,
            )
            .select_related("phase", "pricing__product", "pricing__metric")
            .order_by("phase__start_date", "created_at")
        )
        for link in links:
            phase = link.phase
            if phase.end_date is not None and phase.end_date <= today:
                continue
            if (link.start_date and link.start_date > today) or (link.end_date and link.end_date <= today):
                continue
            pricing = link.pricing
            try:
                period = _current_piece(contract, pricing, str(phase.id), today)
            except ValidationFailed as exc:
                lines.append(UsageLine(contract, link, pricing, None, problems=(exc.detail,)))
                continue
            if period is None:
                continue
            try:
                model = pricing_parse(pricing_data=pricing.pricing_data)
                quantity, rating = _priced(model, pricing, keys, period)
            except ValidationFailed as exc:
                lines.append(UsageLine(contract, link, pricing, period, problems=(exc.detail,)))
                continue
            amount = money_round(amount=rating.amount, currency=contract.currency) if period.charges else Decimal(0)
            lines.append(
                UsageLine(
                    contract,
                    link,
                    pricing,
                    period,
                    quantity=quantity,
                    amount=amount,
                    charges=period.charges,
                    problems=rating.flagged,
                )
            )
    return lines


# --- usage that matches no customer ---


@dataclass(frozen=True)
class UnmatchedCustomer:
    customer_id: str
    records: int
    last_seen: dt.datetime


def unmatched_usage_customers(
    *, organisation: Organisation, now: dt.datetime, days: int = UNMATCHED_WINDOW_DAYS, limit: int = UNMATCHED_SHOWN
) -> list[UnmatchedCustomer]:
    """Customer ids of the organisation's usage records (timestamps in the last `days`) that name no
    customer by external id or id: stored and metered, but billed to nobody until a customer claims them.
    Most records first; at most `limit`."""
    records: QuerySet[UsageRecord] = UsageRecord.objects.filter(
        usage_event__organisation=organisation,
        timestamp__gte=now - dt.timedelta(days=days),
        voided=False,
        superseded=False,
    ).exclude(
        customer_id__in=Customer.objects.filter(organisation=organisation, external_id__isnull=False).values(
            "external_id"
        )
    )
    grouped = list(
        records.values("customer_id")
        .annotate(records=Count("id"), last_seen=Max("timestamp"))
        .order_by("-records", "customer_id")[: limit * 4]
    )
    # Ids written as a customer's UUID: compared in Python, as the databases store UUIDs differently.
    as_uuid = {row["customer_id"]: uuid_value(row["customer_id"]) for row in grouped}
    known = set(
        Customer.objects.filter(
            organisation=organisation, id__in=[u for u in as_uuid.values() if u is not None]
        ).values_list("id", flat=True)
    )
    return [
        UnmatchedCustomer(row["customer_id"], row["records"], row["last_seen"])
        for row in grouped
        if as_uuid[row["customer_id"]] not in known or as_uuid[row["customer_id"]] is None
    ][:limit]


# --- a pricing's curve ---


@dataclass(frozen=True)
class CurvePoint:
    quantity: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Curve:
    label: str
    points: list[CurvePoint]


def _span(model: PricingModel) -> Decimal:
    """The quantities a chart shows: past the last tier bound (or a few packages), so every tier is seen."""
    bounds = [t.up_to for t in model.tiers if t.up_to is not None]
    if bounds:
        return max(bounds) * Decimal("1.5")
    if model.package_size is not None:
        return model.package_size * 5
    return Decimal(100)


def pricing_curves(*, model: PricingModel, up_to: Decimal | None = None) -> list[Curve]:
    """The amount (exact, from `rate`) at quantities from 0 to `up_to`: evenly spaced, plus each tier bound
    and just past it, where a volume or step price jumps. A matrix has one curve per priced entry."""
    top = up_to if up_to is not None and up_to > 0 else _span(model)
    step = top / CURVE_SAMPLES
    quantities = {Decimal(i) * step for i in range(CURVE_SAMPLES + 1)}
    nudge = top / 1000
    for tier in model.tiers:
        if tier.up_to is not None and tier.up_to <= top:
            quantities.update({tier.up_to, tier.up_to + nudge})
    if model.package_size is not None:
        size = model.package_size
        count = int(top / size)
        for n in range(1, min(count, CURVE_SAMPLES) + 1):
            quantities.update({size * n, size * n + nudge})
    ordered = sorted(q.quantize(Decimal("0.000001")).normalize() for q in quantities if q <= top)
    if model.pricing_type == PricingType.MATRIX:
        curves = []
        entries = [(", ".join(v or "(none)" for v in e.dimension_values), e.dimension_values) for e in model.values]
        if model.default_unit_amount is not None:
            entries.append(("default", tuple("\x00" for _ in model.dimensions)))
        for label, key in entries[:10]:
            points = [CurvePoint(q, rate(model=model, dimensions={key: q}).amount) for q in ordered]
            curves.append(Curve(label=label, points=points))
        return curves
    return [Curve(label="amount", points=[CurvePoint(q, rate(model=model, quantity=q).amount) for q in ordered])]
