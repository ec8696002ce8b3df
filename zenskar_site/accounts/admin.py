from django.contrib import admin

from zenskar_site.accounts.admin_scoping import OrganisationScopedAdmin
from zenskar_site.accounts.models import ApiKey, AuditEntry, Membership, Organisation


class MembershipInline(admin.TabularInline[Membership, Organisation]):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin[Organisation]):
    list_display = ["name", "id", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ["prefix", "name", "organisation", "scope", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["scope", "organisation"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at", "created_by"]

    def has_add_permission(self, request: object) -> bool:
        return False  # keys are created where the secret can be shown once: dashboard, API, command


@admin.register(AuditEntry)
class AuditEntryAdmin(OrganisationScopedAdmin):
    list_display = ["at", "organisation", "actor", "action", "object_type", "object_id", "reason"]
    list_filter = ["action", "object_type"]
    search_fields = ["=object_id", "actor"]
    readonly_fields = ["at", "organisation", "actor", "action", "object_type", "object_id", "before", "after", "reason"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
