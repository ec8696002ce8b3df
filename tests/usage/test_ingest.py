"""SPEC §3: POST /usage/{api_slug} — every status code, every outcome, exactly-once storage."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import IS_POSTGRES
from tests.factories import ApiKeyBundle, api_key_make, usage_event_make
from usage.models import IngestionError, UsageEvent, UsageRecord
from zenskar_site.accounts.models import Organisation


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def now_iso(**delta: float) -> str:
    return iso(timezone.now() + dt.timedelta(**delta))


DEFAULT_TIMESTAMP = now_iso(minutes=-1)


def rec(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"customer_id": "cus_1", "timestamp": DEFAULT_TIMESTAMP, "data": {"cpu_usage_hours": 5}}
    record.update(overrides)
    return record


def post(client: APIClient, body: Any, slug: str = "compute_hours", raw: bool = False, **extra: Any) -> Any:
    data = body if raw else json.dumps(body)
    content_type = extra.pop("content_type", "application/json")
    return client.post(f"/usage/{slug}", data=data, content_type=content_type, **extra)


@pytest.fixture
def ingest(ingest_key: ApiKeyBundle, client_for: Any, compute_hours: UsageEvent) -> APIClient:
    return client_for(ingest_key.secret)


# --- the Zenskar-compatible single record ---


def test_a_zenskar_client_request_is_accepted_and_stored(
    ingest_key: ApiKeyBundle, compute_hours: UsageEvent, organisation: Organisation
) -> None:
    client = APIClient()
    timestamp = now_iso(minutes=-2)

    response = client.post(
        "/usage/compute_hours",
        data=json.dumps({"customer_id": "cus_123", "timestamp": timestamp, "data": {"cpu_usage_hours": 5}}),
        content_type="application/json",
        HTTP_ORGANISATION=str(organisation.id),
        HTTP_X_API_KEY=ingest_key.secret,
    )

    assert response.status_code == 202
    body = response.json()
    stored = UsageRecord.objects.get()
    assert body == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "results": [{"index": 0, "status": "accepted", "id": stored.id}],
    }
    assert stored.customer_id == "cus_123"
    assert stored.data == {"cpu_usage_hours": 5.0}
    assert iso(stored.timestamp) == timestamp


def test_trailing_slash_and_bearer_auth_work_too(ingest_key: ApiKeyBundle, compute_hours: UsageEvent) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key.secret}")
    response = client.post("/usage/compute_hours/", data=json.dumps(rec()), content_type="application/json")
    assert response.status_code == 202
    assert UsageRecord.objects.count() == 1


# --- status codes ---


def test_missing_unknown_and_revoked_keys_are_401(
    client_for: Any, compute_hours: UsageEvent, organisation: Organisation
) -> None:
    revoked = api_key_make(organisation=organisation)
    from zenskar_site.accounts.actors import system_actor
    from zenskar_site.accounts.services import api_key_revoke

    api_key_revoke(actor=system_actor(organisation=organisation), prefix=revoked.api_key.prefix)
    for secret in (None, "garbage", "zk_abcdefghijkl_xxxx", revoked.secret):
        response = post(client_for(secret), rec())
        assert response.status_code == 401, secret
        assert response.json()["detail"]
    assert not UsageRecord.objects.exists()


def test_organisation_header_of_another_organisation_is_403(
    ingest_key: ApiKeyBundle, client_for: Any, compute_hours: UsageEvent, other_organisation: Organisation
) -> None:
    response = post(client_for(ingest_key.secret, organisation=str(other_organisation.id)), rec())
    assert response.status_code == 403
    assert "organisation" in response.json()["detail"]
    assert not UsageRecord.objects.exists()


def test_unknown_archived_and_foreign_slugs_are_404(
    ingest: APIClient, organisation: Organisation, other_organisation: Organisation, client_for: Any
) -> None:
    usage_event_make(organisation=other_organisation, api_slug="theirs")
    archived = usage_event_make(organisation=organisation, api_slug="old")
    UsageEvent.objects.filter(pk=archived.pk).update(archived=True)

    for slug in ("nope", "old", "theirs"):
        response = post(ingest, rec(), slug=slug)
        assert response.status_code == 404, slug
        assert "No active usage event" in response.json()["detail"]
    assert not UsageRecord.objects.exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("{not json", "Malformed JSON"),
        ("42", "record object or a JSON array"),
        ('"x"', "record object"),
        ("[]", "empty"),
        ("", "Malformed"),
    ],
)
def test_malformed_bodies_are_400(ingest: APIClient, body: str, words: str) -> None:
    response = post(ingest, body, raw=True)
    assert response.status_code == 400
    assert words in response.json()["detail"]
    assert not UsageRecord.objects.exists()


def test_non_json_content_type_is_415(ingest: APIClient) -> None:
    response = post(ingest, json.dumps(rec()), raw=True, content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_body_over_the_limit_is_413(ingest: APIClient, settings: Any) -> None:
    settings.INGEST_MAX_BODY_BYTES = 1000
    response = post(ingest, [rec(customer_id="c" * 200) for _ in range(10)])
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["detail"]
    assert not UsageRecord.objects.exists()


def test_batch_over_the_limit_is_413(ingest: APIClient, settings: Any) -> None:
    settings.INGEST_MAX_BATCH = 3
    response = post(ingest, [rec() for _ in range(4)])
    assert response.status_code == 413
    assert "at most 3 records" in response.json()["detail"]
    assert not UsageRecord.objects.exists()


def test_over_the_rate_limit_is_429_with_retry_after(ingest: APIClient, settings: Any) -> None:
    settings.INGEST_RATE_LIMIT = 2
    statuses = [post(ingest, rec()).status_code for _ in range(5)]
    # Requests land in at most two one-second windows, so at least one is over the limit.
    assert statuses.count(202) <= 4
    assert 429 in statuses
    limited = post(ingest, rec())
    while limited.status_code != 429:
        limited = post(ingest, rec())
    assert limited["Retry-After"] == "1"


def test_rate_limited_requests_store_nothing(ingest: APIClient, settings: Any) -> None:
    settings.INGEST_RATE_LIMIT = 1
    responses = [post(ingest, rec()) for _ in range(6)]
    accepted = sum(1 for r in responses if r.status_code == 202)
    assert any(r.status_code == 429 for r in responses)
    assert UsageRecord.objects.count() == accepted


def test_get_is_405(ingest: APIClient) -> None:
    response = ingest.get("/usage/compute_hours")
    assert response.status_code == 405
    assert response.json()["detail"]


def test_every_record_rejected_is_422_with_the_same_shape(ingest: APIClient) -> None:
    response = post(ingest, [rec(data={"cpu_usage_hours": "five"}), rec(customer_id="")])
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 0
    assert body["rejected"] == 2
    assert body["results"][0] == {
        "index": 0,
        "status": "rejected",
        "errors": {"data.cpu_usage_hours": ["Expected Float64, got string."]},
    }
    assert "customer_id" in body["results"][1]["errors"]
    assert not UsageRecord.objects.exists()


# --- record content rules ---


def test_unknown_data_keys_are_rejected(ingest: APIClient) -> None:
    response = post(ingest, rec(data={"cpu_usage_hours": 1, "gpu_hours": 2}))
    assert response.status_code == 422
    assert "data.gpu_hours" in response.json()["results"][0]["errors"]


def test_nullable_fields_may_be_absent_or_null(ingest: APIClient) -> None:
    response = post(
        ingest,
        [
            rec(data={"cpu_usage_hours": 1}),
            rec(data={"cpu_usage_hours": 1, "region": None}),
            rec(data={"cpu_usage_hours": 1, "region": "eu"}),
        ],
    )
    assert response.json()["accepted"] == 3
    assert sorted(str(r.data.get("region")) for r in UsageRecord.objects.all()) == ["None", "None", "eu"]


def test_required_field_missing_is_rejected(ingest: APIClient) -> None:
    response = post(ingest, rec(data={"region": "eu"}))
    assert response.json()["results"][0]["errors"] == {"data.cpu_usage_hours": ["This field is required."]}


def test_decimal_values_are_kept_exactly(organisation: Organisation, ingest_key: ApiKeyBundle, client_for: Any) -> None:
    usage_event_make(organisation=organisation, api_slug="spend", data={"amount": "Decimal"})
    amounts = ["0.1", "12345678901234567890.123456789", "1e-7", "3"]
    body = (
        "["
        + ",".join(
            f'{{"customer_id": "c", "timestamp": "{now_iso(minutes=-1)}", "data": {{"amount": {a}}}}}' for a in amounts
        )
        + "]"
    )

    response = post(client_for(ingest_key.secret), body, slug="spend", raw=True)

    assert response.json()["accepted"] == 4
    from decimal import Decimal

    stored = [Decimal(r.data["amount"]) for r in UsageRecord.objects.order_by("id")]
    assert stored == [Decimal(a) for a in amounts]


@pytest.mark.parametrize(
    ("data", "accepted"),
    [
        ({"n": 9223372036854775807}, True),
        ({"n": 9223372036854775808}, False),
        ({"n": 1.5}, False),
        ({"n": True}, False),
        ({"n": "5"}, False),
    ],
)
def test_int64_bounds_through_the_endpoint(
    organisation: Organisation, ingest_key: ApiKeyBundle, client_for: Any, data: Any, accepted: bool
) -> None:
    usage_event_make(organisation=organisation, api_slug="ints", data={"n": "Int64"})
    response = post(client_for(ingest_key.secret), rec(data=data), slug="ints")
    assert (response.status_code == 202) is accepted


def test_timestamps_too_far_in_the_future_are_rejected(ingest: APIClient) -> None:
    response = post(ingest, [rec(timestamp=now_iso(minutes=10)), rec(timestamp=now_iso(minutes=4))])
    body = response.json()
    assert body["results"][0]["status"] == "rejected"
    assert "future" in body["results"][0]["errors"]["timestamp"][0]
    assert body["results"][1]["status"] == "accepted"


def test_timestamps_older_than_35_days_are_rejected(ingest: APIClient) -> None:
    response = post(ingest, [rec(timestamp=now_iso(days=-36)), rec(timestamp=now_iso(days=-34))])
    body = response.json()
    assert body["results"][0]["status"] == "rejected"
    assert "backfill" in body["results"][0]["errors"]["timestamp"][0]
    assert body["results"][1]["status"] == "accepted"


def test_full_key_may_backfill_old_timestamps(
    full_key: ApiKeyBundle, client_for: Any, compute_hours: UsageEvent
) -> None:
    response = client_for(full_key.secret).post(
        "/usage/compute_hours?backfill=true",
        data=json.dumps(rec(timestamp="2025-01-01T00:00:00Z")),
        content_type="application/json",
    )
    assert response.status_code == 202
    assert UsageRecord.objects.get().timestamp == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_ingest_key_may_not_backfill(ingest: APIClient) -> None:
    response = ingest.post(
        "/usage/compute_hours?backfill=true", data=json.dumps(rec()), content_type="application/json"
    )
    assert response.status_code == 403
    assert "full-scope" in response.json()["detail"]
    assert not UsageRecord.objects.exists()


# --- idempotency ---


def test_a_reused_key_with_the_same_content_is_a_duplicate(ingest: APIClient) -> None:
    record = rec(idempotency_key="evt-1")
    first = post(ingest, record).json()

    second = post(ingest, record)

    assert second.status_code == 202
    assert second.json()["duplicates"] == 1
    assert second.json()["results"][0] == {"index": 0, "status": "duplicate", "id": first["results"][0]["id"]}
    assert UsageRecord.objects.count() == 1


def test_a_reused_key_with_other_content_is_rejected(ingest: APIClient) -> None:
    post(ingest, rec(idempotency_key="evt-1"))

    response = post(ingest, rec(idempotency_key="evt-1", data={"cpu_usage_hours": 6}))

    assert response.status_code == 422
    assert "already used" in response.json()["results"][0]["errors"]["idempotency_key"][0]
    assert UsageRecord.objects.get().data == {"cpu_usage_hours": 5.0}
    assert IngestionError.objects.get().errors["idempotency_key"]


def test_keys_are_scoped_to_the_usage_event(ingest: APIClient, organisation: Organisation) -> None:
    usage_event_make(organisation=organisation, api_slug="other_event")
    assert post(ingest, rec(idempotency_key="k")).json()["accepted"] == 1
    assert post(ingest, rec(idempotency_key="k"), slug="other_event").json()["accepted"] == 1


def test_a_batch_mixing_all_four_outcomes_reports_each_at_its_index(ingest: APIClient) -> None:
    existing = post(ingest, rec(idempotency_key="seen")).json()["results"][0]["id"]
    duplicate = rec(idempotency_key="seen")
    duplicate["timestamp"] = UsageRecord.objects.get(id=existing).timestamp.isoformat()

    response = post(
        ingest,
        [
            rec(idempotency_key="new-1"),
            duplicate,
            rec(),
            rec(data={"cpu_hours": 1}),
            rec(idempotency_key="new-1"),
            rec(idempotency_key="seen", data={"cpu_usage_hours": 99}),
        ],
    )

    body = response.json()
    assert response.status_code == 202
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "duplicate",
        "accepted",
        "rejected",
        "duplicate",
        "rejected",
    ]
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4, 5]
    assert body["results"][1]["id"] == existing
    assert body["results"][4]["id"] == body["results"][0]["id"]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 2)
    assert UsageRecord.objects.count() == 3
    assert set(UsageRecord.objects.values_list("id", flat=True)) == {
        existing,
        body["results"][0]["id"],
        body["results"][2]["id"],
    }


def test_same_key_with_other_content_in_one_batch_is_rejected(ingest: APIClient) -> None:
    response = post(ingest, [rec(idempotency_key="a"), rec(idempotency_key="a", customer_id="cus_2")])
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert "earlier in this batch" in body["results"][1]["errors"]["idempotency_key"][0]


# --- aggregates ---


def test_a_later_aggregate_value_supersedes_the_earlier_one_for_the_period(
    organisation: Organisation, ingest_key: ApiKeyBundle, client_for: Any
) -> None:
    usage_event_make(
        organisation=organisation, api_slug="seats", kind="aggregate", aggregate_period="day", data={"seats": "Int64"}
    )
    client = client_for(ingest_key.secret)
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    morning, later = iso(today + dt.timedelta(minutes=1)), iso(today + dt.timedelta(minutes=2))
    if today + dt.timedelta(minutes=2) > timezone.now():  # just after midnight: use yesterday
        morning, later = iso(today - dt.timedelta(hours=2)), iso(today - dt.timedelta(hours=1))

    first = post(client, rec(timestamp=morning, data={"seats": 10}), slug="seats").json()["results"][0]["id"]
    second = post(
        client,
        [rec(timestamp=later, data={"seats": 12}), rec(customer_id="cus_2", timestamp=later, data={"seats": 1})],
        slug="seats",
    )

    assert second.status_code == 202
    records = {r.id: r for r in UsageRecord.objects.all()}
    assert records[first].superseded is True
    current = UsageRecord.objects.filter(superseded=False, customer_id="cus_1").get()
    assert current.data == {"seats": 12}
    assert current.period_start == (
        today if today + dt.timedelta(minutes=2) <= timezone.now() else today - dt.timedelta(days=1)
    )
    assert UsageRecord.objects.filter(customer_id="cus_2", superseded=False).count() == 1


def test_within_one_batch_the_last_aggregate_value_wins(
    organisation: Organisation, ingest_key: ApiKeyBundle, client_for: Any
) -> None:
    usage_event_make(
        organisation=organisation, api_slug="seats", kind="aggregate", aggregate_period="month", data={"seats": "Int64"}
    )
    client = client_for(ingest_key.secret)
    moment = now_iso(seconds=-5)

    post(client, [rec(timestamp=moment, data={"seats": n}) for n in (1, 2, 3)], slug="seats")

    assert UsageRecord.objects.count() == 3
    assert UsageRecord.objects.get(superseded=False).data == {"seats": 3}


def test_a_duplicate_aggregate_does_not_supersede(
    organisation: Organisation, ingest_key: ApiKeyBundle, client_for: Any
) -> None:
    usage_event_make(
        organisation=organisation, api_slug="seats", kind="aggregate", aggregate_period="hour", data={"seats": "Int64"}
    )
    client = client_for(ingest_key.secret)
    moment = now_iso(seconds=-5)
    old = rec(timestamp=moment, data={"seats": 1}, idempotency_key="a")
    post(client, old, slug="seats")
    post(client, rec(timestamp=moment, data={"seats": 2}, idempotency_key="b"), slug="seats")

    post(client, old, slug="seats")

    assert UsageRecord.objects.get(superseded=False).data == {"seats": 2}


# --- error log, read API ---


def test_rejected_records_land_in_the_error_log_and_the_api(ingest: APIClient, api: APIClient) -> None:
    post(ingest, [rec(), rec(data={"cpu_usage_hours": "x" * 10000})])

    logged = IngestionError.objects.get()
    errors = api.get("/api/v1/usage-events/compute_hours/errors/").json()["results"]

    assert logged.payload_truncated is True
    assert len(logged.payload) <= 4096
    assert errors[0]["errors"] == {"data.cpu_usage_hours": ["Expected Float64, got string."]}


def test_records_api_lists_and_filters(ingest: APIClient, api: APIClient) -> None:
    post(ingest, [rec(customer_id="a", timestamp=now_iso(hours=-3)), rec(customer_id="b", timestamp=now_iso(hours=-1))])

    all_records = api.get("/api/v1/usage-events/compute_hours/records/").json()["results"]
    only_a = api.get("/api/v1/usage-events/compute_hours/records/", {"customer_id": "a"}).json()["results"]
    recent = api.get("/api/v1/usage-events/compute_hours/records/", {"timestamp_after": now_iso(hours=-2)}).json()[
        "results"
    ]
    one = api.get(f"/api/v1/usage-events/compute_hours/records/{only_a[0]['id']}/").json()

    assert [r["customer_id"] for r in all_records] == ["b", "a"]
    assert [r["customer_id"] for r in only_a] == ["a"]
    assert [r["customer_id"] for r in recent] == ["b"]
    assert set(one) == {
        "id",
        "customer_id",
        "timestamp",
        "data",
        "idempotency_key",
        "received_at",
        "voided",
        "superseded",
    }
    assert one["timestamp"].endswith("Z")


def test_records_of_another_organisation_are_invisible(
    ingest: APIClient, other_organisation: Organisation, client_for: Any
) -> None:
    record_id = post(ingest, rec()).json()["results"][0]["id"]
    usage_event_make(organisation=other_organisation, api_slug="compute_hours")
    foreign = client_for(api_key_make(organisation=other_organisation).secret)

    assert foreign.get(f"/api/v1/usage-events/compute_hours/records/{record_id}/").status_code == 404
    assert foreign.get("/api/v1/usage-events/compute_hours/records/").json()["results"] == []


# --- the bulk path ---


def test_query_count_does_not_grow_with_batch_size(ingest: APIClient) -> None:
    def queries_for(size: int) -> int:
        batch = [rec(customer_id=f"c{i}", idempotency_key=f"{size}-{i}") for i in range(size)]
        batch += [rec(data={"bad": 1}), rec(idempotency_key=f"{size}-0")]
        with CaptureQueriesContext(connection) as captured:
            response = post(ingest, batch)
        assert response.json()["accepted"] == size
        return len(captured.captured_queries)

    post(ingest, rec())  # the key's last-used time is written once, outside what is counted
    small, large = queries_for(2), queries_for(500)

    assert small == large
    assert large <= 8


# --- the records' reference to their usage event (no foreign-key constraint; see usage/migrations/0005) ---


def test_a_usage_event_with_records_cannot_be_deleted_even_by_raw_sql(
    ingest: APIClient, compute_hours: UsageEvent
) -> None:
    assert post(ingest, rec()).status_code == 202
    with pytest.raises(IntegrityError, match="archive it instead"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM usage_usageevent WHERE id = %s", [compute_hours.id])
    assert UsageEvent.objects.filter(id=compute_hours.id).exists()
    assert UsageRecord.objects.filter(usage_event=compute_hours).count() == 1


def test_a_usage_event_without_records_can_still_be_deleted(compute_hours: UsageEvent) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM usage_usageevent WHERE id = %s", [compute_hours.id])
    assert not UsageEvent.objects.filter(id=compute_hours.id).exists()


@pytest.mark.skipif(IS_POSTGRES, reason="SQLite's trigger; PostgreSQL checks in the ingestion statement")
def test_on_sqlite_a_record_for_a_missing_usage_event_is_refused(compute_hours: UsageEvent) -> None:
    with pytest.raises(IntegrityError, match="does not exist"), transaction.atomic():
        UsageRecord.objects.create(
            usage_event_id=compute_hours.id + 1000,
            customer_id="cus_1",
            timestamp=timezone.now(),
            data={},
            content_hash="0" * 64,
            received_at=timezone.now(),
        )
    assert not UsageRecord.objects.exists()
