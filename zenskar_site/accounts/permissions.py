from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.models import ApiKey, ApiKeyScope, Role
from zenskar_site.accounts.selectors import actor_for_session


def request_actor(request: Request) -> Actor:
    """The actor for an authenticated request (cached on the request)."""
    actor = getattr(request, "_actor", None)
    if actor is not None:
        return actor
    if isinstance(request.auth, ApiKey):
        api_key = request.auth
        role = Role.ADMIN if api_key.scope == ApiKeyScope.FULL else Role.VIEWER
        actor = Actor(organisation=api_key.organisation, api_key=api_key, role=role)
    else:
        actor = actor_for_session(request=request)
        if actor is None:
            raise PermissionDenied("Your account does not belong to any organisation.")
    request._actor = actor  # type: ignore[attr-defined]
    return actor


class ManagementAccess(BasePermission):
    """The management API: a `full`-scope key, or a signed-in member (viewers read only)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.user is None or not request.user.is_authenticated:
            raise NotAuthenticated("Authentication credentials were not provided.")
        if isinstance(request.auth, ApiKey) and request.auth.scope != ApiKeyScope.FULL:
            raise PermissionDenied("This API key has the 'ingest' scope; the management API needs a 'full' key.")
        actor = request_actor(request)
        if request.method not in SAFE_METHODS and not actor.can_write:
            raise PermissionDenied("Viewers cannot change anything; ask an admin of the organisation.")
        return True


class IngestAccess(BasePermission):
    """Ingestion: any active API key (either scope)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, ApiKey):
            raise NotAuthenticated("Send an API key in the x-api-key header (or Authorization: Bearer).")
        return True
