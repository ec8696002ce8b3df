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

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from usage.ingestion.http import Answer, answer_response, ingest_answer, ingest_plain_answer
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


def _respond(request: WSGIRequest, rules: _Rules, *, plain_tried: bool) -> tuple[HttpResponse | Answer, bool]:
    """What settings.MIDDLEWARE's request side does for this path, in its order, then the handler; and
    whether the response passed XFrameOptionsMiddleware (the refusals before it, as on the full stack, do
    not): True exactly when the request passed those checks and reached the handler."""
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
    api_slug = request.path_info[7:].rstrip("/")
    plain = None if plain_tried else _plain_answer(request.META, api_slug=api_slug, secure=request.is_secure())
    if plain is not None:
        return plain, True
    return answer_response(ingest_answer(request, api_slug=api_slug)), True


def _plain_answer(environ: dict[str, Any], *, api_slug: str, secure: bool) -> Answer | None:
    """ingest_plain_answer's answer, for a request that passed the middleware's checks; None to answer it
    with ingest_answer."""
    if settings.SECURE_SSL_REDIRECT and not secure:  # ingest_answer's 403
        return None
    stream, length = environ["wsgi.input"], environ.get("CONTENT_LENGTH") or ""
    # The body in memory (zenskar_site/wsgi.py reads it so under gunicorn, within the ingestion limit) and
    # whole; it stays readable for the general path.
    if not isinstance(stream, io.BytesIO) or not length.isdigit():
        return None
    body = stream.getvalue()
    return ingest_plain_answer(environ, api_slug=api_slug, body=body) if len(body) == int(length) else None


# What _respond's checks found for the request-line and header values they read (below), when the request
# passed them: whether it came over HTTPS, and its API slug. A request with the same values passes the
# same way (the checks read nothing else, and the settings they read clear this on change), so its plain
# case is answered without building Django's request.
_passed: dict[tuple[Any, ...], tuple[bool, str]] = {}
PASSED_SIZE = 1024


def _passed_key(environ: dict[str, Any]) -> tuple[Any, ...] | None:
    if environ.get("QUERY_STRING") or "HTTP_HOST" not in environ:
        return None
    return (
        environ.get("PATH_INFO"),
        environ.get("SCRIPT_NAME"),  # with PATH_INFO, the path SECURE_REDIRECT_EXEMPT is matched against
        environ.get("HTTP_HOST"),
        environ.get("HTTP_X_FORWARDED_HOST"),
        environ.get(settings.SECURE_PROXY_SSL_HEADER[0]) if settings.SECURE_PROXY_SSL_HEADER else None,
        environ.get("wsgi.url_scheme"),
    )


@receiver(setting_changed)
def _passed_forget(**kwargs: Any) -> None:
    _passed.clear()


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
    key = _passed_key(environ)
    passed = _passed.get(key) if key is not None else None
    response: HttpResponse | Answer | None = None
    secure: bool | None = None
    try:
        if passed is not None:
            secure, api_slug = passed
            response, framed = _plain_answer(environ, api_slug=api_slug, secure=secure), True
        if response is None:
            request = WSGIRequest(environ)
            secure = request.is_secure()
            response, framed = _respond(request, _rules, plain_tried=passed is not None)
            if framed and key is not None:
                if len(_passed) >= PASSED_SIZE:
                    _passed.clear()
                _passed[key] = (secure, request.path_info[7:].rstrip("/"))
    except Exception:
        logger.exception("ingestion failed")
        response, framed = Answer(500, b'{"detail":"Internal error; retry later."}', {}), True
    finally:
        database.close_if_unusable_or_obsolete()
    if secure is None:  # the failure came before the request was read
        secure = WSGIRequest(environ).is_secure()
    if isinstance(response, Answer):
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        headers, content = [("Content-Type", JSON), *response.headers.items()], response.content
    else:
        status = f"{response.status_code} {response.reason_phrase}"
        headers, content = list(response.items()), response.content
    added = _rules.secured[secure] + (_rules.framed if framed else ())
    present = {name.lower() for name, _ in headers}
    headers += [(name, value) for name, value in added if name.lower() not in present]
    headers.append(("Content-Length", str(len(content))))  # as CommonMiddleware sets it on the full stack
    start_response(status, headers)
    return [content]
