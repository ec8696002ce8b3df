"""SPEC §2 data types and §3 record shape: the converters and compiled validators of usage/schema.py.

Pure Python: no database. Property-based with hypothesis for every type's converter.
"""

from __future__ import annotations

import datetime as dt
import math
import string
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage.schema import (
    BASE_TYPES,
    CONVERTERS,
    MAX_FIELDS,
    InvalidValue,
    ValidRecord,
    dataschema_change_problems,
    dataschema_normalize,
    datetime_parse,
    record_validator,
)
from zenskar_site.lib.errors import ValidationFailed

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FEW = settings(max_examples=60, deadline=None)
SOME = settings(max_examples=100, deadline=None)

REQUIRED = "This field is required."


def convert(type_name: str, value: Any) -> Any:
    return CONVERTERS[type_name](value)


def assert_rejected(type_name: str, value: Any) -> None:
    with pytest.raises(InvalidValue):
        convert(type_name, value)


def record(data: Any = None, **root: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"customer_id": "cus_123", "timestamp": "2026-11-20T14:03:12Z"}
    if data is not None:
        obj["data"] = data
    obj.update(root)
    return obj


# --- strategies ---------------------------------------------------------------------------------

non_string_json = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)
non_number_json = st.one_of(
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
non_finite_floats = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf])
non_finite_strings = st.sampled_from(
    ["NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "+Infinity", "inf", "-inf", "Inf"]
)
# Datetimes far enough from year 1 and 9999 that any offset keeps the UTC instant representable.
safe_datetimes = st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: dt.timedelta(minutes=m))
exact_decimals = st.decimals(allow_nan=False, allow_infinity=False).filter(lambda d: len(d.as_tuple().digits) <= 38)


def offset_text(offset: dt.timedelta, colon: bool) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{mins:02d}"


def utc_text(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# --- Int64 --------------------------------------------------------------------------------------


@SOME
@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_int64_accepts_every_integer_in_the_signed_64_bit_range_unchanged(value: int) -> None:
    result = convert("Int64", value)
    assert result == value
    assert type(result) is int


def test_int64_accepts_both_bounds_exactly() -> None:
    assert convert("Int64", INT64_MIN) == -(2**63)
    assert convert("Int64", INT64_MAX) == 2**63 - 1


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1])
def test_int64_rejects_one_beyond_either_bound(value: int) -> None:
    with pytest.raises(InvalidValue, match="64-bit range"):
        convert("Int64", value)


@FEW
@given(st.one_of(st.integers(min_value=INT64_MAX + 1), st.integers(max_value=INT64_MIN - 1)))
def test_int64_rejects_integers_out_of_range(value: int) -> None:
    assert_rejected("Int64", value)


@SOME
@given(finite_floats.filter(lambda f: not f.is_integer()))
def test_int64_rejects_floats_with_a_fraction(value: float) -> None:
    with pytest.raises(InvalidValue, match="fraction"):
        convert("Int64", value)


@FEW
@given(st.decimals(allow_nan=False, allow_infinity=False, places=3).filter(lambda d: d != d.to_integral_value()))
def test_int64_rejects_exact_decimals_with_a_fraction(value: Decimal) -> None:
    assert_rejected("Int64", value)


@FEW
@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_int64_accepts_a_float_without_a_fraction_as_that_integer(value: int) -> None:
    result = convert("Int64", float(value))
    assert result == value
    assert type(result) is int


def test_int64_rejects_a_float_that_rounds_to_two_to_the_63() -> None:
    assert_rejected("Int64", 2.0**63)


@pytest.mark.parametrize("value", [True, False])
def test_int64_rejects_booleans(value: bool) -> None:
    with pytest.raises(InvalidValue, match="boolean"):
        convert("Int64", value)


@FEW
@given(st.one_of(st.integers().map(str), non_number_json))
def test_int64_rejects_strings_and_other_non_numbers_including_numeric_strings(value: Any) -> None:
    assert_rejected("Int64", value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_int64_rejects_non_finite_floats(value: float) -> None:
    assert_rejected("Int64", value)


# --- Float64 ------------------------------------------------------------------------------------


@SOME
@given(finite_floats)
def test_float64_accepts_every_finite_float_unchanged(value: float) -> None:
    result = convert("Float64", value)
    assert type(result) is float
    assert result == value


@FEW
@given(st.integers(min_value=-(2**100), max_value=2**100))
def test_float64_accepts_json_integers_as_floats(value: int) -> None:
    result = convert("Float64", value)
    assert type(result) is float
    assert result == float(value)


@FEW
@given(exact_decimals.filter(lambda d: abs(d) < Decimal("1e300")))
def test_float64_accepts_exactly_parsed_decimals_as_the_nearest_float(value: Decimal) -> None:
    assert convert("Float64", value) == float(value)


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("Infinity"), Decimal("1e400")]
)
def test_float64_rejects_nan_and_infinity(value: Any) -> None:
    with pytest.raises(InvalidValue, match="not finite"):
        convert("Float64", value)


