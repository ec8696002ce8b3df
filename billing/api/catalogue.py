"""Management API for products, their pricings and plans (SPEC §8)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.common import DecimalText, FilteredListApi, body_object, reason_of
from billing.catalogue import (
    plan_create,
    plan_pricings_add,
    plan_update,
    pricing_create,
    product_create,
    product_update,
)
from billing.models import Plan, PlanStatus, Pricing, Product, ProductType
from billing.selectors import plan_get, plans_list, pricing_get, pricings_list, product_get, products_list
from zenskar_site.accounts.permissions import request_actor


class ProductOutput(serializers.ModelSerializer[Product]):
    class Meta:
        model = Product
        fields = [
            "id",
            "name",
            "sku",
            "description",
            "type",
            "is_active",
            "tax_codes",
            "custom_attributes",
            "created_at",
            "updated_at",
        ]


class ProductInput(serializers.Serializer[Any]):
    """Documents the body; the service validates it and names each bad field."""

    name = serializers.CharField()
    sku = serializers.CharField(required=False, allow_null=True, help_text="Unique in the organisation.")
    description = serializers.CharField(required=False)
    type = serializers.ChoiceField(choices=ProductType.choices)
    is_active = serializers.BooleanField(required=False, default=True)
    tax_codes = serializers.ListField(child=serializers.CharField(), required=False)
    custom_attributes = serializers.JSONField(required=False)


def quantity_output(pricing: Pricing) -> dict[str, Any]:
    if pricing.quantity_type == "metered":
        assert pricing.metric is not None
        body: dict[str, Any] = {"type": "metered", "aggregate_id": pricing.metric.id, "metric": pricing.metric.slug}
    else:
        body = {"type": "fixed", "quantity": DecimalText().to_representation(pricing.quantity)}  # type: ignore[arg-type]
    if pricing.unit:
        body["unit"] = pricing.unit
    if pricing.label:
        body["label"] = pricing.label
    return body


class PricingOutput(serializers.ModelSerializer[Pricing]):
    product_id = serializers.UUIDField(read_only=True)
    quantity = serializers.SerializerMethodField()
    billing_period = serializers.SerializerMethodField()
    currency = serializers.SerializerMethodField()

    class Meta:
        model = Pricing
        fields = [
            "id",
            "product_id",
            "name",
            "description",
            "pricing_type",
            "pricing_data",
            "quantity",
            "billing_period",
            "is_recurring",
            "currency",
            "created_at",
        ]

    def get_quantity(self, obj: Pricing) -> dict[str, Any]:
        return quantity_output(obj)

    def get_billing_period(self, obj: Pricing) -> dict[str, str]:
        return {"cadence": obj.cadence}

    def get_currency(self, obj: Pricing) -> str | None:
        return obj.currency or None


class PricingInput(serializers.Serializer[Any]):
    name = serializers.CharField(required=False)
    description = serializers.CharField(required=False)
    pricing_data = serializers.JSONField(help_text='{"pricing_type": "tiered", "unit_amount": [...], "up_to": [...]}')
    quantity = serializers.JSONField(
        required=False,
        help_text='{"type": "metered", "aggregate_id": "<metric id or slug>", "unit"} '
        'or {"type": "fixed", "quantity": 1}',
    )
    billing_period = serializers.JSONField(required=False, help_text='{"cadence": "P1M"}')
    is_recurring = serializers.BooleanField(required=False, default=True)
    currency = serializers.CharField(required=False, help_text="ISO 4217; a contract in another currency refuses it.")


class ProductFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    sku = django_filters.CharFilter()
    type = django_filters.ChoiceFilter(choices=ProductType.choices)
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = Product
        fields = ["name", "sku", "type", "is_active"]


class ProductListApi(FilteredListApi):
    filterset_class = ProductFilter

    def get_queryset(self) -> QuerySet[Product]:
        if getattr(self, "swagger_fake_view", False):
            return Product.objects.none()
        return products_list(organisation=request_actor(self.request).organisation)

    @extend_schema(responses=ProductOutput(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(request, lambda page: ProductOutput(page, many=True).data)

    @extend_schema(request=ProductInput, responses={201: ProductOutput})
    def post(self, request: Request) -> Response:
        product = product_create(actor=request_actor(request), data=body_object(request))
        return Response(ProductOutput(product).data, status=status.HTTP_201_CREATED)


class ProductDetailApi(APIView):
    @extend_schema(responses=ProductOutput)
    def get(self, request: Request, product_id: str) -> Response:
        product = product_get(organisation=request_actor(request).organisation, product_id=product_id)
        return Response(ProductOutput(product).data)

    @extend_schema(request=ProductInput, responses=ProductOutput)
    def patch(self, request: Request, product_id: str) -> Response:
        body = body_object(request)
        reason = reason_of(body)
        product = product_update(actor=request_actor(request), product_id=product_id, changes=body, reason=reason)
        return Response(ProductOutput(product).data)


class PricingFilter(django_filters.FilterSet):
    pricing_type = django_filters.CharFilter()
    currency = django_filters.CharFilter()

    class Meta:
        model = Pricing
        fields = ["pricing_type", "currency"]


class PricingListApi(FilteredListApi):
    filterset_class = PricingFilter

    def get_queryset(self) -> QuerySet[Pricing]:
        if getattr(self, "swagger_fake_view", False):
            return Pricing.objects.none()
        organisation = request_actor(self.request).organisation
        product = product_get(organisation=organisation, product_id=self.kwargs["product_id"])
        return pricings_list(organisation=organisation, product=product)

    @extend_schema(responses=PricingOutput(many=True))
    def get(self, request: Request, product_id: str) -> Response:
        return self.list_response(request, lambda page: PricingOutput(page, many=True).data)

    @extend_schema(
        request=PricingInput,
        parameters=[OpenApiParameter("return_existing", bool, description="Return an identical pricing if any.")],
        responses={201: PricingOutput},
    )
    def post(self, request: Request, product_id: str) -> Response:
        return_existing = request.query_params.get("return_existing", "").lower() in {"1", "true", "yes"}
        pricing = pricing_create(
            actor=request_actor(request),
            product_id=product_id,
            data=body_object(request),
            return_existing=return_existing,
        )
        return Response(PricingOutput(pricing).data, status=status.HTTP_201_CREATED)


class PricingDetailApi(APIView):
    @extend_schema(responses=PricingOutput)
    def get(self, request: Request, product_id: str, pricing_id: str) -> Response:
        organisation = request_actor(request).organisation
        product = product_get(organisation=organisation, product_id=product_id)
        return Response(
            PricingOutput(pricing_get(organisation=organisation, pricing_id=pricing_id, product=product)).data
        )


class PlanOutput(serializers.ModelSerializer[Plan]):
    pricings = serializers.SerializerMethodField()

    class Meta:
        model = Plan
        fields = ["id", "name", "description", "currency", "status", "custom_attributes", "pricings", "created_at"]

    def get_pricings(self, obj: Plan) -> list[dict[str, Any]]:
        return [PricingOutput(link.pricing).data for link in obj.plan_pricings.all()]


class PlanInput(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField(required=False)
    currency = serializers.CharField(help_text="ISO 4217")
    status = serializers.ChoiceField(choices=PlanStatus.choices, required=False)
    custom_attributes = serializers.JSONField(required=False)
    pricing_ids = serializers.ListField(child=serializers.UUIDField(), required=False)


class PlanPricingsInput(serializers.Serializer[Any]):
    pricing_ids = serializers.ListField(child=serializers.UUIDField())


class PlanFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    status = django_filters.ChoiceFilter(choices=PlanStatus.choices)
    currency = django_filters.CharFilter()

    class Meta:
        model = Plan
        fields = ["name", "status", "currency"]


class PlanListApi(FilteredListApi):
    filterset_class = PlanFilter

    def get_queryset(self) -> QuerySet[Plan]:
        if getattr(self, "swagger_fake_view", False):
            return Plan.objects.none()
        return plans_list(organisation=request_actor(self.request).organisation)

    @extend_schema(responses=PlanOutput(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(request, lambda page: PlanOutput(page, many=True).data)

    @extend_schema(request=PlanInput, responses={201: PlanOutput})
    def post(self, request: Request) -> Response:
        actor = request_actor(request)
        plan = plan_create(actor=actor, data=body_object(request))
        return Response(PlanOutput(plan_get(organisation=actor.organisation, plan_id=plan.id)).data, status=201)


class PlanDetailApi(APIView):
    @extend_schema(responses=PlanOutput)
    def get(self, request: Request, plan_id: str) -> Response:
        return Response(PlanOutput(plan_get(organisation=request_actor(request).organisation, plan_id=plan_id)).data)

    @extend_schema(request=PlanInput, responses=PlanOutput)
    def patch(self, request: Request, plan_id: str) -> Response:
        actor = request_actor(request)
        body = body_object(request)
        reason = reason_of(body)
        plan = plan_update(actor=actor, plan_id=plan_id, changes=body, reason=reason)
        return Response(PlanOutput(plan_get(organisation=actor.organisation, plan_id=plan.id)).data)


class PlanPricingsApi(APIView):
    @extend_schema(request=PlanPricingsInput, responses=PlanOutput)
    def post(self, request: Request, plan_id: str) -> Response:
        actor = request_actor(request)
        body = body_object(request)
        reason = reason_of(body)
        if "pricing_ids" not in body:
            from zenskar_site.lib.errors import ValidationFailed

            raise ValidationFailed({"pricing_ids": ["This field is required: a list of pricing ids."]})
        plan = plan_pricings_add(actor=actor, plan_id=plan_id, pricing_ids=body["pricing_ids"], reason=reason)
        return Response(PlanOutput(plan_get(organisation=actor.organisation, plan_id=plan.id)).data)
