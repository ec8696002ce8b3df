"""Issue 10: every bad input is a 4xx with a precise message and leaves nothing behind; nothing is stored
cut or changed. A NUL (U+0000) is the sharpest case: PostgreSQL's text and jsonb refuse it, and the
driver cut strings at it. These run on SQLite and PostgreSQL alike, except the property test (PostgreSQL)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.factories import ApiKeyBundle, organisation_admin, usage_event_make
from usage.csv.imports import csv_import_create, csv_import_validate
from usage.models import CsvImport, IngestionError, UsageEvent, UsageRecord
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.models import ApiKey, AuditEntry, Organisation
from zenskar_site.lib.errors import ValidationFailed
from zenskar_site.wsgi import application

NUL = "\x00"


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


MOMENT = iso(timezone.now().replace(microsecond=0) - dt.timedelta(minutes=2))


def rec(customer_id: str = "cus_1", **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"customer_id": customer_id, "timestamp": MOMENT, "data": {"cpu_usage_hours": 5}}
    record.update(overrides)
    return record


# Each way a NUL can sit in a record, the error path it must be reported under, and the record.
NUL_RECORDS = {
    "customer_id": ("customer_id", rec(customer_id=f"cus{NUL}_evil")),
    "idempotency_key": ("idempotency_key", rec(idempotency_key=f"key{NUL}1")),
    "data string": ("data.region", rec(data={"cpu_usage_hours": 5, "region": f"eu{NUL}"})),
    "data key": ("data.reg\\u0000ion", rec(data={"cpu_usage_hours": 5, f"reg{NUL}ion": "eu"})),
}


def post(client: Client, body: Any, slug: str = "compute_hours") -> Any:
    text = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/usage/{slug}", data=text, content_type="application/json")


@pytest.fixture
def ingest(ingest_key: ApiKeyBundle, client_for: Any, compute_hours: UsageEvent) -> APIClient:
    return client_for(ingest_key.secret)


def holds_nul(value: Any) -> bool:
    return "\\u0000" in json.dumps(value)  # json.dumps writes a NUL in a string or key as \u0000


def assert_no_nul_stored() -> None:
    for record in UsageRecord.objects.all():
        assert not holds_nul([record.customer_id, record.idempotency_key, record.data])


# --- ingestion: single records and batches ---


@pytest.mark.parametrize("case", list(NUL_RECORDS))
def test_a_nul_in_a_single_record_is_rejected_naming_the_field_and_nothing_is_stored(
    ingest: APIClient, case: str
) -> None:
    path, record = NUL_RECORDS[case]

    response = post(ingest, record)

    assert response.status_code == 422
    result = response.json()["results"][0]
    assert result["status"] == "rejected"
    assert path in result["errors"], result
    assert not UsageRecord.objects.exists()
    logged = IngestionError.objects.get()  # the error log keeps it, with the NUL shown as U+FFFD
    assert path in logged.errors
    assert not holds_nul(logged.payload)


@pytest.mark.parametrize("case", list(NUL_RECORDS))
def test_a_nul_in_a_batch_rejects_its_record_and_stores_the_good_ones(ingest: APIClient, case: str) -> None:
    path, bad = NUL_RECORDS[case]

    response = post(ingest, [rec("good_1"), bad, rec("good_2")])

    assert response.status_code == 202
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert path in body["results"][1]["errors"]
    assert sorted(UsageRecord.objects.values_list("customer_id", flat=True)) == ["good_1", "good_2"]
    assert_no_nul_stored()


def test_a_batch_item_that_is_a_bare_string_with_a_nul_is_rejected_and_logged_readably(ingest: APIClient) -> None:
    response = post(ingest, [rec("good_1"), f"a{NUL}b", rec("good_2")])

    assert response.status_code == 202
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "rejected", "accepted"]
    logged = IngestionError.objects.get()
    assert logged.payload == "a\ufffdb"
    assert_no_nul_stored()


def test_the_message_names_the_character_and_its_place(ingest: APIClient) -> None:
    response = post(ingest, rec(customer_id=f"ab{NUL}c"))

    assert response.json()["results"][0]["errors"] == {
        "customer_id": ["Contains U+0000 (NUL) at character 3, which cannot be stored; remove it."]
    }


@pytest.mark.parametrize("field_type", ["UUID", "Date32", "DateTime64", "Decimal"])
def test_a_nul_in_any_string_typed_field_is_named_as_a_nul(
    organisation: Organisation, ingest_key: ApiKeyBundle, client_for: Any, field_type: str
) -> None:
    usage_event_make(organisation=organisation, api_slug="typed", data={"value": field_type})

    response = post(client_for(ingest_key.secret), rec(data={"value": f"1{NUL}"}), slug="typed")

    assert response.status_code == 422
    assert "U+0000 (NUL)" in response.json()["results"][0]["errors"]["data.value"][0]


def test_a_lone_surrogate_reaching_the_validator_is_rejected_naming_the_field(
    organisation: Organisation, ingest_key: ApiKeyBundle, client_for: Any
) -> None:
    # A Decimal field makes ingestion parse with Python's json module, which lets "\ud800" through.
    usage_event_make(organisation=organisation, api_slug="priced", data={"cost": "Decimal", "note": "Nullable(String)"})
    good = json.dumps(rec("ok", data={"cost": 1.5}))
    bad = json.dumps(rec("ok", data={"cost": 1.5, "note": "x\ud800"}))  # written as the escape "\\ud800"

    response = post(client_for(ingest_key.secret), f"[{good}, {bad}]", slug="priced")

    assert response.status_code == 202
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert "U+D800" in body["results"][1]["errors"]["data.note"][0]
    assert UsageRecord.objects.count() == 1
    assert IngestionError.objects.count() == 1


# --- NUL in URLs: path and query string ---


def wsgi_post(path: str, body: bytes, **environ: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """One request through zenskar_site.wsgi.application, which sends POST /usage/* to the fast route."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    content = b"".join(
        application(
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": path,
                "QUERY_STRING": "",
                "SERVER_NAME": "testserver",
                "SERVER_PORT": "80",
                "HTTP_HOST": "testserver",
                "wsgi.input": io.BytesIO(body),
                "wsgi.url_scheme": "http",
                "CONTENT_LENGTH": str(len(body)),
                "CONTENT_TYPE": "application/json",
                **environ,
            },
            start_response,
        )
    )
    return seen["status"], seen["headers"], json.loads(content)


@pytest.mark.django_db(transaction=True)  # the fast route manages its connection as a server does
def test_post_usage_with_a_nul_slug_is_400_json_on_both_routes(ingest_key: ApiKeyBundle, client_for: Any) -> None:
    body = json.dumps(rec()).encode()

    full = client_for(ingest_key.secret).post("/usage/%00", data=body, content_type="application/json")
    status, headers, fast = wsgi_post(f"/usage/{NUL}", body, HTTP_X_API_KEY=ingest_key.secret)

    assert full.status_code == 400
    assert full["Content-Type"] == "application/json"
    assert "NUL" in full.json()["detail"]
    assert (status, headers["Content-Type"], fast) == ("400 Bad Request", "application/json", full.json())
    assert not UsageRecord.objects.exists()


def test_a_nul_in_an_api_path_is_400_json(api: APIClient, compute_hours: UsageEvent) -> None:
    for path in ("/api/v1/usage-events/%00/", "/api/v1/usage-events/%00/records/", "/api/v1/api-keys/%00/"):
        response = api.get(path) if "api-keys" not in path else api.delete(path)
        assert response.status_code == 400, path
        assert response["Content-Type"] == "application/json"
        assert "NUL" in response.json()["detail"]


def test_a_nul_in_a_customer_id_filter_is_400_naming_it(api: APIClient, ingest: APIClient) -> None:
    post(ingest, rec("a"))

    response = api.get("/api/v1/usage-events/compute_hours/records/?customer_id=a%00b")

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "customer_id": ["Contains a NUL character (%00), which no stored value can contain."]
    }


# --- timestamps in filters ---


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20T10:00:00+22:09",  # Python takes offsets below 24 hours; PostgreSQL up to 15:59
        "2026-11-20T10:00:00-16:00",
        "9999-12-31T23:30:00-01:00",  # after year 9999 in UTC
        "0001-01-01T00:10:00+01:00",  # before year 1 in UTC
        "2026-13-01T00:00:00Z",
        "yesterday",
    ],
)
def test_a_timestamp_filter_the_database_cannot_take_is_400_naming_it(
    api: APIClient, compute_hours: UsageEvent, value: str
) -> None:
    for name in ("timestamp_before", "timestamp_after"):
        response = api.get("/api/v1/usage-events/compute_hours/records/", {name: value})
        assert response.status_code == 400, (name, value)
        assert list(response.json()["errors"]) == [name]


def test_an_accepted_timestamp_filter_with_an_offset_means_the_same_instant_in_utc(
    api: APIClient, ingest: APIClient
) -> None:
    moment = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    post(ingest, rec("a", timestamp=iso(moment)))
    same_instant = moment.astimezone(dt.timezone(dt.timedelta(hours=-15, minutes=-59))).isoformat()

    before = api.get("/api/v1/usage-events/compute_hours/records/", {"timestamp_before": same_instant}).json()
    after = api.get("/api/v1/usage-events/compute_hours/records/", {"timestamp_after": same_instant}).json()

    assert (len(before["results"]), len(after["results"])) == (0, 1)  # [after, before): the record is at the instant


def test_void_by_filter_refuses_an_offset_the_database_cannot_take_and_a_nul_customer(
    api: APIClient, ingest: APIClient
) -> None:
    post(ingest, rec("a"))
    url = "/api/v1/usage-events/compute_hours/records/void/"

    offset = api.post(url, {"timestamp_before": "2026-11-20T10:00:00+22:09"}, format="json")
    customer = api.post(url, {"customer_id": f"a{NUL}"}, format="json")

    assert (offset.status_code, list(offset.json()["errors"])) == (400, ["timestamp_before"])
    assert (customer.status_code, list(customer.json()["errors"])) == (400, ["customer_id"])
    assert not UsageRecord.objects.filter(voided=True).exists()


# --- API keys, usage events ---


@pytest.mark.parametrize("name", [123, ["a"], {"a": 1}, True, f"key{NUL}"])
def test_an_api_key_name_that_is_not_storable_text_is_400_naming_it(api: APIClient, name: Any) -> None:
    before = ApiKey.objects.count()

    response = api.post("/api/v1/api-keys/", {"name": name, "scope": "ingest"}, format="json")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["name"]
    assert ApiKey.objects.count() == before


def test_a_nul_in_a_usage_event_definition_is_400_naming_the_field(api: APIClient) -> None:
    body = {"name": f"Jobs{NUL}", "api_slug": "jobs", "description": "ok", "dataschema": {"data": {"n": "Int64"}}}

    response = api.post("/api/v1/usage-events/", body, format="json")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["name"]
    assert not UsageEvent.objects.filter(api_slug="jobs").exists()


# --- corrections ---


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"customer_id": f"b{NUL}"}, "customer_id"),
        ({"data": {"region": f"eu{NUL}west"}}, "data.region"),
        ({"data": {f"x{NUL}": 1}}, "data.x\\u0000"),
        ({"customer_id": "b", "reason": f"typo{NUL}"}, "reason"),
    ],
)
def test_a_record_edit_with_a_nul_is_400_and_leaves_the_record_unchanged(
    api: APIClient, ingest: APIClient, change: dict[str, Any], path: str
) -> None:
    record_id = post(ingest, rec("a", data={"cpu_usage_hours": 5, "region": "eu"})).json()["results"][0]["id"]

    response = api.patch(f"/api/v1/usage-events/compute_hours/records/{record_id}/", change, format="json")

    assert response.status_code == 400
    assert path in response.json()["errors"]
    record = UsageRecord.objects.get(id=record_id)
    assert (record.customer_id, record.data) == ("a", {"cpu_usage_hours": 5.0, "region": "eu"})
    assert not AuditEntry.objects.filter(action="record.update").exists()


# --- CSV imports ---


@pytest.fixture
def actor(organisation: Organisation) -> Actor:
    return Actor(organisation=organisation, user=organisation_admin(organisation), role="admin")


def csv_bytes(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return text.getvalue().encode()


def test_a_csv_cell_with_a_nul_is_a_row_numbered_error(actor: Actor, compute_hours: UsageEvent) -> None:
    content = csv_bytes(
        [
            ["customer_id", "timestamp", "cpu_usage_hours", "region"],
            ["a", MOMENT, "1", "eu"],
            [f"b{NUL}", MOMENT, "1", "eu"],
            ["c", MOMENT, "1", f"us{NUL}"],
        ]
    )

    csv_import = csv_import_create(actor=actor, usage_event_slug="compute_hours", filename="u.csv", content=content)
    preview = csv_import_validate(actor=actor, import_id=csv_import.id, mapping=csv_import.mapping)

    assert (preview.rows, preview.valid, preview.invalid) == (3, 1, 2)
    found = [(e["row"], e["column"], e["field"], e["value"]) for e in preview.errors]
    assert found == [(3, "customer_id", "customer_id", "b\\u0000"), (4, "region", "data.region", "us\\u0000")]
    assert all("U+0000 (NUL)" in e["message"] for e in preview.errors)
    assert CsvImport.objects.get(id=csv_import.id).rows_invalid == 2
    assert not UsageRecord.objects.exists()


def test_a_csv_header_with_a_nul_is_refused_on_row_1(actor: Actor, compute_hours: UsageEvent) -> None:
    content = csv_bytes([["customer_id", f"time{NUL}stamp"], ["a", MOMENT]])

    with pytest.raises(ValidationFailed) as refused:
        csv_import_create(actor=actor, usage_event_slug="compute_hours", filename="u.csv", content=content)

    assert refused.value.errors["file"][0].startswith("Row 1: the name of column 2: Contains U+0000")
    assert not CsvImport.objects.exists()


# --- any text at all: stored exactly or refused with a 4xx (PostgreSQL, where NUL used to be cut) ---

SPECIAL_CHARACTERS = [NUL, "\x01", "\x1f", "\x7f", "\u2028", "\ufeff", "\uffff", "\ud800", "\udfff", "\U0010ffff"]
# st.text() never holds a lone surrogate; joined lists of characters can (and mostly hold something hostile).
HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARACTERS)), max_size=30).map("".join),
)


@pytest.fixture(params=["orjson", "json"])
def texts_slug(request: pytest.FixtureRequest, organisation: Organisation) -> str:
    """Two usage events: a Decimal field makes ingestion parse with Python's json module, which lets lone
    surrogates through to the validator; without one, orjson parses (and refuses them itself)."""
    data = {"label": "String"} | ({"cost": "Nullable(Decimal)"} if request.param == "json" else {})
    usage_event_make(organisation=organisation, api_slug=f"texts_{request.param}", data=data)
    return f"texts_{request.param}"


@pytest.mark.postgres
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(customer_id=HOSTILE_TEXT, label=HOSTILE_TEXT)
def test_any_text_is_stored_exactly_or_rejected_with_a_4xx(
    ingest_key: ApiKeyBundle, client_for: Any, texts_slug: str, customer_id: str, label: str
) -> None:
    body = json.dumps({"customer_id": customer_id, "timestamp": MOMENT, "data": {"label": label}})
    # What the client means is what its JSON says (a surrogate pair written as two escapes is one character).
    meant = json.loads(body)
    stored_before = UsageRecord.objects.count()

    response = post(client_for(ingest_key.secret), body, slug=texts_slug)

    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics shows both outcomes are exercised
    assert response.status_code < 500
    if response.status_code == 202:
        record = UsageRecord.objects.get(id=response.json()["results"][0]["id"])
        assert (record.customer_id, record.data) == (meant["customer_id"], meant["data"])
    else:
        assert 400 <= response.status_code < 500
        assert UsageRecord.objects.count() == stored_before