@pytest.mark.parametrize("value", [True, False])
def test_float64_rejects_booleans(value: bool) -> None:
    with pytest.raises(InvalidValue, match="boolean"):
        convert("Float64", value)


@FEW
@given(st.one_of(finite_floats.map(repr), non_finite_strings, non_number_json))
def test_float64_rejects_strings_including_numeric_and_nan_strings(value: Any) -> None:
    assert_rejected("Float64", value)


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_float64_rejects_an_integer_too_large_for_a_double_with_an_error_not_a_crash(value: int) -> None:
    # Reachable from ingestion: a schema with a Decimal field parses the body with json.loads, which
    # keeps such a literal as a Python int.
    assert_rejected("Float64", value)


# --- Decimal ------------------------------------------------------------------------------------


@SOME
@given(exact_decimals)
def test_decimal_keeps_a_decimal_value_exactly_as_a_string(value: Decimal) -> None:
    result = convert("Decimal", value)
    assert type(result) is str
    assert Decimal(result) == value
    assert Decimal(result).as_tuple() == value.as_tuple()  # scale kept too: 12.50 stays 12.50


@SOME
@given(exact_decimals.map(str))
def test_decimal_keeps_a_numeric_string_exactly(value: str) -> None:
    result = convert("Decimal", value)
    assert Decimal(result) == Decimal(value)
    assert Decimal(result).as_tuple() == Decimal(value).as_tuple()


@SOME
@given(st.from_regex(r"\A-?[0-9]{1,20}(\.[0-9]{1,17})?\Z"))
def test_decimal_keeps_plain_numeric_strings_digit_for_digit(value: str) -> None:
    result = convert("Decimal", value)
    assert Decimal(result) == Decimal(value)
    assert result == str(Decimal(value))


def test_decimal_keeps_trailing_zeros_and_values_a_float_would_round() -> None:
    assert convert("Decimal", "12.50") == "12.50"
    assert convert("Decimal", Decimal("0.1")) == "0.1"
    assert convert("Decimal", "0.30000000000000000000000000001") == "0.30000000000000000000000000001"
    assert convert("Decimal", "12345678901234567890123456789012345678") == "12345678901234567890123456789012345678"


@SOME
@given(st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1))
def test_decimal_keeps_json_integers_exactly(value: int) -> None:
    result = convert("Decimal", value)
    assert result == str(value)
    assert Decimal(result) == value


@FEW
@given(finite_floats)
def test_decimal_reads_a_float_as_its_shortest_literal(value: float) -> None:
    result = convert("Decimal", value)
    assert Decimal(result) == Decimal(repr(value))
    assert float(result) == value


@FEW
@given(st.one_of(non_finite_floats, non_finite_strings, st.sampled_from([Decimal("NaN"), Decimal("-Infinity")])))
def test_decimal_rejects_nan_and_infinity_including_their_strings(value: Any) -> None:
    assert_rejected("Decimal", value)


@FEW
@given(
    st.one_of(
        st.text(alphabet=string.ascii_letters, min_size=1, max_size=12),
        st.from_regex(r"\A-?[0-9]{1,5}[a-df-zA-DF-Z!#%]{1,5}\Z"),
        st.sampled_from(["", " ", "1.2.3", "--1", "1e", "1,5", "0x10", "$5"]),
    )
)
def test_decimal_rejects_non_numeric_strings(value: str) -> None:
    assert_rejected("Decimal", value)


@pytest.mark.parametrize("value", [True, False, [], {}, [1]])
def test_decimal_rejects_booleans_and_containers(value: Any) -> None:
    assert_rejected("Decimal", value)


def test_decimal_rejects_more_than_38_significant_digits() -> None:
    assert_rejected("Decimal", "1" * 39)
    assert_rejected("Decimal", 10**38)


# --- Bool ---------------------------------------------------------------------------------------


@given(st.booleans())
def test_bool_accepts_true_and_false_unchanged(value: bool) -> None:
    assert convert("Bool", value) is value


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, Decimal(1)])
def test_bool_rejects_zero_and_one(value: Any) -> None:
    assert_rejected("Bool", value)


@FEW
@given(
    st.one_of(
        st.sampled_from(["true", "false", "True", "1", "0", "yes"]),
        st.integers(),
        finite_floats,
        non_number_json,
    )
)
def test_bool_rejects_strings_numbers_and_anything_but_a_json_boolean(value: Any) -> None:
    assert_rejected("Bool", value)


