"""The rating engine: a pricing model and a quantity to an exact amount with its breakdown (SPEC §8).

Pure functions, no database: `pricing_parse` validates a pricing's `pricing_data` into a typed
`PricingModel` (a 400 naming the field when malformed), `rate` prices a quantity (or the quantities of
a matrix's dimension values) exactly, and `money_round` rounds a line half-up to the currency's minor
unit (ISO 4217), which is the only rounding billing does (SPEC §9 "Money").

Exactness: every product and sum is computed in a decimal context wide enough for the inputs and with
the `Inexact` trap set, so a result is never silently rounded; the one division (packages) is done as
an exact integer division with remainder.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import models

from zenskar_site.lib.errors import ValidationFailed

# "unit prices keep up to 12 decimal places" (SPEC §8); 16 integer digits keep any amount within a
# DecimalField(max_digits=28, decimal_places=12).
AMOUNT_DECIMAL_PLACES = 12
AMOUNT_INTEGER_DIGITS = 16
AMOUNT_MAX_DIGITS = AMOUNT_DECIMAL_PLACES + AMOUNT_INTEGER_DIGITS
MAX_TIERS = 100
MAX_MATRIX_DIMENSIONS = 3  # a metric groups by at most 3 fields (SPEC §5)
MAX_MATRIX_VALUES = 10_000
# Wide enough that no product or sum of the engine's operands is ever rounded; `_exact` traps if one is.
_PRECISION = 400

_DECIMAL_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?")


class PricingInvalid(ValidationFailed):
    """A malformed `pricing_data`: a 400 whose `errors` name the one offending field (a dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: [message]})
        self.field = field
        self.message = message


class PricingType(models.TextChoices):
    FLAT_FEE = "flat_fee"
    PER_UNIT = "per_unit"
    TIERED = "tiered"
    VOLUME = "volume"
    STEP = "step"
    PACKAGE = "package"
    PERCENT = "percent"
    MATRIX = "matrix"


# A matrix cell: one value per dimension, in the dimensions' order, as the metric stores it (None: absent).
DimensionKey = tuple[str | None, ...]

TIER_TYPES = frozenset({PricingType.TIERED, PricingType.VOLUME, PricingType.STEP})


@dataclass(frozen=True)
class Tier:
    """One tier: units above the previous tier's `up_to`, up to and including `up_to` (None: no limit)."""

    unit_amount: Decimal
    up_to: Decimal | None
    flat_amount: Decimal  # 0 when not given; always 0 for `step`


@dataclass(frozen=True)
class MatrixDimension:
    name: str
    column_name: str  # the metric's group-by field whose values select the entry


@dataclass(frozen=True)
class MatrixEntry:
    dimension_values: tuple[str | None, ...]  # one per dimension, in the dimensions' order
    unit_amount: Decimal


@dataclass(frozen=True)
class PricingModel:
    """A validated `pricing_data`: only the fields its `pricing_type` uses are set."""

    pricing_type: PricingType
    unit_amount: Decimal | None = None  # flat_fee, per_unit, package
    tiers: tuple[Tier, ...] = ()  # tiered, volume, step
    package_size: Decimal | None = None
    percentage: Decimal | None = None
    dimensions: tuple[MatrixDimension, ...] = ()
    values: tuple[MatrixEntry, ...] = ()
    default_unit_amount: Decimal | None = None

    def matrix_unit_amount(self, key: tuple[str | None, ...]) -> Decimal | None:
        """The unit amount of a matrix's dimension values: its entry's, else the default, else None."""
        for entry in self.values:
            if entry.dimension_values == key:
                return entry.unit_amount
        return self.default_unit_amount


@dataclass(frozen=True)
class RatingPart:
    """One line of a rating's breakdown (a tier, the package count, a matrix cell, or the whole)."""

    description: str
    quantity: Decimal  # the units this part prices
    unit_amount: Decimal | None
    flat_amount: Decimal | None
    amount: Decimal  # exact, unrounded
    tier: int | None = None  # 0-based index into the pricing's tiers
    tier_from: Decimal | None = None  # the tier's bounds: units above `tier_from`, up to `tier_up_to`
    tier_up_to: Decimal | None = None
    packages: Decimal | None = None  # package pricing: the number of packages charged
    dimension: tuple[str | None, ...] | None = None  # matrix pricing: the cell's dimension values


