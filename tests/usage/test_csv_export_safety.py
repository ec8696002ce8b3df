"""SPEC §6's CSV exports are safe to open in a spreadsheet: no cell is run as a formula.

OWASP's "CSV Injection": a cell starting with =, +, -, @, a tab or a carriage return is read as a
formula, so the exports write it with a leading single quote. A cell that is wholly a negative
number stays as it is, so a negative amount is still a number.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from django.test import Client

from metrics.models import BillableMetric, MetricKind, MetricValue
from tests.factories import organisation_admin, usage_event_make
from usage.models import UsageEvent, UsageRecord
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.csvstream import csv_cell

HYPERLINK = '=HYPERLINK("http://x")'
AT = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def admin_client(client: Client, organisation: Organisation) -> Client:
    client.force_login(organisation_admin(organisation))
    return client


@pytest.fixture
def jobs(organisation: Organisation) -> UsageEvent:
    return usage_event_make(
        organisation=organisation,
        api_slug="jobs",
        name="Jobs",
        data={"note": "Nullable(String)", "units": "Nullable(Int64)", "cost": "Nullable(Decimal)"},
    )


def record(usage_event: UsageEvent, customer_id: str, data: dict[str, Any], key: str | None = None) -> UsageRecord:
    return UsageRecord.objects.create(
        usage_event=usage_event,
        customer_id=customer_id,
        timestamp=AT,
        data=data,
        idempotency_key=key,
        content_hash="x",
        received_at=AT,
    )


def exported(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_records_export_prefixes_every_formula_cell_with_a_quote(admin_client: Client, jobs: UsageEvent) -> None:
    record(jobs, HYPERLINK, {"note": "+1", "units": -3, "cost": "-3.50"}, key="@SUM(A1)")
    record(jobs, "cus_b", {"note": "@SUM(A1)"}, key="\tkey")
    record(jobs, "cus_c", {"note": "\t=1+1", "units": 4}, key="-k")
    record(jobs, "cus_d", {"note": "\r=1+1", "cost": "-0.25"})
    record(jobs, "cus_e", {"note": "-1+cmd|' /C calc'!A0"})
    record(jobs, "-42", {"note": "-2"})

    rows = exported(admin_client.get("/usage-events/jobs/export.csv"))

    assert [(row["customer_id"], row["note"], row["units"], row["cost"], row["idempotency_key"]) for row in rows] == [
        ("'" + HYPERLINK, "'+1", "-3", "-3.50", "'@SUM(A1)"),
        ("cus_b", "'@SUM(A1)", "", "", "'\tkey"),
        ("cus_c", "'\t=1+1", "4", "", "'-k"),
        ("cus_d", "'\r=1+1", "", "-0.25", ""),
        ("cus_e", "'-1+cmd|' /C calc'!A0", "", "", ""),
        ("-42", "-2", "", "", ""),  # wholly negative numbers stay numbers
    ]


def test_metric_values_export_prefixes_a_formula_customer_id_and_keeps_negative_amounts(
    admin_client: Client, organisation: Organisation, jobs: UsageEvent
) -> None:
    metric = BillableMetric.objects.create(
        organisation=organisation,
        name="Cost",
        slug="cost",
        kind=MetricKind.SQL,
        sql="SELECT customer_id, sum(cost) AS quantity FROM jobs GROUP BY customer_id",
        granularity="day",
    )
    for customer_id, computed, override in ((HYPERLINK, "-3.5", None), ("+cus", "2", "-1"), ("@cus", None, None)):
        MetricValue.objects.create(
            metric=metric,
            customer_id=customer_id,
            period_start=AT.replace(hour=0),
            period_end=AT.replace(hour=0) + dt.timedelta(days=1),
            dimension={"region": "=1+1"},  # JSON starts with "{": nothing to neutralise
            dimension_key=customer_id,
            computed_value=computed,
            override_value=override,
            metric_version=1,
        )

    rows = exported(admin_client.get("/metrics/cost/export.csv"))

    assert sorted(
        (row["customer_id"], row["dimension"], row["computed_value"], row["override_value"], row["value"])
        for row in rows
    ) == [
        ("'+cus", '{"region":"=1+1"}', "2", "-1", "-1"),
        ("'" + HYPERLINK, '{"region":"=1+1"}', "-3.5", "", "-3.5"),
        ("'@cus", '{"region":"=1+1"}', "", "", ""),
    ]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\r=x", "'\r=x"),
        ("-", "'-"),
        ("-1+cmd|' /C calc'!A0", "'-1+cmd|' /C calc'!A0"),
        ("- 1", "'- 1"),
        ("-1 ", "'-1 "),
        ("-inf", "'-inf"),
        (float("-inf"), "'-inf"),
        ("-0x1A", "'-0x1A"),
    ],
)
def test_a_cell_that_starts_like_a_formula_gets_a_quote(value: Any, cell: str) -> None:
    assert csv_cell(value) == cell


def test_only_a_cell_that_is_wholly_a_negative_number_keeps_its_minus() -> None:
    values = ["-3.5", -3.5, -7, "-1e3", "-.5", "-2.", "-3.5;=1", "-3.5\n=1", "-3.5e", "--1"]

    assert [csv_cell(value) for value in values] == [
        "-3.5", "-3.5", "-7", "-1e3", "-.5", "-2.", "'-3.5;=1", "'-3.5\n=1", "'-3.5e", "'--1"
    ]  # fmt: skip


@pytest.mark.django_db
def test_an_export_filtered_by_a_customer_id_with_a_nul_is_a_400_naming_it(
    admin_client: Client, compute_hours: UsageEvent
) -> None:
    response = admin_client.get("/usage-events/compute_hours/export.csv", {"customer": "a\x00b"})

    assert response.status_code == 400
    assert "customer" in response.content.decode()