# --- Date32 -------------------------------------------------------------------------------------


@SOME
@given(st.dates())
def test_date32_accepts_every_existing_yyyy_mm_dd_date_unchanged(value: dt.date) -> None:
    text = value.isoformat()
    assert convert("Date32", text) == text


@pytest.mark.parametrize("value", ["2026-02-30", "2025-02-29", "2026-04-31", "2026-13-01", "2026-00-10", "0000-01-01"])
def test_date32_rejects_dates_that_do_not_exist(value: str) -> None:
    with pytest.raises(InvalidValue, match="does not exist"):
        convert("Date32", value)


@FEW
@given(st.integers(1, 9999), st.integers(1, 12), st.integers(29, 31))
def test_date32_rejects_days_past_the_end_of_the_month(year: int, month: int, day: int) -> None:
    try:
        dt.date(year, month, day)
    except ValueError:
        assert_rejected("Date32", f"{year:04d}-{month:02d}-{day:02d}")
    else:
        assert convert("Date32", f"{year:04d}-{month:02d}-{day:02d}") == f"{year:04d}-{month:02d}-{day:02d}"


@pytest.mark.parametrize(
    "value",
    [
        "2026-1-5",
        "20260105",
        "2026/01/05",
        "05-01-2026",
        "2026-01-05T00:00:00Z",
        "2026-01-05 00:00:00",
        " 2026-01-05",
        "2026-01-05 ",
        "2026-01-05\n",
        "\uff12\uff10\uff12\uff16-\uff10\uff11-\uff10\uff15",  # fullwidth digits
        "+2026-01-05",
        "",
    ],
)
def test_date32_rejects_other_date_shapes(value: str) -> None:
    assert_rejected("Date32", value)


@FEW
@given(st.one_of(non_string_json, st.dates()))
def test_date32_rejects_non_strings(value: Any) -> None:
    assert_rejected("Date32", value)


# --- DateTime64 ---------------------------------------------------------------------------------


@SOME
@given(safe_datetimes, offsets, st.booleans(), st.sampled_from(["T", " "]))
def test_datetime64_with_an_offset_normalizes_to_the_same_instant_in_utc(
    local: dt.datetime, offset: dt.timedelta, colon: bool, separator: str
) -> None:
    text = local.isoformat(sep=separator) + offset_text(offset, colon)
    instant = local.replace(tzinfo=dt.timezone(offset))

    result = convert("DateTime64", text)

    assert result.endswith("Z")
    assert dt.datetime.fromisoformat(result) == instant
    assert result == utc_text(instant)
    assert datetime_parse(text) == instant
    assert datetime_parse(text).utcoffset() == dt.timedelta(0)


@FEW
@given(safe_datetimes, st.sampled_from(["Z", "z", "+00:00", "-00:00", "+0000"]))
def test_datetime64_accepts_every_spelling_of_utc(local: dt.datetime, suffix: str) -> None:
    result = convert("DateTime64", local.isoformat(sep="T") + suffix)
    assert result == utc_text(local.replace(tzinfo=dt.UTC))


@SOME
@given(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)))
def test_datetime64_reads_a_naive_space_separated_datetime_as_utc(local: dt.datetime) -> None:
    text = local.isoformat(sep=" ")  # 'YYYY-MM-DD HH:MM:SS' or with '.ffffff'
    result = convert("DateTime64", text)
    assert result.endswith("Z")
    assert dt.datetime.fromisoformat(result) == local.replace(tzinfo=dt.UTC)
    assert datetime_parse(text) == local.replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20 14:03:12", "2026-11-20T14:03:12Z"),
        ("2026-11-20 14:03:12.5", "2026-11-20T14:03:12.500000Z"),
        ("2026-11-20 14:03:12.123456", "2026-11-20T14:03:12.123456Z"),
        ("2026-11-20T14:03:12Z", "2026-11-20T14:03:12Z"),
        ("2026-11-20T16:03:12+02:00", "2026-11-20T14:03:12Z"),
        ("2026-11-20T09:33:12-0430", "2026-11-20T14:03:12Z"),
        ("2026-11-21T00:03:12+10:00", "2026-11-20T14:03:12Z"),
        ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00Z"),
        ("2026-11-20T14:03:12.123456789Z", "2026-11-20T14:03:12.123456Z"),
    ],
)
def test_datetime64_normalizes_known_examples(text: str, expected: str) -> None:
    assert convert("DateTime64", text) == expected