@dataclass(frozen=True)
class Rating:
    amount: Decimal  # exact, unrounded: the sum of the parts' amounts
    parts: tuple[RatingPart, ...]
    flagged: tuple[str, ...] = ()  # what a person must look at (never a silent zero)


# --- parsing and validation ---


def pricing_parse(*, pricing_data: Mapping[str, Any], field_prefix: str = "pricing_data") -> PricingModel:
    """Validate a pricing's `pricing_data` (SPEC §8) into a `PricingModel`.

    Amounts are numbers or decimal strings in the currency's major unit, non-negative, with at most
    12 decimal places; floats are read through their shortest text (0.1 is 0.1, not binary noise).
    Keys the model does not use (`quantity`, `pricing_period`, `currency`, ...) are left to the caller.
    Raises `PricingInvalid` naming the field as `<field_prefix>.<key>[<index>]`.
    """
    if not isinstance(pricing_data, Mapping):
        raise PricingInvalid(field_prefix, "Expected an object.")
    p = _Fields(pricing_data, field_prefix)
    raw_type = pricing_data.get("pricing_type")
    choices = ", ".join(t.value for t in PricingType)
    if raw_type is None:
        raise PricingInvalid(p.path("pricing_type"), f"This field is required: one of {choices}.")
    if raw_type not in PricingType.values:
        raise PricingInvalid(
            p.path("pricing_type"), f"Unknown pricing type {str(raw_type)[:40]!r}: expected one of {choices}."
        )
    pricing_type = PricingType(raw_type)
    if pricing_type in (PricingType.FLAT_FEE, PricingType.PER_UNIT):
        return PricingModel(pricing_type=pricing_type, unit_amount=p.amount("unit_amount"))
    if pricing_type in TIER_TYPES:
        return PricingModel(pricing_type=pricing_type, tiers=_tiers_parse(p, pricing_type))
    if pricing_type == PricingType.PACKAGE:
        size = p.amount("package_size", positive=True)
        return PricingModel(pricing_type=pricing_type, unit_amount=p.amount("unit_amount"), package_size=size)
    if pricing_type == PricingType.PERCENT:
        return PricingModel(pricing_type=pricing_type, percentage=p.amount("percentage"))
    return _matrix_parse(p)


def _tiers_parse(p: _Fields, pricing_type: PricingType) -> tuple[Tier, ...]:
    unit_amounts = p.list("unit_amount")
    up_tos = p.list("up_to")
    if len(up_tos) != len(unit_amounts):
        raise PricingInvalid(
            p.path("up_to"),
            f"Give one bound per tier: {len(up_tos)} bounds for {len(unit_amounts)} unit amounts.",
        )
    flat_raw = p.data.get("flat_amount")
    if pricing_type == PricingType.STEP and flat_raw is not None:
        raise PricingInvalid(
            p.path("flat_amount"), "A step pricing has no flat_amount: each step's unit_amount is its amount."
        )
    flats = p.list("flat_amount") if flat_raw is not None else [None] * len(unit_amounts)
    if len(flats) != len(unit_amounts):
        raise PricingInvalid(
            p.path("flat_amount"),
            f"Give one flat amount per tier (or none): {len(flats)} for {len(unit_amounts)} unit amounts.",
        )
    tiers: list[Tier] = []
    previous: Decimal | None = None
    last = len(unit_amounts) - 1
    for index in range(len(unit_amounts)):
        unit_amount = p.amount_at("unit_amount", index, unit_amounts[index])
        flat = Decimal(0) if flats[index] is None else p.amount_at("flat_amount", index, flats[index])
        raw_bound = up_tos[index]
        bound_field = p.path("up_to", index)
        if index == last:
            if raw_bound is not None:
                raise PricingInvalid(bound_field, "The last tier's up_to must be null: it has no upper limit.")
            bound = None
        else:
            if raw_bound is None:
                raise PricingInvalid(bound_field, "Only the last tier's up_to may be null.")
            bound = p.amount_at("up_to", index, raw_bound)
            if previous is not None and bound <= previous:
                raise PricingInvalid(
                    bound_field, f"Tier bounds must increase: {_text(bound)} is not above {_text(previous)}."
                )
            previous = bound
        tiers.append(Tier(unit_amount=unit_amount, up_to=bound, flat_amount=flat))
    return tuple(tiers)


