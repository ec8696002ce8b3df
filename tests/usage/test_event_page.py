"""SPEC §7: a usage event's dashboard page lists its records, its error log and a chart of volume."""

from __future__ import annotations

import datetime as dt
import json
import re
from html import escape
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import ApiKeyBundle, organisation_admin, organisation_make, usage_event_make
from usage.models import UsageEvent, UsageRecord
from usage.selectors import records_volume
from zenskar_site.accounts.models import Organisation

PAGE = "/usage-events/compute_hours/"


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def rec(customer_id: str = "cus_1", *, at: dt.datetime | None = None, **extra: Any) -> dict[str, Any]:
    moment = at or timezone.now() - dt.timedelta(minutes=1)
    return {"customer_id": customer_id, "timestamp": iso(moment), "data": {"cpu_usage_hours": 5}, **extra}


@pytest.fixture
def send(client: Client, ingest_key: ApiKeyBundle, compute_hours: UsageEvent) -> Any:
    """POST records to the ingestion endpoint, optionally as if the server's clock read `received_at`."""

    def post(
        records: list[dict[str, Any]], *, slug: str = "compute_hours", received_at: dt.datetime | None = None
    ) -> Any:
        def request() -> Any:
            return client.post(
                f"/usage/{slug}",
                data=json.dumps(records),
                content_type="application/json",
                HTTP_X_API_KEY=ingest_key.secret,
            )

        if received_at is None:
            return request()
        with mock.patch("django.utils.timezone.now", return_value=received_at):
            return request()

    return post


@pytest.fixture
def admin_client(client: Client, organisation: Organisation) -> Client:
    client.force_login(organisation_admin(organisation))
    return client


def listed_ids(response: Any) -> list[int]:
    return [row.record.id for row in response.context["records"]]


def records_table(response: Any) -> str:
    html = response.content.decode()
    match = re.search(r'<table[^>]*id="records-table".*?</table>', html, re.S)
    return match.group(0) if match else ""


# --- records ---


def test_records_appear_newest_first_with_their_data(send: Any, admin_client: Client) -> None:
    send([rec("cus_a", idempotency_key="key-1"), rec("cus_b"), rec("cus_c", data={"cpu_usage_hours": 1.5})])

    response = admin_client.get(PAGE)

    assert response.status_code == 200
    stored = list(UsageRecord.objects.order_by("-id").values_list("id", flat=True))
    assert listed_ids(response) == stored
    table = records_table(response)
    for customer in ("cus_a", "cus_b", "cus_c"):
        assert customer in table
    assert "key-1" in table
    assert escape('{"cpu_usage_hours":1.5}') in table  # compact JSON
    # The existing parts of the page are still there.
    assert 'id="endpoint-url"' in response.content.decode()
    assert response.context["schema_json"]


def test_superseded_and_voided_records_carry_a_badge(
    client: Client, organisation: Organisation, ingest_key: ApiKeyBundle, admin_client: Client
) -> None:
    usage_event_make(
        organisation=organisation,
        api_slug="seats",
        name="Seats",
        data={"seats": "Int64"},
        kind="aggregate",
        aggregate_period="day",
    )
    moment = iso(timezone.now() - dt.timedelta(minutes=1))
    for seats in (1, 2):
        client.post(
            "/usage/seats",
            data=json.dumps({"customer_id": "cus_1", "timestamp": moment, "data": {"seats": seats}}),
            content_type="application/json",
            HTTP_X_API_KEY=ingest_key.secret,
        )
    # There is no void service yet (SPEC §6 corrections): set the flag directly to see it rendered.
    UsageRecord.objects.filter(superseded=False).update(voided=True)

    table = records_table(admin_client.get("/usage-events/seats/"))

    assert table.count('class="badge superseded"') == 1
    assert table.count('class="badge voided"') == 1


def test_records_are_filtered_by_customer(send: Any, admin_client: Client) -> None:
    send([rec("cus_a"), rec("cus_b"), rec("cus_a")])

    response = admin_client.get(PAGE, {"customer_id": "cus_a"})

    expected = list(UsageRecord.objects.filter(customer_id="cus_a").order_by("-id").values_list("id", flat=True))
    assert listed_ids(response) == expected
    assert len(expected) == 2
    assert "cus_b" not in records_table(response)