@SOME
@given(safe_datetimes)
def test_datetime64_rejects_a_naive_iso_datetime_with_t_and_no_offset(local: dt.datetime) -> None:
    assert_rejected("DateTime64", local.isoformat(sep="T"))


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20",
        "2026-11-20T14:03Z",
        "2026-11-20 14:03",
        "2026-11-20T14:03:12",
        "2026-11-20 14:03:12.1234567",
        "2026-02-30 10:00:00",
        "2026-02-30T10:00:00Z",
        "2026-11-20 24:00:00",
        "2026-11-20T14:03:60Z",
        "2026-11-20T14:03:12+24:00",
        "2026-11-20T14:03:12+2",
        "2026-11-20T14:03:12 +02:00",
        "20261120T140312Z",
        "Fri, 20 Nov 2026 14:03:12 GMT",
        "1763647392",
        "now",
        "",
        " 2026-11-20 14:03:12",
        "2026-11-20 14:03:12\n",
        "2026-11-20T14:03:12Z\n",
        "\uff12\uff10\uff12\uff16-11-20 14:03:12",  # fullwidth digits
    ],
)
def test_datetime64_rejects_every_other_shape(value: str) -> None:
    assert_rejected("DateTime64", value)


@FEW
@given(non_string_json)
def test_datetime64_rejects_non_strings_such_as_epoch_numbers(value: Any) -> None:
    with pytest.raises(InvalidValue):
        datetime_parse(value)
    assert_rejected("DateTime64", value)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_datetime64_rejects_an_instant_outside_the_representable_range_with_an_error_not_a_crash(value: str) -> None:
    assert_rejected("DateTime64", value)


def test_record_with_an_unrepresentable_timestamp_is_rejected_not_crashed() -> None:
    validate = record_validator({"data": {}})
    valid, errors = validate(record(timestamp="0001-01-01T00:00:00+01:00"))
    assert valid is None
    assert "timestamp" in errors


# --- String -------------------------------------------------------------------------------------


@SOME
@given(st.text(max_size=300))
def test_string_accepts_any_json_string_unchanged(value: str) -> None:
    assert convert("String", value) == value


@FEW
@given(st.integers(min_value=0, max_value=4096), st.characters(codec="utf-8"))
def test_string_accepts_up_to_4096_characters(length: int, char: str) -> None:
    value = char * length
    assert convert("String", value) == value


@FEW
@given(st.integers(min_value=4097, max_value=20_000), st.characters(codec="utf-8"))
def test_string_rejects_strings_over_4096_characters(length: int, char: str) -> None:
    with pytest.raises(InvalidValue, match="4096"):
        convert("String", char * length)


def test_string_counts_characters_not_bytes() -> None:
    assert convert("String", "é" * 4096) == "é" * 4096
    assert_rejected("String", "x" * 4097)


@FEW
@given(non_string_json.filter(lambda v: v is not None))
def test_string_rejects_non_strings(value: Any) -> None:
    assert_rejected("String", value)


# --- UUID ---------------------------------------------------------------------------------------


@SOME
@given(st.uuids())
def test_uuid_accepts_the_canonical_form_unchanged(value: uuid.UUID) -> None:
    assert convert("UUID", str(value)) == str(value)


@FEW
@given(st.uuids())
def test_uuid_normalizes_uppercase_hex_to_canonical_lowercase(value: uuid.UUID) -> None:
    assert convert("UUID", str(value).upper()) == str(value)


@FEW
@given(
    st.uuids().flatmap(
        lambda u: st.sampled_from(
            [
                u.hex,
                "{" + str(u) + "}",
                "urn:uuid:" + str(u),
                " " + str(u),
                str(u) + " ",
                str(u)[:-1],
                str(u) + "0",
                str(u).replace("-", "_"),
                str(u)[:8] + str(u)[9:],
            ]
        )
    )
)
def test_uuid_rejects_non_canonical_spellings(value: str) -> None:
    assert_rejected("UUID", value)


@pytest.mark.parametrize(
    "value", ["", "not-a-uuid", "3f0c9a5e-8d2b-4c1e-9a77-0b6f2f1d4e2g", "3f0c9a5e8d2b4c1e9a770b6f2f1d4e21"]
)
def test_uuid_rejects_malformed_strings(value: str) -> None:
    assert_rejected("UUID", value)


@FEW
@given(st.one_of(non_string_json, st.uuids()))
def test_uuid_rejects_non_strings(value: Any) -> None:
    assert_rejected("UUID", value)


def test_uuid_rejects_a_trailing_newline_with_an_error_not_a_crash() -> None:
    assert_rejected("UUID", "3f0c9a5e-8d2b-4c1e-9a77-0b6f2f1d4e21\n")


# --- every type ---------------------------------------------------------------------------------


def test_there_is_a_converter_for_every_spec_type() -> None:
    assert (
        set(CONVERTERS)
        == set(BASE_TYPES)
        == {
            "Int64",
            "Float64",
            "Decimal",
            "Bool",
            "Date32",
            "DateTime64",
            "String",
            "UUID",
        }
    )


