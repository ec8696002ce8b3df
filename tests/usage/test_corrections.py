"""SPEC §6: edits, voids and restores flow into the metrics and leave exactly one audit entry each."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from metrics.engine.refresh import metric_values_refresh
from metrics.models import MetricValue
from tests.factories import ApiKeyBundle, usage_event_make
from usage.models import UsageEvent, UsageRecord
from zenskar_site.accounts.models import AuditEntry, Organisation

DAY = (timezone.now() - dt.timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def day(moment: dt.datetime) -> str:
    return iso(moment.replace(hour=0))


def values() -> dict[tuple[str, str], str | None]:
    return {(v.customer_id, iso(v.period_start)): v.value for v in MetricValue.objects.all()}


@pytest.fixture
def metered(api: APIClient, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any) -> UsageEvent:
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            "/api/v1/metrics/",
            {
                "name": "CPU",
                "slug": "cpu",
                "usage_event": "compute_hours",
                "aggregation": "sum",
                "field": "cpu_usage_hours",
                "granularity": "day",
            },
            format="json",
        )
    records = [
        {"customer_id": "a", "timestamp": iso(DAY), "data": {"cpu_usage_hours": 5}},
        {"customer_id": "a", "timestamp": iso(DAY + dt.timedelta(hours=1)), "data": {"cpu_usage_hours": 2}},
        {"customer_id": "b", "timestamp": iso(DAY), "data": {"cpu_usage_hours": 1}},
    ]
    api.post("/usage/compute_hours", data=json.dumps(records), content_type="application/json")
    metric_values_refresh(usage_event_id=compute_hours.id)
    assert values() == {("a", day(DAY)): "7", ("b", day(DAY)): "1"}
    return compute_hours


def record_of(customer: str, hours: float) -> UsageRecord:
    return UsageRecord.objects.get(customer_id=customer, data__cpu_usage_hours=hours)


def test_an_edit_moving_a_record_to_another_customer_and_day_changes_both_values(
    api: APIClient, metered: UsageEvent, full_key: ApiKeyBundle
) -> None:
    record = record_of("a", 5)
    next_day = DAY + dt.timedelta(days=1)

    response = api.patch(
        f"/api/v1/usage-events/compute_hours/records/{record.id}/",
        {"customer_id": "b", "timestamp": iso(next_day), "data": {"cpu_usage_hours": 6}, "reason": "mapped wrong"},
        format="json",
    )
    metric_values_refresh(usage_event_id=metered.id)

    assert response.status_code == 200, response.json()
    assert response.json()["customer_id"] == "b"
    assert values() == {("a", day(DAY)): "2", ("b", day(DAY)): "1", ("b", day(next_day)): "6"}
    entry = AuditEntry.objects.get(action="record.update")
    assert entry.actor == f"api_key:{full_key.api_key.prefix}"
    assert (entry.before["customer_id"], entry.after["customer_id"], entry.reason) == ("a", "b", "mapped wrong")
    assert entry.before["data"] == {"cpu_usage_hours": 5.0}


def test_an_edit_is_revalidated_like_ingestion(api: APIClient, metered: UsageEvent) -> None:
    record = record_of("a", 5)
    for body, field in [
        ({"data": {"cpu_usage_hours": "lots"}}, "data.cpu_usage_hours"),
        ({"data": {"gpu": 1}}, "data.gpu"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"customer_id": ""}, "customer_id"),
        ({"timestamp": iso(timezone.now() + dt.timedelta(days=1))}, "timestamp"),
        ({"voided": True}, "voided"),
    ]:
        response = api.patch(f"/api/v1/usage-events/compute_hours/records/{record.id}/", body, format="json")
        assert response.status_code == 400, body
        assert field in response.json()["errors"], response.json()
    record.refresh_from_db()
    assert record.data == {"cpu_usage_hours": 5.0}
    assert not AuditEntry.objects.filter(action="record.update").exists()


def test_void_removes_a_record_from_every_metric_and_restore_brings_it_back(
    api: APIClient, metered: UsageEvent
) -> None:
    record = record_of("a", 5)

    voided = api.delete(f"/api/v1/usage-events/compute_hours/records/{record.id}/?reason=double-sent")
    metric_values_refresh(usage_event_id=metered.id)
    after_void = values()
    restored = api.post(
        f"/api/v1/usage-events/compute_hours/records/{record.id}/restore/", {"reason": "was fine"}, format="json"
    )
    metric_values_refresh(usage_event_id=metered.id)

    assert voided.json()["voided"] is True
    assert after_void == {("a", day(DAY)): "2", ("b", day(DAY)): "1"}
    assert restored.json()["voided"] is False
    assert values() == {("a", day(DAY)): "7", ("b", day(DAY)): "1"}
    assert [e.action for e in AuditEntry.objects.filter(object_type="usage_record").order_by("id")] == [
        "record.void",
        "record.restore",
    ]
    assert api.get("/api/v1/usage-events/compute_hours/records/").json()["results"].__len__() == 3
    assert (
        len(api.get("/api/v1/usage-events/compute_hours/records/", {"include_voided": "true"}).json()["results"]) == 3
    )


def test_voided_records_are_hidden_unless_asked_for(api: APIClient, metered: UsageEvent) -> None:
    record = record_of("a", 5)
    api.delete(f"/api/v1/usage-events/compute_hours/records/{record.id}/")
    listed = api.get("/api/v1/usage-events/compute_hours/records/").json()["results"]
    everything = api.get("/api/v1/usage-events/compute_hours/records/", {"include_voided": "true"}).json()["results"]
    assert record.id not in [r["id"] for r in listed]
    assert record.id in [r["id"] for r in everything]


def test_void_by_filter_reports_the_count(api: APIClient, metered: UsageEvent) -> None:
    response = api.post(
        "/api/v1/usage-events/compute_hours/records/void/",
        {"customer_id": "a", "timestamp_after": iso(DAY - dt.timedelta(hours=1)), "reason": "service double-sent"},
        format="json",
    )
    again = api.post("/api/v1/usage-events/compute_hours/records/void/", {"customer_id": "a"}, format="json")
    metric_values_refresh(usage_event_id=metered.id)

    assert response.json() == {"voided": 2}
    assert again.json() == {"voided": 0}
    assert values() == {("b", day(DAY)): "1"}
    assert AuditEntry.objects.filter(action="record.void").count() == 2


def test_void_by_filter_needs_a_filter(api: APIClient, metered: UsageEvent) -> None:
    response = api.post("/api/v1/usage-events/compute_hours/records/void/", {}, format="json")
    assert response.status_code == 400
    assert not UsageRecord.objects.filter(voided=True).exists()


def test_an_ingest_key_cannot_correct_records(ingest_key: ApiKeyBundle, client_for: Any, metered: UsageEvent) -> None:
    record = record_of("a", 5)
    response = client_for(ingest_key.secret).delete(f"/api/v1/usage-events/compute_hours/records/{record.id}/")
    assert response.status_code == 403
    record.refresh_from_db()
    assert record.voided is False


def test_voiding_the_current_aggregate_value_brings_back_the_previous_one(
    api: APIClient, organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    seats = usage_event_make(
        organisation=organisation, api_slug="seats", kind="aggregate", aggregate_period="day", data={"seats": "Int64"}
    )
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            "/api/v1/metrics/",
            {
                "name": "Seats",
                "slug": "seats",
                "usage_event": "seats",
                "aggregation": "sum",
                "field": "seats",
                "granularity": "day",
            },
            format="json",
        )
    for n, minutes in ((10, 1), (12, 2)):
        api.post(
            "/usage/seats",
            data=json.dumps(
                {"customer_id": "a", "timestamp": iso(DAY + dt.timedelta(minutes=minutes)), "data": {"seats": n}}
            ),
            content_type="application/json",
        )
    metric_values_refresh(usage_event_id=seats.id)
    assert values() == {("a", day(DAY)): "12"}
    current = UsageRecord.objects.get(usage_event=seats, superseded=False)

    api.delete(f"/api/v1/usage-events/seats/records/{current.id}/")
    metric_values_refresh(usage_event_id=seats.id)

    assert values() == {("a", day(DAY)): "10"}
    assert UsageRecord.objects.get(usage_event=seats, superseded=False, voided=False).data == {"seats": 10}


def test_a_retry_of_the_original_record_stays_a_duplicate_after_an_edit(api: APIClient, metered: UsageEvent) -> None:
    original = {"customer_id": "c", "timestamp": iso(DAY), "data": {"cpu_usage_hours": 3}, "idempotency_key": "k-1"}
    first = api.post("/usage/compute_hours", data=json.dumps(original), content_type="application/json").json()
    record_id = first["results"][0]["id"]
    api.patch(
        f"/api/v1/usage-events/compute_hours/records/{record_id}/", {"data": {"cpu_usage_hours": 4}}, format="json"
    )

    retry = api.post("/usage/compute_hours", data=json.dumps(original), content_type="application/json").json()

    assert retry["results"][0] == {"index": 0, "status": "duplicate", "id": record_id}
    assert UsageRecord.objects.get(id=record_id).data == {"cpu_usage_hours": 4}


def test_dashboard_edit_void_and_restore_a_record(organisation: Organisation, metered: UsageEvent, client: Any) -> None:
    from tests.factories import organisation_admin

    client.force_login(organisation_admin(organisation))
    record = record_of("a", 5)
    url = f"/usage-events/compute_hours/records/{record.id}/"

    page = client.get(url)
    bad = client.post(
        url, {"customer_id": "a", "timestamp": iso(DAY), "data": '{"cpu_usage_hours": "x"}', "reason": "r"}
    )
    good = client.post(
        url, {"customer_id": "a2", "timestamp": iso(DAY), "data": '{"cpu_usage_hours": 9}', "reason": "fix"}
    )
    voided = client.post(url, {"action": "void", "reason": "dup"})
    record.refresh_from_db()
    history = client.get(url).content.decode()

    assert page.status_code == 200
    assert "Expected Float64" in bad.content.decode()
    assert good.status_code == 302
    assert voided.status_code == 302
    assert (record.customer_id, record.data, record.voided) == ("a2", {"cpu_usage_hours": 9}, True)
    assert "record.update" in history
    assert "record.void" in history
    metric_values_refresh(usage_event_id=metered.id)
    assert values() == {("a", day(DAY)): "2", ("b", day(DAY)): "1"}


def test_dashboard_void_by_filter(organisation: Organisation, metered: UsageEvent, client: Any) -> None:
    from tests.factories import organisation_admin

    client.force_login(organisation_admin(organisation))
    response = client.post("/usage-events/compute_hours/records/void/", {"customer": "a", "reason": "double-sent"})
    assert response.status_code == 302
    assert UsageRecord.objects.filter(voided=True).count() == 2
    page = client.get("/usage-events/compute_hours/?customer_id=a")
    assert 'id="void-by-filter"' in page.content.decode()


def test_the_event_page_links_an_export_of_the_filtered_records(
    organisation: Organisation, metered: UsageEvent, client: Any
) -> None:
    from tests.factories import organisation_admin

    client.force_login(organisation_admin(organisation))
    page = client.get("/usage-events/compute_hours/?customer_id=a").content.decode()
    start = page.index('id="records-export" href="') + len('id="records-export" href="')
    url = page[start : page.index('"', start)].replace("&amp;", "&")
    exported = b"".join(client.get(url).streaming_content).decode()

    assert url.startswith("/usage-events/compute_hours/export.csv?customer=a")
    assert exported.count("\n") == 3  # the header and customer a's two records
