"""Reads for organisations, memberships, API keys and the audit trail."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.models import ApiKey, AuditEntry, Membership, Organisation

SESSION_ORGANISATION_KEY = "organisation_id"


def memberships_for_user(*, user: Any) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("organisation").order_by("organisation__name")


def actor_for_session(*, request: Any) -> Actor | None:
    """The signed-in user's actor in the organisation chosen with the switcher (first by name)."""
    user = request.user
    if user is None or not user.is_authenticated:
        return None
    memberships = list(memberships_for_user(user=user))
    if not memberships:
        if user.is_superuser:
            organisation = Organisation.objects.order_by("name").first()
            return Actor(organisation=organisation, user=user, role="admin") if organisation else None
        return None
    chosen = request.session.get(SESSION_ORGANISATION_KEY)
    membership = next((m for m in memberships if str(m.organisation_id) == chosen), memberships[0])
    role = "admin" if user.is_superuser else membership.role
    return Actor(organisation=membership.organisation, user=user, role=role)


def api_keys_list(*, organisation: Organisation, include_revoked: bool = False) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.filter(organisation=organisation)
    if not include_revoked:
        keys = keys.filter(revoked_at__isnull=True)
    return keys.order_by("-created_at", "-id")


def audit_entries_list(*, organisation: Organisation) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(organisation=organisation).order_by("-at", "-id")