@pytest.mark.parametrize("type_name", BASE_TYPES)
def test_every_converter_rejects_null_arrays_and_objects(type_name: str) -> None:
    for value in (None, [], {}, [1], {"a": 1}):
        assert_rejected(type_name, value)


# --- the whole record ---------------------------------------------------------------------------

ALL_TYPES_SCHEMA = {
    "data": {
        **{f"r_{base.lower()}": base for base in BASE_TYPES},
        **{f"n_{base.lower()}": f"Nullable({base})" for base in BASE_TYPES},
    }
}
VALID_VALUES = {
    "Int64": 5,
    "Float64": 1.5,
    "Decimal": "12.50",
    "Bool": True,
    "Date32": "2026-11-20",
    "DateTime64": "2026-11-20 14:03:12",
    "String": "example",
    "UUID": "3F0C9A5E-8D2B-4C1E-9A77-0B6F2F1D4E21",
}
STORED_VALUES = {
    **VALID_VALUES,
    "DateTime64": "2026-11-20T14:03:12Z",
    "UUID": "3f0c9a5e-8d2b-4c1e-9a77-0b6f2f1d4e21",
}
REQUIRED_DATA = {f"r_{base.lower()}": VALID_VALUES[base] for base in BASE_TYPES}


def test_record_with_every_type_is_accepted_and_its_values_normalized() -> None:
    validate = record_validator(ALL_TYPES_SCHEMA)
    data = {**REQUIRED_DATA, **{f"n_{base.lower()}": VALID_VALUES[base] for base in BASE_TYPES}}

    valid, errors = validate(record(data, idempotency_key="k-1"))

    assert errors == {}
    assert isinstance(valid, ValidRecord)
    assert valid.customer_id == "cus_123"
    assert valid.timestamp == dt.datetime(2026, 11, 20, 14, 3, 12, tzinfo=dt.UTC)
    assert valid.idempotency_key == "k-1"
    assert valid.data == {
        **{f"r_{base.lower()}": STORED_VALUES[base] for base in BASE_TYPES},
        **{f"n_{base.lower()}": STORED_VALUES[base] for base in BASE_TYPES},
    }


NULLABLE_BASES = {f"n_{base.lower()}": base for base in BASE_TYPES}


@SOME
@given(st.fixed_dictionaries({name: st.sampled_from(["absent", "null", "value"]) for name in NULLABLE_BASES}))
def test_nullable_fields_may_be_absent_or_null(choice: dict[str, str]) -> None:
    validate = record_validator(ALL_TYPES_SCHEMA)
    data: dict[str, Any] = dict(REQUIRED_DATA)
    for name, how in choice.items():
        if how == "null":
            data[name] = None
        elif how == "value":
            data[name] = VALID_VALUES[NULLABLE_BASES[name]]

    valid, errors = validate(record(data))

    assert errors == {}
    assert valid is not None
    given_values = {name for name, how in choice.items() if how == "value"}
    assert set(valid.data) == set(REQUIRED_DATA) | given_values
    for name in given_values:
        assert valid.data[name] == STORED_VALUES[NULLABLE_BASES[name]]


def test_absent_and_null_nullable_fields_are_left_out_of_the_stored_data() -> None:
    validate = record_validator({"data": {"a": "Nullable(Int64)", "b": "Nullable(String)"}})
    valid, errors = validate(record({"b": None}))
    assert errors == {}
    assert valid is not None
    assert valid.data == {}


@pytest.mark.parametrize("base", BASE_TYPES)
@pytest.mark.parametrize("missing", ["absent", "null"])
def test_a_missing_required_field_is_reported_under_its_data_path(base: str, missing: str) -> None:
    validate = record_validator({"data": {"field": base}})
    data = {} if missing == "absent" else {"field": None}

    valid, errors = validate(record(data))

    assert valid is None
    assert errors == {"data.field": [REQUIRED]}


def test_every_missing_required_field_is_reported_at_once() -> None:
    validate = record_validator(ALL_TYPES_SCHEMA)
    valid, errors = validate(record({}))
    assert valid is None
    assert errors == {f"data.r_{base.lower()}": [REQUIRED] for base in BASE_TYPES}


def test_a_record_without_data_reports_its_required_fields() -> None:
    validate = record_validator({"data": {"hours": "Float64"}})
    valid, errors = validate({"customer_id": "c", "timestamp": "2026-11-20T14:03:12Z"})
    assert valid is None
    assert errors == {"data.hours": [REQUIRED]}


def test_a_wrongly_typed_field_is_reported_under_its_data_path() -> None:
    validate = record_validator({"data": {"cpu_hours": "Float64"}})
    valid, errors = validate(record({"cpu_hours": "5"}))
    assert valid is None
    assert errors == {"data.cpu_hours": ["Expected Float64, got string."]}


