"""The lean WSGI route for ingestion (see wsgi.py): the same `ingest_handle` as the Django view."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host

from usage.api import IngestCall, backfill_requested, ingest_handle

logger = logging.getLogger(__name__)
STATUS_TEXT = {
    202: "202 Accepted",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    422: "422 Unprocessable Content",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


# Host header -> whether ALLOWED_HOSTS admits it: the same few hosts arrive on every request.
_host_answers: dict[str, bool] = {}
HOST_ANSWERS_MAX = 256  # a client may send any Host header; the cache stays small


def _host_allowed(host: str) -> bool:
    allowed = _host_answers.get(host)
    if allowed is None:
        domain, _ = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, _allowed_hosts())
        if len(_host_answers) < HOST_ANSWERS_MAX:
            _host_answers[host] = allowed
    return allowed


@receiver(setting_changed)
def _host_answers_forget(*, setting: str, **kwargs: Any) -> None:
    if setting in {"ALLOWED_HOSTS", "DEBUG"}:
        _host_answers.clear()


def _is_secure(environ: dict[str, Any]) -> bool:
    header, value = settings.SECURE_PROXY_SSL_HEADER or (None, None)
    if header and environ.get(header) is not None:
        return str(environ[header]).split(",")[0].strip() == value
    return environ.get("wsgi.url_scheme") == "https"


def _respond(start_response: Callable[..., Any], status: int, body: bytes, headers: dict[str, str]) -> list[bytes]:
    pairs = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Content-Type-Options", "nosniff"),
        *headers.items(),
    ]
    if settings.SECURE_HSTS_SECONDS:
        pairs.append(("Strict-Transport-Security", f"max-age={settings.SECURE_HSTS_SECONDS}; includeSubDomains"))
    start_response(STATUS_TEXT.get(status, f"{status} Status"), pairs)
    return [body]


def ingest_application(environ: dict[str, Any], start_response: Callable[..., Any], slug: str) -> Iterable[bytes]:
    # What Django's request_started/finished receivers do for this path: retire a broken or expired
    # database connection (so an outage heals on the next request), for the one database this route uses.
    database = connections[DEFAULT_DB_ALIAS]
    database.close_if_unusable_or_obsolete()
    try:
        if not _host_allowed(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")):
            return _respond(start_response, 400, b'{"detail":"Invalid Host header."}', {})
        if settings.SECURE_SSL_REDIRECT and not _is_secure(environ):
            return _respond(start_response, 403, b'{"detail":"Send usage over HTTPS."}', {})
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        secret = environ.get("HTTP_X_API_KEY") or (
            authorization[7:] if authorization[:7].lower() == "bearer " else None
        )
        stream = environ["wsgi.input"]
        call = IngestCall(
            api_slug=slug,
            secret=secret.strip() if secret else None,
            organisation_header=environ.get("HTTP_ORGANISATION"),
            content_type=environ.get("CONTENT_TYPE", ""),
            content_length=environ.get("CONTENT_LENGTH") or "",
            backfill=backfill_requested(environ.get("QUERY_STRING", "")),
            read=stream.read,
        )
        status, body, headers = ingest_handle(call)
        return _respond(start_response, status, body, headers)
    except Exception:
        logger.exception("ingestion failed")
        return _respond(start_response, 500, b'{"detail":"Internal error; retry later."}', {})
    finally:
        database.close_if_unusable_or_obsolete()
