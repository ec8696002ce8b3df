"""The fast WSGI route for `POST /usage/{api_slug}` (see zenskar_site/wsgi.py).

Ingestion carries no session, cookie or CSRF state and needs no URL resolution, so this route skips
Django's middleware stack but keeps Django's own rules where they matter: the request is Django's
`WSGIRequest`, the Host header is checked by `request.get_host()` (ALLOWED_HOSTS), and the HTTPS rule
and security headers come from Django's `SecurityMiddleware` and `XFrameOptionsMiddleware` wrapped
around the same handler the Django view uses, with the site's `NulRejectMiddleware` (a NUL in the URL is
a 400) where settings.MIDDLEWARE has it. tests/usage/test_fast_route.py compares both routes on the same requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, cast

from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from usage.ingestion.http import ingest_response
from zenskar_site.lib.middleware import NulRejectMiddleware
from zenskar_site.lib.sql import connection_retire_if_dropped

logger = logging.getLogger(__name__)
JSON = "application/json"

# Built once (it reads its settings when built) and again when a setting changes (tests).
_security: SecurityMiddleware | None = None


def _host_checked(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Django's ALLOWED_HOSTS rule, where CommonMiddleware applies it on the full stack."""

    def middleware(request: HttpRequest) -> Any:
        try:
            request.get_host()
        except DisallowedHost:
            return HttpResponse(b'{"detail":"Invalid Host header."}', status=400, content_type=JSON)
        return get_response(request)

    return middleware


def _ingest(request: HttpRequest) -> HttpResponse:
    return ingest_response(request, api_slug=request.path_info[7:].rstrip("/"))


@receiver(setting_changed)
def _security_forget(**kwargs: Any) -> None:
    global _security
    _security = None


def ingest_application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    global _security
    # What Django's request_started/finished receivers do for this path: retire a broken or expired
    # database connection (so an outage heals on the next request), for the one database this route uses;
    # and one the server dropped while it was idle (a restart): the write must not be the one to find out.
    database = connections[DEFAULT_DB_ALIAS]
    database.close_if_unusable_or_obsolete()
    connection_retire_if_dropped()
    try:
        if _security is None:
            # In the order of settings.MIDDLEWARE, less what ingestion has no use for.
            _security = SecurityMiddleware(NulRejectMiddleware(_host_checked(XFrameOptionsMiddleware(_ingest))))
        response = cast(HttpResponse, _security(WSGIRequest(environ)))  # sync middleware, sync handler
    except Exception:
        logger.exception("ingestion failed")
        response = HttpResponse(b'{"detail":"Internal error; retry later."}', status=500, content_type=JSON)
    finally:
        database.close_if_unusable_or_obsolete()
    response["Content-Length"] = str(len(response.content))  # as CommonMiddleware sets it on the full stack
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    return [response.content]