@FEW
@given(st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z").filter(lambda k: k != "hours"))
def test_keys_in_data_the_schema_does_not_name_are_rejected(key: str) -> None:
    validate = record_validator({"data": {"hours": "Nullable(Float64)"}})
    valid, errors = validate(record({"hours": 1.0, key: 1}))
    assert valid is None
    assert list(errors) == [f"data.{key}"]


def test_an_unknown_data_key_is_rejected_even_when_null() -> None:
    validate = record_validator({"data": {}})
    valid, errors = validate(record({"extra": None}))
    assert valid is None
    assert "data.extra" in errors


@pytest.mark.parametrize("key", ["extra", "id", "received_at", "Customer_id", "voided"])
def test_unknown_root_keys_are_rejected(key: str) -> None:
    validate = record_validator({"data": {}})
    valid, errors = validate(record({}, **{key: "x"}))
    assert valid is None
    assert key in errors


@pytest.mark.parametrize("length", [1, 2, 128, 255])
def test_customer_id_accepts_strings_of_1_to_255_characters(length: int) -> None:
    validate = record_validator({"data": {}})
    valid, errors = validate(record({}, customer_id="c" * length))
    assert errors == {}
    assert valid is not None
    assert valid.customer_id == "c" * length


@pytest.mark.parametrize("customer_id", ["", "c" * 256, "c" * 1000])
def test_customer_id_rejects_empty_and_over_255_characters(customer_id: str) -> None:
    validate = record_validator({"data": {}})
    valid, errors = validate(record({}, customer_id=customer_id))
    assert valid is None
    assert list(errors) == ["customer_id"]


@pytest.mark.parametrize("customer_id", [123, 1.5, True, ["c"], {"id": "c"}])
def test_customer_id_rejects_non_strings(customer_id: Any) -> None:
    validate = record_validator({"data": {}})
    valid, errors = validate(record({}, customer_id=customer_id))
    assert valid is None
    assert list(errors) == ["customer_id"]


@pytest.mark.parametrize("obj", [{"timestamp": "2026-11-20T14:03:12Z", "data": {}}, record({}, customer_id=None)])
def test_customer_id_is_required(obj: dict[str, Any]) -> None:
    valid, errors = record_validator({"data": {}})(obj)
    assert valid is None
    assert errors == {"customer_id": [REQUIRED]}


@pytest.mark.parametrize("obj", [{"customer_id": "c", "data": {}}, record({}, timestamp=None)])
def test_timestamp_is_required(obj: dict[str, Any]) -> None:
    valid, errors = record_validator({"data": {}})(obj)
    assert valid is None
    assert errors == {"timestamp": [REQUIRED]}


@pytest.mark.parametrize("timestamp", ["2026-11-20T14:03:12", "2026-11-20", 1763647392, "yesterday"])
def test_timestamp_must_be_a_datetime64(timestamp: Any) -> None:
    valid, errors = record_validator({"data": {}})(record({}, timestamp=timestamp))
    assert valid is None
    assert list(errors) == ["timestamp"]


@FEW
@given(safe_datetimes, offsets)
def test_timestamp_is_stored_as_an_aware_utc_datetime(local: dt.datetime, offset: dt.timedelta) -> None:
    text = local.isoformat(sep="T") + offset_text(offset, colon=True)
    valid, errors = record_validator({"data": {}})(record({}, timestamp=text))
    assert errors == {}
    assert valid is not None
    assert valid.timestamp == local.replace(tzinfo=dt.timezone(offset))
    assert valid.timestamp.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("length", [1, 64, 255])
def test_idempotency_key_accepts_1_to_255_characters(length: int) -> None:
    valid, errors = record_validator({"data": {}})(record({}, idempotency_key="k" * length))
    assert errors == {}
    assert valid is not None
    assert valid.idempotency_key == "k" * length


def test_idempotency_key_is_optional() -> None:
    validate = record_validator({"data": {}})
    for obj in (record({}), record({}, idempotency_key=None)):
        valid, errors = validate(obj)
        assert errors == {}
        assert valid is not None
        assert valid.idempotency_key is None


@pytest.mark.parametrize("key", ["", "k" * 256, 42, True, ["k"]])
def test_idempotency_key_rejects_empty_too_long_and_non_strings(key: Any) -> None:
    valid, errors = record_validator({"data": {}})(record({}, idempotency_key=key))
    assert valid is None
    assert list(errors) == ["idempotency_key"]


@pytest.mark.parametrize("data", [[], [{"hours": 1}], "hours=1", 5, 1.5, True])
def test_data_that_is_not_an_object_is_rejected(data: Any) -> None:
    valid, errors = record_validator({"data": {"hours": "Nullable(Float64)"}})(record(data))
    assert valid is None
    assert list(errors) == ["data"]


@FEW
@given(st.one_of(non_string_json.filter(lambda v: not isinstance(v, dict)), st.text(max_size=10)))
def test_a_top_level_non_object_is_rejected(obj: Any) -> None:
    valid, errors = record_validator({"data": {}})(obj)
    assert valid is None
    assert list(errors) == [""]


def test_all_record_errors_are_reported_together() -> None:
    validate = record_validator({"data": {"hours": "Float64"}})
    valid, errors = validate({"customer_id": "", "timestamp": "bad", "data": {"hours": True, "x": 1}, "y": 2})
    assert valid is None
    assert set(errors) == {"customer_id", "timestamp", "data.hours", "data.x", "y"}


def test_a_schema_change_compiles_a_new_validator() -> None:
    before = {"data": {"hours": "Int64"}}
    added = {"data": {"hours": "Int64", "region": "Nullable(String)"}}
    retyped = {"data": {"hours": "Float64"}}
    with_region = record({"hours": 2, "region": "eu"})
    fractional = record({"hours": 2.5})

    assert record_validator(before)(with_region)[1] == {
        "data.region": ["Unknown field; the usage event's schema does not name it."]
    }
    valid, errors = record_validator(added)(with_region)
    assert errors == {}
    assert valid is not None
    assert valid.data == {"hours": 2, "region": "eu"}

    assert "data.hours" in record_validator(before)(fractional)[1]
    assert record_validator(retyped)(fractional)[1] == {}
    # and the old schema still validates as before
    assert "data.region" in record_validator(before)(with_region)[1]


def test_the_same_schema_content_reuses_the_compiled_validator() -> None:
    one = record_validator({"data": {"a": "Int64", "b": "String"}})
    other = record_validator({"customer_id": "String", "data": {"b": "String", "a": "Int64"}})
    assert one is other


# --- dataschema_normalize -----------------------------------------------------------------------


def normalize_errors(raw: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as caught:
        dataschema_normalize(raw)
    return caught.value.errors


def test_normalize_adds_the_root_fields_and_keeps_the_types() -> None:
    assert dataschema_normalize({"data": {"hours": "Float64", "region": "Nullable(String)"}}) == {
        "customer_id": "String",
        "timestamp": "DateTime64",
        "data": {"hours": "Float64", "region": "Nullable(String)"},
    }


def test_normalize_accepts_explicit_roots_and_an_absent_data() -> None:
    raw = {"customer_id": "String", "timestamp": "DateTime64"}
    assert dataschema_normalize(raw) == {"customer_id": "String", "timestamp": "DateTime64", "data": {}}


@FEW
@given(
    st.dictionaries(
        st.from_regex(r"\A[a-z][a-z0-9_]{0,62}\Z").filter(lambda n: n not in {"id", "customer_id", "timestamp"}),
        st.sampled_from([*BASE_TYPES, *(f"Nullable({b})" for b in BASE_TYPES)]),
        max_size=10,
    )
)
def test_normalize_accepts_every_valid_field_name_and_type(data: dict[str, str]) -> None:
    assert dataschema_normalize({"data": data})["data"] == data


@pytest.mark.parametrize("raw", [[], "Int64", None, 5])
def test_normalize_rejects_a_schema_that_is_not_an_object(raw: Any) -> None:
    assert list(normalize_errors(raw)) == ["dataschema"]


def test_normalize_rejects_unknown_top_level_keys() -> None:
    assert list(normalize_errors({"data": {}, "fields": {}})) == ["dataschema.fields"]


@pytest.mark.parametrize(("root", "value"), [("customer_id", "Int64"), ("timestamp", "Date32"), ("timestamp", None)])
def test_normalize_rejects_root_fields_of_another_type(root: str, value: Any) -> None:
    assert list(normalize_errors({root: value, "data": {}})) == [f"dataschema.{root}"]


@pytest.mark.parametrize("data", [[], "hours: Int64", 5])
def test_normalize_rejects_data_that_is_not_an_object(data: Any) -> None:
    assert list(normalize_errors({"data": data})) == ["dataschema.data"]


def test_normalize_rejects_more_than_the_maximum_number_of_fields() -> None:
    data = {f"f{i}": "Int64" for i in range(MAX_FIELDS + 1)}
    assert "dataschema.data" in normalize_errors({"data": data})
    assert len(dataschema_normalize({"data": dict(list(data.items())[:MAX_FIELDS])})["data"]) == MAX_FIELDS


@pytest.mark.parametrize(
    "name", ["Hours", "1hours", "_hours", "hours-used", "hours used", "", "a" * 64, "héures", "hours.used"]
)
def test_normalize_rejects_field_names_outside_the_pattern(name: str) -> None:
    assert list(normalize_errors({"data": {name: "Int64"}})) == [f"dataschema.data.{name}"]


def test_normalize_accepts_a_63_character_field_name() -> None:
    assert dataschema_normalize({"data": {"a" * 63: "Int64"}})["data"] == {"a" * 63: "Int64"}


def test_normalize_rejects_a_field_name_with_a_trailing_newline() -> None:
    assert list(normalize_errors({"data": {"hours\n": "Int64"}})) == ["dataschema.data.hours\n"]


@pytest.mark.parametrize("name", ["id", "customer_id", "timestamp"])
def test_normalize_rejects_reserved_field_names(name: str) -> None:
    errors = normalize_errors({"data": {name: "String"}})
    assert list(errors) == [f"dataschema.data.{name}"]
    assert "reserved" in errors[f"dataschema.data.{name}"][0]


@pytest.mark.parametrize(
    "type_text",
    [
        "Integer",
        "int64",
        "Nullable(Integer)",
        "Nullable(Nullable(Int64))",
        "Nullable Int64",
        "Array(Int64)",
        "",
        " Int64",
    ],
)
def test_normalize_rejects_unknown_types(type_text: str) -> None:
    errors = normalize_errors({"data": {"field": type_text}})
    assert list(errors) == ["dataschema.data.field"]
    assert "Unknown type" in errors["dataschema.data.field"][0]


@pytest.mark.parametrize("type_value", [None, 5, ["Int64"], {"type": "Int64"}, True])
def test_normalize_rejects_types_that_are_not_strings(type_value: Any) -> None:
    errors = normalize_errors({"data": {"field": type_value}})
    assert list(errors) == ["dataschema.data.field"]
    assert "must be a string" in errors["dataschema.data.field"][0]


def test_normalize_reports_every_problem_at_once() -> None:
    errors = normalize_errors(
        {"customer_id": "Int64", "extra": 1, "data": {"Bad": "Int64", "id": "String", "ok": "Nope", "fine": "Int64"}}
    )
    assert set(errors) == {
        "dataschema.customer_id",
        "dataschema.extra",
        "dataschema.data.Bad",
        "dataschema.data.id",
        "dataschema.data.ok",
    }


# --- dataschema_change_problems -----------------------------------------------------------------


def schema(**data: str) -> dict[str, Any]:
    return dataschema_normalize({"data": data})


def test_an_unchanged_schema_has_no_problems() -> None:
    old = schema(hours="Float64", region="Nullable(String)")
    assert dataschema_change_problems(old, schema(hours="Float64", region="Nullable(String)")) == []


@pytest.mark.parametrize("base", BASE_TYPES)
def test_adding_a_nullable_field_is_allowed(base: str) -> None:
    assert dataschema_change_problems(schema(hours="Float64"), schema(hours="Float64", extra=f"Nullable({base})")) == []


@pytest.mark.parametrize("base", BASE_TYPES)
def test_adding_a_required_field_is_a_problem(base: str) -> None:
    problems = dataschema_change_problems(schema(hours="Float64"), schema(hours="Float64", extra=base))
    assert len(problems) == 1
    assert "'extra'" in problems[0]
    assert f"Nullable({base})" in problems[0]


@pytest.mark.parametrize("removed_type", ["Float64", "Nullable(String)"])
def test_removing_a_field_is_a_problem(removed_type: str) -> None:
    problems = dataschema_change_problems(schema(hours="Float64", gone=removed_type), schema(hours="Float64"))
    assert len(problems) == 1
    assert "'gone'" in problems[0]
    assert "removed" in problems[0]


@pytest.mark.parametrize(
    ("old_type", "new_type"),
    [
        ("Int64", "Float64"),
        ("Float64", "Decimal"),
        ("String", "UUID"),
        ("Nullable(Int64)", "Int64"),
        ("Int64", "Nullable(Int64)"),
        ("Nullable(Date32)", "Nullable(DateTime64)"),
    ],
)
def test_retyping_a_field_is_a_problem(old_type: str, new_type: str) -> None:
    problems = dataschema_change_problems(schema(field=old_type), schema(field=new_type))
    assert len(problems) == 1
    assert "'field'" in problems[0]
    assert old_type in problems[0]
    assert new_type in problems[0]


def test_every_incompatible_change_is_reported() -> None:
    old = schema(kept="Int64", removed="String", retyped="Int64")
    new = schema(kept="Int64", retyped="String", added="Bool", optional="Nullable(Bool)")
    problems = dataschema_change_problems(old, new)
    assert len(problems) == 3
    assert any("'removed'" in p for p in problems)
    assert any("'retyped'" in p for p in problems)
    assert any("'added'" in p for p in problems)
