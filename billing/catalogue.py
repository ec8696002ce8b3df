"""Writes for the catalogue: products, their pricings, and plans (SPEC §8). Every change is audited."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction

from billing.customers import snapshot
from billing.inputs import Fields, currency_value, uuid_value
from billing.invoicing.dispatch import contract_drafts_refresh_on_commit
from billing.models import PhasePricing, Plan, PlanPricing, PlanStatus, Pricing, Product, ProductType, QuantityType
from billing.periods import CADENCES, Cadence, cadence_parse
from billing.quantities import metric_cadence_check
from billing.rating import PricingInvalid, pricing_data_normalise, pricing_parse
from metrics.models import BillableMetric
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.text import printable, unstorable_at, unstorable_problems

PRODUCT_FIELDS = ("name", "sku", "description", "type", "is_active", "tax_codes", "custom_attributes")
PRICING_FIELDS = ("name", "description", "pricing_data", "quantity", "billing_period", "is_recurring", "currency")
# Keys of pricing_data that are not the pricing model: read here and stored once, in their own columns.
PRICING_DATA_EXTRAS = ("quantity", "pricing_period", "currency")
PLAN_FIELDS = ("name", "description", "currency", "status", "custom_attributes", "pricing_ids")
DEFAULT_CADENCE = CADENCES["P1M"]
MAX_PLAN_PRICINGS = 200


# --- products ---


def product_snapshot(product: Product) -> dict[str, Any]:
    return {"id": str(product.id), **snapshot(product, PRODUCT_FIELDS)}


def _sku_taken(sku: str) -> ValidationFailed:
    return ValidationFailed({"sku": [f"A product with SKU {sku!r} already exists in this organisation."]})


def _tax_codes(fields: Fields) -> list[str]:
    codes = fields.json_list("tax_codes")
    if not all(isinstance(code, str) and len(code) <= 64 for code in codes):
        fields.fail("tax_codes", "Expected a list of strings of at most 64 characters.")
        return []
    return codes


def product_fields_read(fields: Fields, *, creating: bool) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    if creating or fields.has("name"):
        clean["name"] = fields.text("name", max_length=255, required=True)
    if creating or fields.has("sku"):
        clean["sku"] = fields.identifier("sku")
    if creating or fields.has("description"):
        clean["description"] = fields.text("description", max_length=10_000)
    if creating:
        clean["type"] = fields.choice("type", choices=ProductType.values)
    elif fields.has("type"):
        fields.fail("type", "A product's type cannot change; create another product.")
    if creating or fields.has("is_active"):
        clean["is_active"] = fields.boolean("is_active", default=True)
    if creating or fields.has("tax_codes"):
        clean["tax_codes"] = _tax_codes(fields)
    if creating or fields.has("custom_attributes"):
        clean["custom_attributes"] = fields.json_object("custom_attributes")
    return clean


def product_build(*, actor: Actor, fields: Fields) -> Product | None:
    """Validate and create a product from `fields` (errors collect in `fields`); None when invalid.

    Shared by product_create and a contract's inline product, which reports errors under its own path.
    """
    clean = product_fields_read(fields, creating=True)
    sku = clean.get("sku")
    if sku and Product.objects.filter(organisation=actor.organisation, sku=sku).exists():
        fields.fail("sku", f"A product with SKU {sku!r} already exists in this organisation.")
    if fields.errors:
        return None
    try:
        with transaction.atomic():
            product = Product.objects.create(organisation=actor.organisation, **clean)
    except IntegrityError:  # a concurrent create took the SKU between the check and the insert
        raise _sku_taken(str(sku)) from None
    audit_record(
        actor=actor,
        action="product.create",
        object_type="product",
        object_id=str(product.id),
        after=product_snapshot(product),
    )
    return product


@transaction.atomic
def product_create(*, actor: Actor, data: Mapping[str, Any]) -> Product:
    fields = Fields(data)
    fields.refuse_unknown(PRODUCT_FIELDS)
    product = product_build(actor=actor, fields=fields)
    fields.raise_if_errors()
    assert product is not None
    return product


def product_locked(*, actor: Actor, product_id: Any) -> Product:
    key = uuid_value(product_id)
    product = (
        Product.objects.select_for_update().filter(organisation=actor.organisation, id=key).first()
        if key is not None
        else None
    )
    if product is None:
        raise NotFound(f"No product with id {printable(str(product_id))[:100]!r} in this organisation.")
    return product


@transaction.atomic
def product_update(*, actor: Actor, product_id: Any, changes: Mapping[str, Any], reason: str = "") -> Product:
    product = product_locked(actor=actor, product_id=product_id)
    before = product_snapshot(product)
    fields = Fields(changes)
    fields.refuse_unknown(PRODUCT_FIELDS)
    clean = product_fields_read(fields, creating=False)
    sku = clean.get("sku")
    if sku and sku != product.sku and Product.objects.filter(organisation=actor.organisation, sku=sku).exists():
        fields.fail("sku", f"A product with SKU {sku!r} already exists in this organisation.")
    fields.raise_if_errors()
    for name, value in clean.items():
        setattr(product, name, value)
    try:
        with transaction.atomic():
            product.save()
    except IntegrityError:
        raise _sku_taken(str(sku)) from None
    after = product_snapshot(product)
    if after != before:
        audit_record(
            actor=actor,
            action="product.update",
            object_type="product",
            object_id=str(product.id),
            before=before,
            after=after,
            reason=reason,
        )
        if after.get("name") != before.get("name"):
            # The product's name is in its invoice lines: the drafts that bill it follow.
            links = PhasePricing.objects.filter(pricing__product=product)
            for contract_id in sorted(set(links.values_list("phase__contract_id", flat=True)), key=str):
                contract_drafts_refresh_on_commit(contract_id=contract_id)
    return product


# --- pricings ---


def pricing_snapshot(pricing: Pricing) -> dict[str, Any]:
    return {
        "id": str(pricing.id),
        "product_id": str(pricing.product_id),
        **snapshot(
            pricing,
            ("name", "description", "pricing_data", "currency", "quantity_type", "quantity", "unit", "label"),
        ),
        "metric": pricing.metric.slug if pricing.metric is not None else None,
        "cadence": pricing.cadence,
        "is_recurring": pricing.is_recurring,
    }


def _once(fields: Fields, pricing_data: Mapping[str, Any], top: str, inner: str) -> tuple[Any, str]:
    """A value that may come top-level (`top`) or inside pricing_data (`inner`): given once, with its path."""
    top_value = fields.get(top)
    inner_value = pricing_data.get(inner) if isinstance(pricing_data, Mapping) else None
    if top_value is not None and inner_value is not None and top_value != inner_value:
        fields.fail(top, f"Given twice, differently: as {top} and as pricing_data.{inner}; give it once.")
    if inner_value is not None and top_value is None:
        return inner_value, fields.path(f"pricing_data.{inner}")
    return top_value, fields.path(top)


def _metric_find(*, actor: Actor, reference: Any) -> BillableMetric | None:
    """A billable metric of the organisation by id (a number) or slug; another organisation's is not found."""
    metrics = BillableMetric.objects.filter(organisation=actor.organisation, archived=False)
    if isinstance(reference, bool):
        return None
    if isinstance(reference, int) or (isinstance(reference, str) and reference.isascii() and reference.isdigit()):
        found = metrics.filter(id=int(reference)).first()
        if found is not None or isinstance(reference, int):
            return found
    if isinstance(reference, str) and reference and unstorable_at(reference) is None:
        return metrics.filter(slug=reference).first()
    return None