def _matrix_parse(p: _Fields) -> PricingModel:
    dimensions_raw = p.list("dimensions", limit=MAX_MATRIX_DIMENSIONS)
    dimensions: list[MatrixDimension] = []
    for index, item in enumerate(dimensions_raw):
        field = p.path("dimensions", index)
        if not isinstance(item, Mapping):
            raise PricingInvalid(field, "Expected an object with name and column_name.")
        column = item.get("column_name")
        if not isinstance(column, str) or not column.strip():
            raise PricingInvalid(f"{field}.column_name", "Name the metric's group-by field (a non-empty text).")
        name = item.get("name", column)
        if not isinstance(name, str) or not name.strip():
            raise PricingInvalid(f"{field}.name", "Expected a non-empty text.")
        if any(d.column_name == column for d in dimensions):
            raise PricingInvalid(f"{field}.column_name", f"The column {column!r} is already a dimension.")
        dimensions.append(MatrixDimension(name=name, column_name=column))
    values_raw = p.list("values", limit=MAX_MATRIX_VALUES, allow_empty=True)
    entries: list[MatrixEntry] = []
    seen: set[tuple[str | None, ...]] = set()
    for index, item in enumerate(values_raw):
        field = p.path("values", index)
        if not isinstance(item, Mapping):
            raise PricingInvalid(field, "Expected an object with dimension_values and unit_amount.")
        raw_key = item.get("dimension_values")
        if not isinstance(raw_key, list) or len(raw_key) != len(dimensions):
            raise PricingInvalid(
                f"{field}.dimension_values", f"Expected a list of {len(dimensions)} values, one per dimension."
            )
        key = tuple(_dimension_value(v, f"{field}.dimension_values[{i}]") for i, v in enumerate(raw_key))
        if key in seen:
            raise PricingInvalid(f"{field}.dimension_values", f"The values {list(key)!r} already have an entry.")
        seen.add(key)
        unit_amount = _amount(item.get("unit_amount"), f"{field}.unit_amount")
        entries.append(MatrixEntry(dimension_values=key, unit_amount=unit_amount))
    default = None
    if p.data.get("default_unit_amount") is not None:
        default = p.amount("default_unit_amount")
    return PricingModel(
        pricing_type=PricingType.MATRIX,
        dimensions=tuple(dimensions),
        values=tuple(entries),
        default_unit_amount=default,
    )


def _dimension_value(value: Any, field: str) -> str | None:
    """A matrix key as the metric stores a dimension value (metrics.engine.builder.dimension_text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, float)):
        return str(value)
    raise PricingInvalid(field, "Expected a text, a number, a boolean or null.")


class _Fields:
    """Reads one pricing_data object, naming each field by its path when it is malformed."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix

    def path(self, key: str, index: int | None = None) -> str:
        base = f"{self.prefix}.{key}" if self.prefix else key
        return base if index is None else f"{base}[{index}]"

    def amount(self, key: str, *, positive: bool = False) -> Decimal:
        return _amount(self.data.get(key), self.path(key), positive=positive)

    def amount_at(self, key: str, index: int, value: Any) -> Decimal:
        return _amount(value, self.path(key, index))

    def list(self, key: str, *, limit: int = MAX_TIERS, allow_empty: bool = False) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            raise PricingInvalid(self.path(key), "This field is required (a list).")
        if not isinstance(value, list):
            raise PricingInvalid(self.path(key), "Expected a list.")
        if not value and not allow_empty:
            raise PricingInvalid(self.path(key), "Give at least one item.")
        if len(value) > limit:
            raise PricingInvalid(self.path(key), f"Give at most {limit} items.")
        return value


