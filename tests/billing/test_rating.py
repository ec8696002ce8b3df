"""The rating engine (SPEC §8 pricing models, §9 rounding).

Three kinds of evidence: a table of cases computed by hand (tier boundaries, q = 0, fractional q,
sub-cent prices, currencies with 0 and 3 minor digits); property tests against a second, deliberately
naive implementation written here in exact fractions (unit by unit for tiered and volume); and the
validation of malformed pricing, each a 400 naming its field.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.rating import (
    DimensionKey,
    PricingInvalid,
    PricingType,
    currency_exponent,
    money_round,
    pricing_data_normalise,
    pricing_parse,
    rate,
)
from zenskar_site.lib.errors import ValidationFailed

pytestmark = pytest.mark.sqlite_only  # no database here: one pass is enough

D = Decimal

# Thousands of examples for each model, within about a minute for the file on a slow shared machine.
EXAMPLES = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TIERED = {"pricing_type": "tiered", "unit_amount": [1, "0.5"], "up_to": [100, None]}
TIERED_FLAT = {**TIERED, "flat_amount": [10, 20]}
VOLUME = {
    "pricing_type": "volume",
    "unit_amount": ["1", "0.8", "0.5"],
    "up_to": [100, 1000, None],
    "flat_amount": [0, 5, 10],
}
STEP = {"pricing_type": "step", "unit_amount": [0, 50, 200], "up_to": [10, 100, None]}
PACKAGE = {"pricing_type": "package", "package_size": 100, "unit_amount": 5}
MATRIX = {
    "pricing_type": "matrix",
    "dimensions": [{"name": "Region", "column_name": "region"}, {"name": "Plan", "column_name": "plan"}],
    "values": [
        {"dimension_values": ["us", "gold"], "unit_amount": 2},
        {"dimension_values": ["eu", "gold"], "unit_amount": "3"},
    ],
}


# --- the hand-computed table ---

HAND_CASES: list[tuple[str, dict[str, Any], str | None, str]] = [
    # (case, pricing_data, quantity, exact amount worked out by hand)
    ("per unit", {"pricing_type": "per_unit", "unit_amount": "0.5"}, "10", "5"),
    ("per unit, q = 0", {"pricing_type": "per_unit", "unit_amount": "0.5"}, "0", "0"),
    ("flat fee, default quantity 1", {"pricing_type": "flat_fee", "unit_amount": 99}, None, "99"),
    ("flat fee, fixed quantity 3 seats", {"pricing_type": "flat_fee", "unit_amount": 99}, "3", "297"),
    ("tiered, q = 0", TIERED, "0", "0"),
    ("tiered, q exactly on up_to: all in tier 1", TIERED, "100", "100"),
    ("tiered, one unit past up_to", TIERED, "101", "100.5"),
    ("tiered, fractional q across the bound", TIERED, "100.5", "100.25"),
    ("tiered, fractional q in tier 1", TIERED, "0.25", "0.25"),
    ("tiered + flat, q = 0: tier 1 is reached", TIERED_FLAT, "0", "10"),
    ("tiered + flat, q on up_to: only tier 1's flat", TIERED_FLAT, "100", "110"),
    ("tiered + flat, past up_to: both flats", TIERED_FLAT, "101", "130.5"),
    ("volume, q = 0", VOLUME, "0", "0"),
    ("volume, q on first up_to", VOLUME, "100", "100"),
    ("volume, one past: every unit at 0.8 + 5", VOLUME, "101", "85.8"),
    ("volume, q on second up_to", VOLUME, "1000", "805"),
    ("volume, past the last bound", VOLUME, "1001", "510.5"),
    ("volume, fractional q just past a bound", VOLUME, "100.1", "85.08"),
    ("step, q = 0: the first step", STEP, "0", "0"),
    ("step, q on up_to", STEP, "10", "0"),
    ("step, fractional q past the bound", STEP, "10.5", "50"),
    ("step, q on the second up_to", STEP, "100", "50"),
    ("step, past the last bound", STEP, "101", "200"),
    ("package, q = 0: no package", PACKAGE, "0", "0"),
    ("package, one unit: a whole package", PACKAGE, "1", "5"),
    ("package, q = package_size exactly", PACKAGE, "100", "5"),
    ("package, a fraction past a package", PACKAGE, "100.01", "10"),
    ("package, 2.5 packages", PACKAGE, "250", "15"),
    ("package of a fractional size", {"pricing_type": "package", "package_size": "0.5", "unit_amount": 1}, "1.2", "3"),
    ("percent of a money volume", {"pricing_type": "percent", "percentage": "2.9"}, "1234.56", "35.80224"),
    ("sub-cent unit price", {"pricing_type": "per_unit", "unit_amount": "0.000123"}, "12345", "1.518435"),
    ("12-decimal unit price", {"pricing_type": "per_unit", "unit_amount": "0.000000000001"}, "3", "0.000000000003"),
    (
        "12-decimal price x a long quantity: exact, no 28-digit rounding",
        {"pricing_type": "per_unit", "unit_amount": "1234567890.123456789012"},
        "98765432109876.543210987654",
        "121932631137021795226150.891211396863800014857848",  # integer product, point moved 24 places,
    ),
]


@pytest.mark.parametrize(("case", "pricing_data", "quantity", "expected"), HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_hand_computed_amounts(case: str, pricing_data: dict[str, Any], quantity: str | None, expected: str) -> None:
    model = pricing_parse(pricing_data=pricing_data)
    rating = rate(model=model, quantity=None if quantity is None else D(quantity))
    assert rating.amount == D(expected)
    assert sum(Fraction(p.amount) for p in rating.parts) == Fraction(rating.amount)
    assert rating.flagged == ()


ROUNDING_CASES = [
    # (amount, currency, rounded half-up to the minor unit)
    ("1.518435", "USD", "1.52"),
    ("0.005", "USD", "0.01"),  # half-up, not banker's (half-even gives 0.00)
    ("0.0049999", "USD", "0.00"),
    ("-0.005", "USD", "-0.01"),  # halves away from zero
    ("2.5", "JPY", "3"),  # 0 minor digits; half-even would give 2
    ("1234.4999", "JPY", "1234"),
    ("1.2345", "KWD", "1.235"),  # 3 minor digits
    ("0.0005", "KWD", "0.001"),
    ("0.0005", "USD", "0.00"),
    ("35.80224", "eur", "35.80"),  # codes are read case-insensitively
    ("7", "USD", "7.00"),
]


@pytest.mark.parametrize(("amount", "currency", "expected"), ROUNDING_CASES)
def test_lines_round_half_up_to_the_currency_minor_unit(amount: str, currency: str, expected: str) -> None:
    rounded = money_round(amount=D(amount), currency=currency)
    assert rounded == D(expected)
    assert str(rounded) == expected  # the exponent is the currency's: 7.00, not 7


def test_sub_cent_prices_round_per_currency() -> None:
    """0.5 per unit x 5 units = 2.5: 3 yen, 2.50 dollars, 2.500 dinars."""
    rating = rate(model=pricing_parse(pricing_data={"pricing_type": "per_unit", "unit_amount": "0.5"}), quantity=D(5))
    assert [str(money_round(amount=rating.amount, currency=c)) for c in ("JPY", "USD", "KWD")] == ["3", "2.50", "2.500"]


def test_currency_exponents_follow_iso_4217() -> None:
    assert [currency_exponent(currency=c) for c in ("USD", "EUR", "JPY", "KRW", "KWD", "BHD", "CLF")] == [
        2,
        2,
        0,
        0,
        3,
        3,
        4,
    ]


@pytest.mark.parametrize("code", ["XYZ", "US", "", "XAU", "dollars"])
def test_an_unknown_currency_is_a_400_naming_the_field(code: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        currency_exponent(currency=code)
    assert list(caught.value.errors) == ["currency"]
    with pytest.raises(ValidationFailed):
        money_round(amount=D(1), currency=code)


# --- breakdowns a person can check ---


def test_tiered_breakdown_lists_each_tier_reached() -> None:
    rating = rate(model=pricing_parse(pricing_data=TIERED_FLAT), quantity=D(150))
    assert [(p.tier, p.quantity, p.unit_amount, p.flat_amount, p.amount) for p in rating.parts] == [
        (0, D(100), D(1), D(10), D(110)),
        (1, D(50), D("0.5"), D(20), D(45)),
    ]
    assert [(p.tier_from, p.tier_up_to) for p in rating.parts] == [(D(0), D(100)), (D(100), None)]
    assert rating.parts[0].description == "Tier 1 (above 0 up to 100)"
    assert rating.parts[1].description == "Tier 2 (above 100)"


def test_volume_and_step_breakdowns_name_the_one_tier() -> None:
    volume = rate(model=pricing_parse(pricing_data=VOLUME), quantity=D(101))
    assert [(p.tier, p.quantity, p.unit_amount, p.flat_amount) for p in volume.parts] == [(1, D(101), D("0.8"), D(5))]
    step = rate(model=pricing_parse(pricing_data=STEP), quantity=D(11))
    assert [(p.tier, p.unit_amount, p.flat_amount, p.amount) for p in step.parts] == [(1, None, D(50), D(50))]


def test_package_breakdown_counts_packages() -> None:
    rating = rate(model=pricing_parse(pricing_data=PACKAGE), quantity=D(250))
    assert [(p.packages, p.unit_amount, p.amount) for p in rating.parts] == [(D(3), D(5), D(15))]


def test_matrix_prices_each_cell_and_uses_the_default() -> None:
    model = pricing_parse(pricing_data={**MATRIX, "default_unit_amount": "1"})
    quantities: dict[DimensionKey, Decimal] = {("us", "gold"): D(10), ("eu", "gold"): D("1.5"), ("ap", "gold"): D(4)}
    rating = rate(model=model, dimensions=quantities)
    assert rating.amount == D("28.5")  # 10 x 2 + 1.5 x 3 + 4 x 1 (the default)
    assert {p.dimension: (p.unit_amount, p.amount) for p in rating.parts} == {
        ("us", "gold"): (D(2), D(20)),
        ("eu", "gold"): (D(3), D("4.5")),
        ("ap", "gold"): (D(1), D(4)),
    }
    assert rating.flagged == ()


def test_matrix_value_without_entry_or_default_is_flagged_not_silently_zero() -> None:
    model = pricing_parse(pricing_data=MATRIX)
    rating = rate(model=model, dimensions={("us", "gold"): D(10), ("ap", "gold"): D(4)})
    assert rating.amount == D(20)
    assert len(rating.flagged) == 1
    assert "Region=ap" in rating.flagged[0]
    assert "Plan=gold" in rating.flagged[0]
    unpriced = next(p for p in rating.parts if p.dimension == ("ap", "gold"))
    assert unpriced.unit_amount is None
    assert unpriced.quantity == D(4)


def test_matrix_keys_match_the_metric_dimension_text() -> None:
    """Numbers and booleans in dimension_values are keyed as the metric stores them: 3, true."""
    model = pricing_parse(
        pricing_data={
            "pricing_type": "matrix",
            "dimensions": [{"name": "Cores", "column_name": "cores"}, {"name": "Spot", "column_name": "spot"}],
            "values": [{"dimension_values": [3.0, True], "unit_amount": 1}],
        }
    )
    assert model.values[0].dimension_values == ("3", "true")


def test_negative_quantity_of_a_tiered_pricing_is_rated_zero_and_flagged() -> None:
    rating = rate(model=pricing_parse(pricing_data=TIERED_FLAT), quantity=D(-5))
    assert rating.amount == D(10)  # q = 0: tier 1's flat amount
    assert len(rating.flagged) == 1
    assert "negative" in rating.flagged[0]


def test_negative_quantity_of_a_linear_pricing_is_a_credit() -> None:
    rating = rate(model=pricing_parse(pricing_data={"pricing_type": "percent", "percentage": 3}), quantity=D(-100))
    assert rating.amount == D(-3)


# --- parsing: what is accepted, and how it is stored ---


def test_floats_are_read_through_their_shortest_text_not_binary_noise() -> None:
    model = pricing_parse(pricing_data={"pricing_type": "per_unit", "unit_amount": 0.1})
    assert model.unit_amount == D("0.1")
    assert rate(model=model, quantity=D(3)).amount == D("0.3")


def test_normalised_pricing_data_is_canonical_json_and_parses_back() -> None:
    data = {**VOLUME, "unit_amount": [1, "0.80", 5e-1], "currency": "USD", "pricing_period": {"cadence": "P1M"}}
    model = pricing_parse(pricing_data=data)
    normal = pricing_data_normalise(model=model)
    assert normal == {
        "pricing_type": "volume",
        "unit_amount": ["1", "0.8", "0.5"],
        "up_to": ["100", "1000", None],
        "flat_amount": ["0", "5", "10"],
    }
    assert pricing_parse(pricing_data=normal) == model


def test_trailing_zeros_beyond_12_places_are_accepted() -> None:
    model = pricing_parse(
        pricing_data={"pricing_type": "per_unit", "unit_amount": "1.50000000000000000000000000000000"}
    )
    assert model.unit_amount == D("1.5")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@FEWER
@given(
    pricing_type=st.sampled_from([*PricingType.values, "other"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "unit_amount",
                "up_to",
                "flat_amount",
                "package_size",
                "percentage",
                "dimensions",
                "values",
                "default_unit_amount",
            ]
        ),
        json_values,
    ),
)
def test_any_json_is_a_model_or_a_400_never_another_error(pricing_type: str, fields: dict[str, Any]) -> None:
    refused: PricingInvalid | None = None
    try:
        model = pricing_parse(pricing_data={"pricing_type": pricing_type, **fields})
    except PricingInvalid as invalid:
        refused = invalid
    if refused is not None:
        assert refused.field.startswith("pricing_data")
        return
    assert pricing_parse(pricing_data=pricing_data_normalise(model=model)) == model


def test_amounts_in_exponent_form_are_stored_plainly() -> None:
    model = pricing_parse(pricing_data={"pricing_type": "per_unit", "unit_amount": "1E+3"})
    assert pricing_data_normalise(model=model)["unit_amount"] == "1000"


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("no pricing type", {"unit_amount": 1}, "pricing_data.pricing_type"),
    ("unknown pricing type", {"pricing_type": "graduated", "unit_amount": 1}, "pricing_data.pricing_type"),
    ("pricing type not a text", {"pricing_type": ["tiered"]}, "pricing_data.pricing_type"),
    ("per unit without amount", {"pricing_type": "per_unit"}, "pricing_data.unit_amount"),
    ("negative amount", {"pricing_type": "per_unit", "unit_amount": "-1"}, "pricing_data.unit_amount"),
    ("13 decimal places", {"pricing_type": "per_unit", "unit_amount": "0.0000000000001"}, "pricing_data.unit_amount"),
    ("not a number", {"pricing_type": "per_unit", "unit_amount": "ten"}, "pricing_data.unit_amount"),
    ("a boolean", {"pricing_type": "per_unit", "unit_amount": True}, "pricing_data.unit_amount"),
    ("NaN", {"pricing_type": "per_unit", "unit_amount": "NaN"}, "pricing_data.unit_amount"),
    ("infinite float", {"pricing_type": "per_unit", "unit_amount": float("inf")}, "pricing_data.unit_amount"),
    ("underscored digits", {"pricing_type": "per_unit", "unit_amount": "1_000"}, "pricing_data.unit_amount"),
    ("too large", {"pricing_type": "per_unit", "unit_amount": "1e16"}, "pricing_data.unit_amount"),
    ("too large an integer", {"pricing_type": "per_unit", "unit_amount": 10**40}, "pricing_data.unit_amount"),
    (
        "31 places that round to 1 in 28 digits",
        {"pricing_type": "per_unit", "unit_amount": "0." + "9" * 31},
        "pricing_data.unit_amount",
    ),
    ("tiers: lists of different lengths", {**TIERED, "up_to": [10, 100, None]}, "pricing_data.up_to"),
    ("tiers: flat_amount of another length", {**TIERED, "flat_amount": [1]}, "pricing_data.flat_amount"),
    ("tiers: bounds not increasing", {**VOLUME, "up_to": [100, 100, None]}, "pricing_data.up_to[1]"),
    ("tiers: bounds decreasing", {**VOLUME, "up_to": [100, 50, None]}, "pricing_data.up_to[1]"),
    ("tiers: last bound not null", {**TIERED, "up_to": [100, 200]}, "pricing_data.up_to[1]"),
    ("tiers: a middle bound null", {**VOLUME, "up_to": [100, None, None]}, "pricing_data.up_to[1]"),
    ("tiers: negative bound", {**TIERED, "up_to": [-1, None]}, "pricing_data.up_to[0]"),
    ("tiers: negative unit amount", {**TIERED, "unit_amount": [1, -1]}, "pricing_data.unit_amount[1]"),
    ("tiers: negative flat amount", {**TIERED, "flat_amount": [0, "-0.01"]}, "pricing_data.flat_amount[1]"),
    ("tiers: not a list", {**TIERED, "unit_amount": 1}, "pricing_data.unit_amount"),
    ("tiers: empty", {**TIERED, "unit_amount": [], "up_to": []}, "pricing_data.unit_amount"),
    ("step with flat amounts", {**STEP, "flat_amount": [0, 0, 0]}, "pricing_data.flat_amount"),
    ("package size 0", {**PACKAGE, "package_size": 0}, "pricing_data.package_size"),
    ("package size negative", {**PACKAGE, "package_size": -10}, "pricing_data.package_size"),
    ("percent without percentage", {"pricing_type": "percent"}, "pricing_data.percentage"),
    ("matrix without dimensions", {**MATRIX, "dimensions": []}, "pricing_data.dimensions"),
    (
        "matrix: a dimension without column",
        {**MATRIX, "dimensions": [{"name": "Region"}, {"name": "Plan", "column_name": "plan"}]},
        "pricing_data.dimensions[0].column_name",
    ),
    (
        "matrix: a value with too few dimension values",
        {**MATRIX, "values": [{"dimension_values": ["us"], "unit_amount": 1}]},
        "pricing_data.values[0].dimension_values",
    ),
    (
        "matrix: the same cell twice",
        {**MATRIX, "values": [*MATRIX["values"], {"dimension_values": ["us", "gold"], "unit_amount": 9}]},
        "pricing_data.values[2].dimension_values",
    ),
    (
        "matrix: negative cell amount",
        {**MATRIX, "values": [{"dimension_values": ["us", "gold"], "unit_amount": -2}]},
        "pricing_data.values[0].unit_amount",
    ),
    ("matrix: negative default", {**MATRIX, "default_unit_amount": "-1"}, "pricing_data.default_unit_amount"),
]


@pytest.mark.parametrize(("case", "pricing_data", "field"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_pricing_is_a_400_naming_the_field(case: str, pricing_data: dict[str, Any], field: str) -> None:
    with pytest.raises(PricingInvalid) as caught:
        pricing_parse(pricing_data=pricing_data)
    assert caught.value.field == field
    assert list(caught.value.errors) == [field]
    assert caught.value.status_code == 400
    assert caught.value.detail.startswith(f"{field}: ")


def test_field_paths_carry_the_callers_prefix() -> None:
    with pytest.raises(PricingInvalid) as caught:
        pricing_parse(pricing_data={**TIERED, "up_to": [100, 50]}, field_prefix="phases[0].pricings[2].pricing_data")
    assert caught.value.field == "phases[0].pricings[2].pricing_data.up_to[1]"


def test_a_pricing_data_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(PricingInvalid) as caught:
        pricing_parse(pricing_data=["per_unit"])  # type: ignore[arg-type]
    assert caught.value.field == "pricing_data"


# --- the naive implementations: exact fractions, unit by unit ---


def naive_tier_of_unit(up_to: list[int | None], unit: int) -> int:
    """The tier a whole unit (1, 2, ...) or q = 0 belongs to: the first bound that holds it."""
    for index, bound in enumerate(up_to):
        if bound is None or unit <= bound:
            return index
    raise AssertionError("the last bound is None")


def naive_tiered(units: list[Fraction], flats: list[Fraction], up_to: list[int | None], q: Fraction) -> Fraction:
    """Graduated, one unit at a time; a fractional last piece (floor(q), q] is in the tier of ceil(q)."""
    total = Fraction(0)
    reached = {0}
    for unit in range(1, math.floor(q) + 1):
        tier = naive_tier_of_unit(up_to, unit)
        total += units[tier]
        reached.add(tier)
    rest = q - math.floor(q)
    if rest:
        tier = naive_tier_of_unit(up_to, math.ceil(q))
        total += rest * units[tier]
        reached.add(tier)
    return total + sum((flats[t] for t in reached), Fraction(0))


def naive_volume(units: list[Fraction], flats: list[Fraction], up_to: list[int | None], q: Fraction) -> Fraction:
    """Every unit at the rate of the one tier q falls in, counted one unit at a time."""
    tier = naive_tier_of_unit(up_to, math.ceil(q))
    total = Fraction(0)
    for _ in range(math.floor(q)):
        total += units[tier]
    return total + (q - math.floor(q)) * units[tier] + flats[tier]


def naive_step(units: list[Fraction], up_to: list[int | None], q: Fraction) -> Fraction:
    return units[naive_tier_of_unit(up_to, math.ceil(q))]


def naive_package(size: Fraction, unit_amount: Fraction, q: Fraction) -> Fraction:
    packages, covered = 0, Fraction(0)
    while covered < q:
        covered += size
        packages += 1
    return packages * unit_amount


# --- strategies ---

# Amounts with 0..12 decimal places, and the forms a client may send them in.
amounts = st.builds(lambda digits, places: Decimal(digits).scaleb(-places), st.integers(0, 10**9), st.integers(0, 12))


def sent_as(value: Decimal) -> st.SearchStrategy[Any]:
    forms: list[Any] = [st.just(str(value)), st.just(format(value, "f"))]
    if value == value.to_integral_value():
        forms.append(st.just(int(value)))
    if Decimal(repr(float(value))) == value:
        forms.append(st.just(float(value)))
    return st.one_of(forms)


@st.composite
def tier_tables(draw: st.DrawFn, max_tiers: int = 5) -> tuple[list[int | None], list[Decimal], list[Decimal]]:
    count = draw(st.integers(1, max_tiers))
    gaps = draw(st.lists(st.integers(1, 40), min_size=count - 1, max_size=count - 1))
    first = draw(st.integers(0, 10))  # a first bound of 0 is a tier for q = 0 alone
    bounds: list[int | None] = []
    bound = first
    for index, gap in enumerate(gaps):
        bound = first if index == 0 else bound + gap
        bounds.append(bound)
    bounds.append(None)
    units = draw(st.lists(amounts, min_size=count, max_size=count))
    flats = draw(st.lists(amounts, min_size=count, max_size=count))
    return bounds, units, flats


def quantities(upper: int = 200) -> st.SearchStrategy[Decimal]:
    """Whole and fractional quantities, biased to tier bounds by hypothesis' own shrinking."""
    whole = st.integers(0, upper).map(Decimal)
    fractional = st.builds(
        lambda n, digits, places: Decimal(n) + Decimal(digits).scaleb(-places),
        st.integers(0, upper),
        st.integers(1, 999),
        st.integers(3, 9),
    )
    return st.one_of(whole, fractional)