def _quantity_read(
    *, actor: Actor, fields: Fields, raw: Any, path: str, product: Product, pricing_type: str | None
) -> dict[str, Any]:
    """The quantity as model fields: quantity_type with a metric (metered) or a number (fixed)."""
    errors = fields.errors
    if raw is None:
        if product.type == ProductType.METERED:
            errors[path] = [
                'A metered product\'s pricing needs a metered quantity: {"type": "metered", "aggregate_id": '
                '"<billable metric id or slug>"}.'
            ]
            return {}
        return {"quantity_type": QuantityType.FIXED, "quantity": Decimal(1), "metric": None}
    quantity = Fields(raw, prefix=path, errors=errors)
    if not isinstance(raw, Mapping):
        return {}
    quantity.refuse_unknown(("type", "aggregate_id", "quantity", "unit", "label"))
    kind = quantity.choice("type", choices=QuantityType.values)
    clean: dict[str, Any] = {
        "unit": quantity.text("unit", max_length=64),
        "label": quantity.text("label", max_length=255),
    }
    if kind == QuantityType.METERED:
        if product.type != ProductType.METERED:
            quantity.fail("type", "A fixed product is charged a fixed quantity; use a metered product for usage.")
        reference = raw.get("aggregate_id")
        metric = _metric_find(actor=actor, reference=reference)
        if reference in (None, ""):
            quantity.fail("aggregate_id", "A metered quantity needs the billable metric's id or slug.")
        elif metric is None:
            quantity.fail(
                "aggregate_id", f"No billable metric {printable(str(reference))[:100]!r} in this organisation."
            )
        if quantity.has("quantity"):
            quantity.fail("quantity", "A metered quantity is the metric's value; it takes no fixed number.")
        clean.update(quantity_type=QuantityType.METERED, metric=metric, quantity=None)
    elif kind == QuantityType.FIXED:
        if product.type != ProductType.FIXED:
            quantity.fail("type", "A metered product's pricing needs a metered quantity (a billable metric).")
        if quantity.has("aggregate_id"):
            quantity.fail("aggregate_id", "A fixed quantity takes no metric; use type metered.")
        number = quantity.decimal(
            "quantity", default=Decimal(1), minimum=Decimal(0), maximum=Decimal("999999999"), places=6
        )
        clean.update(quantity_type=QuantityType.FIXED, metric=None, quantity=number)
    if pricing_type == "matrix" and kind == QuantityType.FIXED:
        quantity.fail("type", "Matrix pricing prices a grouped metric's values: it needs a metered quantity.")
    return clean


