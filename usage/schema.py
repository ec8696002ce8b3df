"""Data schemas of usage events: SPEC §2's types, parsing, and compiled record validators.

A validator is compiled once per schema (cached by its content) into a list of per-field
converters, so validating a batch is a loop over plain function calls with no schema lookups.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple

from django.conf import settings
from django.utils.dateparse import parse_datetime

from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.text import printable, unstorable_message

BASE_TYPES = ("Int64", "Float64", "Decimal", "Bool", "Date32", "DateTime64", "String", "UUID")
NUMERIC_TYPES = frozenset({"Int64", "Float64", "Decimal"})
FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z", re.ASCII)
RESERVED_FIELD_NAMES = frozenset({"id", "customer_id", "timestamp"})
ROOT_TYPES = {"customer_id": "String", "timestamp": "DateTime64"}
MAX_FIELDS = 200
MAX_STRING = 4096
MAX_CUSTOMER_ID = 255
MAX_IDEMPOTENCY_KEY = 255
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DECIMAL_MAX_DIGITS = 38

_NULLABLE_RE = re.compile(r"^Nullable\((\w+)\)\Z", re.ASCII)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z", re.ASCII)
_NAIVE_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?\Z", re.ASCII)
_OFFSET_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|z|[+-]\d{2}:?\d{2})\Z", re.ASCII
)
# The form nearly every client sends (UTC, at most microseconds): a subset of _OFFSET_DATETIME_RE that
# fromisoformat reads to the same instant, already in UTC, with no trimming or conversion.
_UTC_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)\Z", re.ASCII)
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z", re.ASCII)
_DECIMAL_STRING_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z", re.ASCII)


@dataclass(frozen=True)
class FieldType:
    base: str
    nullable: bool

    def __str__(self) -> str:
        return f"Nullable({self.base})" if self.nullable else self.base


def type_parse(text: Any) -> FieldType:
    if not isinstance(text, str):
        raise ValueError(f"A type must be a string such as 'Int64' or 'Nullable(String)', got {json_kind(text)}.")
    match = _NULLABLE_RE.match(text)
    base, nullable = (match.group(1), True) if match else (text, False)
    if base not in BASE_TYPES:
        raise ValueError(f"Unknown type {text!r}; use one of {', '.join(BASE_TYPES)}, or Nullable(T).")
    return FieldType(base=base, nullable=nullable)


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, (float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def dataschema_normalize(raw: Any) -> dict[str, Any]:
    """Validate a `dataschema` body and return it in its stored form (roots included)."""
    if not isinstance(raw, dict):
        raise ValidationFailed({"dataschema": [f"Expected an object, got {json_kind(raw)}."]})
    errors: dict[str, list[str]] = {}
    for key in raw:
        if key not in ("customer_id", "timestamp", "data"):
            errors[f"dataschema.{printable(str(key))}"] = [
                "Unknown key; a data schema has customer_id, timestamp and data."
            ]
    for root, expected in ROOT_TYPES.items():
        if root in raw and raw[root] != expected:
            errors[f"dataschema.{root}"] = [f"{root} is always {expected}, got {raw[root]!r}."]
    data = raw.get("data", {})
    normalized: dict[str, str] = {}
    if not isinstance(data, dict):
        errors["dataschema.data"] = [f"Expected an object of field names to types, got {json_kind(data)}."]
    else:
        if len(data) > MAX_FIELDS:
            errors["dataschema.data"] = [f"At most {MAX_FIELDS} fields."]
        for name, type_text in data.items():
            path = f"dataschema.data.{printable(str(name))}"
            if not FIELD_NAME_RE.match(name):
                errors[path] = [
                    "Field names are 1-63 characters: a lowercase letter, then lowercase letters, digits or _."
                ]
                continue
            if name in RESERVED_FIELD_NAMES:
                errors[path] = [f"{name!r} is reserved (a root column of every usage event)."]
                continue
            try:
                normalized[name] = str(type_parse(type_text))
            except ValueError as exc:
                errors[path] = [str(exc)]
    if errors:
        raise ValidationFailed(errors)
    return {"customer_id": "String", "timestamp": "DateTime64", "data": normalized}


def dataschema_change_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why `new` is not a compatible evolution of `old` (only added Nullable fields are)."""
    problems = []
    old_fields, new_fields = old.get("data", {}), new.get("data", {})
    for name, type_text in old_fields.items():
        if name not in new_fields:
            problems.append(f"Field {name!r} cannot be removed: stored records and metrics use it.")
        elif new_fields[name] != type_text:
            problems.append(f"Field {name!r} cannot change type from {type_text} to {new_fields[name]}.")
    for name, type_text in new_fields.items():
        if name not in old_fields and not type_text.startswith("Nullable("):
            problems.append(
                f"New field {name!r} must be Nullable (existing records have no value): use Nullable({type_text})."
            )
    return problems


