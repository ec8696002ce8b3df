from django.urls import path

from usage import views

app_name = "usage"

urlpatterns = [
    path("", views.usage_event_list, name="event-list"),
    path("new/", views.usage_event_new, name="event-new"),
    path("<str:api_slug>/", views.usage_event_detail, name="event-detail"),
]