def F(value: Decimal) -> Fraction:
    return Fraction(value)


@EXAMPLES
@given(table=tier_tables(), q=quantities(), data=st.data())
def test_tiered_matches_unit_by_unit(
    table: tuple[list[int | None], list[Decimal], list[Decimal]], q: Decimal, data: st.DataObject
) -> None:
    bounds, units, flats = table
    pricing_data = {
        "pricing_type": "tiered",
        "up_to": bounds,
        "unit_amount": [data.draw(sent_as(u)) for u in units],
        "flat_amount": [data.draw(sent_as(f)) for f in flats],
    }
    rating = rate(model=pricing_parse(pricing_data=pricing_data), quantity=q)
    expected = naive_tiered([F(u) for u in units], [F(f) for f in flats], bounds, F(q))
    assert F(rating.amount) == expected
    assert sum(F(p.quantity) for p in rating.parts) == F(q)
    assert sum(F(p.amount) for p in rating.parts) == expected


@EXAMPLES
@given(table=tier_tables(), q=quantities())
def test_volume_matches_unit_by_unit(table: tuple[list[int | None], list[Decimal], list[Decimal]], q: Decimal) -> None:
    bounds, units, flats = table
    pricing_data = {
        "pricing_type": "volume",
        "up_to": bounds,
        "unit_amount": [str(u) for u in units],
        "flat_amount": [str(f) for f in flats],
    }
    rating = rate(model=pricing_parse(pricing_data=pricing_data), quantity=q)
    assert F(rating.amount) == naive_volume([F(u) for u in units], [F(f) for f in flats], bounds, F(q))