def test_records_are_filtered_by_time_read_as_utc(send: Any, admin_client: Client) -> None:
    hour = timezone.now().astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    send([rec(at=hour - dt.timedelta(hours=h, minutes=-30)) for h in (5, 3, 1)])
    five, three, one = UsageRecord.objects.order_by("timestamp")

    # datetime-local inputs send no zone: "04:00" means 04:00 UTC; "from" is inclusive, "to" exclusive.
    window = {
        "start": f"{hour - dt.timedelta(hours=4):%Y-%m-%dT%H:%M}",
        "end": f"{hour - dt.timedelta(hours=2):%Y-%m-%dT%H:%M}",
    }
    response = admin_client.get(PAGE, window)
    assert listed_ids(response) == [three.id]

    response = admin_client.get(PAGE, {"start": f"{hour - dt.timedelta(hours=3, minutes=30):%Y-%m-%dT%H:%M:%S}"})
    assert listed_ids(response) == [one.id, three.id]

    response = admin_client.get(PAGE, {"end": f"{five.timestamp:%Y-%m-%dT%H:%M:%S}"})
    assert listed_ids(response) == []
    assert "No records match these filters." in response.content.decode()


def test_keyset_pagination_walks_all_records_without_overlap_or_count(send: Any, admin_client: Client) -> None:
    send([rec(f"cus_{i % 3}") for i in range(120)])
    all_ids = list(UsageRecord.objects.order_by("-id").values_list("id", flat=True))

    first = admin_client.get(PAGE)
    with CaptureQueriesContext(connection) as queries:
        second = admin_client.get(PAGE, {"cursor": first.context["next_cursor"]})
    # Read now: the next request resets the connection's query log.
    sql = [q["sql"] for q in queries.captured_queries]
    third = admin_client.get(PAGE, {"cursor": second.context["next_cursor"]})

    pages = [listed_ids(first), listed_ids(second), listed_ids(third)]
    assert [len(p) for p in pages] == [50, 50, 20]
    assert pages[0] + pages[1] + pages[2] == all_ids
    assert first.context["next_cursor"] == str(pages[0][-1])
    assert third.context["next_cursor"] is None
    assert "Older →" not in third.content.decode()
    assert "Newest" in third.content.decode()
    # Keyset paging: no COUNT(*) of the records table. The chart's GROUP BY ... COUNT(id) is the only count.
    assert not [q for q in sql if "COUNT(*)" in q.upper()]
    record_counts = [q for q in sql if "COUNT(" in q.upper() and "usage_usagerecord" in q]
    assert len(record_counts) == 1
    assert "GROUP BY" in record_counts[0].upper()
    assert [q for q in sql if "LIMIT 51" in q]  # one row more than a page tells whether an older page exists


def test_older_link_keeps_the_filters(send: Any, admin_client: Client) -> None:
    send([rec("cus_a") for _ in range(60)] + [rec("cus_b") for _ in range(5)])

    first = admin_client.get(PAGE, {"customer_id": "cus_a", "volume": "day"})
    html = first.content.decode()
    older = re.search(r'href="([^"]*)"[^>]*rel="next"', html)
    assert older is not None
    link = older.group(1).replace("&amp;", "&")
    assert "customer_id=cus_a" in link
    assert "volume=day" in link
    assert f"cursor={first.context['next_cursor']}" in link

    second = admin_client.get(PAGE + link.split("#")[0])
    assert len(listed_ids(second)) == 10
    assert set(listed_ids(first)).isdisjoint(listed_ids(second))
    assert "cus_b" not in records_table(second)


# --- bad input ---


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "yesterday"}, "Enter a valid date/time."),
        ({"end": "2026-13-45T99:99"}, "Enter a valid date/time."),
        ({"start": "2026-11-20T10:00", "end": "2026-11-20T09:00"}, "must be later than"),
        ({"cursor": "abc"}, "This page link is broken"),
        ({"cursor": "99999999999999999999"}, "This page link is broken"),
        ({"cursor": "-3"}, "This page link is broken"),
        ({"cursor": "3~4"}, "This page link is broken"),
        ({"customer_id": "cus\x00"}, "Null characters are not allowed."),
        ({"customer_id": "x" * 300}, "at most 255 characters"),
    ],
)
def test_bad_filter_input_shows_a_message_not_an_error_page(
    send: Any, admin_client: Client, params: dict[str, str], message: str
) -> None:
    send([rec()])

    response = admin_client.get(PAGE, params)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="filter-errors"' in html
    assert message in html
    assert 'id="records-table"' not in html
    assert 'id="volume-chart"' in html


def test_an_unknown_volume_bucket_falls_back_to_hours(admin_client: Client, compute_hours: UsageEvent) -> None:
    response = admin_client.get(PAGE, {"volume": "fortnight"})

    assert response.status_code == 200
    assert response.context["volume"] == "hour"
    assert len(response.context["chart"].bars) == 48


# --- volume chart ---


