"""Zenskar's customers (`/customer`, `/customers/{id}`) over billing.customers and billing.selectors."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api.customers import CustomerOutput
from billing.customers import CUSTOMER_FIELDS, customer_archive, customer_create, customer_update
from billing.models import Customer
from billing.selectors import customer_get, customers_list
from billing.zenskar.common import (
    ZenskarApi,
    body_object,
    datetime_filter,
    filters_apply,
    ordering_from,
    picked,
    search_filter,
    text_filter,
    uuid_filter,
    zenskar_page,
)
from zenskar_site.accounts.permissions import request_actor

CUSTOMER_FILTERS = {
    "id": uuid_filter("id"),
    "external_id": text_filter("external_id"),
    "email": text_filter("email"),
    "phone_number": text_filter("phone_number"),
    "customer_name": text_filter("customer_name"),
    "created_at": datetime_filter("created_at"),
}
CUSTOMER_SORT_KEYS = {"created_at": "created_at", "customer_name": "customer_name", "external_id": "external_id"}
# Zenskar's communications_enabled, auto_charge_enabled and business_entity_id have no counterpart here
# (no e-mails, auto-charging or business entities yet): accepted and ignored, as unlisted arguments are.


class CustomersApi(ZenskarApi):
    def get(self, request: Request) -> Response:
        params = request.query_params
        customers: QuerySet[Customer] = customers_list(organisation=request_actor(request).organisation)
        customers = search_filter(customers, params.get("search"), "search", ("customer_name", "external_id", "email"))
        customers = search_filter(
            customers,
            params.get("search_name_external_id"),
            "search_name_external_id",
            ("customer_name", "external_id"),
        )
        customers = filters_apply(customers, params, CUSTOMER_FILTERS)
        return zenskar_page(
            request=request,
            view=self,
            queryset=customers,
            serialize=lambda page: CustomerOutput(page, many=True).data,
            ordering=ordering_from(params, allowed=CUSTOMER_SORT_KEYS, default="-created_at"),
        )

    def post(self, request: Request) -> Response:
        customer = customer_create(actor=request_actor(request), data=picked(body_object(request), CUSTOMER_FIELDS))
        return Response(CustomerOutput(customer).data, status=status.HTTP_201_CREATED)


class CustomerApi(ZenskarApi):
    def get(self, request: Request, customer_id: str) -> Response:
        customer = customer_get(organisation=request_actor(request).organisation, customer_id=customer_id)
        return Response(CustomerOutput(customer).data)

    def patch(self, request: Request, customer_id: str) -> Response:
        customer = customer_update(
            actor=request_actor(request), customer_id=customer_id, changes=picked(body_object(request), CUSTOMER_FIELDS)
        )
        return Response(CustomerOutput(customer).data)

    def delete(self, request: Request, customer_id: str) -> Response:
        """Archives the customer (one with contracts, or invoices other than discarded ones, is refused: 409)
        and answers it, archived."""
        customer = customer_archive(actor=request_actor(request), customer_id=customer_id)
        return Response(CustomerOutput(customer).data)