@EXAMPLES
@given(table=tier_tables(), q=quantities())
def test_step_matches_the_naive_lookup(
    table: tuple[list[int | None], list[Decimal], list[Decimal]], q: Decimal
) -> None:
    bounds, units, _ = table
    pricing_data = {"pricing_type": "step", "up_to": bounds, "unit_amount": [str(u) for u in units]}
    rating = rate(model=pricing_parse(pricing_data=pricing_data), quantity=q)
    assert F(rating.amount) == naive_step([F(u) for u in units], bounds, F(q))


@FEWER
@given(
    table=tier_tables(),
    q=quantities(),
    scale=st.sampled_from([Decimal("0.1"), Decimal("0.01"), Decimal("0.001")]),
    model_type=st.sampled_from(["tiered", "volume"]),
)
def test_fractional_bounds_rate_like_scaled_whole_bounds(
    table: tuple[list[int | None], list[Decimal], list[Decimal]], q: Decimal, scale: Decimal, model_type: str
) -> None:
    """Bounds and quantity scaled by s and unit prices by 1/s rate the same: fractional tiers are exact."""
    bounds, units, flats = table
    whole = rate(
        model=pricing_parse(
            pricing_data={"pricing_type": model_type, "up_to": bounds, "unit_amount": units, "flat_amount": flats}
        ),
        quantity=q,
    )
    scaled_units = [u / scale for u in units]  # exact: division by a power of ten
    if any(-u.normalize().as_tuple().exponent > 12 for u in scaled_units if u):  # type: ignore[operator]
        return
    scaled = rate(
        model=pricing_parse(
            pricing_data={
                "pricing_type": model_type,
                "up_to": [None if b is None else Decimal(b) * scale for b in bounds],
                "unit_amount": scaled_units,
                "flat_amount": flats,
            }
        ),
        quantity=q * scale,
    )
    assert scaled.amount == whole.amount