def _cadence_read(fields: Fields, pricing_data: Mapping[str, Any]) -> tuple[Cadence, str]:
    period, period_path = _once(fields, pricing_data, "billing_period", "pricing_period")
    path = f"{period_path}.cadence"
    if period is None:
        return DEFAULT_CADENCE, path
    if not isinstance(period, Mapping):
        fields.errors.setdefault(period_path, []).append('Expected an object such as {"cadence": "P1M"}.')
        return DEFAULT_CADENCE, path
    text = period.get("cadence")
    if text is None:
        return DEFAULT_CADENCE, path
    try:
        cadence = cadence_parse(text=text, field=path)
    except ValidationFailed as exc:
        for key, messages in exc.errors.items():
            fields.errors.setdefault(key, []).extend(messages)
        return DEFAULT_CADENCE, path
    return cadence, path


def pricing_build(*, actor: Actor, product: Product, fields: Fields, return_existing: bool = False) -> Pricing | None:
    """Validate and create a pricing of `product` (errors collect in `fields`); None when invalid.

    Shared by pricing_create and a contract's inline pricing. With `return_existing`, an identical
    pricing of the product is returned instead of a copy (Zenskar's `return_existing`).
    """
    fields.refuse_unknown(PRICING_FIELDS)
    raw_data = fields.get("pricing_data")
    if raw_data is None:
        fields.fail("pricing_data", "This field is required: the pricing model, with its pricing_type.")
        return None
    if not isinstance(raw_data, Mapping):
        fields.fail("pricing_data", "Expected a JSON object.")
        return None
    if problems := unstorable_problems(raw_data, fields.path("pricing_data")):
        fields.errors.update(problems)
        return None
    model = None
    try:
        model = pricing_parse(
            pricing_data={k: v for k, v in raw_data.items() if k not in PRICING_DATA_EXTRAS},
            field_prefix=fields.path("pricing_data"),
        )
    except PricingInvalid as exc:
        fields.errors.setdefault(exc.field, []).append(exc.message)
    raw_quantity, quantity_path = _once(fields, raw_data, "quantity", "quantity")
    quantity = _quantity_read(
        actor=actor,
        fields=fields,
        raw=raw_quantity,
        path=quantity_path,
        product=product,
        pricing_type=model.pricing_type if model is not None else None,
    )
    cadence, cadence_path = _cadence_read(fields, raw_data)
    raw_currency, currency_path = _once(fields, raw_data, "currency", "currency")
    currency = ""
    if raw_currency not in (None, ""):
        currency = currency_value(raw_currency, Fields({}, errors=fields.errors), currency_path)
    clean = {
        "name": fields.text("name", max_length=255),
        "description": fields.text("description", max_length=10_000),
        "is_recurring": fields.boolean("is_recurring", default=True),
    }
    metric = quantity.get("metric")
    if metric is not None and not fields.errors:
        try:
            metric_cadence_check(metric=metric, cadence=cadence, field=cadence_path)
        except ValidationFailed as exc:
            for path, messages in exc.errors.items():
                fields.errors.setdefault(path, []).extend(messages)
    if model is not None and metric is not None and model.pricing_type == "matrix":
        for index, dimension in enumerate(model.dimensions):
            if dimension.column_name not in (metric.group_by or []):
                fields.fail(
                    f"pricing_data.dimensions[{index}].column_name",
                    f"The metric {metric.slug!r} does not group by {dimension.column_name!r}; "
                    f"it groups by: {', '.join(metric.group_by) or 'nothing'}.",
                )
    if fields.errors or model is None:
        return None
    values = {
        **clean,
        **quantity,
        "pricing_data": pricing_data_normalise(model=model),
        "pricing_type": model.pricing_type.value,
        "currency": currency,
        "cadence": cadence.text,
    }
    if return_existing:
        existing = Pricing.objects.filter(organisation=actor.organisation, product=product, **values).first()
        if existing is not None:
            return existing
    pricing = Pricing.objects.create(organisation=actor.organisation, product=product, **values)
    audit_record(
        actor=actor,
        action="pricing.create",
        object_type="pricing",
        object_id=str(pricing.id),
        after=pricing_snapshot(pricing),
    )
    return pricing