_DECIMAL_TYPES = frozenset({"Decimal", "Nullable(Decimal)"})


def dataschema_has_decimal(dataschema: dict[str, Any]) -> bool:
    # The stored schema's types are validated, so their exact spelling is known (and this runs per request).
    return any(type(t) is str and t in _DECIMAL_TYPES for t in dataschema.get("data", {}).values())


# --- value converters: each returns the stored JSON value or raises _Invalid with a message ---


class InvalidValue(Exception):
    pass


def _int64(value: Any) -> int:
    kind = type(value)
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise InvalidValue("Expected Int64, got an integer outside the signed 64-bit range.")
    if kind is float or kind is Decimal:
        finite = value.is_finite() if kind is Decimal else math.isfinite(value)
        if not finite:
            raise InvalidValue("Expected Int64, got a number that is not finite.")
        if value != int(value):
            raise InvalidValue("Expected Int64, got a number with a fraction.")
        as_int = int(value)
        if INT64_MIN <= as_int <= INT64_MAX:
            return as_int
        raise InvalidValue("Expected Int64, got an integer outside the signed 64-bit range.")
    raise InvalidValue(f"Expected Int64, got {json_kind(value)}.")


def _float64(value: Any) -> float:
    kind = type(value)
    if kind is int or kind is float or kind is Decimal:
        try:
            result = float(value)
        except (OverflowError, ValueError):
            raise InvalidValue("Expected Float64, got a number outside the Float64 range.") from None
        if math.isfinite(result):
            return result
        raise InvalidValue("Expected Float64, got a number that is not finite.")
    raise InvalidValue(f"Expected Float64, got {json_kind(value)}.")


def _decimal(value: Any) -> str:
    kind = type(value)
    if kind is int:
        number = Decimal(value)
    elif kind is Decimal:
        number = value
    elif kind is float:
        # Only reached when the body was parsed without Decimal support; repr is the shortest
        # string that round-trips, i.e. the literal the client wrote for up to 15 digits.
        number = Decimal(repr(value))
    elif kind is str:
        if not _DECIMAL_STRING_RE.match(value):
            raise InvalidValue("Expected Decimal, got a string that is not a number (digits, '.', exponent).")
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise InvalidValue("Expected Decimal, got a string that is not a number.") from None
    else:
        raise InvalidValue(f"Expected Decimal, got {json_kind(value)}.")
    if not number.is_finite():
        raise InvalidValue("Expected Decimal, got a value that is not a finite number.")
    if len(number.as_tuple().digits) > DECIMAL_MAX_DIGITS:
        raise InvalidValue(f"Expected Decimal with at most {DECIMAL_MAX_DIGITS} digits.")
    return str(number)


def _bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise InvalidValue(f"Expected Bool (true or false), got {json_kind(value)}.")


