from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from billing.urls import api_urls as billing_api_urls
from metrics import api as metrics_api
from usage import api as usage_api
from usage import records_api
from usage.ingestion.http import ingest
from zenskar_site.accounts import api, views

api_v1 = [
    path("organisation/", api.OrganisationApi.as_view(), name="organisation"),
    path("api-keys/", api.ApiKeyListApi.as_view(), name="api-key-list"),
    path("api-keys/<str:prefix>/", api.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("audit/", api.AuditListApi.as_view(), name="audit-list"),
    path("usage-events/", usage_api.UsageEventListApi.as_view(), name="usage-event-list"),
    path("usage-events/<str:api_slug>/", usage_api.UsageEventDetailApi.as_view(), name="usage-event-detail"),
    path("usage-events/<str:api_slug>/records/", records_api.RecordListApi.as_view(), name="record-list"),
    path("usage-events/<str:api_slug>/records/void/", records_api.RecordVoidByFilterApi.as_view(), name="record-void"),
    path(
        "usage-events/<str:api_slug>/records/<int:record_id>/restore/",
        records_api.RecordRestoreApi.as_view(),
        name="record-restore",
    ),
    path(
        "usage-events/<str:api_slug>/records/<int:record_id>/",
        records_api.RecordDetailApi.as_view(),
        name="record-detail",
    ),
    path("usage-events/<str:api_slug>/errors/", records_api.IngestionErrorListApi.as_view(), name="error-list"),
    path("metrics/", metrics_api.MetricListApi.as_view(), name="metric-list"),
    path("metrics/preview/", metrics_api.MetricUnsavedPreviewApi.as_view(), name="metric-preview-unsaved"),
    path("metrics/<str:slug>/", metrics_api.MetricDetailApi.as_view(), name="metric-detail"),
    path("metrics/<str:slug>/preview/", metrics_api.MetricPreviewApi.as_view(), name="metric-preview"),
    path("metrics/<str:slug>/values/", metrics_api.MetricValueListApi.as_view(), name="metric-value-list"),
    path("metrics/<str:slug>/values/<int:value_id>/", metrics_api.MetricValueDetailApi.as_view(), name="metric-value"),
    path("metrics/<str:slug>/total/", metrics_api.MetricTotalApi.as_view(), name="metric-total"),
    *billing_api_urls,
    path(
        "schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny], authentication_classes=[]), name="schema"
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api:schema", permission_classes=[AllowAny], authentication_classes=[]),
        name="docs",
    ),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organisation/switch/", views.organisation_switch, name="organisation-switch"),
    path("settings/api-keys/", views.api_keys, name="api-keys"),
    path("settings/api-keys/<str:prefix>/revoke/", views.api_key_revoke_view, name="api-key-revoke"),
    path("usage/<str:api_slug>", ingest, name="ingest"),
    path("usage/<str:api_slug>/", ingest),
    path("usage-events/", include("usage.urls")),
    path("metrics/", include("metrics.urls")),
    path("api/v1/", include((api_v1, "api"))),
    path("admin/", admin.site.urls),
    path("", include("billing.zenskar.urls")),  # SPEC §10: Zenskar-compatible paths at the site root
]

# JSON with `detail` for the API and ingestion, Django's HTML page for the dashboard.
handler404 = "zenskar_site.lib.exceptions.page_not_found"
handler500 = "zenskar_site.lib.exceptions.server_error"