@transaction.atomic
def pricing_create(*, actor: Actor, product_id: Any, data: Mapping[str, Any], return_existing: bool = False) -> Pricing:
    product = product_locked(actor=actor, product_id=product_id)
    fields = Fields(data)
    pricing = pricing_build(actor=actor, product=product, fields=fields, return_existing=return_existing)
    fields.raise_if_errors()
    assert pricing is not None
    return pricing


# --- plans ---


def plan_snapshot(plan: Plan) -> dict[str, Any]:
    return {
        "id": str(plan.id),
        **snapshot(plan, ("name", "description", "currency", "status", "custom_attributes")),
        "pricing_ids": [str(p.pricing_id) for p in plan.plan_pricings.order_by("position", "id")],
    }


def _plan_pricings_read(
    *, actor: Actor, fields: Fields, name: str, currency: str, already: Sequence[Any] = ()
) -> list[Pricing]:
    raw = fields.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_PLAN_PRICINGS:
        fields.fail(name, f"Expected a list of at most {MAX_PLAN_PRICINGS} pricing ids.")
        return []
    found: list[Pricing] = []
    seen = {str(key) for key in already}
    for index, reference in enumerate(raw):
        path = f"{name}[{index}]"
        key = uuid_value(reference)
        pricing = (
            Pricing.objects.filter(organisation=actor.organisation, id=key).select_related("product").first()
            if key is not None
            else None
        )
        if pricing is None:
            fields.fail(path, f"No pricing with id {printable(str(reference))[:100]!r} in this organisation.")
        elif str(pricing.id) in seen:
            fields.fail(path, "This pricing is already in the plan.")
        elif pricing.currency and currency and pricing.currency != currency:
            fields.fail(path, f"This pricing is in {pricing.currency}; the plan is in {currency}.")
        else:
            seen.add(str(pricing.id))
            found.append(pricing)
    return found


