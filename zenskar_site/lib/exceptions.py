"""The one place where domain errors and framework errors become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from zenskar_site.lib.errors import DomainError
from zenskar_site.lib.text import printable

logger = logging.getLogger(__name__)


def flatten_errors(data: Any, path: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure as `{"field.sub": ["message", ...]}`."""
    flat: dict[str, list[str]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            key_path = path if key in ("non_field_errors",) else (f"{path}.{key}" if path else str(key))
            for sub, messages in flatten_errors(value, key_path).items():
                flat.setdefault(sub, []).extend(messages)
    elif isinstance(data, list) and data and all(not isinstance(item, (dict, list)) for item in data):
        flat[path] = [str(item) for item in data]
    elif isinstance(data, list):
        for index, value in enumerate(data):
            for sub, messages in flatten_errors(value, f"{path}[{index}]" if path else str(index)).items():
                flat.setdefault(sub, []).extend(messages)
    else:
        flat[path] = [str(data)]
    return flat


def error_body(detail: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    # A message may quote the input: a lone surrogate in it would make the JSON renderer fail (a 500),
    # so unstorable characters are written as escapes.
    body: dict[str, Any] = {"detail": printable(detail)}
    if errors:
        body["errors"] = {
            printable(str(key)): [printable(str(m)) for m in messages] for key, messages in errors.items()
        }
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.detail, exc.errors), status=exc.status_code)
    if isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError) and "connection" in str(exc).lower()
    ):
        logger.warning("database unavailable: %s", exc)
        response = Response(
            error_body("The database is unavailable; nothing was stored. Retry later."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = "5"
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        # The API reads JSON only (settings' DEFAULT_PARSER_CLASSES): say so, as ingestion does.
        request = context.get("request")
        media_type = str(getattr(request, "content_type", "") or "").split(";", 1)[0].strip().lower()
        return Response(
            error_body(f"Send JSON with Content-Type: application/json (got {media_type or 'none'!r})."),
            status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        first_field, messages = next(iter(errors.items())) if errors else ("", ["Invalid input."])
        detail = f"{first_field}: {messages[0]}" if first_field else messages[0]
        return Response(error_body(detail, errors), status=status.HTTP_400_BAD_REQUEST)
    handled = drf_exception_handler(exc, context)
    if handled is not None and isinstance(handled.data, dict) and "detail" in handled.data:
        handled.data = error_body(str(handled.data["detail"]))
    return handled


# The Zenskar-compatible paths (billing/zenskar/urls.py, SPEC §10) at the site root, with or without a slash.
ZENSKAR_PATH_PREFIXES = (
    "/rawmetric",
    "/aggregates",
    "/customer",
    "/products",
    "/templates/plan",
    "/contract_v2",
    "/system/",
)
# The management API, ingestion and the Zenskar-compatible paths: their clients are programs that read JSON.
JSON_PATH_PREFIXES = ("/api/", "/usage/", *ZENSKAR_PATH_PREFIXES)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's handler500: an unhandled exception (logged with its traceback by Django) answers JSON with
    `detail` on the API and ingestion, whose clients read JSON, and the HTML page elsewhere."""
    if request.path_info.startswith(JSON_PATH_PREFIXES):
        return JsonResponse({"detail": "Internal error; retry later."}, status=500)
    return defaults.server_error(request)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's handler404: an unknown URL on the API or ingestion answers JSON with `detail`; HTML elsewhere."""
    if request.path_info.startswith(JSON_PATH_PREFIXES):
        return JsonResponse({"detail": f"No such endpoint: {request.method} {request.path_info}"}, status=404)
    return defaults.page_not_found(request, exception)