def _amount(value: Any, field: str, *, positive: bool = False) -> Decimal:
    """A non-negative decimal in the currency's major unit from a JSON number or a decimal string."""
    if value is None:
        raise PricingInvalid(field, "This field is required (a number or a decimal string).")
    if isinstance(value, bool):
        raise PricingInvalid(field, "Expected a number or a decimal string, not a boolean.")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        if abs(value) >= 10**AMOUNT_INTEGER_DIGITS:
            raise PricingInvalid(field, f"Too large: at most {AMOUNT_INTEGER_DIGITS} digits before the point.")
        number = Decimal(value)
    elif isinstance(value, float):
        # repr is the shortest text that reads back as the same float: 0.1 stays 0.1.
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise PricingInvalid(field, f"{value[:40]!r} is not a decimal number.")
        number = Decimal(text)
    else:
        raise PricingInvalid(field, "Expected a number or a decimal string.")
    if not number.is_finite():
        raise PricingInvalid(field, "Expected a finite number.")
    if number < 0:
        raise PricingInvalid(field, "Amounts cannot be negative.")
    if positive and number == 0:
        raise PricingInvalid(field, "Must be greater than 0.")
    if number != 0 and number.adjusted() >= AMOUNT_INTEGER_DIGITS:
        raise PricingInvalid(field, f"Too large: at most {AMOUNT_INTEGER_DIGITS} digits before the point.")
    number = _canonical(number)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -AMOUNT_DECIMAL_PLACES:
        raise PricingInvalid(field, f"At most {AMOUNT_DECIMAL_PLACES} decimal places.")
    return number


def _canonical(number: Decimal) -> Decimal:
    """The same value without trailing zeros or an exponent form: 2.50 -> 2.5, 1E+3 -> 1000, -0 -> 0.

    Built from the digits, not with normalize(), which rounds to the context's precision.
    """
    if number == 0:
        return Decimal(0)
    sign, digit_tuple, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    digits = list(digit_tuple)
    while exponent < 0 and digits[-1] == 0:
        digits.pop()
        exponent += 1
    if exponent > 0:
        digits.extend([0] * exponent)
        exponent = 0
    return Decimal((sign, tuple(digits), exponent))


def _text(number: Decimal) -> str:
    return format(_canonical(number), "f")


def pricing_data_normalise(*, model: PricingModel) -> dict[str, Any]:
    """The canonical JSON form of a model (decimals as strings), for storage and for echoing back."""
    data: dict[str, Any] = {"pricing_type": model.pricing_type.value}
    if model.pricing_type in TIER_TYPES:
        data["unit_amount"] = [_text(t.unit_amount) for t in model.tiers]
        data["up_to"] = [None if t.up_to is None else _text(t.up_to) for t in model.tiers]
        if model.pricing_type != PricingType.STEP:
            data["flat_amount"] = [_text(t.flat_amount) for t in model.tiers]
    elif model.pricing_type == PricingType.MATRIX:
        data["dimensions"] = [{"name": d.name, "column_name": d.column_name} for d in model.dimensions]
        data["values"] = [
            {"dimension_values": list(e.dimension_values), "unit_amount": _text(e.unit_amount)} for e in model.values
        ]
        if model.default_unit_amount is not None:
            data["default_unit_amount"] = _text(model.default_unit_amount)
    elif model.pricing_type == PricingType.PERCENT:
        assert model.percentage is not None
        data["percentage"] = _text(model.percentage)
    else:
        assert model.unit_amount is not None
        data["unit_amount"] = _text(model.unit_amount)
        if model.package_size is not None:
            data["package_size"] = _text(model.package_size)
    return data


# --- rating ---


