"""Dashboard pages for Billing (SPEC §8): customers, products and their pricings, plans, contracts.

Thin: forms shape the input, billing-core's services validate and write (their errors land next to the
fields), selectors read scoped to the acting organisation (another organisation's id is a 404).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing.catalogue import plan_create, plan_pricings_add, pricing_create, product_create
from billing.contracts import (
    contract_create,
    contract_expire,
    contract_pause,
    contract_phase_create,
    contract_phase_pricing_add,
    contract_resume,
    contract_update,
)
from billing.customers import customer_create
from billing.forms import (
    CONTRACT_ROUTE,
    CUSTOMER_ROUTE,
    PHASE_ROUTE,
    PLAN_ROUTE,
    PRICING_TYPE_LABELS,
    PRODUCT_ROUTE,
    ContractForm,
    CustomerForm,
    CustomerSearchForm,
    DateActionForm,
    PauseForm,
    PhaseForm,
    PhasePricingForm,
    PlanForm,
    PlanPricingsForm,
    PricingForm,
    ProductForm,
    errors_place,
    pricing_label,
    pricing_path_label,
)
from billing.invoicing.api import money_text
from billing.invoicing.compute import decimal_text
from billing.invoicing.models import Invoice, InvoiceLine
from billing.invoicing.upcoming import UPCOMING_CONTRACT_STATUSES, contract_upcoming_invoice
from billing.models import Contract, ContractPhase, ContractStatus, Pricing, ProductType
from billing.overview import pricing_curves, unmatched_usage_customers
from billing.rating import PricingInvalid, pricing_parse
from billing.selectors import (
    contract_amendments,
    contract_get,
    contracts_list,
    customer_get,
    customers_list,
    plan_get,
    plans_list,
    pricings_list,
    product_get,
    products_list,
)
from metrics.models import BillableMetric
from metrics.selectors import metrics_list
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import member_view
from zenskar_site.lib.errors import Conflict, DomainError, NotFound, ValidationFailed
from zenskar_site.lib.pages import not_found_page, refusal_messages

LIST_LIMIT = 200


# --- customers ---


@member_view()
def customer_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    search = CustomerSearchForm(request.GET)
    customers = customers_list(organisation=actor.organisation)
    query = search.cleaned_data["q"].strip() if search.is_valid() else ""
    if query:
        customers = customers.filter(
            Q(customer_name__icontains=query) | Q(external_id__icontains=query) | Q(email__icontains=query)
        )
    return render(
        request,
        "billing/customer_list.html",
        {
            "search": search,
            "query": query,
            "customers": list(customers.annotate(contract_count=Count("contracts"))[:LIST_LIMIT]),
            "unmatched": unmatched_usage_customers(organisation=actor.organisation, now=timezone.now()),
        },
    )


@member_view(write=True)
def customer_new(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = CustomerForm(request.POST or None, initial={"external_id": request.GET.get("external_id", "")})
    if request.method == "POST" and form.is_valid():
        try:
            customer = customer_create(actor=actor, data=form.body())
        except ValidationFailed as exc:
            errors_place(form, exc, route=CUSTOMER_ROUTE)
        else:
            messages.success(request, f"Customer “{customer.customer_name}” created.")
            return redirect("billing:customer-detail", customer_id=customer.id)
    return render(request, "billing/customer_form.html", {"form": form})


@dataclass(frozen=True)
class UpcomingRow:
    line: InvoiceLine
    metric: BillableMetric | None
    last_day: dt.date  # the line's period as a person reads it (its end is exclusive)
    amount: str  # with the currency's minor-unit digits


@dataclass(frozen=True)
class UpcomingView:
    """A contract's upcoming invoice as the customer and contract pages show it (or why it cannot be)."""

    contract: Contract
    invoice: Invoice | None
    rows: list[UpcomingRow]
    last_day: dt.date | None = None
    totals: dict[str, str] | None = None
    problem: str = ""


