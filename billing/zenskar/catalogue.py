"""Zenskar's products, pricing and plans (`/products`, `/products/{id}/pricing`, `/templates/plan`) over
billing.catalogue and billing.selectors, and the plan preview (`/templates/plan/{id}/preview`).

A plan's `products` (Zenskar's name) is its list of product pricings: each item is a pricing id, or an
object with `pricing_id` (and optionally the `product_id` it must belong to).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api.catalogue import PlanOutput, PricingOutput, ProductOutput, quantity_output
from billing.api.common import DecimalText
from billing.catalogue import (
    PRICING_FIELDS,
    PRODUCT_FIELDS,
    plan_create,
    plan_pricings_add,
    pricing_create,
    product_create,
    product_update,
)
from billing.inputs import uuid_value
from billing.models import Plan, PlanStatus, Pricing, Product, QuantityType
from billing.periods import billing_periods, cadence_boundary, cadence_parse
from billing.rating import money_round, pricing_parse, rate
from billing.selectors import plan_get, plans_list, pricings_list, product_get, products_list
from billing.zenskar.common import (
    ZenskarApi,
    body_object,
    boolean_value,
    choice_filter,
    date_value,
    errors_renamed,
    filters_apply,
    ordering_from,
    picked,
    text_filter,
    zenskar_page,
)
from zenskar_site.accounts.models import Organisation
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.text import printable

PRODUCT_FILTERS = {"name": text_filter("name")}
PLAN_FILTERS = {"name": text_filter("name"), "status": choice_filter("status", PlanStatus.values)}
SORT_KEYS = {"name": "name", "created_at": "created_at"}
PLAN_FIELDS = ("name", "description", "currency", "status", "custom_attributes")
MAX_PLAN_PRODUCTS = 200
# A preview is for people reading it: ten years of daily periods at most.
MAX_PREVIEW_DAYS = 3660


class ProductsApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        products: QuerySet[Product] = products_list(organisation=request_actor(request).organisation)
        products = filters_apply(products, params, PRODUCT_FILTERS)
        return zenskar_page(
            request=request,
            view=self,
            queryset=products,
            serialize=lambda page: ProductOutput(page, many=True).data,
            ordering=ordering_from(params, allowed=SORT_KEYS, default="-created_at"),
        )

    def post(self, request: Request) -> Response:
        product = product_create(actor=request_actor(request), data=picked(body_object(request), PRODUCT_FIELDS))
        return Response(ProductOutput(product).data, status=status.HTTP_201_CREATED)


class ProductApi(ZenskarApi):
    def get(self, request: Request, product_id: str) -> Response:
        product = product_get(organisation=request_actor(request).organisation, product_id=product_id)
        return Response(ProductOutput(product).data)

    def patch(self, request: Request, product_id: str) -> Response:
        # A product's type is fixed at creation; Zenskar's PATCH does not take it, so it is ignored here.
        changes = picked(body_object(request), set(PRODUCT_FIELDS) - {"type"})
        product = product_update(actor=request_actor(request), product_id=product_id, changes=changes)
        return Response(ProductOutput(product).data)


class ProductPricingApi(ZenskarApi):
    """A product's pricings. The body of POST is /api/v1's: Zenskar's arguments plus the pricing's
    `quantity` (a metric for metered products) and `currency`, which Zenskar also sends at the top."""

    def get(self, request: Request, product_id: str) -> Response:
        organisation = request_actor(request).organisation
        product = product_get(organisation=organisation, product_id=product_id)
        return zenskar_page(
            request=request,
            view=self,
            queryset=pricings_list(organisation=organisation, product=product),
            serialize=lambda page: PricingOutput(page, many=True).data,
            ordering="created_at",
        )

    def post(self, request: Request, product_id: str) -> Response:
        raw = request.query_params.get("return_existing")
        pricing = pricing_create(
            actor=request_actor(request),
            product_id=product_id,
            data=picked(body_object(request), PRICING_FIELDS),
            return_existing=boolean_value(raw, "return_existing") if raw not in (None, "") else False,
        )
        return Response(PricingOutput(pricing).data, status=status.HTTP_201_CREATED)


def plan_pricing_ids(*, organisation: Organisation, products: Any) -> list[Any]:
    """Zenskar's `products` of a plan as the pricing ids the catalogue service takes."""
    if not isinstance(products, list) or len(products) > MAX_PLAN_PRODUCTS:
        raise ValidationFailed({"products": [f"Expected a list of at most {MAX_PLAN_PRODUCTS} product pricings."]})
    ids: list[Any] = []
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(products):
        path = f"products[{index}]"
        if isinstance(item, dict):
            if item.get("pricing_id") in (None, ""):
                errors[f"{path}.pricing_id"] = ["This field is required: the product pricing's id."]
                continue
            pricing_id = item["pricing_id"]
            product_id = item.get("product_id")
            if product_id not in (None, ""):
                key = uuid_value(pricing_id)
                pricing = pricings_list(organisation=organisation).filter(id=key).first() if key else None
                if pricing is not None and str(pricing.product_id) != str(uuid_value(product_id)):
                    errors[f"{path}.product_id"] = [
                        f"The pricing {pricing.id} belongs to another product ({pricing.product_id})."
                    ]
            ids.append(pricing_id)
        else:
            ids.append(item)
    if errors:
        raise ValidationFailed(errors)
    return ids


class PlansApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        plans: QuerySet[Plan] = plans_list(organisation=request_actor(request).organisation)
        plans = filters_apply(plans, params, PLAN_FILTERS)
        return zenskar_page(
            request=request,
            view=self,
            queryset=plans,
            serialize=lambda page: PlanOutput(page, many=True).data,
            ordering=ordering_from(params, allowed=SORT_KEYS, default="-created_at"),
        )

    def post(self, request: Request) -> Response:
        actor = request_actor(request)
        body = body_object(request)
        data = picked(body, PLAN_FIELDS)
        if body.get("products") is not None:
            data["pricing_ids"] = plan_pricing_ids(organisation=actor.organisation, products=body["products"])
        try:
            plan = plan_create(actor=actor, data=data)
        except ValidationFailed as exc:
            raise errors_renamed(exc, {"pricing_ids": "products"}) from None
        return Response(PlanOutput(plan_get(organisation=actor.organisation, plan_id=plan.id)).data, status=201)


class PlanApi(ZenskarApi):
    def get(self, request: Request, plan_id: str) -> Response:
        return Response(PlanOutput(plan_get(organisation=request_actor(request).organisation, plan_id=plan_id)).data)


class PlanProductsApi(ZenskarApi):
    def post(self, request: Request, plan_id: str) -> Response:
        actor = request_actor(request)
        plan_get(organisation=actor.organisation, plan_id=plan_id)  # another organisation's plan: 404 first
        body = body_object(request)
        if body.get("products") is None:
            raise ValidationFailed({"products": ["This field is required: a list of product pricings."]})
        ids = plan_pricing_ids(organisation=actor.organisation, products=body["products"])
        try:
            plan = plan_pricings_add(actor=actor, plan_id=plan_id, pricing_ids=ids)
        except ValidationFailed as exc:
            raise errors_renamed(exc, {"pricing_ids": "products"}) from None
        return Response(PlanOutput(plan_get(organisation=actor.organisation, plan_id=plan.id)).data)


def plan_preview(*, plan: Plan, start: dt.date, end: dt.date | None) -> dict[str, Any]:
    """What the plan charges from `start` (to `end`, else over each pricing's first billing period): every
    fixed pricing's fee per billing period (prorated, rounded to the currency), and the price structure
    of every metered pricing (its amount depends on usage). Nothing is stored."""
    text = DecimalText().to_representation
    lines: list[dict[str, Any]] = []
    fixed_total = Decimal(0)
    for link in plan.plan_pricings.all():
        pricing: Pricing = link.pricing
        cadence = cadence_parse(text=pricing.cadence)
        until = end or cadence_boundary(cadence=cadence, anchor=start, index=1)
        line: dict[str, Any] = {
            "pricing_id": str(pricing.id),
            "product_id": str(pricing.product_id),
            "product_name": pricing.product.name,
            "pricing_type": pricing.pricing_type,
            "billing_period": {"cadence": pricing.cadence},
            "is_recurring": pricing.is_recurring,
            "quantity": quantity_output(pricing),
            "pricing_data": pricing.pricing_data,
        }
        if pricing.quantity_type == QuantityType.FIXED:
            model = pricing_parse(pricing_data=pricing.pricing_data)
            periods = billing_periods(cadence=cadence, anchor=start, start=start, end=until, until=until)
            if not pricing.is_recurring:
                periods = periods[:1]
            full = rate(model=model, quantity=pricing.quantity).amount
            charges: list[dict[str, Any]] = []
            amount_total = Decimal(0)
            for period in periods:
                amount = money_round(amount=period.prorate(amount=full), currency=plan.currency)
                charges.append({"start_date": period.start, "end_date": period.end, "amount": text(amount)})
                amount_total += amount
            fixed_total += amount_total
            line["periods"] = charges
            line["amount"] = text(amount_total)
        lines.append(line)
    return {
        "plan_id": str(plan.id),
        "currency": plan.currency,
        "start_date": start,
        "end_date": end,
        "fixed_total": text(fixed_total),
        "pricings": lines,
    }


class PlanPreviewApi(ZenskarApi):
    def post(self, request: Request, plan_id: str) -> Response:
        plan = plan_get(organisation=request_actor(request).organisation, plan_id=plan_id)
        body = body_object(request)
        if body.get("start_date") in (None, ""):
            raise ValidationFailed({"start_date": ["This field is required."]})
        start = date_value(body["start_date"], "start_date")
        end = date_value(body["end_date"], "end_date") if body.get("end_date") not in (None, "") else None
        if end is not None and end <= start:
            raise ValidationFailed({"end_date": ["end_date must be after start_date."]})
        if end is not None and (end - start).days > MAX_PREVIEW_DAYS:
            raise ValidationFailed({"end_date": [f"Preview at most {MAX_PREVIEW_DAYS} days."]})
        try:
            preview = plan_preview(plan=plan, start=start, end=end)
        except (OverflowError, ValueError):  # a billing period past year 9999
            raise ValidationFailed({"start_date": [f"{printable(str(body['start_date']))!r} is too late."]}) from None
        return Response(preview)
