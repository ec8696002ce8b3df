"""Streamed CSV downloads, shared by the usage records export and the metric values export.

Rows (header first) come from generators over `queryset.iterator()`; each line is written as it is
produced and sent in chunks, so a download of any size streams with flat memory. Every cell of a row
is made by `csv_cell`, which neutralises cells a spreadsheet would run as a formula.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson
from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse

from zenskar_site.lib.errors import NotFound, ValidationFailed
from zenskar_site.lib.forms import UtcDateTimeField
from zenskar_site.lib.pages import not_found_page
from zenskar_site.lib.text import unstorable_message

ITERATOR_CHUNK_ROWS = 2000
STREAM_CHUNK_CHARS = 64 * 1024

Found = TypeVar("Found")


# OWASP's "CSV Injection": spreadsheets read a cell starting with one of these as a formula.
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
# A negative number and nothing else (digits, one decimal point, an exponent): a spreadsheet reads it
# as that number, so it is left as it is; `-1+cmd|' /C calc'!A0` is not one.
_NEGATIVE_NUMBER_RE = re.compile(r"-(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def csv_cell(value: Any) -> str:
    """A value as a CSV cell: empty for None, true/false for booleans, JSON for objects and lists,
    moments as `csv_time` writes them.

    A cell that would start with =, +, -, @, a tab or a carriage return gets a leading single quote
    (OWASP's CSV Injection advice), which spreadsheets take as "this is text" and do not show; the
    one exception is a cell that is wholly a negative number, such as -3.5, which stays a number.
    The decision is made on the cell's text, whatever the value's type, so no export can skip it.
    """
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dt.datetime):
        return csv_time(value)
    text = orjson.dumps(value).decode() if isinstance(value, (dict, list)) else str(value)
    if text.startswith(FORMULA_LEADS) and not _NEGATIVE_NUMBER_RE.fullmatch(text):
        return "'" + text
    return text


def csv_time(moment: dt.datetime | None) -> str:
    """A moment as ISO 8601 in UTC with a `Z` (the ingestion API's format); empty for None."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment is not None else ""


class _Echo:
    """A file-like object for csv.writer that hands each line back instead of buffering it."""

    def write(self, value: str) -> str:
        return value


def csv_chunks(rows: Iterable[list[str]], *, chunk_chars: int = STREAM_CHUNK_CHARS) -> Iterator[str]:
    """The rows as CSV text, in chunks of about `chunk_chars` characters."""
    writer = csv.writer(_Echo())
    chunk: list[str] = []
    size = 0
    for row in rows:
        line = writer.writerow(row)
        chunk.append(line)
        size += len(line)
        if size >= chunk_chars:
            yield "".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "".join(chunk)


def csv_response(*, rows: Iterable[list[str]], filename: str) -> HttpResponse:
    """A streamed attachment of the rows, never cached."""
    response = StreamingHttpResponse(csv_chunks(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    # Views are typed for HttpResponse; Django serves a streaming response through them unchanged.
    return cast(HttpResponse, response)


@dataclass(frozen=True)
class CsvFilters:
    customer_id: str | None
    start: dt.datetime | None  # inclusive
    end: dt.datetime | None  # exclusive


def csv_filters_parse(*, query: Mapping[str, str]) -> CsvFilters:
    """`customer`, `from` (inclusive) and `to` (exclusive): ISO 8601 moments or dates, read as UTC."""
    moment = UtcDateTimeField(required=False)
    found: dict[str, dt.datetime | None] = {}
    for name in ("from", "to"):
        try:
            found[name] = moment.clean(query.get(name, "").strip())
        except forms.ValidationError:
            raise ValidationFailed({name: ["Expected a date or an ISO 8601 moment, such as 2026-11-20T14:00:00Z."]})
    start, end = found["from"], found["to"]
    if start is not None and end is not None and start >= end:
        raise ValidationFailed({"to": ["“to” must be later than “from”."]})
    customer_id = query.get("customer", "").strip() or None
    problem = unstorable_message(customer_id) if customer_id else None
    if problem is not None:  # the database cannot compare with it (PostgreSQL refuses NUL): a 400, not a 500
        raise ValidationFailed({"customer": [problem]})
    return CsvFilters(customer_id=customer_id, start=start, end=end)


def csv_download(
    request: HttpRequest,
    *,
    find: Callable[[], Found],
    rows: Callable[[Found, CsvFilters], Iterable[list[str]]],
    filename: Callable[[Found], str],
) -> HttpResponse:
    """A download view's answer: `rows(find(), filters)` streamed, filtered by the request's query.

    `find` runs before the filters are read, so an unknown object is a 404 page whatever the query;
    bad filters are a plain-text 400.
    """
    try:
        found = find()
        filters = csv_filters_parse(query=request.GET)
    except NotFound as exc:
        return not_found_page(request, exc)
    except ValidationFailed as exc:
        return HttpResponseBadRequest(exc.detail, content_type="text/plain; charset=utf-8")
    return csv_response(rows=rows(found, filters), filename=filename(found))
