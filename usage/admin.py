from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from usage.corrections import record_restore, record_update, record_void
from usage.models import IngestionError, UsageEvent, UsageRecord
from usage.schema import datetime_format, record_validator
from zenskar_site.accounts.admin_scoping import (
    CappedCountPaginator,
    OrganisationScopedAdmin,
    admin_actor,
    organisation_ids,
)
from zenskar_site.lib.errors import DomainError, ValidationFailed


@admin.register(UsageEvent)
class UsageEventAdmin(OrganisationScopedAdmin):
    list_display = ["name", "api_slug", "organisation", "kind", "archived", "created_at"]
    list_filter = ["kind", "archived"]
    search_fields = ["name", "api_slug"]
    readonly_fields = [
        "organisation",
        "name",
        "api_slug",
        "kind",
        "aggregate_period",
        "dataschema",
        "description",
        "archived",
        "created_at",
    ]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # definitions change through the dashboard or the API (schema rules, audit)


class UsageEventScopeFilter(admin.SimpleListFilter):
    title = "usage event"
    parameter_name = "usage_event"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        events = (
            UsageEvent.objects.all()
            if request.user.is_superuser
            else UsageEvent.objects.filter(organisation_id__in=organisation_ids(request))
        )
        return [(e.id, f"{e.name} ({e.api_slug})") for e in events.order_by("name")[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(usage_event_id=value) if value and value.isdigit() else queryset


class RecordForm(forms.ModelForm[UsageRecord]):
    reason = forms.CharField(required=False, help_text="Why this record is corrected (kept in the audit trail).")
    data = forms.JSONField(help_text="The record's data, as JSON.")  # type: ignore[assignment]

    class Meta:
        model = UsageRecord
        fields = ["customer_id", "timestamp", "data"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        record = self.instance
        if record.pk is None or self.errors:
            return cleaned
        candidate = {
            "customer_id": cleaned.get("customer_id"),
            "timestamp": datetime_format(cleaned["timestamp"]) if cleaned.get("timestamp") else None,
            "data": cleaned.get("data"),
        }
        valid, errors = record_validator(record.usage_event.dataschema)(candidate)
        if valid is None:
            for path, problems in errors.items():
                field = path.split(".")[0] if path.split(".")[0] in self.fields else None
                for problem in problems:
                    self.add_error(field, f"{path}: {problem}")
        return cleaned


@admin.register(UsageRecord)
class UsageRecordAdmin(OrganisationScopedAdmin):
    organisation_path = "usage_event__organisation"
    form = RecordForm
    list_display = ["id", "usage_event", "customer_id", "timestamp", "short_data", "voided", "superseded"]
    list_filter = [UsageEventScopeFilter, "voided", "superseded", ("timestamp", admin.DateFieldListFilter)]
    search_fields = ["=customer_id", "=idempotency_key"]
    list_select_related = ["usage_event"]
    ordering = ["-id"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = ["usage_event", "idempotency_key", "received_at", "voided", "superseded", "period_start"]
    fields = [
        "usage_event",
        "customer_id",
        "timestamp",
        "data",
        "reason",
        "idempotency_key",
        "received_at",
        "period_start",
        "voided",
        "superseded",
    ]
    actions = ["void_selected", "restore_selected"]

    @admin.display(description="data")
    def short_data(self, record: UsageRecord) -> str:
        text = json.dumps(record.data, separators=(",", ":"))
        return text if len(text) <= 80 else text[:79] + "…"

    def save_model(self, request: HttpRequest, obj: UsageRecord, form: Any, change: bool) -> None:
        # Through the service: revalidation, the audit entry and the recomputation of old and new periods.
        changes = {name: form.cleaned_data[name] for name in ("customer_id", "data")}
        changes["timestamp"] = datetime_format(form.cleaned_data["timestamp"])
        try:
            record_update(
                actor=admin_actor(request, obj.usage_event.organisation),
                api_slug=obj.usage_event.api_slug,
                record_id=obj.pk,
                changes=changes,
                reason=form.cleaned_data.get("reason", ""),
            )
        except ValidationFailed as exc:  # the form validated already; a race may still land here
            messages.error(request, exc.detail)

    def _each(self, request: HttpRequest, queryset: QuerySet[UsageRecord], action: Any, verb: str) -> None:
        done = 0
        for record in queryset.select_related("usage_event__organisation")[:1000]:
            try:
                action(
                    actor=admin_actor(request, record.usage_event.organisation),
                    api_slug=record.usage_event.api_slug,
                    record_id=record.pk,
                    reason=f"{verb} in the admin",
                )
                done += 1
            except DomainError as exc:
                messages.error(request, exc.detail)
        messages.success(request, f"{done} record(s) {verb}.")

    @admin.action(description="Void selected records", permissions=["change"])
    def void_selected(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> None:
        self._each(request, queryset, record_void, "voided")

    @admin.action(description="Restore selected records", permissions=["change"])
    def restore_selected(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> None:
        self._each(request, queryset, record_restore, "restored")


@admin.register(IngestionError)
class IngestionErrorAdmin(OrganisationScopedAdmin):
    organisation_path = "usage_event__organisation"
    list_display = ["id", "usage_event", "received_at", "errors", "api_key_prefix"]
    list_select_related = ["usage_event"]
    ordering = ["-id"]
    paginator = CappedCountPaginator
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
