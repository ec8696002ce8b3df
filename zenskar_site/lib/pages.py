"""How the dashboard's views answer a service's refusal: the 404 page, or messages on the page."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from zenskar_site.lib.errors import DomainError, NotFound, ValidationFailed


def not_found_page(request: HttpRequest, exc: NotFound) -> HttpResponse:
    return render(request, "404.html", {"detail": exc.detail}, status=404)


def refusal_messages(request: HttpRequest, exc: DomainError, *, what: str) -> None:
    """One error message per field error of a ValidationFailed (its field path named), else its detail;
    each begins with `what`, the action that was refused."""
    if isinstance(exc, ValidationFailed) and exc.errors:
        for path, found in exc.errors.items():
            for message in found:
                messages.error(request, f"{what}: {path}: {message}" if path else f"{what}: {message}")
    else:
        messages.error(request, f"{what}: {exc.detail}")
