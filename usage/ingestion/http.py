"""`POST /usage/{api_slug}` (SPEC §3): one handler for Django's view and for the fast WSGI route.

A plain Django view rather than DRF: the hot path parses its body once, in one place. Both routes
hand `ingest_response` a Django request; the fast route (usage/ingestion/wsgi.py) only skips the
middleware that ingestion has no use for (sessions, CSRF, messages, URL resolution).
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from usage.dirty import records_changed_announce
from usage.ingestion.context import (
    IngestError,
    StaleContext,
    ingest_context_cached,
    ingest_context_forget,
    ingest_context_load,
)
from usage.ingestion.store import IngestResult, records_ingest
from zenskar_site.accounts.authentication import presented_key
from zenskar_site.accounts.services import api_key_touch
from zenskar_site.lib.errors import DomainError
from zenskar_site.lib.ratelimit import rate_limit_retry_after

BACKFILL_VALUES = frozenset({"backfill=true", "backfill=1", "backfill=yes"})


def _json(status_code: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status_code, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@csrf_exempt
def ingest(request: HttpRequest, api_slug: str) -> HttpResponse:
    """The Django view (the URLconf's route for /usage/<slug>); production traffic takes the fast route."""
    return ingest_response(request, api_slug=api_slug)


def ingest_response(request: HttpRequest, *, api_slug: str) -> HttpResponse:
    if request.method != "POST":
        return _json(405, {"detail": "Use POST to send usage."}, {"Allow": "POST"})
    # SECURE_REDIRECT_EXEMPT keeps SecurityMiddleware from redirecting usage (a client would resend a
    # POST as a GET): plain HTTP is refused here instead, the same on both routes.
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        return _json(403, {"detail": "HTTPS is required: send usage to this URL with https://. Nothing was stored."})
    now = timezone.now()  # one clock reading for the whole request
    meta = request.META
    try:
        result = _ingest(
            api_slug=api_slug,
            secret=presented_key(meta),
            organisation_header=meta.get("HTTP_ORGANISATION"),
            content_type=meta.get("CONTENT_TYPE", ""),
            content_length=meta.get("CONTENT_LENGTH") or "",
            backfill=any(part.lower() in BACKFILL_VALUES for part in meta.get("QUERY_STRING", "").split("&")),
            request=request,
            now=now,
        )
    except DomainError as exc:
        return _json(exc.status_code, {"detail": exc.detail}, getattr(exc, "headers", None))
    except (OperationalError, InterfaceError):
        # Never a 2xx for unsaved data: the statement did not commit.
        return _json(
            503, {"detail": "The database is unavailable; nothing was stored. Retry later."}, {"Retry-After": "5"}
        )
    if result.accepted:
        # The metrics app listens and refreshes after commit (usage never imports it).
        records_changed_announce(usage_event_id=result.usage_event_id)
    return _json(result.status_code, result.body())


def _ingest(
    *,
    api_slug: str,
    secret: str | None,
    organisation_header: str | None,
    content_type: str,
    content_length: str,
    backfill: bool,
    request: HttpRequest,
    now: Any,
) -> IngestResult:
    context = ingest_context_cached(
        secret=secret, api_slug=api_slug, organisation_header=organisation_header
    ) or ingest_context_load(secret=secret, api_slug=api_slug, organisation_header=organisation_header)
    retry_after = rate_limit_retry_after(organisation_id=context.api_key.organisation_id, now=now.timestamp())
    if retry_after is not None:
        raise IngestError(429, "Over the organisation's rate limit; retry later.", {"Retry-After": str(retry_after)})
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise IngestError(415, f"Send JSON with Content-Type: application/json (got {media_type or 'none'!r}).")
    body = _read_body(request, content_length=content_length)
    api_key_touch(api_key=context.api_key, now=now, min_interval_seconds=settings.API_KEY_TOUCH_SECONDS)
    try:
        return records_ingest(context=context, body=body, backfill=backfill, now=now)
    except StaleContext:  # revoked, archived or redefined since cached: answer from the database's state
        ingest_context_forget(api_key_prefix=context.api_key.prefix, api_slug=api_slug)
        context = ingest_context_load(secret=secret, api_slug=api_slug, organisation_header=organisation_header)
        try:
            return records_ingest(context=context, body=body, backfill=backfill, now=now)
        except StaleContext:  # changed again between the reload and the write: nothing was written
            raise IngestError(
                503,
                "The usage event changed while this request was written; nothing was stored. Retry.",
                {"Retry-After": "1"},
            ) from None


def _read_body(request: HttpRequest, *, content_length: str) -> bytes:
    limit = settings.INGEST_MAX_BODY_BYTES
    if content_length.isdigit() and int(content_length) > limit:
        raise IngestError(413, f"The body is over the limit of {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise IngestError(413, f"The body is over the limit of {limit} bytes.")
    return body