def _date32(value: Any) -> str:
    if type(value) is str and _DATE_RE.match(value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise InvalidValue("Expected Date32, got a date that does not exist.") from None
        return value
    raise InvalidValue(f"Expected Date32 as 'YYYY-MM-DD', got {json_kind(value)}.")


def datetime_parse(value: Any) -> dt.datetime:
    """SPEC §2's DateTime64: ISO 8601 with an offset, or naive 'YYYY-MM-DD HH:MM:SS[.ffffff]' as UTC."""
    if type(value) is not str:
        raise InvalidValue(f"Expected DateTime64, got {json_kind(value)}.")
    if _UTC_DATETIME_RE.match(value):
        try:
            return dt.datetime.fromisoformat(value)  # its tzinfo is dt.UTC itself
        except ValueError:
            pass  # a date that does not exist: the offset form below words the error
    if _NAIVE_DATETIME_RE.match(value):
        try:
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        except ValueError:
            raise InvalidValue("Expected DateTime64, got a date or time that does not exist.") from None
    if _OFFSET_DATETIME_RE.match(value):
        text = value
        dot = text.find(".")
        if dot != -1:  # DateTime64 may carry nanoseconds; Python keeps microseconds
            end = dot + 1
            while end < len(text) and text[end].isdigit():
                end += 1
            if end - dot - 1 > 6:
                text = text[: dot + 7] + text[end:]
        try:
            return dt.datetime.fromisoformat(text.replace("z", "Z")).astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise InvalidValue("Expected DateTime64, got a date or time that does not exist in UTC.") from None
    raise InvalidValue(
        unstorable_message(value)
        or "Expected DateTime64: ISO 8601 with an offset (2026-11-20T14:03:12Z) or 'YYYY-MM-DD HH:MM:SS' in UTC."
    )


# PostgreSQL's timestamptz takes offsets up to ±15:59 (TZDISP_LIMIT); every real time zone is within ±14:00.
FILTER_MAX_OFFSET = dt.timedelta(hours=15, minutes=59)


def filter_datetime_parse(value: Any) -> dt.datetime:
    """A timestamp filter's value (records list, void by filter) as an instant in UTC.

    ISO 8601 as Django reads it (naive is UTC). An offset PostgreSQL cannot take (such as +22:09) or an
    instant outside years 1-9999 in UTC is refused, so a bad filter is a 400 naming it, never a database error.
    """
    if type(value) is not str:
        raise InvalidValue(f"Expected an ISO 8601 date and time, got {json_kind(value)}.")
    problem = unstorable_message(value)
    if problem is not None:
        raise InvalidValue(problem)
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        raise InvalidValue("Expected an ISO 8601 date and time that exists.") from None
    if parsed is None:
        raise InvalidValue("Expected an ISO 8601 date and time, such as 2026-11-20T14:03:12Z.")
    offset = parsed.utcoffset()
    if offset is None:
        return parsed.replace(tzinfo=dt.UTC)
    if abs(offset) > FILTER_MAX_OFFSET:
        minutes = abs(int(offset.total_seconds())) // 60
        sign = "-" if offset < dt.timedelta(0) else "+"
        raise InvalidValue(
            f"The UTC offset {sign}{minutes // 60:02d}:{minutes % 60:02d} is outside -15:59 to +15:59; "
            "give the time in UTC (Z) or with a real time zone's offset."
        )
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidValue("The date and time is outside the years 1 to 9999 in UTC.") from None


@dataclass(frozen=True)
class TimestampBounds:
    """The timestamps SPEC §3 accepts (ingestion, CSV imports and edits alike), fixed once per request.

    Never more than INGEST_MAX_FUTURE_SECONDS ahead of the request's clock reading; never older than
    INGEST_MAX_AGE_SECONDS unless it is a backfill (a full-scope key's `?backfill=true`, a CSV import,
    an edit), where `earliest` is None.
    """

    earliest: dt.datetime | None
    latest: dt.datetime

    def admits(self, timestamp: dt.datetime) -> bool:
        return (self.earliest is None or self.earliest <= timestamp) and timestamp <= self.latest

    def problems(self, timestamp: dt.datetime) -> dict[str, list[str]]:
        if timestamp > self.latest:
            return {"timestamp": [f"More than {settings.INGEST_MAX_FUTURE_SECONDS} seconds in the future."]}
        if self.earliest is not None and timestamp < self.earliest:
            days = settings.INGEST_MAX_AGE_SECONDS / 86400
            message = f"Older than {days:g} days; a full-scope key may send ?backfill=true to load history."
            return {"timestamp": [message]}
        return {}


def timestamp_bounds(*, now: dt.datetime, backfill: bool) -> TimestampBounds:
    return TimestampBounds(
        earliest=None if backfill else now - dt.timedelta(seconds=settings.INGEST_MAX_AGE_SECONDS),
        latest=now + dt.timedelta(seconds=settings.INGEST_MAX_FUTURE_SECONDS),
    )


def datetime_format(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _datetime64(value: Any) -> str:
    return datetime_format(datetime_parse(value))


def _string(value: Any) -> str:
    if type(value) is str:
        if len(value) <= MAX_STRING:
            return value
        raise InvalidValue(f"Expected String of at most {MAX_STRING} characters, got {len(value)}.")
    raise InvalidValue(f"Expected String, got {json_kind(value)}.")


def _uuid(value: Any) -> str:
    if type(value) is str and _UUID_RE.match(value):
        return str(uuid.UUID(value))
    raise InvalidValue(f"Expected UUID in canonical form (8-4-4-4-12 hex digits), got {json_kind(value)}.")


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "Int64": _int64,
    "Float64": _float64,
    "Decimal": _decimal,
    "Bool": _bool,
    "Date32": _date32,
    "DateTime64": _datetime64,
    "String": _string,
    "UUID": _uuid,
}

SAMPLE_VALUES: dict[str, Any] = {
    "Int64": 5,
    "Float64": 1.5,
    "Decimal": "12.50",
    "Bool": True,
    "Date32": "2026-11-20",
    "DateTime64": "2026-11-20T14:03:12Z",
    "String": "example",
    "UUID": "3f0c9a5e-8d2b-4c1e-9a77-0b6f2f1d4e21",
}


def dataschema_sample(dataschema: dict[str, Any]) -> dict[str, Any]:
    return {name: SAMPLE_VALUES[type_parse(t).base] for name, t in dataschema.get("data", {}).items()}


class ValidRecord(NamedTuple):
    """A record in its stored form. A named tuple, not a dataclass: one is built per record of every
    batch, and a frozen dataclass costs several times as much to build."""

    customer_id: str
    timestamp: dt.datetime
    data: dict[str, Any]
    idempotency_key: str | None


RecordValidator = Callable[[Any], "tuple[ValidRecord | None, dict[str, list[str]]]"]
ROOT_KEYS = frozenset({"customer_id", "timestamp", "data", "idempotency_key"})


def _root_string_problem(value: str, limit: int) -> str | None:
    if not 1 <= len(value) <= limit:
        return f"Expected a String of 1 to {limit} characters."
    if "\x00" not in value and value.isascii():  # _text_problem's fast case, without the call
        return None
    return unstorable_message(value)


def _text_problem(value: str) -> str | None:
    # Runs for every string of every record: plain ASCII without a NUL needs no further scan.
    if "\x00" not in value and value.isascii():
        return None
    return unstorable_message(value)


@lru_cache(maxsize=512)
def _compile(fields: tuple[tuple[str, str], ...]) -> RecordValidator:
    # Only a String keeps the client's text as it is; every other type's value matches an ASCII pattern.
    compiled = [
        (name, f"data.{name}", CONVERTERS[type_parse(t).base], type_parse(t).nullable, type_parse(t).base == "String")
        for name, t in fields
    ]
    known = frozenset(name for name, _ in fields)

    def validate(obj: Any) -> tuple[ValidRecord | None, dict[str, list[str]]]:
        """A stored-form record, or the errors by field path. Rejects anything the database could not store
        exactly (NUL, lone surrogates) rather than let it be cut or fail the whole request."""
        if type(obj) is not dict:
            return None, {"": [f"Expected a record object, got {json_kind(obj)}."]}
        errors: dict[str, list[str]] = {}
        if not obj.keys() <= ROOT_KEYS:  # a comparison builds no set: the difference only when there is one
            for key in obj.keys() - ROOT_KEYS:
                errors[printable(str(key))] = [
                    "Unknown key; a record has customer_id, timestamp, data and idempotency_key."
                ]
        customer_id = obj.get("customer_id")
        if type(customer_id) is str:
            problem = _root_string_problem(customer_id, MAX_CUSTOMER_ID)
            if problem is not None:
                errors["customer_id"] = [problem]
        else:
            errors["customer_id"] = (
                ["This field is required."]
                if customer_id is None
                else [f"Expected String, got {json_kind(customer_id)}."]
            )
        timestamp = None
        raw_timestamp = obj.get("timestamp")
        if raw_timestamp is None:
            errors["timestamp"] = ["This field is required."]
        else:
            try:
                timestamp = datetime_parse(raw_timestamp)
            except InvalidValue as exc:
                errors["timestamp"] = [str(exc)]
        idempotency_key = obj.get("idempotency_key")
        if idempotency_key is not None:
            problem = (
                _root_string_problem(idempotency_key, MAX_IDEMPOTENCY_KEY)
                if type(idempotency_key) is str
                else f"Expected a String of 1 to {MAX_IDEMPOTENCY_KEY} characters."
            )
            if problem is not None:
                errors["idempotency_key"] = [problem]
        raw_data = obj.get("data")
        data: dict[str, Any] = {}
        if raw_data is None:
            raw_data = {}
        if type(raw_data) is not dict:
            errors["data"] = [f"Expected an object, got {json_kind(raw_data)}."]
        else:
            if not raw_data.keys() <= known:
                for key in raw_data.keys() - known:
                    errors[f"data.{printable(str(key))}"] = [
                        "Unknown field; the usage event's schema does not name it."
                    ]
            for name, path, convert, nullable, is_text in compiled:
                value = raw_data.get(name)
                if value is None:
                    if not nullable:
                        errors[path] = ["This field is required."]
                    continue
                try:
                    converted = convert(value)
                except InvalidValue as exc:
                    # A string refused for a NUL (UUID, Date32, Decimal...) is told so, not just "not a UUID".
                    errors[path] = [(type(value) is str and unstorable_message(value)) or str(exc)]
                    continue
                if is_text and (problem := _text_problem(converted)) is not None:  # the database would cut it
                    errors[path] = [problem]
                    continue
                data[name] = converted
        if errors:
            return None, errors
        assert timestamp is not None
        assert type(customer_id) is str
        return ValidRecord(customer_id, timestamp, data, idempotency_key), {}

    return validate


def record_validator(dataschema: dict[str, Any]) -> RecordValidator:
    """The compiled validator for a schema; cached by content, so a schema change compiles anew."""
    return _compile(tuple(sorted(dataschema.get("data", {}).items())))
