"""The billing app's dashboard pages, included under /billing/ by the project's urls (namespace billing)."""

from django.urls import path

from billing import views

app_name = "billing"

CONTRACT = "contracts/<str:contract_id>/"

urlpatterns = [
    path("", views.billing_home, name="home"),
    path("customers/", views.customer_list, name="customer-list"),
    path("customers/new/", views.customer_new, name="customer-new"),
    path("customers/<str:customer_id>/", views.customer_detail, name="customer-detail"),
    path("products/", views.product_list, name="product-list"),
    path("products/new/", views.product_new, name="product-new"),
    path("products/<str:product_id>/", views.product_detail, name="product-detail"),
    path("products/<str:product_id>/pricings/new/", views.pricing_new, name="pricing-new"),
    path("products/<str:product_id>/pricings/preview/", views.pricing_preview, name="pricing-preview"),
    path("plans/", views.plan_list, name="plan-list"),
    path("plans/new/", views.plan_new, name="plan-new"),
    path("plans/<str:plan_id>/", views.plan_detail, name="plan-detail"),
    path("contracts/", views.contract_list, name="contract-list"),
    path("contracts/new/", views.contract_new, name="contract-new"),
    path(CONTRACT, views.contract_detail, name="contract-detail"),
    path(CONTRACT + "phases/", views.contract_phase_new, name="contract-phase-new"),
    path(
        CONTRACT + "phases/<str:phase_id>/pricings/",
        views.contract_phase_pricing_new,
        name="contract-phase-pricing-new",
    ),
    path(CONTRACT + "<str:action>/", views.contract_action, name="contract-action"),
]
