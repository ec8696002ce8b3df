"""Throttling: the management API's per-organisation rate limit, and the client address sign-in limits count.

Sign-in attempts are limited by django-axes (configured in settings); it asks `client_ip_address` which
address an attempt came from.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from zenskar_site.accounts.permissions import request_actor
from zenskar_site.lib.ratelimit import rate_limit_retry_after


class OrganisationRateThrottle(BaseThrottle):
    """API_RATE_LIMIT requests per second per organisation, counted as ingestion counts (its own budget).

    Keyed by the actor's organisation: an API key's, or the signed-in user's current one. Requests
    without an authenticated actor are not counted: the permission check has already refused them,
    or the view is public (the OpenAPI document and its docs).
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        limit = settings.API_RATE_LIMIT
        user = request.user
        if limit <= 0 or user is None or not user.is_authenticated:
            return True
        organisation = request_actor(request).organisation
        retry_after = rate_limit_retry_after(organisation_id=organisation.pk, now=time.time(), limit=limit, scope="api")
        if retry_after is None:
            return True
        # Raised here rather than returning False, which would answer DRF's generic message.
        raise Throttled(wait=retry_after, detail="Over the organisation's API rate limit.")


def client_ip_address(request: HttpRequest) -> str | None:
    """The address a sign-in attempt came from (django-axes' AXES_CLIENT_IP_CALLABLE).

    Behind TRUSTED_PROXY_COUNT proxies that each append the address they were connected from to
    X-Forwarded-For, the client is that many entries from the right; entries further left were
    written by the client itself and could be anything. With no trusted proxy (embedded mode), or a
    header too short or not an address, the connection's own address (REMOTE_ADDR).
    """
    remote = request.META.get("REMOTE_ADDR") or None
    hops = settings.TRUSTED_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")
    if len(forwarded) < hops:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-hops].strip()))
    except ValueError:
        return remote
