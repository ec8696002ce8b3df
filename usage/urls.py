from django.urls import include, path

from usage import record_views, views
from usage.csv import views as csv_views

app_name = "usage"

# Usage > Usage data (namespace usage:csv). Two path segments, so no usage event's slug can shadow them.
csv_patterns = [
    path("", csv_views.usage_data, name="data"),
    path("export/", csv_views.csv_export, name="export"),
    path("<int:import_id>/", csv_views.csv_import_progress, name="progress"),
    path("<int:import_id>/mapping/", csv_views.csv_import_mapping, name="mapping"),
    path("<int:import_id>/preview/", csv_views.csv_import_preview, name="preview"),
    path("<int:import_id>/confirm/", csv_views.csv_import_confirm_view, name="confirm"),
]

urlpatterns = [
    path("", views.usage_event_list, name="event-list"),
    path("new/", views.usage_event_new, name="event-new"),
    path("data/imports/", include((csv_patterns, "csv"))),
    path("<str:api_slug>/export.csv", csv_views.records_export, name="records-export"),
    path("<str:api_slug>/", views.usage_event_detail, name="event-detail"),
    path("<str:api_slug>/records/<int:record_id>/", record_views.record_edit, name="record-edit"),
    path("<str:api_slug>/records/void/", record_views.records_void_view, name="records-void"),
]
