from django.contrib import admin

from usage.models import UsageEvent


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin[UsageEvent]):
    list_display = ["name", "api_slug", "organisation", "kind", "archived", "created_at"]
    list_filter = ["kind", "archived", "organisation"]
    search_fields = ["name", "api_slug"]
    readonly_fields = ["organisation", "api_slug", "kind", "aggregate_period", "dataschema", "created_at"]

    def has_add_permission(self, request: object) -> bool:
        return False  # created through the service (validation, audit) from the dashboard or API
