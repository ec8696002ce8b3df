"""The fast WSGI route for `POST /usage/{api_slug}` (see zenskar_site/wsgi.py).

Ingestion carries no session, cookie or CSRF state and needs no URL resolution, so this route skips
Django's middleware stack but keeps Django's own rules where they matter, in settings.MIDDLEWARE's
order: the request is Django's `WSGIRequest`; a NUL in the URL is the site's 400 (`url_nul_problem`);
the Host header is checked by `request.get_host()` (ALLOWED_HOSTS); the HTTPS rule is
`SecurityMiddleware.process_request`; and the security headers are those `SecurityMiddleware` and
`XFrameOptionsMiddleware` add, found once by running their `process_response` (they depend only on the
settings and on whether the request is secure). tests/usage/test_fast_route.py compares both routes on
the same requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from usage.ingestion.http import ingest_response
from zenskar_site.lib.middleware import nul_refusal, url_nul_problem
from zenskar_site.lib.sql import connection_retire_if_dropped

logger = logging.getLogger(__name__)
JSON = "application/json"


@dataclass(frozen=True)
class _Rules:
    """Django's middleware as ingestion applies it, built from the settings once (again when one changes)."""

    security: SecurityMiddleware
    # The headers SecurityMiddleware adds to a response that has none of them, by whether the request came
    # over HTTPS, and those XFrameOptionsMiddleware adds: they depend on nothing else, so they are found once.
    secured: dict[bool, tuple[tuple[str, str], ...]]
    framed: tuple[tuple[str, str], ...]


_rules: _Rules | None = None


def _unreachable(request: HttpRequest) -> HttpResponse:
    raise AssertionError("the middleware is called for its process_request/process_response only")


class _Probe(HttpRequest):
    """A request that is secure or not, for finding the headers the middleware add."""

    def __init__(self, *, secure: bool) -> None:
        super().__init__()
        self.secure = secure

    def is_secure(self) -> bool:
        return self.secure


def _rules_build() -> _Rules:
    security, frame = SecurityMiddleware(_unreachable), XFrameOptionsMiddleware(_unreachable)
    secured = {secure: _added(security, _Probe(secure=secure)) for secure in (False, True)}
    return _Rules(security=security, secured=secured, framed=_added(frame, _Probe(secure=False)))


def _added(middleware: SecurityMiddleware | XFrameOptionsMiddleware, probe: HttpRequest) -> tuple[tuple[str, str], ...]:
    response = HttpResponse(content_type=JSON)
    before = set(response.headers)
    middleware.process_response(probe, response)
    return tuple((name, value) for name, value in response.items() if name not in before)


@receiver(setting_changed)
def _rules_forget(**kwargs: Any) -> None:
    global _rules
    _rules = None


def _respond(request: WSGIRequest, rules: _Rules) -> tuple[HttpResponse, bool]:
    """What settings.MIDDLEWARE's request side does for this path, in its order, then the handler; and
    whether the response passed XFrameOptionsMiddleware (the refusals before it, as on the full stack, do not)."""
    problem = url_nul_problem(request)
    if problem is not None:
        return nul_refusal(problem), False
    try:
        request.get_host()  # ALLOWED_HOSTS, where CommonMiddleware applies it on the full stack
    except DisallowedHost:
        return HttpResponse(b'{"detail":"Invalid Host header."}', status=400, content_type=JSON), False
    redirect = rules.security.process_request(request)  # SECURE_SSL_REDIRECT (ingestion is exempt)
    if redirect is not None:
        return redirect, False
    return ingest_response(request, api_slug=request.path_info[7:].rstrip("/")), True


def ingest_application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    global _rules
    # What Django's request_started/finished receivers do for this path: retire a broken or expired
    # database connection (so an outage heals on the next request), for the one database this route uses;
    # and one the server dropped while it was idle (a restart): the write must not be the one to find out.
    database = connections[DEFAULT_DB_ALIAS]
    database.close_if_unusable_or_obsolete()
    connection_retire_if_dropped()
    if _rules is None:
        _rules = _rules_build()
    request = WSGIRequest(environ)
    try:
        response, framed = _respond(request, _rules)
    except Exception:
        logger.exception("ingestion failed")
        response = HttpResponse(b'{"detail":"Internal error; retry later."}', status=500, content_type=JSON)
        framed = True
    finally:
        database.close_if_unusable_or_obsolete()
    added = _rules.secured[request.is_secure()] + (_rules.framed if framed else ())
    headers = list(response.items()) + [(name, value) for name, value in added if name not in response]
    headers.append(("Content-Length", str(len(response.content))))  # as CommonMiddleware sets it on the full stack
    start_response(f"{response.status_code} {response.reason_phrase}", headers)
    return [response.content]
