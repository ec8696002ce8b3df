from django.urls import path

from metrics import views

app_name = "metrics"

urlpatterns = [
    path("", views.metric_list, name="metric-list"),
    path("new/", views.metric_new, name="metric-new"),
    path("preview/", views.metric_preview, name="metric-preview"),
    path("<str:slug>/export.csv", views.metric_values_export, name="values-export"),
    path("<str:slug>/", views.metric_detail, name="metric-detail"),
    path("<str:slug>/values/<int:value_id>/override/", views.metric_value_override_view, name="value-override"),
]
