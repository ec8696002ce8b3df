"""The Zenskar-compatible paths (SPEC §10, ZENSKAR_API.md), at the site root.

Zenskar's clients send paths without a trailing slash; each pattern also takes one, so CommonMiddleware's
APPEND_SLASH never redirects (a redirected POST would lose its body). Fixed segments (`estimates`,
`logs`, `slug`) come before the id patterns they would otherwise match.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, re_path

from billing.zenskar import catalogue, contracts, customers, invoices, metrics, system, usage_events

ID = r"(?P<{}>[^/]+)"


def route(pattern: str, view: Any, name: str | None = None) -> URLPattern:
    """`pattern` (without slashes at its ends), with or without a trailing slash."""
    return re_path(rf"^{pattern}/?$", view, name=name)


CONTRACT = "contract_v2/" + ID.format("contract_id")

urlpatterns = [
    route("rawmetric", usage_events.RawMetricListApi.as_view(), "zenskar-rawmetric-list"),
    route("rawmetric/slug/" + ID.format("slug"), usage_events.RawMetricBySlugApi.as_view(), "zenskar-rawmetric-slug"),
    route("rawmetric/" + ID.format("raw_metric_id") + "/logs", usage_events.RawMetricLogsApi.as_view()),
    route("rawmetric/" + ID.format("raw_metric_id"), usage_events.RawMetricDetailApi.as_view(), "zenskar-rawmetric"),
    route("aggregates", metrics.AggregateListApi.as_view(), "zenskar-aggregate-list"),
    route("aggregates/estimates", metrics.AggregateEstimateApi.as_view(), "zenskar-aggregate-estimates"),
    route("aggregates/logs/" + ID.format("aggregate_id"), metrics.AggregateLogsApi.as_view()),
    route("aggregates/" + ID.format("aggregate_id"), metrics.AggregateDetailApi.as_view(), "zenskar-aggregate"),
    route("customer", customers.CustomersApi.as_view(), "zenskar-customer-list"),
    route("customers/" + ID.format("customer_id"), customers.CustomerApi.as_view(), "zenskar-customer"),
    route("products", catalogue.ProductsApi.as_view(), "zenskar-product-list"),
    route("products/" + ID.format("product_id") + "/pricing", catalogue.ProductPricingApi.as_view()),
    route("products/" + ID.format("product_id"), catalogue.ProductApi.as_view(), "zenskar-product"),
    route("templates/plan", catalogue.PlansApi.as_view(), "zenskar-plan-list"),
    route("templates/plan/" + ID.format("plan_id") + "/products", catalogue.PlanProductsApi.as_view()),
    route("templates/plan/" + ID.format("plan_id") + "/preview", catalogue.PlanPreviewApi.as_view()),
    route("templates/plan/" + ID.format("plan_id"), catalogue.PlanApi.as_view(), "zenskar-plan"),
    route("contract_v2", contracts.ContractsApi.as_view(), "zenskar-contract-list"),
    route(CONTRACT + "/amendments", contracts.ContractAmendmentsApi.as_view()),
    route(CONTRACT + "/phases/" + ID.format("phase_id") + "/pricing", contracts.ContractPhasePricingApi.as_view()),
    route(CONTRACT + "/phases", contracts.ContractPhasesApi.as_view()),
    route(CONTRACT + "/expire", contracts.ContractExpireApi.as_view()),
    route(CONTRACT + "/pause", contracts.ContractPauseApi.as_view()),
    route(CONTRACT + "/resume", contracts.ContractResumeApi.as_view()),
    route(CONTRACT, contracts.ContractApi.as_view(), "zenskar-contract"),
    route("system/datetime", system.SystemDatetimeApi.as_view(), "zenskar-system-datetime"),
    *invoices.urlpatterns,
]
