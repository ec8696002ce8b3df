"""One DRF authentication class for programs: `x-api-key` or `Authorization: Bearer`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from zenskar_site.accounts.models import ApiKey
from zenskar_site.accounts.services import api_key_check, api_key_split, api_key_touch
from zenskar_site.lib.errors import Unauthenticated


class ApiKeyPrincipal:
    """What `request.user` is for a request authenticated by an API key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key

    def __str__(self) -> str:
        return f"api_key:{self.api_key.prefix}"


def presented_key(meta: dict[str, Any]) -> str | None:
    """The key a request presents (`x-api-key`, or `Authorization: Bearer`), from its WSGI environ / META."""
    key = meta.get("HTTP_X_API_KEY")
    if key:
        return str(key).strip()
    authorization = meta.get("HTTP_AUTHORIZATION", "")
    if authorization[:7].lower() == "bearer ":
        return str(authorization[7:]).strip()
    return None


def api_key_authenticate(*, secret: str, organisation_header: str | None) -> ApiKey:
    """The active key for `secret` (raises Unauthenticated or Forbidden), its use recorded."""
    prefix = api_key_split(secret=secret)
    api_key = ApiKey.objects.select_related("organisation").filter(prefix=prefix).first() if prefix else None
    api_key = api_key_check(api_key=api_key, secret=secret, organisation_header=organisation_header)
    api_key_touch(api_key=api_key, now=timezone.now(), min_interval_seconds=settings.API_KEY_TOUCH_SECONDS)
    return api_key


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        secret = presented_key(request.META)
        if secret is None:
            return None
        try:
            api_key = api_key_authenticate(secret=secret, organisation_header=request.META.get("HTTP_ORGANISATION"))
        except Unauthenticated as exc:
            raise exceptions.AuthenticationFailed(exc.detail) from None
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when no credentials were given.
        return 'Bearer realm="api"'