def _plan_pricings_attach(plan: Plan, pricings: Sequence[Pricing]) -> None:
    start = plan.plan_pricings.count()
    PlanPricing.objects.bulk_create(
        PlanPricing(plan=plan, pricing=pricing, position=start + index) for index, pricing in enumerate(pricings)
    )


@transaction.atomic
def plan_create(*, actor: Actor, data: Mapping[str, Any]) -> Plan:
    fields = Fields(data)
    fields.refuse_unknown(PLAN_FIELDS)
    currency = fields.currency("currency", required=True)
    clean = {
        "name": fields.text("name", max_length=255, required=True),
        "description": fields.text("description", max_length=10_000),
        "currency": currency,
        "status": fields.choice("status", choices=PlanStatus.values, default=PlanStatus.ACTIVE),
        "custom_attributes": fields.json_object("custom_attributes"),
    }
    pricings = _plan_pricings_read(actor=actor, fields=fields, name="pricing_ids", currency=currency)
    fields.raise_if_errors()
    plan = Plan.objects.create(organisation=actor.organisation, **clean)
    _plan_pricings_attach(plan, pricings)
    audit_record(
        actor=actor, action="plan.create", object_type="plan", object_id=str(plan.id), after=plan_snapshot(plan)
    )
    return plan


def plan_locked(*, actor: Actor, plan_id: Any) -> Plan:
    key = uuid_value(plan_id)
    plan = (
        Plan.objects.select_for_update().filter(organisation=actor.organisation, id=key).first()
        if key is not None
        else None
    )
    if plan is None:
        raise NotFound(f"No plan with id {printable(str(plan_id))[:100]!r} in this organisation.")
    return plan


@transaction.atomic
def plan_update(*, actor: Actor, plan_id: Any, changes: Mapping[str, Any], reason: str = "") -> Plan:
    """Edit a plan's name, description, status or attributes; `pricing_ids` adds pricings to it."""
    plan = plan_locked(actor=actor, plan_id=plan_id)
    before = plan_snapshot(plan)
    fields = Fields(changes)
    fields.refuse_unknown(PLAN_FIELDS)
    if fields.has("name"):
        plan.name = fields.text("name", max_length=255, required=True)
    if fields.has("description"):
        plan.description = fields.text("description", max_length=10_000)
    if fields.has("status"):
        plan.status = fields.choice("status", choices=PlanStatus.values, default=plan.status) or plan.status
    if fields.has("custom_attributes"):
        plan.custom_attributes = fields.json_object("custom_attributes")
    if fields.has("currency"):
        currency = fields.currency("currency", required=True)
        if currency and currency != plan.currency:
            clash = plan.plan_pricings.exclude(pricing__currency="").exclude(pricing__currency=currency).exists()
            if clash:
                fields.fail("currency", f"The plan has pricings in {plan.currency}; it cannot change to {currency}.")
            plan.currency = currency
    pricings = _plan_pricings_read(
        actor=actor,
        fields=fields,
        name="pricing_ids",
        currency=plan.currency,
        already=list(plan.plan_pricings.values_list("pricing_id", flat=True)),
    )
    fields.raise_if_errors()
    plan.save()
    _plan_pricings_attach(plan, pricings)
    after = plan_snapshot(plan)
    if after != before:
        audit_record(
            actor=actor,
            action="plan.update",
            object_type="plan",
            object_id=str(plan.id),
            before=before,
            after=after,
            reason=reason,
        )
    return plan


@transaction.atomic
def plan_pricings_add(*, actor: Actor, plan_id: Any, pricing_ids: Any, reason: str = "") -> Plan:
    """Add product pricings to a plan (Zenskar's `POST /templates/plan/{id}/products`)."""
    return plan_update(actor=actor, plan_id=plan_id, changes={"pricing_ids": pricing_ids}, reason=reason)
