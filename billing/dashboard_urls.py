"""The billing app's dashboard pages, included under /billing/ by the project's urls (namespace billing)."""

from django.urls import path

from billing import views
from billing.invoicing import views as invoice_views

app_name = "billing"

CONTRACT = "contracts/<str:contract_id>/"
INVOICE = "invoices/<str:invoice_id>/"

urlpatterns = [
    path("", invoice_views.billing_home, name="home"),
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
    path("invoices/", invoice_views.invoice_list, name="invoice-list"),
    path(INVOICE, invoice_views.invoice_detail, name="invoice-detail"),
    path(INVOICE + "pdf/", invoice_views.invoice_pdf_download, name="invoice-pdf"),
    path(INVOICE + "credit-notes/", invoice_views.invoice_credit_note_new, name="invoice-credit"),
    path(INVOICE + "payments/", invoice_views.invoice_payment_new, name="invoice-payment"),
    path(INVOICE + "<str:action>/", invoice_views.invoice_action, name="invoice-action"),
    path("credit-notes/", invoice_views.credit_note_list, name="credit-note-list"),
    path("credit-notes/<str:credit_note_id>/", invoice_views.credit_note_detail, name="credit-note-detail"),
    path("credit-notes/<str:credit_note_id>/pdf/", invoice_views.credit_note_pdf_download, name="credit-note-pdf"),
]
