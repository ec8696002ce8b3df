"""Billing fixtures: objects built through the services, as users build them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.catalogue import pricing_create, product_create
from billing.customers import customer_create
from billing.models import Customer, Pricing, Product
from metrics.definitions import metric_create
from metrics.models import BillableMetric
from tests.factories import ApiKeyBundle, api_key_make, usage_event_make
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import Organisation

TIERED = {"pricing_type": "tiered", "unit_amount": ["0.10", "0.08"], "up_to": [100, None]}


def metric_make(
    organisation: Organisation, *, slug: str = "cpu_hours", aggregation: str = "sum", granularity: str = "day"
) -> BillableMetric:
    if not organisation.usage_events.filter(api_slug="compute_hours").exists():
        usage_event_make(organisation=organisation, data={"cpu_usage_hours": "Float64", "region": "Nullable(String)"})
    return metric_create(
        actor=system_actor(organisation=organisation),
        body={
            "name": slug,
            "slug": slug,
            "usage_event": "compute_hours",
            "aggregation": aggregation,
            "field": "cpu_usage_hours",
            "group_by": ["region"],
            "granularity": granularity,
        },
    )


def customer_make(organisation: Organisation, **data: Any) -> Customer:
    return customer_create(actor=system_actor(organisation=organisation), data={"customer_name": "Initech", **data})


def product_make(organisation: Organisation, *, type: str = "fixed", **data: Any) -> Product:
    return product_create(
        actor=system_actor(organisation=organisation), data={"name": "Platform", "type": type, **data}
    )


def flat_fee_make(organisation: Organisation, *, amount: str = "49", currency: str | None = None) -> Pricing:
    product = product_make(organisation)
    data: dict[str, Any] = {"pricing_data": {"pricing_type": "flat_fee", "unit_amount": amount}}
    if currency:
        data["currency"] = currency
    return pricing_create(actor=system_actor(organisation=organisation), product_id=product.id, data=data)


def metered_pricing_make(organisation: Organisation, metric: BillableMetric) -> Pricing:
    product = product_make(organisation, type="metered", name="Compute")
    return pricing_create(
        actor=system_actor(organisation=organisation),
        product_id=product.id,
        data={"pricing_data": TIERED, "quantity": {"type": "metered", "aggregate_id": metric.slug, "unit": "CPU hour"}},
    )


@pytest.fixture
def metric(organisation: Organisation) -> BillableMetric:
    return metric_make(organisation)


@pytest.fixture
def other_key(other_organisation: Organisation) -> ApiKeyBundle:
    return api_key_make(organisation=other_organisation, scope="full")


@pytest.fixture
def other_api(other_key: ApiKeyBundle, client_for: Callable[..., APIClient]) -> APIClient:
    """A management-API client of `other_organisation`."""
    return client_for(other_key.secret)
