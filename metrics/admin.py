from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from metrics.models import BillableMetric, MetricValue
from metrics.services import metric_value_override
from zenskar_site.accounts.admin_scoping import CappedCountPaginator, OrganisationScopedAdmin, admin_actor
from zenskar_site.lib.errors import DomainError


@admin.register(BillableMetric)
class BillableMetricAdmin(OrganisationScopedAdmin):
    list_display = [
        "name",
        "slug",
        "organisation",
        "kind",
        "aggregation",
        "granularity",
        "version",
        "recompute_state",
        "recompute_retry_at",
    ]
    list_filter = ["kind", "granularity", "archived", "recompute_state"]
    search_fields = ["name", "slug"]
    # A failure is shown, never edited: a retry clears it, or a definition change through the API.
    readonly_fields = [
        "recompute_state",
        "recompute_version",
        "recompute_done",
        "recompute_total",
        "recompute_error",
        "recompute_failures",
        "recompute_retry_at",
    ]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # definitions change through the dashboard or the API (validation, version, audit)


class OverrideForm(forms.ModelForm[MetricValue]):
    override_value = forms.CharField(required=False, help_text="A decimal amount; empty clears the override.")
    reason = forms.CharField(help_text="Why (kept in the audit trail).")

    class Meta:
        model = MetricValue
        fields = ["override_value"]


@admin.register(MetricValue)
class MetricValueAdmin(OrganisationScopedAdmin):
    organisation_path = "metric__organisation"
    form = OverrideForm
    list_display = [
        "id",
        "metric",
        "customer_id",
        "period_start",
        "dimension",
        "computed_value",
        "override_value",
        "effective_value",
        "stale",
    ]
    list_filter = ["stale"]
    search_fields = ["=customer_id"]
    list_select_related = ["metric"]
    ordering = ["-period_start", "-id"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    readonly_fields = [
        "metric",
        "customer_id",
        "period_start",
        "period_end",
        "dimension",
        "computed_value",
        "metric_version",
        "stale",
        "override_reason",
    ]
    fields = [
        "metric",
        "customer_id",
        "period_start",
        "period_end",
        "dimension",
        "computed_value",
        "override_value",
        "reason",
        "override_reason",
        "metric_version",
        "stale",
    ]

    @admin.display(description="value")
    def effective_value(self, value: MetricValue) -> str | None:
        return value.value

    def save_model(self, request: HttpRequest, obj: MetricValue, form: Any, change: bool) -> None:
        override = form.cleaned_data.get("override_value") or None
        try:
            metric_value_override(
                actor=admin_actor(request, obj.metric.organisation),
                metric_slug=obj.metric.slug,
                value_id=obj.pk,
                override_value=override,
                reason=form.cleaned_data.get("reason", ""),
            )
        except DomainError as exc:
            messages.error(request, exc.detail)
