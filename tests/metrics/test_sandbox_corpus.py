"""One corpus of SQL metrics, run on whichever database the pass uses, against the same records.

SPEC §5: a SQL metric is written in PostgreSQL's dialect and runs on either database. Each query
below exercises one of the sandbox's SQLite translations (date_trunc, extract, casts to dates and
timestamps, ± INTERVAL, concat, comparisons with literal dates) or one of the values PostgreSQL and
SQLite hand back differently (timestamps, dates, decimals, booleans as a dimension). The expected
rows were worked out once, by hand and with Python's datetime, and are written here: the SQLite
pass and the PostgreSQL pass must both answer them. Where SQLite cannot answer as PostgreSQL does,
the entry names the refusal SQLite gives instead, and PostgreSQL's answer is still checked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection

from metrics.sandbox import SandboxError, SandboxTable, sql_metric_compile, sql_metric_execute
from tests.factories import usage_event_make
from usage.models import UsageEvent, UsageRecord
from zenskar_site.accounts.models import Organisation

FIELDS = {
    "at": "Nullable(DateTime64)",
    "day": "Nullable(Date32)",
    "label": "String",
    "n": "Nullable(Int64)",
    "cost": "Nullable(Decimal)",
    "spot": "Nullable(Bool)",
    "x": "Nullable(Float64)",
}

UTC = dt.UTC
# One record per customer; data as ingestion stores it (DateTime64 in UTC with a Z, Decimal as text).
# r1 is a Saturday with a fraction of a second, r2 a Sunday at midnight, r3 a Monday one microsecond
# before the last second ends, r4 in the previous year's last quarter, r5 a Sunday at a month's end.
RECORDS: dict[str, tuple[dt.datetime, dict[str, Any]]] = {
    "r1": (
        dt.datetime(2026, 1, 10, 12, 34, 56, 250000, tzinfo=UTC),
        {
            "at": "2026-03-31T23:59:59.999999Z",
            "day": "2024-02-29",
            "label": "r1",
            "n": -3,
            "cost": "12.50",
            "spot": True,
            "x": 2.0,
        },
    ),
    "r2": (
        dt.datetime(2026, 1, 11, 0, 0, 0, tzinfo=UTC),
        {
            "at": "2028-02-29T06:00:00Z",
            "day": "2026-12-31",
            "label": "r2",
            "n": 7,
            "cost": "0.10",
            "spot": False,
            "x": 0.5,
        },
    ),
    "r3": (
        dt.datetime(2026, 1, 12, 23, 59, 59, 1, tzinfo=UTC),
        {
            "at": "2026-01-31T10:00:00Z",
            "day": "2026-01-31",
            "label": "r3",
            "n": 0,
            "cost": "3",
            "spot": True,
            "x": -1.25,
        },
    ),
    "r4": (
        dt.datetime(2025, 12, 31, 23, 0, 0, tzinfo=UTC),
        {"day": "2026-01-01", "label": "r4", "cost": "100.000"},
    ),
    "r5": (
        dt.datetime(2026, 5, 31, 8, 15, 7, 123456, tzinfo=UTC),
        {"at": "2026-08-31T12:00:00Z", "label": "r5", "n": 42, "spot": False, "x": 3.0},
    ),
}
CUSTOMERS = tuple(RECORDS)


@dataclass(frozen=True)
class Case:
    """A query returning one row per record: `value` is the quantity or, with `dimension=True`, the dimension."""

    sql_value: str
    expected: tuple[str | None, ...]  # per customer r1..r5
    dimension: bool = False
    sqlite_refusal: str | None = None  # the refusal SQLite answers instead (PostgreSQL-only)

    @property
    def sql(self) -> str:
        if self.dimension:
            select = f"customer_id, 1 AS quantity, {self.sql_value} AS dimension"
        else:
            select = f"customer_id, {self.sql_value} AS quantity"
        return f"SELECT {select} FROM corpus"

    def rows(self) -> list[tuple[str, str | None, str | None]]:
        if self.dimension:
            return [(customer, "1", value) for customer, value in zip(CUSTOMERS, self.expected, strict=True)]
        return [(customer, value, None) for customer, value in zip(CUSTOMERS, self.expected, strict=True)]


def _days(*texts: str | None) -> tuple[str | None, ...]:
    return tuple(f"{text} 00:00:00" if text is not None else None for text in texts)


CORPUS = [
    # --- extract ---
    pytest.param(
        Case('extract(second FROM "timestamp")', ("56.25", "0", "59.000001", "0", "7.123456")), id="extract-second"
    ),
    pytest.param(
        Case(
            'extract(epoch FROM "timestamp")',
            ("1768048496.25", "1768089600", "1768262399.000001", "1767222000", "1780215307.123456"),
        ),
        id="extract-epoch",
    ),
    pytest.param(
        Case(
            "concat(extract(year FROM \"timestamp\"), '|', extract(quarter FROM \"timestamp\"), '|', "
            "extract(month FROM \"timestamp\"), '|', extract(day FROM \"timestamp\"), '|', "
            "extract(hour FROM \"timestamp\"), '|', extract(minute FROM \"timestamp\"), '|', "
            "extract(dow FROM \"timestamp\"), '|', extract(isodow FROM \"timestamp\"), '|', "
            "date_part('doy', \"timestamp\"))",
            (
                "2026|1|1|10|12|34|6|6|10",
                "2026|1|1|11|0|0|0|7|11",
                "2026|1|1|12|23|59|1|1|12",
                "2025|4|12|31|23|0|3|3|365",
                "2026|2|5|31|8|15|0|7|151",
            ),
            dimension=True,
        ),
        id="extract-fields",
    ),
    pytest.param(
        Case('100 / extract(quarter FROM "timestamp")', ("100", "100", "100", "25", "50")), id="extract-quarter-divides"
    ),
    pytest.param(
        Case('extract(isodow FROM "timestamp") * 10', ("60", "70", "10", "30", "70")), id="extract-isodow-multiplies"
    ),
    pytest.param(Case("extract(doy FROM day)", ("60", "365", "31", "1", None)), id="extract-date-field"),
    pytest.param(
        Case(
            "extract(epoch FROM date_trunc('hour', at))",
            ("1774998000", "1835416800", "1769853600", None, "1788177600"),
        ),
        id="extract-epoch-of-truncated-datetime-field",
    ),
    # --- date_trunc ---
    pytest.param(
        Case(
            "date_trunc('second', \"timestamp\")",
            (
                "2026-01-10 12:34:56",
                "2026-01-11 00:00:00",
                "2026-01-12 23:59:59",
                "2025-12-31 23:00:00",
                "2026-05-31 08:15:07",
            ),
            dimension=True,
        ),
        id="trunc-second",
    ),
    pytest.param(
        Case(
            "date_trunc('minute', \"timestamp\")",
            (
                "2026-01-10 12:34:00",
                "2026-01-11 00:00:00",
                "2026-01-12 23:59:00",
                "2025-12-31 23:00:00",
                "2026-05-31 08:15:00",
            ),
            dimension=True,
        ),
        id="trunc-minute",
    ),
    pytest.param(
        Case(
            "date_trunc('hour', \"timestamp\")",
            (
                "2026-01-10 12:00:00",
                "2026-01-11 00:00:00",
                "2026-01-12 23:00:00",
                "2025-12-31 23:00:00",
                "2026-05-31 08:00:00",
            ),
            dimension=True,
        ),
        id="trunc-hour",
    ),
    pytest.param(
        Case(
            "date_trunc('day', \"timestamp\")",
            _days("2026-01-10", "2026-01-11", "2026-01-12", "2025-12-31", "2026-05-31"),
            dimension=True,
        ),
        id="trunc-day",
    ),
    pytest.param(
        # Weeks start on Monday: a Saturday and the Sunday after it fall in the week of Monday the 5th.
        Case(
            "date_trunc('week', \"timestamp\")",
            _days("2026-01-05", "2026-01-05", "2026-01-12", "2025-12-29", "2026-05-25"),
            dimension=True,
        ),
        id="trunc-week",
    ),
    pytest.param(
        Case(
            "date_trunc('month', \"timestamp\")",
            _days("2026-01-01", "2026-01-01", "2026-01-01", "2025-12-01", "2026-05-01"),
            dimension=True,
        ),
        id="trunc-month",
    ),
    pytest.param(
        Case(
            "date_trunc('quarter', \"timestamp\")",
            _days("2026-01-01", "2026-01-01", "2026-01-01", "2025-10-01", "2026-04-01"),
            dimension=True,
        ),
        id="trunc-quarter",
    ),
    pytest.param(
        Case(
            "date_trunc('year', \"timestamp\")",
            _days("2026-01-01", "2026-01-01", "2026-01-01", "2025-01-01", "2026-01-01"),
            dimension=True,
        ),
        id="trunc-year",
    ),
    pytest.param(
        Case(
            "date_trunc('month', day)",
            _days("2024-02-01", "2026-12-01", "2026-01-01", "2026-01-01", None),
            dimension=True,
        ),
        id="trunc-date-field",
    ),
    pytest.param(
        Case(
            "date_trunc('day', \"timestamp\", 'Europe/Paris')",
            (
                "2026-01-09 23:00:00",
                "2026-01-10 23:00:00",
                "2026-01-12 23:00:00",
                "2025-12-31 23:00:00",
                "2026-05-30 22:00:00",
            ),
            dimension=True,
            sqlite_refusal="other time zones are PostgreSQL-only",
        ),
        id="trunc-in-a-time-zone",
    ),
    # --- ± INTERVAL: PostgreSQL keeps the fraction of a second and clamps to a month's last day ---
    pytest.param(
        Case(
            "\"timestamp\" + INTERVAL '1 month'",
            (
                "2026-02-10 12:34:56.250000",
                "2026-02-11 00:00:00",
                "2026-02-12 23:59:59.000001",
                "2026-01-31 23:00:00",
                "2026-06-30 08:15:07.123456",
            ),
            dimension=True,
        ),
        id="plus-month",
    ),
    pytest.param(
        Case(
            "at + INTERVAL '1 year'",
            ("2027-03-31 23:59:59.999999", "2029-02-28 06:00:00", "2027-01-31 10:00:00", None, "2027-08-31 12:00:00"),
            dimension=True,
        ),
        id="plus-year-from-a-leap-day",
    ),
    pytest.param(
        Case(
            "at - INTERVAL '1 month'",
            ("2026-02-28 23:59:59.999999", "2028-01-29 06:00:00", "2025-12-31 10:00:00", None, "2026-07-31 12:00:00"),
            dimension=True,
        ),
        id="minus-month",
    ),
    pytest.param(
        Case(
            "\"timestamp\" - INTERVAL '36 hours'",
            (
                "2026-01-09 00:34:56.250000",
                "2026-01-09 12:00:00",
                "2026-01-11 11:59:59.000001",
                "2025-12-30 11:00:00",
                "2026-05-29 20:15:07.123456",
            ),
            dimension=True,
        ),
        id="minus-hours",
    ),
    pytest.param(
        Case(
            "INTERVAL '2 weeks' + \"timestamp\"",
            (
                "2026-01-24 12:34:56.250000",
                "2026-01-25 00:00:00",
                "2026-01-26 23:59:59.000001",
                "2026-01-14 23:00:00",
                "2026-06-14 08:15:07.123456",
            ),
            dimension=True,
        ),
        id="interval-plus-weeks",
    ),
    pytest.param(
        Case(
            "\"timestamp\" + INTERVAL '-90 seconds'",
            (
                "2026-01-10 12:33:26.250000",
                "2026-01-10 23:58:30",
                "2026-01-12 23:58:29.000001",
                "2025-12-31 22:58:30",
                "2026-05-31 08:13:37.123456",
            ),
            dimension=True,
        ),
        id="plus-negative-seconds",
    ),
    pytest.param(
        Case(
            "day + INTERVAL '1 month'",
            _days("2024-03-29", "2027-01-31", "2026-02-28", "2026-02-01", None),
            dimension=True,
        ),
        id="date-plus-month",
    ),
    pytest.param(
        Case(
            "\"timestamp\" + INTERVAL '1.5 days'",
            (
                "2026-01-12 00:34:56.250000",
                "2026-01-12 12:00:00",
                "2026-01-14 11:59:59.000001",
                "2026-01-02 11:00:00",
                "2026-06-01 20:15:07.123456",
            ),
            dimension=True,
            sqlite_refusal="must be a whole number of days (fractions are PostgreSQL-only)",
        ),
        id="fractional-interval",
    ),
    # --- casts to dates and timestamps ---
    pytest.param(
        Case(
            'CAST("timestamp" AS DATE)',
            ("2026-01-10", "2026-01-11", "2026-01-12", "2025-12-31", "2026-05-31"),
            dimension=True,
        ),
        id="timestamp-as-date",
    ),
    pytest.param(
        Case(
            "CAST(day AS TIMESTAMP)",
            _days("2024-02-29", "2026-12-31", "2026-01-31", "2026-01-01", None),
            dimension=True,
        ),
        id="date-as-timestamp",
    ),
    pytest.param(
        Case(
            "at::timestamp",
            ("2026-03-31 23:59:59.999999", "2028-02-29 06:00:00", "2026-01-31 10:00:00", None, "2026-08-31 12:00:00"),
            dimension=True,
        ),
        id="datetime-field-as-timestamp-keeps-microseconds",
    ),
    pytest.param(
        Case(
            "coalesce(at, '2000-01-01')",
            (
                "2026-03-31 23:59:59.999999",
                "2028-02-29 06:00:00",
                "2026-01-31 10:00:00",
                "2000-01-01 00:00:00",
                "2026-08-31 12:00:00",
            ),
            dimension=True,
        ),
        id="literal-date-read-as-a-timestamp",
    ),
    # --- comparisons: literal moments and dates against timestamps ---
    pytest.param(
        Case("CASE WHEN \"timestamp\" >= '2026-01-11' THEN 1 ELSE 0 END", ("0", "1", "1", "0", "1")),
        id="compare-with-a-date-literal",
    ),
    pytest.param(
        Case(
            "CASE WHEN \"timestamp\" BETWEEN '2026-01-10T12:34:56.25Z' AND '2026-01-11 00:00' THEN 1 ELSE 0 END",
            ("1", "1", "0", "0", "0"),
        ),
        id="between-iso-literals",
    ),
    pytest.param(
        Case(
            "CASE WHEN \"timestamp\" IN ('2026-01-11T00:00:00Z', '2025-12-31 23:00') THEN 1 ELSE 0 END",
            ("0", "1", "0", "1", "0"),
        ),
        id="in-iso-literals",
    ),
    pytest.param(
        Case(
            'CASE WHEN date_trunc(\'day\', "timestamp") = CAST("timestamp" AS DATE) THEN 1 ELSE 0 END',
            ("1", "1", "1", "1", "1"),
        ),
        id="date-equals-its-midnight",
    ),
    pytest.param(
        Case(
            "CASE WHEN \"timestamp\" < '2026-01-11T02:00:00+02:00' THEN 1 ELSE 0 END",
            ("1", "0", "0", "1", "0"),
            sqlite_refusal="as ISO 8601 in UTC",
        ),
        id="literal-with-an-offset",
    ),
    # --- text ---
    pytest.param(
        Case("concat(label, ':', n, NULL)", ("r1:-3", "r2:7", "r3:0", "r4:", "r5:42"), dimension=True),
        id="concat-skips-nulls",
    ),
    pytest.param(Case("label || '/' || n", ("r1/-3", "r2/7", "r3/0", None, "r5/42"), dimension=True), id="pipes"),
    pytest.param(
        Case('CAST(extract(day FROM "timestamp") AS TEXT)', ("10", "11", "12", "31", "31"), dimension=True),
        id="integer-as-text",
    ),
    pytest.param(
        Case("CAST(day AS TEXT)", ("2024-02-29", "2026-12-31", "2026-01-31", "2026-01-01", None), dimension=True),
        id="date-as-text",
    ),
    pytest.param(
        Case(
            "CAST(date_trunc('day', \"timestamp\") AS TEXT)",
            (
                "2026-01-10 00:00:00+00",
                "2026-01-11 00:00:00+00",
                "2026-01-12 00:00:00+00",
                "2025-12-31 00:00:00+00",
                "2026-05-31 00:00:00+00",
            ),
            dimension=True,
            sqlite_refusal="turning a timestamp into text",
        ),
        id="truncated-timestamp-as-text",
    ),
    pytest.param(
        Case(
            'CAST("timestamp" AS TEXT)',
            (
                "2026-01-10 12:34:56.25+00",
                "2026-01-11 00:00:00+00",
                "2026-01-12 23:59:59.000001+00",
                "2025-12-31 23:00:00+00",
                "2026-05-31 08:15:07.123456+00",
            ),
            dimension=True,
            sqlite_refusal="turning a timestamp into text",
        ),
        id="timestamp-as-text",
    ),
    pytest.param(
        Case(
            "concat(label, x)",
            ("r12", "r20.5", "r3-1.25", "r4", "r53"),
            dimension=True,
            sqlite_refusal="turning a floating-point number into text",
        ),
        id="float-as-text",
    ),
    pytest.param(
        Case(
            'extract(epoch FROM "timestamp" - date_trunc(\'day\', "timestamp"))',
            ("45296.25", "0", "86399.000001", "82800", "29707.123456"),
            sqlite_refusal="date arithmetic other than timestamp ± INTERVAL",
        ),
        id="timestamp-difference",
    ),
    # --- values handed back differently: the dimension's text is the same ---
    pytest.param(Case("spot", ("true", "false", "true", None, "false"), dimension=True), id="boolean-dimension"),
    pytest.param(Case("cost", ("12.5", "0.1", "3", "100", None), dimension=True), id="decimal-dimension"),
    pytest.param(Case("x", ("2", "0.5", "-1.25", None, "3"), dimension=True), id="float-dimension"),
]


@pytest.fixture
def corpus(organisation: Organisation) -> UsageEvent:
    event = usage_event_make(organisation=organisation, api_slug="corpus", name="Corpus", data=dict(FIELDS))
    for customer, (moment, data) in RECORDS.items():
        UsageRecord.objects.create(
            usage_event=event, customer_id=customer, timestamp=moment, data=data, content_hash="x", received_at=moment
        )
    return event


@pytest.mark.parametrize("case", CORPUS)
def test_the_corpus_gives_postgresqls_answers_on_either_database(corpus: UsageEvent, case: Case) -> None:
    tables = {"corpus": SandboxTable(slug="corpus", usage_event_id=corpus.id, fields=dict(FIELDS))}

    if connection.vendor == "sqlite" and case.sqlite_refusal is not None:
        with pytest.raises(SandboxError) as refused:
            sql_metric_compile(sql=case.sql, tables=tables, vendor="sqlite")
        assert case.sqlite_refusal in refused.value.errors["sql"][0]
        assert "PostgreSQL-only" in refused.value.errors["sql"][0]
        return
    compiled = sql_metric_compile(sql=case.sql, tables=tables, vendor=connection.vendor)
    rows = sql_metric_execute(
        compiled=compiled,
        period_start=dt.datetime(2026, 1, 1, tzinfo=UTC),
        period_end=dt.datetime(2026, 2, 1, tzinfo=UTC),
    )

    assert sorted(rows) == case.rows()