def upcoming_views(contracts: list[Contract], now: dt.datetime) -> list[UpcomingView]:
    """Each billed contract's upcoming invoice (billing.invoicing.upcoming) with its lines' metrics."""
    views: list[UpcomingView] = []
    for contract in contracts:
        try:
            invoice = contract_upcoming_invoice(contract=contract, now=now)
        except DomainError as exc:  # e.g. a metric whose granularity no longer fits the cadence
            views.append(UpcomingView(contract, None, [], problem=exc.detail))
            continue
        if invoice is None:
            continue
        lines: list[InvoiceLine] = invoice.upcoming_lines  # type: ignore[attr-defined]
        metrics = {
            pricing.id: pricing.metric
            for pricing in Pricing.objects.filter(id__in=[line.pricing_id for line in lines]).select_related("metric")
        }
        rows = [
            UpcomingRow(
                line,
                metrics.get(line.pricing_id) if line.pricing_id else None,
                line.period_end - dt.timedelta(days=1),
                money_text(line.amount, invoice.currency),
            )
            for line in lines
        ]
        totals = {name: money_text(getattr(invoice, name), invoice.currency) for name in ("subtotal", "tax", "total")}
        totals["tax_rate"] = decimal_text(invoice.tax_rate)
        views.append(UpcomingView(contract, invoice, rows, invoice.period_end - dt.timedelta(days=1), totals))
    return views


