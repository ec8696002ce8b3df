"""Management API for customers (SPEC §8): /api/v1/customers/."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.common import DecimalText, FilteredListApi, body_object, reason_of
from billing.customers import customer_archive, customer_create, customer_update
from billing.models import Customer
from billing.selectors import customer_get, customers_list
from usage.records_api import UtcDateTimeFilter
from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.openapi import error_response


class CustomerOutput(serializers.ModelSerializer[Customer]):
    tax_rate = DecimalText()

    class Meta:
        model = Customer
        fields = [
            "id",
            "external_id",
            "customer_name",
            "email",
            "phone_number",
            "address_line1",
            "address_line2",
            "address_line3",
            "address_city",
            "address_state",
            "address_zipCode",
            "address_country",
            "address_country_code",
            "ship_to_line1",
            "ship_to_line2",
            "ship_to_line3",
            "ship_to_city",
            "ship_to_state",
            "ship_to_zipCode",
            "ship_to_country",
            "ship_to_country_code",
            "tax_rate",
            "payment_terms_days",
            "custom_data",
            "archived",
            "created_at",
            "updated_at",
        ]


class CustomerInput(serializers.Serializer[Any]):
    """Documents the body; the service validates it and names each bad field."""

    external_id = serializers.CharField(required=False, allow_null=True, help_text="Unique in the organisation.")
    customer_name = serializers.CharField()
    email = serializers.CharField(required=False)
    phone_number = serializers.CharField(required=False)
    address_line1 = serializers.CharField(required=False)
    address_city = serializers.CharField(required=False)
    address_zipCode = serializers.CharField(required=False)
    address_country_code = serializers.CharField(required=False)
    tax_rate = serializers.DecimalField(max_digits=7, decimal_places=4, required=False, help_text="Percent.")
    payment_terms_days = serializers.IntegerField(required=False, default=30)
    custom_data = serializers.JSONField(required=False)


class CustomerFilter(django_filters.FilterSet):
    external_id = django_filters.CharFilter()
    email = django_filters.CharFilter(lookup_expr="iexact")
    customer_name = django_filters.CharFilter(lookup_expr="icontains")
    search = django_filters.CharFilter(method="filter_search", help_text="In the name, external id or email.")
    created_at_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_at_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    include_archived = django_filters.BooleanFilter(method="filter_include_archived")

    class Meta:
        model = Customer
        fields = ["external_id", "email", "customer_name"]

    def filter_search(self, queryset: QuerySet[Customer], name: str, value: str) -> QuerySet[Customer]:
        return queryset.filter(
            Q(customer_name__icontains=value) | Q(external_id__icontains=value) | Q(email__icontains=value)
        )

    def filter_include_archived(self, queryset: QuerySet[Customer], name: str, value: bool) -> QuerySet[Customer]:
        return queryset  # applied in get_queryset, which needs it before filtering


class CustomerListApi(FilteredListApi):
    filterset_class = CustomerFilter

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Customer.objects.none()
        include = self.request.query_params.get("include_archived", "").lower() in {"1", "true", "yes"}
        return customers_list(organisation=request_actor(self.request).organisation, include_archived=include)

    @extend_schema(responses=CustomerOutput(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(request, lambda page: CustomerOutput(page, many=True).data)

    @extend_schema(request=CustomerInput, responses={201: CustomerOutput})
    def post(self, request: Request) -> Response:
        customer = customer_create(actor=request_actor(request), data=body_object(request))
        return Response(CustomerOutput(customer).data, status=status.HTTP_201_CREATED)


class CustomerDetailApi(APIView):
    @extend_schema(responses=CustomerOutput)
    def get(self, request: Request, customer_id: str) -> Response:
        customer = customer_get(organisation=request_actor(request).organisation, customer_id=customer_id)
        return Response(CustomerOutput(customer).data)

    @extend_schema(request=CustomerInput, responses=CustomerOutput)
    def patch(self, request: Request, customer_id: str) -> Response:
        body = body_object(request)
        reason = reason_of(body)
        customer = customer_update(actor=request_actor(request), customer_id=customer_id, changes=body, reason=reason)
        return Response(CustomerOutput(customer).data)

    @extend_schema(
        parameters=[OpenApiParameter("reason", str, description="Why (kept in the audit trail).")],
        responses={204: None, 409: error_response("The customer has contracts (or invoices): it cannot be deleted.")},
    )
    def delete(self, request: Request, customer_id: str) -> Response:
        customer_archive(
            actor=request_actor(request),
            customer_id=customer_id,
            reason=reason_of({"reason": request.query_params.get("reason", "")}),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
