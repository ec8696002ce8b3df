"""What every Zenskar-compatible adapter shares: the body, `cursor` + `limit` pages, ordering, Zenskar's
filter suffixes (`__ilike`, `__gte`, `__in`, ...) and its dates (ISO dates, ISO date-times, Unix seconds).

The adapters parse Zenskar's argument shapes and call the services of /api/v1; every bad argument is a
400 naming it (through the one exception handler), never a 500.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q, QuerySet
from rest_framework.exceptions import NotFound as DrfNotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.inputs import uuid_value
from zenskar_site.lib.errors import DomainError, NotFound, ValidationFailed
from zenskar_site.lib.pagination import CursorPagination
from zenskar_site.lib.text import printable, unstorable_message

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_QUERY_TEXT = 1000
MAX_IN_VALUES = 200
# Unix seconds Python's dates can hold (years 1 to 9999); anything else is refused, never overflowed.
MIN_UNIX_SECONDS = -62135596800
MAX_UNIX_SECONDS = 253402300799
DATE_HINT = "Expected a date (YYYY-MM-DD), an ISO 8601 date-time or Unix seconds."
DATETIME_HINT = "Expected an ISO 8601 date-time (2026-11-20T14:03:12Z), a date (YYYY-MM-DD) or Unix seconds."
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z", re.ASCII)
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", re.ASCII)
_INT_RE = re.compile(r"^[+-]?\d{1,20}\Z", re.ASCII)


class ZenskarApi(APIView):
    """A Zenskar-compatible endpoint: the project's authentication (`x-api-key`, with the `organisation`
    header checked) and permission (a `full` key), its JSON errors; no filter backends (the adapters
    read Zenskar's own filter names)."""

    filter_backends: list[Any] = []
    # Not in /api/v1/schema/: that document describes /api/v1; these paths are ZENSKAR_API.md's.
    schema = None


def body_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    data: Any = request.data
    if optional and data in (None, {}, b"", ""):
        return {}
    if not isinstance(data, Mapping):
        raise ValidationFailed({"": ["Expected a JSON object."]})
    return dict(data)


def picked(body: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The arguments the adapter passes on; Zenskar's others are ignored (ZENSKAR_API.md)."""
    wanted = set(names)
    return {key: value for key, value in body.items() if key in wanted}


def errors_renamed(exc: ValidationFailed, renames: Mapping[str, str]) -> ValidationFailed:
    """A service's errors under the names the Zenskar client sent (`pricing_ids[0]` -> `products[0]`)."""
    errors: dict[str, list[str]] = {}
    for key, messages in exc.errors.items():
        for old, new in renames.items():
            if key == old or key.startswith((f"{old}[", f"{old}.")):
                key = new + key[len(old) :]
                break
        errors.setdefault(key, []).extend(messages)
    return ValidationFailed(errors) if errors else exc


# --- scalar arguments ---


def query_text(value: Any, name: str, *, max_length: int = MAX_QUERY_TEXT) -> str:
    if not isinstance(value, str):
        raise ValidationFailed({name: ["Expected a string."]})
    if (problem := unstorable_message(value)) is not None:
        raise ValidationFailed({name: [problem]})
    if len(value) > max_length:
        raise ValidationFailed({name: [f"At most {max_length} characters."]})
    return value


def integer_value(value: Any, name: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool):
        raise ValidationFailed({name: ["Expected a whole number."]})
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    if not isinstance(value, int):
        raise ValidationFailed({name: ["Expected a whole number."]})
    if not minimum <= value <= maximum:
        raise ValidationFailed({name: [f"Must be between {minimum} and {maximum}."]})
    return value


def boolean_value(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "0", "no"}:
        return False
    raise ValidationFailed({name: ["Expected true or false."]})


def _unix_seconds(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        return int(value.strip())
    return None


def datetime_value(value: Any, name: str) -> dt.datetime:
    """An instant from an ISO 8601 date-time (naive: UTC), a date (its UTC midnight) or Unix seconds."""
    seconds = _unix_seconds(value)
    if seconds is not None:
        if not (isinstance(seconds, int) or seconds == seconds) or not (
            MIN_UNIX_SECONDS <= seconds <= MAX_UNIX_SECONDS
        ):
            raise ValidationFailed({name: [f"Unix seconds out of range. {DATETIME_HINT}"]})
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    if not isinstance(value, str):
        raise ValidationFailed({name: [DATETIME_HINT]})
    text = value.strip()
    if (problem := unstorable_message(text)) is not None:
        raise ValidationFailed({name: [problem]})
    if _DATE_RE.match(text):
        try:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=dt.UTC)
        except ValueError:
            raise ValidationFailed({name: [f"{text!r} is not a calendar date."]}) from None
    if _DATETIME_RE.match(text) and len(text) <= 64:
        try:
            moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
            return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            pass
    raise ValidationFailed({name: [f"{printable(text[:40])!r} is not a date-time. {DATETIME_HINT}"]})


def date_value(value: Any, name: str) -> dt.date:
    """A day from a date, an ISO 8601 date-time (its UTC date) or Unix seconds (their UTC date)."""
    try:
        return datetime_value(value, name).date()
    except ValidationFailed as exc:
        raise ValidationFailed({name: [message.replace(DATETIME_HINT, DATE_HINT) for message in exc.errors[name]]})


def dates_normalised(
    body: Mapping[str, Any], names: Iterable[str], *, prefix: str = "", errors: dict[str, list[str]]
) -> dict[str, Any]:
    """`body` with each date argument present as YYYY-MM-DD, the form the services read."""
    clean = dict(body)
    for name in names:
        value = clean.get(name)
        if value is None or value == "":
            continue
        path = f"{prefix}.{name}" if prefix else name
        try:
            clean[name] = date_value(value, path).isoformat()
        except ValidationFailed as exc:
            for key, messages in exc.errors.items():
                errors.setdefault(key, []).extend(messages)
    return clean


# --- pages and ordering ---


class ZenskarPagination(CursorPagination):
    """The project's cursor pages with Zenskar's `limit` (default 10); a bad cursor is a 400 naming it."""

    page_size = DEFAULT_LIMIT
    page_size_query_param = "limit"
    max_page_size = MAX_LIMIT

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except DrfNotFound:
            raise ValidationFailed(
                {"cursor": ["Invalid cursor: pass the `next` or `previous` link's cursor."]}
            ) from None


def limit_checked(request: Request) -> None:
    raw = request.query_params.get("limit")
    if raw is not None:
        integer_value(raw, "limit", minimum=1, maximum=MAX_LIMIT)


def zenskar_page(
    *,
    request: Request,
    view: Any,
    queryset: QuerySet[Any],
    serialize: Callable[[list[Any]], Any],
    ordering: str,
    limit: int | None = None,
) -> Response:
    """One page of `queryset` in `ordering`: `{"next", "previous", "results"}`, `limit` rows (default 10;
    an endpoint with its own limit argument passes it)."""
    paginator = ZenskarPagination()
    paginator.ordering = ordering
    if limit is None:
        limit_checked(request)
    else:
        paginator.page_size = limit
        paginator.page_size_query_param = None  # type: ignore[assignment]  # DRF reads None as "no argument"
    try:
        page = paginator.paginate_queryset(queryset, request, view=view)
    except (DjangoValidationError, ValueError, TypeError, OverflowError):
        # A hand-made cursor whose position the ordering column cannot hold (a date that is not one).
        raise ValidationFailed({"cursor": ["Invalid cursor: pass the `next` or `previous` link's cursor."]}) from None
    return paginator.get_paginated_response(serialize(page or []))


def ordering_from(params: Mapping[str, Any], *, allowed: Mapping[str, str], default: str) -> str:
    """The ordering Zenskar asks for: `sort_key` (a field) with `sort_type` or `order` (asc / desc)."""
    field = default.lstrip("-")
    descending = default.startswith("-")
    sort_key = params.get("sort_key")
    if sort_key not in (None, ""):
        if sort_key not in allowed:
            raise ValidationFailed({"sort_key": [f"Must be one of: {', '.join(allowed)}."]})
        field = allowed[sort_key]
    for name in ("sort_type", "order"):
        direction = params.get(name)
        if direction in (None, ""):
            continue
        lowered = str(direction).strip().lower()
        if lowered in {"asc", "ascending"}:
            descending = False
        elif lowered in {"desc", "descending"}:
            descending = True
        elif name == "order" and lowered.lstrip("-") in allowed:
            field, descending = allowed[lowered.lstrip("-")], lowered.startswith("-")
        else:
            raise ValidationFailed({name: ["Must be asc or desc."]})
    return f"-{field}" if descending else field


# --- Zenskar's filters: `name`, `name__ilike`, `start_date__gte`, `status__in`, ... ---


@dataclass(frozen=True)
class Filter:
    """A filterable argument: the model lookup it filters, how a value is read, the suffixes it takes."""

    lookup: str
    parse: Callable[[Any, str], Any]
    ops: frozenset[str]


TEXT_OPS = frozenset({"", "neq", "ilike", "like", "in", "isnull"})
ORDERED_OPS = frozenset({"", "neq", "gt", "gte", "lt", "lte", "in", "isnull"})
ID_OPS = frozenset({"", "neq", "in", "isnull"})
COMPARISONS = {"gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte"}


def text_filter(lookup: str, ops: frozenset[str] = TEXT_OPS) -> Filter:
    return Filter(lookup, lambda value, name: query_text(value, name), ops)


def uuid_filter(lookup: str, ops: frozenset[str] = ID_OPS) -> Filter:
    return Filter(lookup, uuid_argument, ops)


def int_filter(lookup: str, ops: frozenset[str] = ID_OPS) -> Filter:
    return Filter(lookup, lambda value, name: integer_value(value, name, minimum=0, maximum=2**63 - 1), ops)


def date_filter(lookup: str) -> Filter:
    return Filter(lookup, date_value, ORDERED_OPS)


def datetime_filter(lookup: str) -> Filter:
    return Filter(lookup, datetime_value, ORDERED_OPS)


def choice_filter(lookup: str, choices: Iterable[str]) -> Filter:
    allowed = tuple(choices)

    def parse(value: Any, name: str) -> str:
        if value not in allowed:
            raise ValidationFailed({name: [f"Must be one of: {', '.join(allowed)}."]})
        return str(value)

    return Filter(lookup, parse, frozenset({"", "neq", "in"}))


def uuid_argument(value: Any, name: str) -> Any:
    parsed = uuid_value(value)
    if parsed is None:
        raise ValidationFailed({name: [f"{printable(str(value))[:100]!r} is not a valid id (a UUID)."]})
    return parsed


def like_regex(pattern: str) -> str:
    """SQL LIKE (`%` any run, `_` one character) as an anchored regular expression."""
    parts = []
    for char in pattern:
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return "^" + "".join(parts) + "$"


def filters_apply(queryset: QuerySet[Any], params: Any, filters: Mapping[str, Filter]) -> QuerySet[Any]:
    """`queryset` narrowed by every known filter in the query `params`; unknown arguments are ignored.

    `x__ilike` without `%` matches a substring (what a search box means); with `%` it is SQL's LIKE.
    """
    for name in sorted(params.keys()):
        base, _, op = name.rpartition("__")
        if not base or op not in ("neq", "gt", "gte", "lt", "lte", "in", "isnull", "ilike", "like"):
            base, op = name, ""
        spec = filters.get(base)
        if spec is None or op not in spec.ops:
            continue
        values = params.getlist(name) if hasattr(params, "getlist") else [params[name]]
        raw = values[-1] if values else ""
        if op == "isnull":
            wanted = boolean_value(raw, name)
            queryset = queryset.filter(**{f"{spec.lookup}__isnull": wanted})
            continue
        if op == "in":
            items = [item for value in values for item in query_text(value, name).split(",") if item != ""]
            if len(items) > MAX_IN_VALUES:
                raise ValidationFailed({name: [f"At most {MAX_IN_VALUES} values."]})
            parsed = [spec.parse(item.strip(), name) for item in items]
            queryset = queryset.filter(**{f"{spec.lookup}__in": parsed})
            continue
        if op in ("ilike", "like"):
            text = query_text(raw, name)
            if "%" in text:
                lookup = "iregex" if op == "ilike" else "regex"
                queryset = queryset.filter(**{f"{spec.lookup}__{lookup}": like_regex(text)})
            else:
                queryset = queryset.filter(**{f"{spec.lookup}__{'icontains' if op == 'ilike' else 'contains'}": text})
            continue
        value = spec.parse(raw, name)
        if op == "":
            queryset = queryset.filter(**{spec.lookup: value})
        elif op == "neq":
            queryset = queryset.exclude(**{spec.lookup: value})
        else:
            queryset = queryset.filter(**{f"{spec.lookup}__{COMPARISONS[op]}": value})
    return queryset


def search_filter(queryset: QuerySet[Any], text: Any, name: str, lookups: Iterable[str]) -> QuerySet[Any]:
    """Zenskar's `search`: a substring of any of `lookups`, case-insensitive."""
    if text in (None, ""):
        return queryset
    value = query_text(text, name)
    condition = Q()
    for lookup in lookups:
        condition |= Q(**{f"{lookup}__icontains": value})
    return queryset.filter(condition)


def not_found(what: str, key: Any) -> DomainError:
    return NotFound(f"No {what} with id {printable(str(key))[:100]!r} in this organisation.")
