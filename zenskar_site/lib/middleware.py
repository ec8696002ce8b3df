"""A NUL (`%00`) in a URL is a 400 before any view can pass it to the database.

No slug, id, filter or name can hold a NUL: PostgreSQL's text refuses it (a 500 before this check) and
SQLite would look for a value no row has. Every path is checked; query strings are checked on the API
and ingestion paths, whose clients read JSON. The dashboard's pages read their query through forms,
which refuse a NUL with a message on the page (Django's CharField), so they keep doing that.

One check for the whole site (settings.MIDDLEWARE, right after SecurityMiddleware) and for the fast
ingestion route, which builds the same middleware in the same place.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from django.http import HttpRequest, HttpResponse

from zenskar_site.lib.exceptions import JSON_PATH_PREFIXES
from zenskar_site.lib.text import printable


def url_nul_problem(request: HttpRequest) -> tuple[str, dict[str, list[str]]] | None:
    """Why a URL cannot be served (a NUL in its decoded path or query string) and the parameter it names, or None."""
    if "\x00" in request.path_info:
        return "The URL path contains a NUL character (%00); no name or slug can contain one.", {}
    if not request.path_info.startswith(JSON_PATH_PREFIXES):
        return None
    query_string = request.META.get("QUERY_STRING", "")
    # %00 is the only escape that decodes to NUL (%2500 decodes to the text "%00"), so the raw string tells.
    if "%00" not in query_string and "\x00" not in query_string:
        return None
    for name, values in request.GET.lists():
        shown = printable(name)
        if "\x00" in name:
            return f"The query parameter name {shown!r} contains a NUL character (%00).", {}
        if any("\x00" in value for value in values):
            message = "Contains a NUL character (%00), which no stored value can contain."
            return f"{shown}: {message}", {shown: [message]}
    return "The query string contains a NUL character (%00).", {}


class NulRejectMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        problem = url_nul_problem(request)
        if problem is None:
            return self.get_response(request)
        return nul_refusal(problem)


def nul_refusal(problem: tuple[str, dict[str, list[str]]]) -> HttpResponse:
    """The 400 for a problem `url_nul_problem` found."""
    detail, errors = problem
    body = {"detail": detail, "errors": errors} if errors else {"detail": detail}
    return HttpResponse(orjson.dumps(body), status=400, content_type="application/json")