# Made once: `decimal.localcontext` works on a copy of the context it is given.
_EXACT_CONTEXT = decimal.Context(prec=_PRECISION, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
_ROUNDING_CONTEXT = decimal.Context(prec=_PRECISION)


def _exact() -> AbstractContextManager[decimal.Context]:
    """Decimal arithmetic that raises instead of rounding: every amount the engine returns is exact."""
    return decimal.localcontext(_EXACT_CONTEXT)


def rate(
    *,
    model: PricingModel,
    quantity: Decimal | None = None,
    dimensions: Mapping[DimensionKey, Decimal] | None = None,
) -> Rating:
    """The exact amount of `quantity` units (or, for matrix pricing, of each dimension value's units).

    - `flat_fee`: `unit_amount * q`, q defaulting to 1 (a fixed quantity).
    - `per_unit`, `percent`: linear, so a negative quantity (e.g. refunds in a money metric) rates to a
      negative amount.
    - `tiered`, `volume`, `step`, `package`: bounds are inclusive upper bounds; q = 0 falls in the
      first tier, so the first tier's flat amount (tiered, volume) and the first step are charged at
      q = 0. A negative quantity is rated as 0 and flagged.
    - `matrix`: one part per dimension value; values with no entry and no default are flagged and
      priced 0 (never silently).
    The amount is unrounded: round each invoice line with `money_round`.
    """
    with _exact():
        if model.pricing_type == PricingType.MATRIX:
            if dimensions is None:
                raise ValueError("matrix pricing is rated from per-dimension quantities")
            return _rate_matrix(model, dimensions)
        if quantity is None:
            if model.pricing_type != PricingType.FLAT_FEE:
                raise ValueError(f"{model.pricing_type} pricing needs a quantity")
            quantity = Decimal(1)
        if not quantity.is_finite():
            raise ValueError("the quantity must be a finite decimal")
        flagged: list[str] = []
        if model.pricing_type in (PricingType.FLAT_FEE, PricingType.PER_UNIT):
            assert model.unit_amount is not None
            amount = quantity * model.unit_amount
            description = "Flat fee" if model.pricing_type == PricingType.FLAT_FEE else "Per unit"
            part = RatingPart(description, quantity, model.unit_amount, None, amount)
            return Rating(amount=amount, parts=(part,))
        if model.pricing_type == PricingType.PERCENT:
            assert model.percentage is not None
            rate_per_unit = model.percentage / 100  # exact: a division by a power of ten
            amount = quantity * rate_per_unit
            part = RatingPart(f"{_text(model.percentage)}% of {_text(quantity)}", quantity, rate_per_unit, None, amount)
            return Rating(amount=amount, parts=(part,))
        if quantity < 0:
            flagged.append(f"The quantity {_text(quantity)} is negative: rated as 0.")
            quantity = Decimal(0)
        if model.pricing_type == PricingType.PACKAGE:
            rating = _rate_package(model, quantity)
        elif model.pricing_type == PricingType.TIERED:
            rating = _rate_tiered(model.tiers, quantity)
        else:
            rating = _rate_volume_or_step(model.tiers, quantity, step=model.pricing_type == PricingType.STEP)
        return Rating(amount=rating.amount, parts=rating.parts, flagged=tuple(flagged))


def _rate_package(model: PricingModel, quantity: Decimal) -> Rating:
    assert model.unit_amount is not None
    assert model.package_size is not None
    # Exact ceiling of q / size: integer division with its remainder, no rounded quotient.
    whole, remainder = divmod(quantity, model.package_size)
    packages = whole + (1 if remainder else 0)
    amount = packages * model.unit_amount
    description = f"{_text(packages)} x package of {_text(model.package_size)}"
    part = RatingPart(description, quantity, model.unit_amount, None, amount, packages=packages)
    return Rating(amount=amount, parts=(part,))


def _tier_from(tiers: Sequence[Tier], index: int) -> Decimal:
    return Decimal(0) if index == 0 else tiers[index - 1].up_to or Decimal(0)


def _tier_description(tiers: Sequence[Tier], index: int) -> str:
    low, high = _tier_from(tiers, index), tiers[index].up_to
    if high is None:
        return f"Tier {index + 1} (above {_text(low)})"
    return f"Tier {index + 1} (above {_text(low)} up to {_text(high)})"


def tier_index(*, tiers: Sequence[Tier], quantity: Decimal) -> int:
    """The tier `quantity` falls in: the first whose inclusive upper bound holds it (q = 0: the first)."""
    for index, tier in enumerate(tiers):
        if tier.up_to is None or quantity <= tier.up_to:
            return index
    return len(tiers) - 1  # unreachable for a parsed model: its last bound is None


def _rate_tiered(tiers: Sequence[Tier], quantity: Decimal) -> Rating:
    """Graduated: each unit at its own tier's rate, plus the flat amount of every tier reached."""
    parts: list[RatingPart] = []
    for index, tier in enumerate(tiers):
        low = _tier_from(tiers, index)
        # A tier is reached when some of the quantity lies above its lower bound; the first always is.
        if index > 0 and quantity <= low:
            break
        high = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = max(high - low, Decimal(0))
        amount = units * tier.unit_amount + tier.flat_amount
        parts.append(
            RatingPart(
                _tier_description(tiers, index),
                units,
                tier.unit_amount,
                tier.flat_amount,
                amount,
                tier=index,
                tier_from=low,
                tier_up_to=tier.up_to,
            )
        )
    return Rating(amount=sum((p.amount for p in parts), Decimal(0)), parts=tuple(parts))


def _rate_volume_or_step(tiers: Sequence[Tier], quantity: Decimal, *, step: bool) -> Rating:
    index = tier_index(tiers=tiers, quantity=quantity)
    tier = tiers[index]
    description = _tier_description(tiers, index)
    low = _tier_from(tiers, index)
    if step:
        amount = tier.unit_amount
        part = RatingPart(description, quantity, None, tier.unit_amount, amount, index, low, tier.up_to)
    else:
        amount = quantity * tier.unit_amount + tier.flat_amount
        part = RatingPart(description, quantity, tier.unit_amount, tier.flat_amount, amount, index, low, tier.up_to)
    return Rating(amount=amount, parts=(part,))


def _rate_matrix(model: PricingModel, dimensions: Mapping[DimensionKey, Decimal]) -> Rating:
    parts: list[RatingPart] = []
    flagged: list[str] = []
    names = [d.name for d in model.dimensions]
    for key in sorted(dimensions, key=lambda k: tuple((v is None, v or "") for v in k)):
        quantity = dimensions[key]
        if len(key) != len(model.dimensions):
            raise ValueError(f"matrix key {key!r} has {len(key)} values for {len(model.dimensions)} dimensions")
        shown = ("(none)" if value is None else value for value in key)
        label = ", ".join(f"{name}={value}" for name, value in zip(names, shown, strict=True))
        unit_amount = model.matrix_unit_amount(key)
        if unit_amount is None:
            flagged.append(f"No price for {label} (quantity {_text(quantity)}) and no default_unit_amount.")
            parts.append(RatingPart(f"{label}: no price", quantity, None, None, Decimal(0), dimension=key))
            continue
        amount = quantity * unit_amount
        parts.append(RatingPart(label, quantity, unit_amount, None, amount, dimension=key))
    return Rating(amount=sum((p.amount for p in parts), Decimal(0)), parts=tuple(parts), flagged=tuple(flagged))


# --- currencies and rounding ---

# ISO 4217 minor units of the active currency codes (the standard's list one, 2025); funds and
# metal codes with no minor unit ("N.A.": XAU, XDR, ...) are not billing currencies and are absent.
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL "
    "MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK "
    "PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS "
    "TMT TOP TRY TTD TWD TZS UAH USD USN UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)
CURRENCY_EXPONENTS: dict[str, int] = {
    code: exponent
    for exponent, codes in ((0, _EXPONENT_0), (2, _EXPONENT_2), (3, _EXPONENT_3), (4, _EXPONENT_4))
    for code in codes.split()
}


def currency_exponent(*, currency: str, field: str = "currency") -> int:
    """The ISO 4217 minor-unit digits of a currency code (USD 2, JPY 0, KWD 3); unknown: a 400 on `field`."""
    code = currency.strip().upper() if isinstance(currency, str) else ""
    exponent = CURRENCY_EXPONENTS.get(code)
    if exponent is None:
        shown = currency[:20] if isinstance(currency, str) else currency
        raise ValidationFailed({field: [f"{shown!r} is not an ISO 4217 currency code (e.g. USD, EUR, JPY)."]})
    return exponent


def money_round(*, amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up (halves away from zero) to the currency's minor unit: one invoice line."""
    exponent = currency_exponent(currency=currency)
    with decimal.localcontext(_ROUNDING_CONTEXT):
        return amount.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_UP)
