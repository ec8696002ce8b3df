from django.urls import path

from usage import record_views, views

app_name = "usage"

urlpatterns = [
    path("", views.usage_event_list, name="event-list"),
    path("new/", views.usage_event_new, name="event-new"),
    path("<str:api_slug>/", views.usage_event_detail, name="event-detail"),
    path("<str:api_slug>/records/<int:record_id>/", record_views.record_edit, name="record-edit"),
    path("<str:api_slug>/records/void/", record_views.records_void_view, name="records-void"),
]
