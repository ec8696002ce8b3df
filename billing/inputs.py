"""Reading plain JSON input for the billing services: each field checked, each problem named by its path.

The services take what a client sent (a dict from a JSON body, or keyword values from an adapter), so
a wrong type is a 400 naming the field, never a 500; errors accumulate so one answer names them all.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from billing.rating import currency_exponent
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.lib.text import printable, unstorable_message, unstorable_problems

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z", re.ASCII)
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z", re.ASCII)
MISSING = object()


class Fields:
    """The fields of one JSON object at `prefix` (e.g. `phases[0]`); problems collect in `errors`."""

    def __init__(self, body: Any, *, prefix: str = "", errors: dict[str, list[str]] | None = None) -> None:
        self.errors: dict[str, list[str]] = {} if errors is None else errors
        self.prefix = prefix
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            self.errors[prefix] = ["Expected a JSON object."]
            body = {}
        self.body: Mapping[str, Any] = body

    def path(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(self.path(name), []).append(message)

    def has(self, name: str) -> bool:
        return name in self.body

    def get(self, name: str, default: Any = None) -> Any:
        return self.body.get(name, default)

    def refuse_unknown(self, known: Iterable[str]) -> None:
        for key in sorted(set(self.body) - set(known), key=str):
            self.errors.setdefault(self.path(printable(str(key))), []).append("Unknown field.")

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)

    def text(self, name: str, *, max_length: int, required: bool = False, default: str = "") -> str:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None:
            if required:
                self.fail(name, "This field is required.")
            return default
        if not isinstance(value, str):
            self.fail(name, "Expected a string.")
            return default
        value = value.strip()
        # A refused value is never returned: the caller may look it up before raising the errors.
        if required and not value:
            self.fail(name, "This field may not be blank.")
        elif len(value) > max_length:
            self.fail(name, f"At most {max_length} characters.")
        elif (problem := unstorable_message(value)) is not None:
            self.fail(name, problem)
        else:
            return value
        return default

    def identifier(self, name: str, *, max_length: int = 255) -> str | None:
        """An optional identifier unique in the organisation (external id, SKU): blank means none."""
        value = self.text(name, max_length=max_length)
        return value or None

    def decimal(
        self, name: str, *, default: Decimal | None, minimum: Decimal, maximum: Decimal, places: int
    ) -> Decimal | None:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            self.fail(name, "Expected a decimal number (a JSON number or a numeric string).")
            return default
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(name, f"{printable(str(value))!r} is not a decimal number.")
            return default
        if not number.is_finite():
            self.fail(name, "Expected a finite decimal number.")
            return default
        if number < minimum or number > maximum:
            self.fail(name, f"Must be between {minimum} and {maximum}.")
            return default
        exponent = number.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            self.fail(name, f"At most {places} decimal places.")
            return default
        return number

    def integer(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                self.fail(name, "Expected a whole number.")
                return default
        if not minimum <= value <= maximum:
            self.fail(name, f"Must be between {minimum} and {maximum}.")
            return default
        return value

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, "Expected true or false.")
            return default
        return value

    def date(self, name: str, *, required: bool = False) -> dt.date | None:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None or value == "":
            if required:
                self.fail(name, "This field is required (YYYY-MM-DD).")
            return None
        return date_value(value, self, name)

    def choice(self, name: str, *, choices: Iterable[str], default: str | None = None) -> str | None:
        allowed = list(choices)
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None:
            if default is None:
                self.fail(name, f"This field is required: one of {', '.join(allowed)}.")
            return default
        if not isinstance(value, str) or value not in allowed:
            self.fail(name, f"Must be one of: {', '.join(allowed)}.")
            return default
        return value

    def currency(self, name: str, *, required: bool) -> str:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None or value == "":
            if required:
                self.fail(name, "This field is required: an ISO 4217 code such as USD.")
            return ""
        return currency_value(value, self, name)

    def json_object(self, name: str) -> dict[str, Any]:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(name, "Expected a JSON object.")
            return {}
        self._storable(name, value)
        return value

    def json_list(self, name: str) -> list[Any]:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None:
            return []
        if not isinstance(value, list):
            self.fail(name, "Expected a JSON list.")
            return []
        self._storable(name, value)
        return value

    def _storable(self, name: str, value: Any) -> None:
        for path, messages in unstorable_problems(value, self.path(name)).items():
            self.errors.setdefault(path, []).extend(messages)

    def uuid(self, name: str, *, required: bool) -> uuid.UUID | None:
        value = self.body.get(name, MISSING)
        if value is MISSING or value is None or value == "":
            if required:
                self.fail(name, "This field is required.")
            return None
        parsed = uuid_value(value)
        if parsed is None:
            self.fail(name, f"{printable(str(value))!r} is not a valid id (a UUID).")
        return parsed


def uuid_value(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def date_value(value: Any, fields: Fields, name: str) -> dt.date | None:
    if isinstance(value, dt.datetime):
        fields.fail(name, "Expected a date (YYYY-MM-DD), not a date and time.")
        return None
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not DATE_RE.match(value):
        fields.fail(name, "Expected a date as YYYY-MM-DD.")
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fields.fail(name, f"{value!r} is not a calendar date.")
        return None


def currency_value(value: Any, fields: Fields, name: str) -> str:
    if not isinstance(value, str) or not CURRENCY_RE.match(value.strip().upper()):
        fields.fail(name, "Expected an ISO 4217 currency code such as USD.")
        return ""
    code = value.strip().upper()
    try:
        currency_exponent(currency=code, field=fields.path(name))
    except ValidationFailed:
        fields.fail(name, f"{code!r} is not an ISO 4217 currency code (e.g. USD, EUR, JPY).")
        return ""
    return code