def test_volume_is_counted_per_hour_and_per_day_of_receipt(send: Any, compute_hours: UsageEvent) -> None:
    now = dt.datetime(2026, 11, 20, 14, 30, tzinfo=dt.UTC)
    send([rec(at=now - dt.timedelta(minutes=5)) for _ in range(3)], received_at=now - dt.timedelta(minutes=5))
    send([rec(at=now - dt.timedelta(hours=2))], received_at=now - dt.timedelta(hours=2))
    send([rec(at=now - dt.timedelta(hours=30)) for _ in range(2)], received_at=now - dt.timedelta(hours=30))
    send([rec(at=now - dt.timedelta(days=3))], received_at=now - dt.timedelta(days=3))
    send([rec(at=now - dt.timedelta(days=40))], received_at=now - dt.timedelta(days=40))  # before both windows
    send([rec(at=now - dt.timedelta(days=31))], received_at=now - dt.timedelta(days=31))  # before both windows

    hours = records_volume(usage_event=compute_hours, bucket="hour", now=now)
    days = records_volume(usage_event=compute_hours, bucket="day", now=now)

    assert len(hours) == 48
    assert hours[-1] == (dt.datetime(2026, 11, 20, 14, tzinfo=dt.UTC), 3)
    assert hours[0][0] == dt.datetime(2026, 11, 18, 15, tzinfo=dt.UTC)
    assert dict(hours)[dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)] == 1
    assert dict(hours)[dt.datetime(2026, 11, 19, 8, tzinfo=dt.UTC)] == 2
    assert sum(n for _, n in hours) == 6  # three days ago is outside the last 48 hours
    assert [moment for moment, _ in hours] == sorted(moment for moment, _ in hours)

    assert len(days) == 30
    assert days[-1] == (dt.datetime(2026, 11, 20, tzinfo=dt.UTC), 4)
    assert days[0][0] == dt.datetime(2026, 10, 22, tzinfo=dt.UTC)
    assert dict(days)[dt.datetime(2026, 11, 19, tzinfo=dt.UTC)] == 2
    assert dict(days)[dt.datetime(2026, 11, 17, tzinfo=dt.UTC)] == 1
    assert sum(n for _, n in days) == 7


def test_volume_is_one_grouped_query(send: Any, compute_hours: UsageEvent) -> None:
    send([rec() for _ in range(5)])

    with CaptureQueriesContext(connection) as queries:
        records_volume(usage_event=compute_hours, bucket="day", now=timezone.now())

    assert len(queries) == 1
    assert "GROUP BY" in queries[0]["sql"].upper()


def test_the_chart_draws_one_bar_per_bucket_with_its_count(send: Any, admin_client: Client) -> None:
    send([rec() for _ in range(4)])

    hourly = admin_client.get(PAGE)
    daily = admin_client.get(PAGE, {"volume": "day"})

    html = hourly.content.decode()
    assert '<svg id="volume-chart"' in html
    assert html.count('<rect class="bar"') == 48
    chart = hourly.context["chart"]
    assert chart.total == 4
    # The records were received just now: in the last bucket (or the one before, if the hour turned).
    assert [bar.count for bar in chart.bars if bar.count] == [4]
    assert chart.bars[-1].count == 4 or chart.bars[-2].count == 4
    tallest = next(bar for bar in chart.bars if bar.count)
    assert tallest.height > 0
    assert f"<title>{tallest.title}</title>" in html
    assert tallest.title.endswith("UTC: 4 records")
    assert daily.content.decode().count('<rect class="bar"') == 30
    assert daily.context["chart"].bars[-1].count == 4


# --- error log ---


def test_rejected_records_show_in_the_error_log(send: Any, admin_client: Client) -> None:
    send([rec(), rec("cus_bad", data={"cpu_usage_hours": "lots"}), rec(data={"cpu_usage_hours": "x" * 10000})])

    response = admin_client.get(PAGE)

    html = response.content.decode()
    table = re.search(r'<table[^>]*id="errors-table".*?</table>', html, re.S)
    assert table is not None
    assert "data.cpu_usage_hours: Expected Float64, got string." in table.group(0)
    assert "cus_bad" in table.group(0)
    assert "Stored truncated" in table.group(0)
    rows = response.context["errors"]
    assert len(rows) == 2
    assert all(len(row.preview) <= 160 for row in rows)


def test_only_the_latest_fifty_errors_are_shown(send: Any, admin_client: Client) -> None:
    send([rec(data={"cpu_usage_hours": "bad"}) for _ in range(55)])

    response = admin_client.get(PAGE)

    ids = [row.error.id for row in response.context["errors"]]
    assert len(ids) == 50
    assert ids == sorted(ids, reverse=True)


# --- tenancy ---


def test_another_organisations_usage_event_is_not_found(send: Any, client: Client) -> None:
    send([rec("cus_secret")])
    other = organisation_make(name="Globex")
    client.force_login(organisation_admin(other))

    response = client.get(PAGE)

    assert response.status_code == 404
    assert "cus_secret" not in response.content.decode()


def test_signed_out_visitors_are_sent_to_sign_in(client: Client, compute_hours: UsageEvent) -> None:
    response = client.get(PAGE)

    assert response.status_code == 302
    assert "/login/" in response["Location"]
