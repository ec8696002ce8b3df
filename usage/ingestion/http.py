"""`POST /usage/{api_slug}` (SPEC §3): one handler for Django's view and for the fast WSGI route.

A plain Django view rather than DRF: the hot path parses its body once, in one place. Both routes
hand `ingest_answer` a Django request; the fast route (usage/ingestion/wsgi.py) only skips the
middleware that ingestion has no use for (sessions, CSRF, messages, URL resolution), and first offers
the request to `ingest_plain_answer`, which answers the common case (one valid record from a cached
key) the same way with a fraction of the work, and hands anything else back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from usage.dirty import records_changed_announce
from usage.ingestion.context import (
    IngestContext,
    IngestError,
    StaleContext,
    ingest_context_cached,
    ingest_context_forget,
    ingest_context_load,
)
from usage.ingestion.store import (
    IngestResult,
    body_parse,
    record_row_plain,
    record_store_plain,
    records_ingest,
)
from usage.schema import dataschema_has_decimal
from zenskar_site.accounts.authentication import presented_key
from zenskar_site.accounts.services import api_key_touch, api_key_touch_due
from zenskar_site.lib.errors import DomainError
from zenskar_site.lib.ratelimit import rate_limit_retry_after

BACKFILL_VALUES = frozenset({"backfill=true", "backfill=1", "backfill=yes"})
JSON = "application/json"


class Answer(NamedTuple):
    """An answer of the endpoint: its status, its JSON body, and headers beside Content-Type (always JSON)."""

    status: int
    content: bytes
    headers: dict[str, str]


class _Presented(NamedTuple):
    """What the request presents to find its context: the API slug, the key and the organisation header."""

    api_slug: str
    secret: str | None
    organisation_header: str | None


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, orjson.dumps(body), headers or {})


def answer_response(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.content, status=answer.status, content_type=JSON)
    for name, value in answer.headers.items():
        response[name] = value
    return response


@csrf_exempt
def ingest(request: HttpRequest, api_slug: str) -> HttpResponse:
    """The Django view (the URLconf's route for /usage/<slug>); production traffic takes the fast route."""
    return answer_response(ingest_answer(request, api_slug=api_slug))


def ingest_answer(request: HttpRequest, *, api_slug: str) -> Answer:
    if request.method != "POST":
        return _answer(405, {"detail": "Use POST to send usage."}, {"Allow": "POST"})
    # SECURE_REDIRECT_EXEMPT keeps SecurityMiddleware from redirecting usage (a client would resend a
    # POST as a GET): plain HTTP is refused here instead, the same on both routes.
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        return _answer(403, {"detail": "HTTPS is required: send usage to this URL with https://. Nothing was stored."})
    now = timezone.now()  # one clock reading for the whole request
    meta = request.META
    return _answered(
        lambda: _ingest(
            api_slug=api_slug,
            secret=presented_key(meta),
            organisation_header=meta.get("HTTP_ORGANISATION"),
            content_type=meta.get("CONTENT_TYPE", ""),
            content_length=meta.get("CONTENT_LENGTH") or "",
            backfill=any(part.lower() in BACKFILL_VALUES for part in meta.get("QUERY_STRING", "").split("&")),
            request=request,
            now=now,
        )
    )


def ingest_plain_answer(meta: dict[str, Any], *, api_slug: str, body: bytes) -> Answer | None:
    """The answer to the plain case, which is most of the traffic: one valid event record, no query string,
    a JSON content type, a key and usage event from this process's cache whose use needs no recording now.

    It answers as ingest_answer would, the same checks in the same order, but without building a batch
    and its answers. None when the request is not the plain case: then nothing was counted or written, and
    ingest_answer answers it. The caller has applied ingest_answer's method and HTTPS rules.
    """
    if meta.get("QUERY_STRING") or not _is_json(_media_type(meta.get("CONTENT_TYPE", ""))):
        return None
    # One record is a JSON object; a batch (an array) is not parsed here, only by the general path.
    if body[:1] != b"{" or len(body) > settings.INGEST_MAX_BODY_BYTES:
        return None
    presented = _Presented(api_slug, presented_key(meta), meta.get("HTTP_ORGANISATION"))
    try:
        context = ingest_context_cached(
            secret=presented.secret, api_slug=api_slug, organisation_header=presented.organisation_header
        )
    except DomainError:  # refused: the general path says why
        return None
    now = timezone.now()
    if context is None or api_key_touch_due(
        api_key=context.api_key, now=now, min_interval_seconds=settings.API_KEY_TOUCH_SECONDS
    ):
        return None
    try:
        item = body_parse(body=body, exact_decimals=dataschema_has_decimal(context.usage_event.dataschema))
    except IngestError:
        return None
    row = record_row_plain(context=context, item=item, now=now) if isinstance(item, dict) else None
    if row is None:
        return None

    def ingest() -> IngestResult:
        # Counted from here on, so answered here whatever happens.
        _admit(context, now=now)
        try:
            return record_store_plain(context=context, row=row, now=now)
        except StaleContext:  # nothing was written: as the general path goes on after its first write
            return _ingest_reloaded(stale=context, presented=presented, body=body, now=now)

    return _answered(ingest)


def _answered(ingest: Callable[[], IngestResult]) -> Answer:
    """Run `ingest`; the answer to its result, or to the error it raised."""
    try:
        result = ingest()
    except DomainError as exc:
        return _answer(exc.status_code, {"detail": exc.detail}, getattr(exc, "headers", None))
    except (OperationalError, InterfaceError):
        # Never a 2xx for unsaved data: the statement did not commit.
        return _answer(
            503, {"detail": "The database is unavailable; nothing was stored. Retry later."}, {"Retry-After": "5"}
        )
    if result.accepted:
        # The metrics app listens and refreshes after commit (usage never imports it).
        records_changed_announce(usage_event_id=result.usage_event_id)
    return _answer(result.status_code, result.body())


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == JSON or media_type.endswith("+json")


def _admit(context: IngestContext, *, now: Any) -> None:
    """Count the request against its organisation's rate limit; IngestError 429 when it is over."""
    retry_after = rate_limit_retry_after(organisation_id=context.api_key.organisation_id, now=now.timestamp())
    if retry_after is not None:
        raise IngestError(429, "Over the organisation's rate limit; retry later.", {"Retry-After": str(retry_after)})


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
    _admit(context, now=now)
    media_type = _media_type(content_type)
    if not _is_json(media_type):
        raise IngestError(415, f"Send JSON with Content-Type: application/json (got {media_type or 'none'!r}).")
    body = _read_body(request, content_length=content_length)
    api_key_touch(api_key=context.api_key, now=now, min_interval_seconds=settings.API_KEY_TOUCH_SECONDS)
    try:
        return records_ingest(context=context, body=body, backfill=backfill, now=now)
    except StaleContext:  # revoked, archived or redefined since cached: answer from the database's state
        presented = _Presented(api_slug, secret, organisation_header)
        return _ingest_reloaded(stale=context, presented=presented, body=body, now=now, backfill=backfill)


def _ingest_reloaded(
    *, stale: IngestContext, presented: _Presented, body: bytes, now: Any, backfill: bool = False
) -> IngestResult:
    """The write again after the write with the cached context `stale` wrote nothing: with the context as the
    database has it now."""
    ingest_context_forget(api_key_prefix=stale.api_key.prefix, api_slug=presented.api_slug)
    context = ingest_context_load(
        secret=presented.secret, api_slug=presented.api_slug, organisation_header=presented.organisation_header
    )
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