@EXAMPLES
@given(
    size=st.one_of(st.integers(1, 50).map(Decimal), st.sampled_from([Decimal("0.5"), Decimal("2.5"), Decimal("0.25")])),
    unit_amount=amounts,
    q=quantities(300),
)
def test_package_matches_counting_packages(size: Decimal, unit_amount: Decimal, q: Decimal) -> None:
    pricing_data = {"pricing_type": "package", "package_size": str(size), "unit_amount": str(unit_amount)}
    rating = rate(model=pricing_parse(pricing_data=pricing_data), quantity=q)
    assert F(rating.amount) == naive_package(F(size), F(unit_amount), F(q))


@EXAMPLES
@given(
    pricing_type=st.sampled_from(["per_unit", "flat_fee", "percent"]),
    price=amounts,
    q=st.one_of(quantities(10**6), st.decimals(min_value=-(10**12), max_value=10**12, places=12)),
)
def test_linear_models_are_exact_products(pricing_type: str, price: Decimal, q: Decimal) -> None:
    key = "percentage" if pricing_type == "percent" else "unit_amount"
    rating = rate(model=pricing_parse(pricing_data={"pricing_type": pricing_type, key: str(price)}), quantity=q)
    expected = F(q) * F(price) / (100 if pricing_type == "percent" else 1)
    assert F(rating.amount) == expected


