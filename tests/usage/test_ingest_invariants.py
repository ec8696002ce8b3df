"""What the batch path's shortcuts must keep: a record's content hash, its dirty hours, its timestamp's
instant and its columns are exactly what they were before (stored hashes are compared with retries')."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usage.dirty import dirty_hours
from usage.ingestion import content_hash_of
from usage.ingestion.statements import RECORD_COLUMNS, RecordRow
from usage.schema import InvalidValue, ValidRecord, datetime_format, datetime_parse
from zenskar_site.lib.periods import hour_floor

SOME = settings(max_examples=200, deadline=None)

utc_moments = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999), timezones=st.just(dt.UTC)
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
# Away from the ends of the calendar, where an offset would carry the instant out of years 1-9999 in UTC.
moments = st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=offsets)
json_values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
data = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), json_values, max_size=6)


def hash_as_first_stored(record: ValidRecord) -> str:
    """The definition the stored hashes were made with: the timestamp as datetime_format's text."""
    canonical = orjson.dumps(
        [record.customer_id, datetime_format(record.timestamp), record.data], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


def test_a_known_records_content_hash_never_changes() -> None:
    record = ValidRecord(
        customer_id="cus_123",
        timestamp=dt.datetime(2026, 11, 20, 14, 3, 12, 500000, tzinfo=dt.UTC),
        data={"region": "eu-west-1", "cpu_usage_hours": 5.25},
        idempotency_key="k-1",
    )
    assert content_hash_of(record) == hash_as_first_stored(record)
    assert content_hash_of(record) == "6a11416d050237389c714e97598fa6ef227f4b009bbf4bb09580671fa1688d26"


@SOME
@given(st.text(min_size=1), utc_moments | moments, data)
def test_the_content_hash_is_the_same_bytes_as_with_the_timestamps_text(
    customer_id: str, moment: dt.datetime, values: dict[str, Any]
) -> None:
    record = ValidRecord(customer_id=customer_id, timestamp=moment, data=values, idempotency_key=None)
    try:
        expected = hash_as_first_stored(record)
    except orjson.JSONEncodeError:  # a lone surrogate: never valid, and refused by both
        return
    assert content_hash_of(record) == expected


@SOME
@given(st.lists(utc_moments | moments, max_size=40))
def test_dirty_hours_are_the_distinct_utc_hours_in_order(given_moments: list[dt.datetime]) -> None:
    assert dirty_hours(given_moments) == sorted({hour_floor(moment) for moment in given_moments})
    assert all(hour.tzinfo is dt.UTC for hour in dirty_hours(given_moments))


@SOME
@given(utc_moments, st.sampled_from(["Z", "+00:00"]), st.sampled_from(["T", " "]), st.integers(0, 9))
def test_a_utc_timestamp_is_read_as_its_instant_in_utc(
    moment: dt.datetime, suffix: str, separator: str, digits: int
) -> None:
    fraction = f".{moment.microsecond:06d}987"[: digits + 1] if digits else ""  # up to nanoseconds
    text = moment.replace(tzinfo=None, microsecond=0).isoformat(sep=separator) + fraction + suffix
    expected = moment.replace(microsecond=int(fraction[1:7].ljust(6, "0")) if digits else 0)

    parsed = datetime_parse(text)

    assert parsed == expected
    assert parsed.tzinfo is dt.UTC


@pytest.mark.parametrize("text", ["2026-02-30T10:00:00Z", "2026-02-29T10:00:00+00:00", "2026-11-20 24:00:00Z"])
def test_a_utc_timestamp_that_does_not_exist_is_refused_with_the_offset_forms_message(text: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        datetime_parse(text)
    assert str(refused.value) == "Expected DateTime64, got a date or time that does not exist in UTC."


def test_a_record_rows_fields_are_the_per_record_columns_in_order() -> None:
    assert RecordRow._fields == tuple(column.name for column in RECORD_COLUMNS if column.per_record)