@member_view()
def customer_detail(request: HttpRequest, actor: Actor, customer_id: str) -> HttpResponse:
    try:
        customer = customer_get(organisation=actor.organisation, customer_id=customer_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    now = timezone.now()
    contracts = list(contracts_list(organisation=actor.organisation).filter(customer=customer))
    billed = sorted(
        (c for c in contracts if c.status in UPCOMING_CONTRACT_STATUSES),
        key=lambda c: (c.start_date, c.created_at, str(c.id)),
    )
    return render(
        request,
        "billing/customer_detail.html",
        {
            "customer": customer,
            "tax_rate": decimal_text(customer.tax_rate),  # 10, not Decimal.normalize's 1E+1
            "today": now.astimezone(dt.UTC).date(),
            "upcoming": upcoming_views(billed, now),
            "contracts": contracts,
        },
    )


# --- products and pricings ---


@member_view()
def product_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    products = products_list(organisation=actor.organisation).prefetch_related("pricings")
    return render(request, "billing/product_list.html", {"products": list(products[:LIST_LIMIT])})


@member_view(write=True)
def product_new(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = ProductForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            product = product_create(actor=actor, data=form.body())
        except ValidationFailed as exc:
            errors_place(form, exc, route=PRODUCT_ROUTE)
        else:
            messages.success(request, f"Product “{product.name}” created. Add a pricing to sell it.")
            return redirect("billing:product-detail", product_id=product.id)
    return render(request, "billing/product_form.html", {"form": form})


@dataclass(frozen=True)
class PricingRow:
    pricing: Pricing
    model_label: str
    summary: str


def pricing_summary(pricing: Pricing) -> str:
    """The price structure in a few words: `0.10 up to 100, then 0.08`."""
    data = pricing.pricing_data
    kind = pricing.pricing_type
    if kind in ("flat_fee", "per_unit"):
        return f"{data.get('unit_amount')} per {'period' if kind == 'flat_fee' else pricing.unit or 'unit'}"
    if kind in ("tiered", "volume", "step"):
        parts = []
        for index, (up_to, amount) in enumerate(zip(data.get("up_to", []), data.get("unit_amount", []), strict=False)):
            flats = data.get("flat_amount") or []
            flat = f" + {flats[index]} flat" if index < len(flats) and flats[index] not in ("0", 0) else ""
            parts.append(f"{amount}{flat} up to {up_to}" if up_to is not None else f"{amount}{flat} above")
        return "; ".join(parts)
    if kind == "package":
        return f"{data.get('unit_amount')} per {data.get('package_size')} units"
    if kind == "percent":
        return f"{data.get('percentage')}%"
    if kind == "matrix":
        columns = ", ".join(str(d.get("column_name", "")) for d in data.get("dimensions", []))
        return f"{len(data.get('values', []))} prices over {columns}"
    return ""


def pricing_rows(pricings: list[Pricing]) -> list[PricingRow]:
    return [
        PricingRow(p, PRICING_TYPE_LABELS.get(p.pricing_type, p.pricing_type), pricing_summary(p)) for p in pricings
    ]


@member_view()
def product_detail(request: HttpRequest, actor: Actor, product_id: str) -> HttpResponse:
    try:
        product = product_get(organisation=actor.organisation, product_id=product_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    pricings = list(pricings_list(organisation=actor.organisation, product=product))
    return render(request, "billing/product_detail.html", {"product": product, "rows": pricing_rows(pricings)})


def _pricing_form(request: HttpRequest, actor: Actor, product: Any) -> PricingForm:
    metrics = list(metrics_list(organisation=actor.organisation)) if product.type == ProductType.METERED else []
    return PricingForm(request.POST or None, product=product, metrics=metrics)


@member_view(write=True)
def pricing_new(request: HttpRequest, actor: Actor, product_id: str) -> HttpResponse:
    try:
        product = product_get(organisation=actor.organisation, product_id=product_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    form = _pricing_form(request, actor, product)
    if request.method == "POST" and form.is_valid():
        try:
            body = form.body()
            if form.line_errors:
                raise ValidationFailed(
                    {f"pricing_data.{k.removeprefix('matrix_')}": v for k, v in form.line_errors.items()}
                )
            pricing = pricing_create(actor=actor, product_id=product.id, data=body)
        except ValidationFailed as exc:
            errors_place(form, exc, route=form.route(), describe=pricing_path_label)
        else:
            messages.success(request, f"Pricing “{pricing.name or pricing.pricing_type}” added to {product.name}.")
            return redirect("billing:product-detail", product_id=product.id)
    return render(request, "billing/pricing_form.html", {"form": form, "product": product})


def _json_errors(form: PricingForm, exc: ValidationFailed) -> dict[str, list[str]]:
    errors_place(form, exc, route=form.route(), describe=pricing_path_label)
    return {name: [str(m) for m in found] for name, found in form.errors.items()}


@require_POST
@member_view(write=True)
def pricing_preview(request: HttpRequest, actor: Actor, product_id: str) -> JsonResponse:
    """The amount against quantity of the pricing being typed, from the rating engine (nothing saved)."""
    try:
        product = product_get(organisation=actor.organisation, product_id=product_id)
    except NotFound as exc:
        return JsonResponse({"detail": exc.detail}, status=404)
    form = _pricing_form(request, actor, product)
    if not form.is_valid():
        return JsonResponse({"errors": {n: [str(m) for m in f] for n, f in form.errors.items()}}, status=400)
    data = form.pricing_data()
    if form.line_errors:
        return JsonResponse({"errors": form.line_errors}, status=400)
    try:
        model = pricing_parse(pricing_data=data)
    except PricingInvalid as exc:
        return JsonResponse({"errors": _json_errors(form, exc)}, status=400)
    bounds = [_number(t.up_to) for t in model.tiers if t.up_to is not None]
    curves = pricing_curves(model=model)
    return JsonResponse(
        {
            "pricing_type": model.pricing_type.value,
            "bounds": bounds,
            "series": [
                {
                    "label": curve.label,
                    "points": [[_number(p.quantity), _number(p.amount)] for p in curve.points],
                }
                for curve in curves
            ],
        }
    )


def _number(value: Decimal) -> str:
    return format(value.normalize(), "f")


# --- plans ---


def _org_pricings(actor: Actor) -> list[Pricing]:
    return list(pricings_list(organisation=actor.organisation).order_by("product__name", "created_at")[:500])


@member_view()
def plan_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    return render(
        request, "billing/plan_list.html", {"plans": list(plans_list(organisation=actor.organisation)[:LIST_LIMIT])}
    )


@member_view(write=True)
def plan_new(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = PlanForm(request.POST or None, pricings=_org_pricings(actor))
    if request.method == "POST" and form.is_valid():
        try:
            plan = plan_create(actor=actor, data=form.body())
        except ValidationFailed as exc:
            errors_place(form, exc, route=PLAN_ROUTE)
        else:
            messages.success(request, f"Plan “{plan.name}” created.")
            return redirect("billing:plan-detail", plan_id=plan.id)
    return render(request, "billing/plan_form.html", {"form": form})


@member_view(write=True)
def plan_detail(request: HttpRequest, actor: Actor, plan_id: str) -> HttpResponse:
    try:
        plan = plan_get(organisation=actor.organisation, plan_id=plan_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    in_plan = [link.pricing for link in plan.plan_pricings.all()]
    taken = {p.id for p in in_plan}
    form = PlanPricingsForm(request.POST or None, pricings=[p for p in _org_pricings(actor) if p.id not in taken])
    if request.method == "POST" and form.is_valid():
        try:
            plan_pricings_add(actor=actor, plan_id=plan.id, pricing_ids=list(form.cleaned_data["pricing_ids"]))
        except ValidationFailed as exc:
            errors_place(form, exc, route={"pricing_ids": "pricing_ids"})
        else:
            messages.success(request, "Pricings added to the plan.")
            return redirect("billing:plan-detail", plan_id=plan.id)
    return render(
        request,
        "billing/plan_detail.html",
        {
            "plan": plan,
            "rows": pricing_rows(in_plan),
            "form": form,
            "contracts": list(contracts_list(organisation=actor.organisation).filter(plan=plan)[:50]),
        },
    )


# --- contracts ---


def _contract_form(request: HttpRequest, actor: Actor) -> ContractForm:
    initial = {"customer_id": request.GET.get("customer", ""), "plan_id": request.GET.get("plan", "")}
    return ContractForm(
        request.POST or None,
        initial=initial,
        customers=list(customers_list(organisation=actor.organisation)[:1000]),
        plans=list(plans_list(organisation=actor.organisation).filter(status="active")[:500]),
    )


@member_view()
def contract_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    contracts = contracts_list(organisation=actor.organisation)
    return render(request, "billing/contract_list.html", {"contracts": list(contracts[:LIST_LIMIT])})


@member_view(write=True)
def contract_new(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = _contract_form(request, actor)
    if request.method == "POST" and form.is_valid():
        try:
            contract = contract_create(actor=actor, data=form.body())
        except ValidationFailed as exc:
            errors_place(form, exc, route=CONTRACT_ROUTE)
        else:
            messages.success(request, f"Contract “{contract.name}” created.")
            return redirect("billing:contract-detail", contract_id=contract.id)
    return render(request, "billing/contract_form.html", {"form": form})


# The timeline of a contract's phases: laid out here in SVG units, drawn by the template.
TIMELINE_LEFT, TIMELINE_RIGHT = 8, 992
TIMELINE_ROW = 34


@dataclass(frozen=True)
class TimelineBar:
    phase: ContractPhase
    x: float
    width: float
    y: int
    label: str
    open_ended: bool


@dataclass(frozen=True)
class Timeline:
    bars: list[TimelineBar]
    start: dt.date
    end: dt.date
    today_x: float | None
    height: int
    ticks: list[tuple[float, str]]


def timeline_layout(contract: Contract, phases: list[ContractPhase], today: dt.date) -> Timeline | None:
    if not phases:
        return None
    start = min([contract.start_date, *(p.start_date for p in phases)])
    ends = [d for d in (contract.end_date, *(p.end_date for p in phases)) if d is not None]
    latest_start = max(p.start_date for p in phases)
    # An open end is drawn to a little past the latest date known, so the bar is visible.
    end = max([*ends, latest_start + dt.timedelta(days=30), start + dt.timedelta(days=30)])
    if contract.end_date is None or any(p.end_date is None for p in phases):
        end = max(end, today + dt.timedelta(days=30))
    span = (end - start).days or 1
    width = TIMELINE_RIGHT - TIMELINE_LEFT

    def x_of(day: dt.date) -> float:
        return round(TIMELINE_LEFT + width * (day - start).days / span, 2)

    bars = []
    for index, phase in enumerate(phases):
        phase_end = phase.end_date or contract.end_date or end
        x = x_of(phase.start_date)
        bars.append(
            TimelineBar(
                phase=phase,
                x=x,
                width=max(round(x_of(phase_end) - x, 2), 2),
                y=6 + index * TIMELINE_ROW,
                label=f"{phase.name} · {phase.start_date:%Y-%m-%d} → "
                + (f"{phase.end_date:%Y-%m-%d}" if phase.end_date else "open"),
                open_ended=phase.end_date is None and contract.end_date is None,
            )
        )
    ticks = [(x_of(start), f"{start:%Y-%m-%d}"), (x_of(end), f"{end:%Y-%m-%d}")]
    return Timeline(
        bars=bars,
        start=start,
        end=end,
        today_x=x_of(today) if start <= today <= end else None,
        height=12 + len(phases) * TIMELINE_ROW + 18,
        ticks=ticks,
    )


@dataclass(frozen=True)
class Amendment:
    at: dt.datetime
    actor: str
    action: str
    reason: str
    changes: list[str]


def _shown(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def _changes(before: Any, after: Any) -> list[str]:
    """What an amendment changed, field by field (phases and pauses counted, not spelled out)."""
    if not isinstance(after, dict):
        return []
    if not isinstance(before, dict):
        return ["created"]
    lines = []
    for key in after:
        if key in ("phases", "pauses"):
            old, new = before.get(key) or [], after.get(key) or []
            if old != new:
                lines.append(f"{key}: {len(old)} → {len(new)}" if len(old) != len(new) else f"{key} changed")
        elif before.get(key) != after.get(key):
            lines.append(f"{key}: {_shown(before.get(key))} → {_shown(after.get(key))}")
    return lines


def _phase_prefix(phase: ContractPhase) -> str:
    return f"p{phase.id.hex[:8]}"


def _contract_context(request: HttpRequest, actor: Actor, contract: Contract) -> dict[str, Any]:
    today = timezone.now().date()
    phases = list(contract.phases.all())
    taken_by_phase = {phase.id: {link.pricing_id for link in phase.phase_pricings.all()} for phase in phases}
    pricings = [p for p in _org_pricings(actor) if not p.currency or p.currency == contract.currency]
    return {
        "contract": contract,
        "phases": phases,
        "phase_rows": [
            (
                phase,
                PhasePricingForm(
                    pricings=[p for p in pricings if p.id not in taken_by_phase[phase.id]], prefix=_phase_prefix(phase)
                ),
            )
            for phase in phases
        ],
        "timeline": timeline_layout(contract, phases, today),
        "phase_form": PhaseForm(prefix="phase"),
        "pause_form": PauseForm(prefix="pause", initial={"start_date": today.isoformat()}),
        "date_form": DateActionForm(prefix="act"),
        "amendments": [
            Amendment(e.at, e.actor, e.action, e.reason, _changes(e.before, e.after))
            for e in contract_amendments(contract=contract)
        ],
        "can_activate": contract.status in (ContractStatus.DRAFT, ContractStatus.DISPUTED),
        "can_pause": contract.status == ContractStatus.ACTIVE,
        "can_resume": contract.status == ContractStatus.PAUSED,
        "can_expire": contract.status != ContractStatus.EXPIRED,
        "pricing_label": pricing_label,
    }


@member_view()
def contract_detail(request: HttpRequest, actor: Actor, contract_id: str) -> HttpResponse:
    try:
        contract = contract_get(organisation=actor.organisation, contract_id=contract_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    context = _contract_context(request, actor, contract)
    now = timezone.now()
    context["upcoming"] = upcoming_views([contract], now)
    context["today"] = now.astimezone(dt.UTC).date()
    return render(request, "billing/contract_detail.html", context)


@require_POST
@member_view(write=True)
def contract_action(request: HttpRequest, actor: Actor, contract_id: str, action: str) -> HttpResponse:
    """Activate, pause, resume or expire a contract (each an amendment in its audit trail)."""
    try:
        contract = contract_get(organisation=actor.organisation, contract_id=contract_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    pause = PauseForm(request.POST, prefix="pause")
    dated = DateActionForm(request.POST, prefix="act")
    reason = dated.data.get("act-reason", "") or ""
    on = (dated.data.get("act-on", "") or "").strip() or None
    try:
        if action == "activate":
            contract_update(
                actor=actor, contract_id=contract.id, changes={"status": ContractStatus.ACTIVE}, reason=reason
            )
            done = "Contract activated."
        elif action == "pause":
            pause.is_valid()
            values = pause.cleaned_data if hasattr(pause, "cleaned_data") else {}
            contract_pause(
                actor=actor,
                contract_id=contract.id,
                start_date=(values.get("start_date") or "").strip() or None,
                end_date=(values.get("end_date") or "").strip() or None,
                unpause_extension_policy=values.get("unpause_extension_policy")
                or pause.data.get("pause-unpause_extension_policy"),
                reason=reason,
            )
            done = "Contract paused."
        elif action == "resume":
            contract_resume(actor=actor, contract_id=contract.id, resume_date=on, reason=reason)
            done = "Contract resumed."
        elif action == "expire":
            contract_expire(actor=actor, contract_id=contract.id, expiry_date=on, reason=reason)
            done = "Contract expired."
        else:
            return not_found_page(request, NotFound(f"No contract action {action[:40]!r}."))
    except (ValidationFailed, Conflict) as exc:
        refusal_messages(request, exc, what=f"Not {action}d" if action != "pause" else "Not paused")
    else:
        messages.success(request, done)
    return redirect("billing:contract-detail", contract_id=contract.id)


@require_POST
@member_view(write=True)
def contract_phase_new(request: HttpRequest, actor: Actor, contract_id: str) -> HttpResponse:
    try:
        contract = contract_get(organisation=actor.organisation, contract_id=contract_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    form = PhaseForm(request.POST, prefix="phase")
    if form.is_valid():
        try:
            phase = contract_phase_create(actor=actor, contract_id=contract.id, data=form.body())
        except ValidationFailed as exc:
            errors_place(form, exc, route=PHASE_ROUTE)
        except Conflict as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, f"Phase “{phase.name}” added.")
            return redirect("billing:contract-detail", contract_id=contract.id)
    context = _contract_context(request, actor, contract)
    context["phase_form"] = form
    return render(request, "billing/contract_detail.html", context, status=400)


@require_POST
@member_view(write=True)
def contract_phase_pricing_new(request: HttpRequest, actor: Actor, contract_id: str, phase_id: str) -> HttpResponse:
    try:
        contract = contract_get(organisation=actor.organisation, contract_id=contract_id)
        phase = next((p for p in contract.phases.all() if str(p.id) == phase_id), None)
        if phase is None:
            raise NotFound(f"No phase with id {phase_id[:100]!r} in this contract.")
    except NotFound as exc:
        return not_found_page(request, exc)
    pricing_id = request.POST.get(f"{_phase_prefix(phase)}-pricing_id", "")
    try:
        contract_phase_pricing_add(
            actor=actor, contract_id=contract.id, phase_id=phase.id, data={"pricing_id": pricing_id}
        )
    except (ValidationFailed, Conflict, NotFound) as exc:
        refusal_messages(request, exc, what="Pricing not added")
    else:
        messages.success(request, f"Pricing added to the phase “{phase.name}”.")
    return redirect("billing:contract-detail", contract_id=contract.id)
