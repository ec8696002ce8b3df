"""The billing app's management API routes, included under /api/v1/ by the project's urls."""

from django.urls import path

from billing.api import customers

api_urls = [
    path("customers/", customers.CustomerListApi.as_view(), name="customer-list"),
    path("customers/<str:customer_id>/", customers.CustomerDetailApi.as_view(), name="customer-detail"),
]