cells = st.tuples(st.sampled_from(["us", "eu", "ap", "sa"]), st.sampled_from(["gold", "silver", "3", "true"]))


@EXAMPLES
@given(
    priced=st.dictionaries(cells, amounts, max_size=8),
    default=st.one_of(st.none(), amounts),
    used=st.dictionaries(cells, quantities(1000), max_size=8),
)
def test_matrix_matches_a_lookup_table(
    priced: dict[DimensionKey, Decimal], default: Decimal | None, used: dict[DimensionKey, Decimal]
) -> None:
    pricing_data: dict[str, Any] = {
        "pricing_type": "matrix",
        "dimensions": [{"name": "Region", "column_name": "region"}, {"name": "Plan", "column_name": "plan"}],
        "values": [{"dimension_values": list(k), "unit_amount": str(v)} for k, v in priced.items()],
    }
    if default is not None:
        pricing_data["default_unit_amount"] = str(default)
    rating = rate(model=pricing_parse(pricing_data=pricing_data), dimensions=used)
    expected = Fraction(0)
    unpriced = 0
    for key, q in used.items():
        price = priced.get(key, default)
        if price is None:
            unpriced += 1
        else:
            expected += F(q) * F(price)
    assert F(rating.amount) == expected
    assert len(rating.flagged) == unpriced
    assert {p.dimension for p in rating.parts} == set(used)


