"""The billing app's management API routes, included under /api/v1/ by the project's urls."""

from django.urls import path

from billing.api import catalogue, contracts, customers
from billing.invoicing.urls import api_urls as invoicing_api_urls

CONTRACT = "contracts/<str:contract_id>/"

api_urls = [
    path("customers/", customers.CustomerListApi.as_view(), name="customer-list"),
    path("customers/<str:customer_id>/", customers.CustomerDetailApi.as_view(), name="customer-detail"),
    path("products/", catalogue.ProductListApi.as_view(), name="product-list"),
    path("products/<str:product_id>/", catalogue.ProductDetailApi.as_view(), name="product-detail"),
    path("products/<str:product_id>/pricings/", catalogue.PricingListApi.as_view(), name="pricing-list"),
    path(
        "products/<str:product_id>/pricings/<str:pricing_id>/",
        catalogue.PricingDetailApi.as_view(),
        name="pricing-detail",
    ),
    path("plans/", catalogue.PlanListApi.as_view(), name="plan-list"),
    path("plans/<str:plan_id>/", catalogue.PlanDetailApi.as_view(), name="plan-detail"),
    path("plans/<str:plan_id>/pricings/", catalogue.PlanPricingsApi.as_view(), name="plan-pricings"),
    path("contracts/", contracts.ContractListApi.as_view(), name="contract-list"),
    path(CONTRACT, contracts.ContractDetailApi.as_view(), name="contract-detail"),
    path(CONTRACT + "phases/", contracts.ContractPhaseListApi.as_view(), name="contract-phase-list"),
    path(
        CONTRACT + "phases/<str:phase_id>/pricings/",
        contracts.ContractPhasePricingApi.as_view(),
        name="contract-phase-pricing",
    ),
    path(CONTRACT + "pause/", contracts.ContractPauseApi.as_view(), name="contract-pause"),
    path(CONTRACT + "resume/", contracts.ContractResumeApi.as_view(), name="contract-resume"),
    path(CONTRACT + "expire/", contracts.ContractExpireApi.as_view(), name="contract-expire"),
    path(CONTRACT + "amendments/", contracts.ContractAmendmentListApi.as_view(), name="contract-amendments"),
    *invoicing_api_urls,
]
