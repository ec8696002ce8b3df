"""The Django admin for organisation admins: each sees only their organisations' data.

Superusers see everything. Members see their organisations' rows; only the admin role may change
them, and changes go through the same services as the API (validation, audit, recomputation).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.utils.functional import cached_property

from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.models import Membership, Organisation, Role


def organisation_ids(request: HttpRequest, *, admin_only: bool = False) -> list[Any]:
    cache_name = "_admin_org_ids" + ("_admin" if admin_only else "")
    cached = getattr(request, cache_name, None)
    if cached is None:
        memberships = Membership.objects.filter(user_id=request.user.pk or 0)
        if admin_only:
            memberships = memberships.filter(role=Role.ADMIN)
        cached = list(memberships.values_list("organisation_id", flat=True))
        setattr(request, cache_name, cached)
    return cached


def admin_actor(request: HttpRequest, organisation: Organisation) -> Actor:
    return Actor(organisation=organisation, user=request.user, role=Role.ADMIN)  # type: ignore[arg-type]


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows (a LIMITed subquery), so a changelist over millions of rows never runs a
    full COUNT(*); past the cap, narrow down with the filters."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return int(self.object_list[: self.CAP].count())  # type: ignore[attr-defined]


class OrganisationScopedAdmin(admin.ModelAdmin[Any]):
    organisation_path = "organisation"

    def _in_scope(self, request: HttpRequest, obj: Any, *, admin_only: bool) -> bool:
        if request.user.is_superuser:
            return True
        allowed = organisation_ids(request, admin_only=admin_only)
        if obj is None:
            return bool(allowed)
        organisation_id = obj
        for part in self.organisation_path.split("__"):
            organisation_id = getattr(organisation_id, part)
        return getattr(organisation_id, "pk", organisation_id) in allowed

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.organisation_path}__in": organisation_ids(request)})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(
            request.user.is_active and request.user.is_staff and self._in_scope(request, None, admin_only=False)
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request) and self._in_scope(request, obj, admin_only=False)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_staff) and self._in_scope(request, obj, admin_only=True)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ShownInline(admin.TabularInline):
    """Rows shown under their parent, whose admin already checked the organisation; changed through services."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_staff)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
