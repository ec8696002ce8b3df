"""An invoice's lines and totals from a contract over a period (SPEC §8, §9): pure reading, no writes.

`invoice_compute` is the one computation: the generator, on-demand invoices, the live-draft refresh and
the reconcile command all call it, so a draft always equals a fresh computation.

Which charges an invoice holds: each phase pricing has its own billing periods (its cadence from the
contract's anchor, or the phase pricing's own anchor, clipped to the contract, to its phase and to the
phase pricing's dates). A piece belongs to the invoice whose range holds the start of the piece's
billing period: with one cadence throughout that is exactly the invoice's period; a yearly fee on
monthly invoices is charged on the invoice of the month its year starts (in advance). Fixed fees are
prorated by the piece's unpaused days; metered quantities are the metric's values over the piece.
Trial and pause phases charge nothing. A pricing that is not recurring charges on its first period only.

Money: each line is the exact rating of its quantity, prorated, rounded half-up once to the currency
(money_round); subtotal = the sum of lines; tax = the customer's tax_rate percent of the subtotal,
rounded the same way; total = subtotal + tax.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.invoicing.models import Invoice, InvoiceLine
from billing.models import Contract, ContractPause, ContractPhase, PhasePricing, Pricing, QuantityType
from billing.periods import (
    CADENCES,
    BillingPeriod,
    Cadence,
    PauseSpan,
    PhaseSpan,
    billing_periods,
    cadence_parse,
)
from billing.quantities import (
    MeteredQuantities,
    QuantitySource,
    metered_quantities_by_dimension,
    period_datetimes,
)
from billing.rating import (
    DimensionKey,
    PricingModel,
    PricingType,
    Rating,
    RatingPart,
    money_round,
    pricing_parse,
    rate,
)
from metrics.models import BillableMetric

DEFAULT_CADENCE = CADENCES["P1M"]
BREAKDOWN_TYPES = frozenset(
    {PricingType.TIERED, PricingType.VOLUME, PricingType.STEP, PricingType.MATRIX, PricingType.PACKAGE}
)


def decimal_text(number: Decimal) -> str:
    """The shortest exact text of a decimal (`7.5`, `100`, `0`)."""
    if number == 0:
        return "0"
    return format(number.normalize(), "f")


@dataclass(frozen=True)
class ComputedLine:
    description: str
    product_id: Any
    pricing_id: Any
    pricing_type: str
    period_start: dt.date
    period_end: dt.date
    quantity: str  # exact decimal text
    unit: str
    unit_amount: str  # exact decimal text; "" when the breakdown carries the prices
    breakdown: dict[str, Any]
    amount: Decimal  # rounded to the currency
    # An adjustment line (billing.invoicing.drift) names the period it corrects; None on a period's own lines.
    adjustment_of_start: dt.date | None = None
    adjustment_of_end: dt.date | None = None

    def signature(self) -> tuple[Any, ...]:
        """What a stored line must equal to be up to date (drift check)."""
        return (
            self.description,
            str(self.product_id) if self.product_id else None,
            str(self.pricing_id) if self.pricing_id else None,
            self.pricing_type,
            self.period_start,
            self.period_end,
            self.quantity,
            self.unit,
            self.unit_amount,
            self.breakdown,
            self.amount,
            self.adjustment_of_start,
            self.adjustment_of_end,
        )


@dataclass(frozen=True)
class InvoiceComputation:
    currency: str
    lines: tuple[ComputedLine, ...]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal
    flagged: tuple[str, ...] = field(default=())


def cadence_order(cadence: Cadence) -> int:
    return cadence.months * 31 + cadence.days


def contract_pricing_links(*, contract: Contract) -> list[PhasePricing]:
    return list(
        PhasePricing.objects.filter(phase__contract=contract)
        .select_related("phase", "pricing", "pricing__product", "pricing__metric")
        .order_by("phase__start_date", "created_at", "id")
    )


# What computing an invoice reads of a link and its phase (`contract_pricing_links_many`).
LINK_FIELDS = ("id", "phase_id", "pricing_id", "start_date", "end_date", "anchor_date", "description")
PHASE_FIELDS = ("id", "contract_id", "phase_type", "start_date", "end_date")


def _contracts_filter(prefix: str, contract_ids: list[Any], id_range: tuple[Any, Any] | None) -> dict[str, Any]:
    """The filter on `prefix` (a contract id's path) for these ids, or for the ids in `id_range` (both ends
    included): a range costs the statement nothing to carry, a list of ids costs more to build than to run."""
    if id_range is None:
        return {f"{prefix}__in": contract_ids}
    return {f"{prefix}__gte": id_range[0], f"{prefix}__lte": id_range[1]}


def contract_pricing_links_many(
    *, contract_ids: Iterable[Any], id_range: tuple[Any, Any] | None = None
) -> dict[Any, list[PhasePricing]]:
    """`contract_pricing_links` of many contracts, by contract id (every id has a list): the links in one
    query, their phases in another, each pricing they name (with its product and metric) once in a
    third. Links of one phase share its instance, and links of one pricing the pricing's.

    `id_range` (the least and the greatest of `contract_ids`, for ids that are most of the contracts in
    between: a generator step's slice) has the queries name the range instead of each id; the other
    contracts in it are left out.
    """
    ids = list(contract_ids)
    links: dict[Any, list[PhasePricing]] = {contract_id: [] for contract_id in ids}
    rows = list(
        PhasePricing.objects.filter(**_contracts_filter("phase__contract_id", ids, id_range))
        .only(*LINK_FIELDS)
        .order_by("phase__start_date", "created_at", "id")
    )
    # Read after the links: a link read has its phase here unless the phase was deleted meanwhile (a
    # KeyError: the caller's work fails and is done again, never computed without the link).
    phases = {
        phase.id: phase
        for phase in ContractPhase.objects.filter(**_contracts_filter("contract_id", ids, id_range)).only(*PHASE_FIELDS)
    }
    pricings = Pricing.objects.select_related("product", "metric").in_bulk({link.pricing_id for link in rows})
    for link in rows:
        phase = phases[link.phase_id]
        if phase.contract_id in links:
            link.phase = phase
            link.pricing = pricings[link.pricing_id]
            links[phase.contract_id].append(link)
    return links


def contract_pauses_many(
    *, contract_ids: Iterable[Any], id_range: tuple[Any, Any] | None = None
) -> dict[Any, list[PauseSpan]]:
    """`contract_pauses` of many contracts in one query, by contract id (every id has a list); `id_range`
    as for `contract_pricing_links_many`."""
    ids = list(contract_ids)
    pauses: dict[Any, list[PauseSpan]] = {contract_id: [] for contract_id in ids}
    rows = ContractPause.objects.filter(**_contracts_filter("contract_id", ids, id_range))
    for contract_id, start, end in rows.values_list("contract_id", "start_date", "end_date"):
        if contract_id in pauses:
            pauses[contract_id].append(PauseSpan(start=start, end=end))
    return pauses


def invoice_cadence(*, links: Sequence[PhasePricing]) -> Cadence:
    """A contract is invoiced at its shortest pricing cadence (monthly when it has no pricing)."""
    cadences = [cadence_parse(text=link.pricing.cadence) for link in links]
    return min(cadences, key=cadence_order) if cadences else DEFAULT_CADENCE


def contract_end(contract: Contract) -> dt.date | None:
    """Exclusive: billing stops at the expiry date, or the end date."""
    ends = [day for day in (contract.expiry_date, contract.end_date) if day is not None]
    return min(ends) if ends else None


def contract_pauses(contract: Contract) -> list[PauseSpan]:
    return [PauseSpan(start=p.start_date, end=p.end_date) for p in contract.pauses.all()]


def invoice_periods(
    *, contract: Contract, until: dt.date, links: Sequence[PhasePricing] | None = None
) -> list[BillingPeriod]:
    """The contract's invoice periods starting before `until` (the last may still be open)."""
    if links is None:
        links = contract_pricing_links(contract=contract)
    return billing_periods(
        cadence=invoice_cadence(links=links),
        anchor=contract.anchor_date,
        start=contract.start_date,
        end=contract_end(contract),
        until=until,
    )


def _link_span(link: PhasePricing) -> PhaseSpan:
    phase: ContractPhase = link.phase
    start = max(phase.start_date, link.start_date) if link.start_date else phase.start_date
    ends = [day for day in (phase.end_date, link.end_date) if day is not None]
    return PhaseSpan(start=start, end=min(ends) if ends else None, phase_type=phase.phase_type, key=link.id)


def _part_json(part: RatingPart) -> dict[str, Any]:
    data: dict[str, Any] = {"description": part.description, "quantity": decimal_text(part.quantity)}
    if part.unit_amount is not None:
        data["unit_amount"] = decimal_text(part.unit_amount)
    if part.flat_amount is not None and part.flat_amount != 0:
        data["flat_amount"] = decimal_text(part.flat_amount)
    data["amount"] = decimal_text(part.amount)
    if part.tier is not None:
        data["tier"] = part.tier + 1
        data["tier_from"] = None if part.tier_from is None else decimal_text(part.tier_from)
        data["tier_up_to"] = None if part.tier_up_to is None else decimal_text(part.tier_up_to)
    if part.packages is not None:
        data["packages"] = decimal_text(part.packages)
    if part.dimension is not None:
        data["dimension_values"] = list(part.dimension)
    return data


def _customer_keys(contract: Contract) -> list[str]:
    """A record belongs to the customer whose external_id, or id, it names (SPEC §8)."""
    keys = [contract.customer.external_id] if contract.customer.external_id else []
    return [*keys, str(contract.customer_id)]


def _metered(
    contract: Contract, pricing: Pricing, model: PricingModel, piece: BillingPeriod, quantities: QuantitySource
) -> tuple[Decimal, dict[DimensionKey, Decimal] | None]:
    assert pricing.metric is not None
    start, end = period_datetimes(start=piece.start, end=piece.end)
    columns = [d.column_name for d in model.dimensions] if model.pricing_type == PricingType.MATRIX else None
    totals: dict[DimensionKey, Decimal] = {}
    for key in _customer_keys(contract):
        found = quantities(metric=pricing.metric, customer_id=key, start=start, end=end, columns=columns)
        for cell, amount in found.items():
            totals[cell] = totals.get(cell, Decimal(0)) + amount
    quantity = sum(totals.values(), Decimal(0))
    return quantity, (totals if columns is not None else None)


def _pricing_model(pricing: Pricing) -> PricingModel:
    """`pricing_parse` of the pricing's data, kept on the instance while that data is unchanged: links
    read together share their Pricing instances, so a batch parses each pricing once."""
    cached: tuple[Any, PricingModel] | None = getattr(pricing, "_parsed_pricing", None)
    if cached is not None and cached[0] == pricing.pricing_data:
        return cached[1]
    model = pricing_parse(pricing_data=pricing.pricing_data)
    pricing._parsed_pricing = (copy.deepcopy(pricing.pricing_data), model)  # type: ignore[attr-defined]
    return model


def _line(
    contract: Contract, link: PhasePricing, piece: BillingPeriod, quantities: QuantitySource
) -> tuple[ComputedLine, tuple[str, ...]]:
    pricing: Pricing = link.pricing
    model = _pricing_model(pricing)
    breakdown: dict[str, Any] = {}
    rating: Rating
    if pricing.quantity_type == QuantityType.METERED:
        quantity, cells = _metered(contract, pricing, model, piece, quantities)
        rating = rate(model=model, dimensions=cells) if cells is not None else rate(model=model, quantity=quantity)
        exact = rating.amount
    else:
        quantity = pricing.quantity if pricing.quantity is not None else Decimal(1)
        rating = rate(model=model, quantity=quantity)
        exact = piece.fixed_prorate(amount=rating.amount)
        if piece.fixed_days != piece.full_days:
            breakdown["proration"] = {
                "days": piece.fixed_days,
                "period_days": piece.full_days,
                "full_amount": decimal_text(rating.amount),
            }
    if model.pricing_type in BREAKDOWN_TYPES:
        breakdown["parts"] = [_part_json(part) for part in rating.parts]
    if rating.flagged:
        breakdown["flagged"] = list(rating.flagged)
    unit_amount = ""
    if model.pricing_type not in BREAKDOWN_TYPES and len(rating.parts) == 1 and rating.parts[0].unit_amount is not None:
        unit_amount = decimal_text(rating.parts[0].unit_amount)
    name = pricing.product.name
    detail = pricing.name or pricing.label or link.description
    line = ComputedLine(
        description=f"{name}: {detail}"[:500] if detail else name[:500],
        product_id=pricing.product_id,
        pricing_id=pricing.id,
        pricing_type=pricing.pricing_type,
        period_start=piece.start,
        period_end=piece.end,
        quantity=decimal_text(quantity),
        unit=pricing.unit,
        unit_amount=unit_amount,
        breakdown=breakdown,
        amount=money_round(amount=exact, currency=contract.currency),
    )
    flagged = tuple(f"{line.description}: {message}" for message in rating.flagged)
    return line, flagged


# Customers whose metered quantities one query reads, at most. For a hundred the database looks each up
# in the values' index; for many more it reads the whole table, in parallel, which costs more CPU and
# time (measured: 500 customers among 10,000, 0.29 s of CPU in one query, 0.19 s in five).
QUANTITIES_CHUNK = 100


def invoice_quantities_prefetch(
    *, invoices: Iterable[tuple[Contract, Sequence[PhasePricing], dt.date, dt.date]]
) -> MeteredQuantities:
    """The metered quantities of many invoices (contract, its links, period start and end), read together:
    one query per distinct period and QUANTITIES_CHUNK customers (a customer's keys in the same query),
    so a month-end run reads a few per batch. A piece whose span is not its invoice's period (mixed
    cadences, a phase changing mid-period) is read when it is computed."""
    wanted: dict[tuple[dt.date, dt.date], tuple[dict[int, BillableMetric], dict[Any, list[str]]]] = {}
    for contract, links, start, end in invoices:
        metrics = {link.pricing.metric.id: link.pricing.metric for link in links if link.pricing.metric is not None}
        if not metrics:
            continue
        period_metrics, customers = wanted.setdefault((start, end), ({}, {}))
        period_metrics.update(metrics)
        customers[contract.customer_id] = _customer_keys(contract)
    quantities = MeteredQuantities()
    for (start, end), (metrics, customers) in wanted.items():
        start_at, end_at = period_datetimes(start=start, end=end)
        keys = list(customers.values())
        for low in range(0, len(keys), QUANTITIES_CHUNK):
            chunk = [key for customer_keys in keys[low : low + QUANTITIES_CHUNK] for key in customer_keys]
            quantities.prefetch(metrics=metrics.values(), customer_ids=chunk, start=start_at, end=end_at)
    return quantities


def invoice_compute(
    *,
    contract: Contract,
    period_start: dt.date,
    period_end: dt.date,
    links: Sequence[PhasePricing] | None = None,
    pauses: Sequence[PauseSpan] | None = None,
    quantities: QuantitySource = metered_quantities_by_dimension,
) -> InvoiceComputation:
    """The lines and totals of `contract`'s invoice for [period_start, period_end), from current values.

    `links` (contract_pricing_links), `pauses` (contract_pauses) and `quantities` (a MeteredQuantities)
    may come prefetched for many invoices at once; the result is the same.
    """
    if links is None:
        links = contract_pricing_links(contract=contract)
    if pauses is None:
        pauses = contract_pauses(contract)
    end = contract_end(contract)
    lines: list[ComputedLine] = []
    flagged: list[str] = []
    for link in links:
        pricing = link.pricing
        pieces = billing_periods(
            cadence=cadence_parse(text=pricing.cadence),
            anchor=link.anchor_date or contract.anchor_date,
            start=contract.start_date,
            end=end,
            until=period_end,
            phases=[_link_span(link)],
            pauses=pauses,
        )
        first_index = pieces[0].index if pieces else None
        for piece in pieces:
            if not (period_start <= piece.period_start < period_end) or not piece.charges:
                continue
            if not pricing.is_recurring and piece.index != first_index:
                continue
            line, line_flags = _line(contract, link, piece, quantities)
            lines.append(line)
            flagged.extend(line_flags)
    lines.sort(key=lambda line: (line.period_start, line.description, str(line.pricing_id)))
    return computation_of(
        currency=contract.currency, lines=lines, tax_rate=Decimal(contract.customer.tax_rate), flagged=flagged
    )


def computation_of(
    *, currency: str, lines: Sequence[ComputedLine], tax_rate: Decimal, flagged: Sequence[str] = ()
) -> InvoiceComputation:
    """The totals of `lines`: subtotal = their sum, tax = `tax_rate` percent of it, each rounded half-up."""
    subtotal = sum((line.amount for line in lines), Decimal(0))
    tax = money_round(amount=subtotal * tax_rate / 100, currency=currency)
    subtotal = money_round(amount=subtotal, currency=currency)
    return InvoiceComputation(
        currency=currency,
        lines=tuple(lines),
        subtotal=subtotal,
        tax_rate=tax_rate,
        tax=tax,
        total=subtotal + tax,
        flagged=tuple(flagged),
    )


# The stored fields of a line (InvoiceLine attnames) besides its id and invoice, in the order
# `invoice_line_values` gives them.
LINE_FIELDS = (
    "position",
    "description",
    "product_id",
    "pricing_id",
    "pricing_type",
    "period_start",
    "period_end",
    "quantity",
    "unit",
    "unit_amount",
    "breakdown",
    "amount",
    "adjustment_of_start",
    "adjustment_of_end",
)


def invoice_line_values(computation: InvoiceComputation) -> list[tuple[Any, ...]]:
    """What each of `computation`'s lines stores, in order: the values of LINE_FIELDS."""
    return [
        (
            position,
            line.description,
            line.product_id,
            line.pricing_id,
            line.pricing_type,
            line.period_start,
            line.period_end,
            line.quantity,
            line.unit,
            line.unit_amount,
            line.breakdown,
            line.amount,
            line.adjustment_of_start,
            line.adjustment_of_end,
        )
        for position, line in enumerate(computation.lines)
    ]


def invoice_line_rows(invoice: Invoice, computation: InvoiceComputation) -> list[InvoiceLine]:
    """Unsaved line rows of `invoice` for `computation`'s lines, in order (stored, or shown upcoming)."""
    return [
        InvoiceLine(invoice=invoice, **dict(zip(LINE_FIELDS, values, strict=True)))
        for values in invoice_line_values(computation)
    ]