@FEWER
@given(table=tier_tables(), model_type=st.sampled_from(["tiered", "volume", "step"]), data=st.data())
def test_normalised_form_parses_back_to_the_same_model(
    table: tuple[list[int | None], list[Decimal], list[Decimal]], model_type: str, data: st.DataObject
) -> None:
    bounds, units, flats = table
    pricing_data: dict[str, Any] = {
        "pricing_type": model_type,
        "up_to": bounds,
        "unit_amount": [data.draw(sent_as(u)) for u in units],
    }
    if model_type != "step":
        pricing_data["flat_amount"] = [data.draw(sent_as(f)) for f in flats]
    model = pricing_parse(pricing_data=pricing_data)
    assert pricing_parse(pricing_data=pricing_data_normalise(model=model)) == model
    assert model.pricing_type == PricingType(model_type)


@settings(max_examples=1000, deadline=None)
@given(
    amount=st.decimals(min_value=-(10**9), max_value=10**9, places=6), currency=st.sampled_from(["USD", "JPY", "KWD"])
)
def test_money_round_is_half_up_to_the_minor_unit(amount: Decimal, currency: str) -> None:
    exponent = {"USD": 2, "JPY": 0, "KWD": 3}[currency]
    rounded = money_round(amount=amount, currency=currency)
    step = Fraction(1, 10**exponent)
    # The nearest multiple of the minor unit; a tie goes away from zero.
    magnitude = abs(F(amount)) / step
    nearest = math.floor(magnitude + Fraction(1, 2)) * step
    assert F(rounded) == (nearest if amount >= 0 else -nearest)
    assert rounded.as_tuple().exponent == -exponent
