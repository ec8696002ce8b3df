"""SPEC §6: usage imported from CSV (map, validate with the ingestion rules, preview, confirm, import with
progress, idempotency honoured) and exported as streamed CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from metrics.engine.refresh import metric_values_refresh
from metrics.models import MetricValue
from tests.factories import ApiKeyBundle, organisation_admin, organisation_make, usage_event_make
from usage import tasks
from usage.csv import imports as csv_imports
from usage.csv.imports import (
    csv_import_confirm,
    csv_import_create,
    csv_import_run,
    csv_import_validate,
    csv_imports_stalled_claim,
)
from usage.models import CsvImport, CsvImportStatus, DirtyBucket, IngestionError, UsageEvent, UsageRecord
from zenskar_site.accounts.actors import Actor, system_actor
from zenskar_site.accounts.models import AuditEntry, Membership, Organisation
from zenskar_site.lib.errors import Conflict, ValidationFailed

NOW = timezone.now().replace(microsecond=0)
RICH_SCHEMA = {
    "cpu_usage_hours": "Float64",
    "region": "Nullable(String)",
    "units": "Nullable(Int64)",
    "cost": "Nullable(Decimal)",
    "spot": "Nullable(Bool)",
}


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def csv_bytes(header: list[str], rows: Iterable[list[Any]], *, encoding: str = "utf-8") -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode(encoding)


def record_key(record: UsageRecord) -> tuple[str, str, str, str | None]:
    data = orjson.dumps(record.data, option=orjson.OPT_SORT_KEYS).decode()
    return (record.customer_id, iso(record.timestamp), data, record.idempotency_key)


def record_set(usage_event: UsageEvent) -> Counter[tuple[str, str, str, str | None]]:
    """The stored records' content as a multiset (rows without keys may repeat)."""
    return Counter(record_key(r) for r in UsageRecord.objects.filter(usage_event=usage_event).iterator())


def values_of(metric_slug: str) -> dict[tuple[str, str, str], str | None]:
    return {
        (v.customer_id, iso(v.period_start), v.dimension_key): v.value
        for v in MetricValue.objects.filter(metric__slug=metric_slug)
    }


def refresh_all(usage_event: UsageEvent) -> None:
    while DirtyBucket.objects.filter(usage_event=usage_event).exists():
        metric_values_refresh(usage_event_id=usage_event.id)


def imported(actor: Actor, usage_event: UsageEvent, content: bytes, mapping: dict[str, str] | None = None) -> Any:
    """Upload, validate (with the proposed mapping unless one is given) and return (import, preview)."""
    csv_import = csv_import_create(
        actor=actor, usage_event_slug=usage_event.api_slug, filename="u.csv", content=content
    )
    preview = csv_import_validate(actor=actor, import_id=csv_import.id, mapping=mapping or csv_import.mapping)
    return csv_import, preview


@pytest.fixture
def actor(organisation: Organisation) -> Actor:
    return Actor(organisation=organisation, user=organisation_admin(organisation), role="admin")


@pytest.fixture
def rich(organisation: Organisation) -> UsageEvent:
    return usage_event_make(organisation=organisation, api_slug="jobs", name="Jobs", data=dict(RICH_SCHEMA))


# --- validation: row-numbered errors, and nothing stored before confirmation ---


def test_an_upload_proposes_a_mapping_by_column_name_and_stores_no_record(
    actor: Actor, compute_hours: UsageEvent
) -> None:
    content = csv_bytes(
        ["Customer", "Timestamp", "CPU usage hours", "notes"], [["a", iso(NOW), "1.5", "x"], ["", "", "", ""]]
    )

    csv_import = csv_import_create(
        actor=actor, usage_event_slug="compute_hours", filename="../x/u.csv", content=content
    )

    assert csv_import.filename == "u.csv"
    assert csv_import.columns == ["Customer", "Timestamp", "CPU usage hours", "notes"]
    assert csv_import.mapping == {
        "Customer": "customer_id",
        "Timestamp": "timestamp",
        "CPU usage hours": "data.cpu_usage_hours",
        "notes": "",
    }
    assert csv_import.rows_total == 1  # the blank row is not a row
    assert csv_import.status == CsvImportStatus.UPLOADED
    assert not UsageRecord.objects.exists()


def test_bad_encoding_names_the_row_and_byte_offset_and_keeps_nothing(actor: Actor, compute_hours: UsageEvent) -> None:
    content = csv_bytes(
        ["customer_id", "timestamp", "cpu_usage_hours", "region"],
        [["a", iso(NOW), "1", "eu"], ["b", iso(NOW), "2", "Zürich"]],
        encoding="latin-1",
    )

    with pytest.raises(ValidationFailed) as failure:
        csv_import_create(actor=actor, usage_event_slug="compute_hours", filename="u.csv", content=content)

    message = failure.value.errors["file"][0]
    assert message.startswith("Row 3: the file is not UTF-8")
    offset = content.index("ü".encode("latin-1"))
    assert f"byte 0xFC at byte offset {offset}" in message
    assert not CsvImport.objects.exists()
    assert not UsageRecord.objects.exists()


def test_a_utf8_bom_and_semicolons_are_read(actor: Actor, compute_hours: UsageEvent) -> None:
    content = f"\ufeffcustomer_id;timestamp;cpu_usage_hours\na;{iso(NOW)};2.5\n".encode()

    csv_import, preview = imported(actor, compute_hours, content)

    assert csv_import.columns == ["customer_id", "timestamp", "cpu_usage_hours"]
    assert (preview.rows, preview.valid, preview.invalid) == (1, 1, 0)


def test_a_missing_column_is_reported_on_the_header_row_and_blocks_the_import(
    actor: Actor, compute_hours: UsageEvent
) -> None:
    content = csv_bytes(["customer_id", "timestamp", "region"], [["a", iso(NOW), "eu"], ["b", iso(NOW), "us"]])

    csv_import, preview = imported(actor, compute_hours, content)

    assert (preview.rows, preview.valid, preview.invalid) == (2, 0, 2)
    assert preview.errors == [
        {
            "row": 1,
            "column": "",
            "field": "data.cpu_usage_hours",
            "value": "",
            "message": "Missing column for cpu_usage_hours: the field is required; map a CSV column to it.",
        }
    ]
    with pytest.raises(ValidationFailed, match="2 rows are invalid"):
        csv_import_confirm(actor=actor, import_id=csv_import.id)
    assert not UsageRecord.objects.exists()


def test_a_wrong_type_is_reported_with_its_row_column_and_value(actor: Actor, rich: UsageEvent) -> None:
    header = ["customer_id", "timestamp", "cpu_usage_hours", "units", "spot", "cost"]
    content = csv_bytes(
        header,
        [
            ["a", iso(NOW), "1.5", "3", "true", "0.10"],
            ["b", iso(NOW), "lots", "3", "true", "0.10"],
            ["c", iso(NOW), "1", "2.5", "yes", "ten"],
            ["d", "yesterday", "1", "", "", ""],
            ["e", iso(NOW), "1"],
        ],
    )

    csv_import, preview = imported(actor, rich, content)

    assert (preview.rows, preview.valid, preview.invalid) == (5, 1, 4)
    found = [(e["row"], e["column"], e["value"], e["message"]) for e in preview.errors]
    assert found[0] == (3, "cpu_usage_hours", "lots", "Expected Float64, got string.")
    assert set(found[1:4]) == {
        (4, "units", "2.5", "Expected Int64, got a number with a fraction."),
        (4, "spot", "yes", "Expected Bool (true or false), got string."),
        (4, "cost", "ten", "Expected Decimal, got a string that is not a number (digits, '.', exponent)."),
    }
    assert found[4][:3] == (5, "timestamp", "yesterday")
    assert found[5] == (6, "", "", "The row has 3 cells; the header has 6 columns.")
    assert CsvImport.objects.get(id=csv_import.id).status == CsvImportStatus.VALIDATED
    assert not UsageRecord.objects.exists()


def test_a_key_reused_in_the_file_with_other_content_names_both_rows(actor: Actor, compute_hours: UsageEvent) -> None:
    header = ["customer_id", "timestamp", "cpu_usage_hours", "idempotency_key"]
    content = csv_bytes(
        header,
        [
            ["a", iso(NOW), "1", "k1"],
            ["a", iso(NOW), "1", "k2"],
            ["a", iso(NOW), "1", "k1"],  # a repeated row: a duplicate, not an error
            ["a", iso(NOW), "9", "k1"],
        ],
    )

    _, preview = imported(actor, compute_hours, content)

    assert (preview.rows, preview.valid, preview.invalid, preview.duplicates) == (4, 3, 1, 1)
    assert preview.errors == [
        {
            "row": 5,
            "column": "idempotency_key",
            "field": "idempotency_key",
            "value": "k1",
            "message": "The idempotency key 'k1' is used on rows 2 and 5 with different content.",
        }
    ]
    assert not UsageRecord.objects.exists()


def test_keys_already_stored_are_duplicates_or_errors_by_content(
    actor: Actor, compute_hours: UsageEvent, full_key: ApiKeyBundle, client_for: Any
) -> None:
    stored = [
        {"customer_id": "a", "timestamp": iso(NOW), "data": {"cpu_usage_hours": 1}, "idempotency_key": "k1"},
        {"customer_id": "a", "timestamp": iso(NOW), "data": {"cpu_usage_hours": 2}, "idempotency_key": "k2"},
    ]
    client_for(full_key.secret).post("/usage/compute_hours", data=json.dumps(stored), content_type="application/json")
    record_id = UsageRecord.objects.get(idempotency_key="k2").id
    content = csv_bytes(
        ["customer_id", "timestamp", "cpu_usage_hours", "idempotency_key"],
        [["a", iso(NOW), "1", "k1"], ["a", iso(NOW), "3", "k2"], ["b", iso(NOW), "2", "k3"]],
    )

    _, preview = imported(actor, compute_hours, content)

    assert (preview.valid, preview.invalid, preview.duplicates) == (2, 1, 1)
    assert preview.errors[0]["row"] == 3
    assert preview.errors[0]["message"] == (
        f"The idempotency key 'k2' is already stored (record {record_id}) with different content; "
        "use a new key for a new record."
    )


def test_a_mapping_naming_an_unknown_field_or_one_field_twice_is_refused(
    actor: Actor, compute_hours: UsageEvent
) -> None:
    content = csv_bytes(["c", "t", "h", "h2"], [["a", iso(NOW), "1", "2"]])
    csv_import = csv_import_create(actor=actor, usage_event_slug="compute_hours", filename="u.csv", content=content)
    base = {"c": "customer_id", "t": "timestamp"}

    with pytest.raises(ValidationFailed) as unknown:
        csv_import_validate(actor=actor, import_id=csv_import.id, mapping={**base, "h": "data.nope"})
    with pytest.raises(ValidationFailed) as twice:
        csv_import_validate(
            actor=actor,
            import_id=csv_import.id,
            mapping={**base, "h": "data.cpu_usage_hours", "h2": "data.cpu_usage_hours"},
        )

    assert list(unknown.value.errors) == ["mapping.h"]
    assert "already mapped from the column 'h'" in twice.value.errors["mapping.h2"][0]
    assert CsvImport.objects.get(id=csv_import.id).status == CsvImportStatus.UPLOADED


def test_timestamps_of_any_age_are_accepted_but_not_the_future(actor: Actor, compute_hours: UsageEvent) -> None:
    content = csv_bytes(
        ["customer_id", "timestamp", "cpu_usage_hours"],
        [["a", "2019-03-01 10:00:00", "1"], ["a", iso(NOW + dt.timedelta(hours=1)), "1"]],
    )

    _, preview = imported(actor, compute_hours, content)

    assert (preview.valid, preview.invalid) == (1, 1)
    assert preview.errors[0]["row"] == 3
    assert preview.errors[0]["message"] == "More than 300 seconds in the future."


# --- import ---


def test_cells_are_converted_per_field_type_and_empty_cells_are_absent(actor: Actor, rich: UsageEvent) -> None:
    header = ["customer_id", "timestamp", "cpu_usage_hours", "region", "units", "cost", "spot"]
    content = csv_bytes(
        header,
        [
            ["a", "2026-01-02T03:04:05+02:00", " 1.25 ", "", "7", "0.10", "TRUE"],
            ["b", "2026-01-02 03:04:05", "2", "eu", "-3", "1e2", "0"],
            ["c", "2026-01-02T03:04:05Z", "3", " ", "5.0", "", ""],
        ],
    )
    csv_import, preview = imported(actor, rich, content)
    assert preview.invalid == 0

    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    done = csv_import_run(import_id=csv_import.id)

    assert done is not None
    assert (done.status, done.accepted, done.rows_done) == (CsvImportStatus.DONE, 3, 3)
    stored = {r.customer_id: (iso(r.timestamp), r.data) for r in UsageRecord.objects.all()}
    assert stored == {
        "a": ("2026-01-02T01:04:05Z", {"cpu_usage_hours": 1.25, "units": 7, "cost": "0.10", "spot": True}),
        "b": (
            "2026-01-02T03:04:05Z",
            {"cpu_usage_hours": 2.0, "region": "eu", "units": -3, "cost": "1E+2", "spot": False},
        ),
        "c": ("2026-01-02T03:04:05Z", {"cpu_usage_hours": 3.0, "region": " ", "units": 5}),
    }


def make_rows(count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """Usage as a client would send it: history older than the 35-day bound, every type of field,
    absent values, a few repeated rows (a retried send) and rows without idempotency keys."""
    rng = random.Random(seed)
    start = (NOW - dt.timedelta(days=75)).replace(minute=0, second=0)
    # Mostly in time order, as history usually is, with a few late rows.
    moments = sorted(start + dt.timedelta(seconds=rng.randint(0, 70 * 86400)) for _ in range(count))
    rows: list[dict[str, Any]] = []
    for i in range(count):
        if i % 997 == 5:  # a retried row: the same key and content
            rows.append(dict(rows[-1]))
            continue
        data: dict[str, Any] = {"cpu_usage_hours": round(rng.uniform(0, 50), rng.choice([0, 1, 3, 6]))}
        if rng.random() < 0.8:
            data["region"] = rng.choice(["eu-west-1", "us-east-1", "ap-south-1", "tokyo, jp"])
        if rng.random() < 0.7:
            data["units"] = rng.randint(-5, 10**6)
        if rng.random() < 0.7:
            data["cost"] = f"{rng.randint(0, 10**5)}.{rng.randint(0, 999):03d}"
        if rng.random() < 0.5:
            data["spot"] = rng.random() < 0.5
        moment = moments[i] if rng.random() < 0.98 else start + dt.timedelta(seconds=rng.randint(0, 70 * 86400))
        moment += dt.timedelta(microseconds=rng.choice([0, 250000]))
        row = {"customer_id": f"cus_{rng.randint(1, 150)}", "timestamp": iso(moment), "data": data}
        if i % 9:
            row["idempotency_key"] = f"job-{i}"
        rows.append(row)
    return rows


def rows_as_csv(rows: list[dict[str, Any]]) -> bytes:
    fields = list(RICH_SCHEMA)
    header = ["customer_id", "timestamp", *fields, "idempotency_key"]

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return csv_bytes(
        header,
        (
            [r["customer_id"], r["timestamp"], *(cell(r["data"].get(f)) for f in fields), r.get("idempotency_key", "")]
            for r in rows
        ),
    )


def create_metrics(api: APIClient, capture: Any, slug: str) -> None:
    with capture(execute=True):
        for name, field, group_by in (("cpu", "cpu_usage_hours", ["region"]), ("cost", "cost", [])):
            response = api.post(
                "/api/v1/metrics/",
                {
                    "name": f"{name} of {slug}",
                    "slug": f"{name}-{slug}",
                    "usage_event": slug,
                    "aggregation": "sum",
                    "field": field,
                    "granularity": "day",
                    "group_by": group_by,
                },
                format="json",
            )
            assert response.status_code == 201, response.json()


@pytest.mark.postgres  # a heavy test runs in one pass: the production database's
def test_a_csv_of_100k_rows_gives_the_same_records_and_metric_values_as_the_api(
    actor: Actor,
    organisation: Organisation,
    api: APIClient,
    django_capture_on_commit_callbacks: Any,
) -> None:
    via_api = usage_event_make(organisation=organisation, api_slug="via_api", name="Via API", data=dict(RICH_SCHEMA))
    via_csv = usage_event_make(organisation=organisation, api_slug="via_csv", name="Via CSV", data=dict(RICH_SCHEMA))
    create_metrics(api, django_capture_on_commit_callbacks, "via_api")
    create_metrics(api, django_capture_on_commit_callbacks, "via_csv")
    count = 100_000
    rows = make_rows(count)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    for offset in range(0, count, 1000):
        response = api.post(
            "/usage/via_api?backfill=true",
            data=json.dumps(rows[offset : offset + 1000]),
            content_type="application/json",
        )
        assert response.status_code == 202, response.content[:500]
        assert response.json()["rejected"] == 0
    timings["api"] = time.perf_counter() - started

    started = time.perf_counter()
    csv_import, preview = imported(actor, via_csv, rows_as_csv(rows))
    timings["validate"] = time.perf_counter() - started
    assert (preview.rows, preview.invalid) == (count, 0), preview.errors
    assert preview.duplicates == sum(1 for i in range(count) if i % 997 == 5 and (i - 1) % 9)
    assert not UsageRecord.objects.filter(usage_event=via_csv).exists()

    progress: list[tuple[int, int]] = []

    def committed(done: int, total: int) -> None:
        progress.append((CsvImport.objects.get(id=csv_import.id).rows_done, total))

    started = time.perf_counter()
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    finished = csv_import_run(import_id=csv_import.id, progress=committed)
    timings["import"] = time.perf_counter() - started

    assert finished is not None
    assert finished.status == CsvImportStatus.DONE
    assert progress == [(min(n, count), count) for n in range(1000, count + 1000, 1000)]
    assert finished.rows_done == count
    assert finished.accepted == UsageRecord.objects.filter(usage_event=via_api).count()
    assert finished.duplicates == preview.duplicates
    assert finished.rejected == 0
    assert record_set(via_csv) == record_set(via_api)

    started = time.perf_counter()
    refresh_all(via_api)
    refresh_all(via_csv)
    timings["refresh"] = time.perf_counter() - started
    for name in ("cpu", "cost"):
        from_api = values_of(f"{name}-via_api")
        assert from_api, name
        assert values_of(f"{name}-via_csv") == from_api
    print(f"\n{count} rows: " + ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings.items()))


def test_the_confirmed_import_starts_after_commit_and_asks_for_a_metric_refresh(
    actor: Actor, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    """The import is enqueued once the confirmation commits; under CELERY_EAGER its task runs inline here.

    The import run by a real worker process, and the metric it refreshes, are in tests/test_production_mode.py.
    """
    content = csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "1"], ["b", iso(NOW), "2"]])
    csv_import, _ = imported(actor, compute_hours, content)

    with (
        mock.patch("metrics.dispatch.metrics_refresh_soon") as refresh,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        csv_import_confirm(actor=actor, import_id=csv_import.id)
        assert CsvImport.objects.get(id=csv_import.id).status == CsvImportStatus.IMPORTING
        assert not UsageRecord.objects.exists()

    assert len(callbacks) == 1
    assert CsvImport.objects.get(id=csv_import.id).status == CsvImportStatus.DONE
    assert UsageRecord.objects.count() == 2
    refresh.assert_called_once_with(usage_event_id=compute_hours.id)
    entry = AuditEntry.objects.get(action="csv_import.confirm")
    assert (entry.object_id, entry.actor) == (str(csv_import.id), f"user:{actor.user.get_username()}")  # type: ignore[union-attr]


def test_an_import_is_confirmed_once(actor: Actor, compute_hours: UsageEvent) -> None:
    content = csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "1"]])
    csv_import, _ = imported(actor, compute_hours, content)
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)

    with pytest.raises(Conflict):
        csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    with pytest.raises(Conflict):
        csv_import_validate(actor=actor, import_id=csv_import.id, mapping=csv_import.mapping)


def test_a_crashed_import_resumes_after_its_last_batch_and_stores_nothing_twice(
    actor: Actor, compute_hours: UsageEvent
) -> None:
    rows = [["cus", iso(NOW - dt.timedelta(minutes=i % 500)), str(i)] for i in range(2500)]  # no idempotency keys
    csv_import, _ = imported(actor, compute_hours, csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], rows))
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    calls = 0
    real_store = csv_imports.records_store

    def crash_on_second_batch(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("worker lost")
        return real_store(**kwargs)

    with mock.patch.object(csv_imports, "records_store", crash_on_second_batch):
        failed = csv_import_run(import_id=csv_import.id)

    assert failed is not None
    assert (failed.status, failed.rows_done, UsageRecord.objects.count()) == (CsvImportStatus.FAILED, 1000, 1000)
    assert "worker lost" in failed.errors[-1]["message"]

    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    resumed = csv_import_run(import_id=csv_import.id)
    again = csv_import_run(import_id=csv_import.id)  # a second delivery of the task

    assert resumed is not None
    assert again is not None
    assert (resumed.status, resumed.rows_done, resumed.accepted) == (CsvImportStatus.DONE, 2500, 2500)
    assert again.status == CsvImportStatus.DONE
    assert resumed.errors == []  # why it stopped is forgotten once it has resumed
    assert sorted(float(r.data["cpu_usage_hours"]) for r in UsageRecord.objects.all()) == [
        float(i) for i in range(2500)
    ]


def test_an_import_whose_task_was_lost_is_resumed_by_the_sweep_once(actor: Actor, compute_hours: UsageEvent) -> None:
    rows = [["cus", iso(NOW - dt.timedelta(minutes=i % 500)), str(i)] for i in range(1500)]
    csv_import, _ = imported(actor, compute_hours, csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], rows))
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)  # the task is never run: lost
    busy, _ = imported(actor, compute_hours, csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], rows[:10]))
    csv_import_confirm(actor=actor, import_id=busy.id, enqueue=False)
    CsvImport.objects.filter(id=csv_import.id).update(progress_at=timezone.now() - dt.timedelta(minutes=30))

    claimed = tasks.csv_imports_resume_task()
    again = tasks.csv_imports_resume_task()

    assert claimed == [csv_import.id]  # the import confirmed a moment ago is not taken for lost
    assert again == []  # finished now; nothing left to claim
    finished = CsvImport.objects.get(id=csv_import.id)
    assert (finished.status, finished.rows_done, finished.accepted) == (CsvImportStatus.DONE, 1500, 1500)
    assert UsageRecord.objects.count() == 1500
    assert CsvImport.objects.get(id=busy.id).status == CsvImportStatus.IMPORTING


def test_a_stalled_import_is_claimed_by_one_sweep_only(actor: Actor, compute_hours: UsageEvent) -> None:
    rows = [["cus", iso(NOW), "1"]]
    csv_import, _ = imported(actor, compute_hours, csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], rows))
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    CsvImport.objects.filter(id=csv_import.id).update(progress_at=timezone.now() - dt.timedelta(minutes=30))

    first = csv_imports_stalled_claim(older_than_seconds=600)
    second = csv_imports_stalled_claim(older_than_seconds=600)

    assert (first, second) == ([csv_import.id], [])
    assert UsageRecord.objects.count() == 0  # claiming stores nothing; the enqueued task does


def test_a_rerun_from_scratch_finds_keyed_rows_as_duplicates(actor: Actor, compute_hours: UsageEvent) -> None:
    rows = [["cus", iso(NOW), str(i), f"k{i}"] for i in range(1500)]
    header = ["customer_id", "timestamp", "cpu_usage_hours", "idempotency_key"]
    csv_import, _ = imported(actor, compute_hours, csv_bytes(header, rows))
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    csv_import_run(import_id=csv_import.id)
    # The worst case: the checkpoint is lost and the whole file runs again.
    CsvImport.objects.filter(id=csv_import.id).update(
        status=CsvImportStatus.IMPORTING, rows_done=0, accepted=0, duplicates=0
    )

    rerun = csv_import_run(import_id=csv_import.id)

    assert rerun is not None
    assert (rerun.accepted, rerun.duplicates, rerun.rejected) == (0, 1500, 0)
    assert UsageRecord.objects.count() == 1500


def test_rows_rejected_while_importing_are_reported_and_logged(actor: Actor, compute_hours: UsageEvent) -> None:
    header = ["customer_id", "timestamp", "cpu_usage_hours", "idempotency_key"]
    csv_import, preview = imported(
        actor, compute_hours, csv_bytes(header, [["a", iso(NOW), "1", "k1"], ["a", iso(NOW), "2", "k2"]])
    )
    assert preview.invalid == 0
    # Between validation and import, another writer takes key k2 for other content.
    csv_imports.records_store(
        context=csv_imports.ingest_context_internal(usage_event=compute_hours, label="api"),
        items=[{"customer_id": "z", "timestamp": iso(NOW), "data": {"cpu_usage_hours": 9}, "idempotency_key": "k2"}],
        backfill=False,
        now=timezone.now(),
    )
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)

    done = csv_import_run(import_id=csv_import.id)

    assert done is not None
    assert (done.status, done.accepted, done.rejected) == (CsvImportStatus.DONE, 1, 1)
    assert done.errors[0]["row"] == 3
    assert done.errors[0]["column"] == "idempotency_key"
    assert IngestionError.objects.get().api_key_prefix == "csv-import"


# --- the management command ---


def test_the_command_validates_imports_with_progress_and_prints_counts(
    organisation: Organisation, compute_hours: UsageEvent, tmp_path: Path
) -> None:
    path = tmp_path / "usage.csv"
    path.write_bytes(csv_bytes(["who", "when", "hours"], [["a", iso(NOW), str(i)] for i in range(1200)]))
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "import_usage_csv",
        "--organisation", "Acme", "--usage-event", "compute_hours", "--file", str(path),
        "--map", "who=customer_id", "--map", "when=timestamp", "--map", "hours=data.cpu_usage_hours",
        "--yes", stdout=out, stderr=err,
    )  # fmt: skip

    assert "1,200 rows: 1,200 valid (0 already stored or repeated), 0 invalid." in out.getvalue()
    assert "Imported 1,200 rows: 1,200 accepted, 0 duplicates, 0 rejected." in out.getvalue()
    assert "Importing: 1,000 / 1,200 rows (83%)" in err.getvalue()
    assert "Importing: 1,200 / 1,200 rows (100%)" in err.getvalue()
    assert UsageRecord.objects.count() == 1200


def test_the_command_imports_nothing_from_an_invalid_file_or_without_a_yes(
    organisation: Organisation, compute_hours: UsageEvent, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "x"]]))
    good = tmp_path / "good.csv"
    good.write_bytes(csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "1"]]))
    out = io.StringIO()

    with pytest.raises(CommandError, match="1 invalid rows: nothing was imported"):
        call_command(
            "import_usage_csv",
            "--organisation",
            "Acme",
            "--usage-event",
            "compute_hours",
            "--file",
            str(bad),
            stdout=out,
        )
    with mock.patch("builtins.input", return_value="n"):
        call_command(
            "import_usage_csv",
            "--organisation",
            "Acme",
            "--usage-event",
            "compute_hours",
            "--file",
            str(good),
            stdout=out,
        )

    assert "row 2, column 'cpu_usage_hours': Expected Float64, got string. (value 'x')" in out.getvalue()
    assert "Nothing was imported." in out.getvalue()
    assert not UsageRecord.objects.exists()


# --- export ---


@pytest.fixture
def admin_client(client: Client, organisation: Organisation) -> Client:
    client.force_login(organisation_admin(organisation))
    return client


@pytest.fixture
def viewer_client(organisation: Organisation, django_user_model: Any) -> Client:
    user: User = django_user_model.objects.create_user(username="viewer@acme.test", password="pw-123456")
    Membership.objects.create(user=user, organisation=organisation, role="viewer")
    client = Client()
    client.force_login(user)
    return client


def streamed_rows(response: Any) -> list[list[str]]:
    assert response.streaming is True
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_records_export_streams_and_round_trips_through_an_import(
    actor: Actor, organisation: Organisation, rich: UsageEvent, admin_client: Client
) -> None:
    rows = make_rows(300)
    csv_import, _ = imported(actor, rich, rows_as_csv(rows))
    csv_import_confirm(actor=actor, import_id=csv_import.id, enqueue=False)
    csv_import_run(import_id=csv_import.id)
    voided = UsageRecord.objects.filter(usage_event=rich).order_by("id").first()
    assert voided is not None
    UsageRecord.objects.filter(id=voided.id).update(voided=True)

    response = admin_client.get("/usage-events/jobs/export.csv")

    exported = streamed_rows(response)
    schema_order = list(UsageEvent.objects.get(id=rich.id).dataschema["data"])  # jsonb keeps its own order
    assert sorted(schema_order) == sorted(RICH_SCHEMA)
    assert exported[0] == [
        "id", "customer_id", "timestamp", *schema_order, "idempotency_key", "received_at", "voided", "superseded"
    ]  # fmt: skip
    assert len(exported) == UsageRecord.objects.filter(usage_event=rich).count()  # header + all but the voided one
    assert str(voided.id) not in {row[0] for row in exported[1:]}
    copy = usage_event_make(organisation=organisation, api_slug="jobs_copy", name="Jobs copy", data=dict(RICH_SCHEMA))
    again, preview = imported(
        actor, copy, b"".join(admin_client.get("/usage-events/jobs/export.csv").streaming_content)
    )
    assert preview.invalid == 0
    assert again.mapping["id"] == ""
    assert again.mapping["received_at"] == ""
    csv_import_confirm(actor=actor, import_id=again.id, enqueue=False)
    csv_import_run(import_id=again.id)
    UsageRecord.objects.filter(id=voided.id).update(voided=False)
    original = record_set(rich)
    original[record_key(voided)] -= 1
    assert record_set(copy) == +original


def test_records_export_filters_by_customer_and_time(
    admin_client: Client, full_key: ApiKeyBundle, client_for: Any, compute_hours: UsageEvent
) -> None:
    start = (NOW - dt.timedelta(days=3)).replace(hour=0, minute=0, second=0)
    records = [
        {"customer_id": c, "timestamp": iso(start + dt.timedelta(hours=h)), "data": {"cpu_usage_hours": h}}
        for c in ("a", "b")
        for h in (1, 30, 60)
    ]
    client_for(full_key.secret).post(
        "/usage/compute_hours?backfill=true", data=json.dumps(records), content_type="application/json"
    )

    response = admin_client.get(
        "/usage-events/compute_hours/export.csv",
        {"customer": "a", "from": start.date().isoformat(), "to": iso(start + dt.timedelta(hours=60))},
    )
    bad = admin_client.get("/usage-events/compute_hours/export.csv", {"from": "soon"})

    exported = streamed_rows(response)
    hours = exported[0].index("cpu_usage_hours")
    assert [(row[1], row[2], row[hours]) for row in exported[1:]] == [
        ("a", iso(start + dt.timedelta(hours=1)), "1.0"),
        ("a", iso(start + dt.timedelta(hours=30)), "30.0"),
    ]
    assert bad.status_code == 400


def test_metric_values_export_streams_every_value_with_its_override(
    api: APIClient,
    admin_client: Client,
    viewer_client: Client,
    compute_hours: UsageEvent,
    django_capture_on_commit_callbacks: Any,
) -> None:
    day = (NOW - dt.timedelta(days=2)).replace(hour=0, minute=0, second=0)
    records = [
        {
            "customer_id": c,
            "timestamp": iso(day + dt.timedelta(hours=h)),
            "data": {"cpu_usage_hours": 1.5, "region": "eu"},
        }
        for c in ("a", "b")
        for h in (1, 2, 26)
    ]
    api.post("/usage/compute_hours", data=json.dumps(records), content_type="application/json")
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            "/api/v1/metrics/",
            {"name": "CPU", "slug": "cpu", "usage_event": "compute_hours", "aggregation": "sum",
             "field": "cpu_usage_hours", "granularity": "day", "group_by": ["region"]},
            format="json",
        )  # fmt: skip
    value = MetricValue.objects.get(customer_id="a", period_start=day)
    api.patch(f"/api/v1/metrics/cpu/values/{value.id}/", {"override_value": "10", "reason": "credit"}, format="json")

    everything = streamed_rows(admin_client.get("/metrics/cpu/export.csv"))
    for_a = streamed_rows(viewer_client.get("/metrics/cpu/export.csv", {"customer": "a"}))

    next_day = day + dt.timedelta(days=1)
    assert everything[0] == [
        "customer_id", "period_start", "period_end", "dimension", "computed_value", "override_value", "value",
        "metric_version",
    ]  # fmt: skip
    assert everything[1:] == [
        ["a", iso(day), iso(next_day), '{"region":"eu"}', "3", "10", "10", "1"],
        ["b", iso(day), iso(next_day), '{"region":"eu"}', "3", "", "3", "1"],
        ["a", iso(next_day), iso(next_day + dt.timedelta(days=1)), '{"region":"eu"}', "1.5", "", "1.5", "1"],
        ["b", iso(next_day), iso(next_day + dt.timedelta(days=1)), '{"region":"eu"}', "1.5", "", "1.5", "1"],
    ]
    assert [row[0] for row in for_a[1:]] == ["a", "a"]
    assert admin_client.get("/metrics/nope/export.csv").status_code == 404


def test_exports_are_scoped_to_the_organisation(compute_hours: UsageEvent, client: Client) -> None:
    other = organisation_make(name="Globex")
    client.force_login(organisation_admin(other))

    assert client.get("/usage-events/compute_hours/export.csv").status_code == 404


# --- dashboard pages ---


def test_an_admin_uploads_maps_previews_confirms_and_sees_the_result(
    admin_client: Client, compute_hours: UsageEvent, django_capture_on_commit_callbacks: Any
) -> None:
    content = csv_bytes(
        ["customer", "time", "hours", "extra"], [["a", iso(NOW), "1.5", "x"], ["b", iso(NOW), "2", "y"]]
    )

    page = admin_client.get("/usage-events/data/imports/")
    upload = admin_client.post(
        "/usage-events/data/imports/",
        {"usage_event": "compute_hours", "file": io.BytesIO(content)},
    )
    csv_import = CsvImport.objects.get()
    mapping_page = admin_client.get(upload["Location"])
    validate = admin_client.post(
        f"/usage-events/data/imports/{csv_import.id}/mapping/",
        {"column_0": "customer_id", "column_1": "timestamp", "column_2": "data.cpu_usage_hours", "column_3": ""},
    )
    preview = admin_client.get(validate["Location"])
    assert not UsageRecord.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        confirm = admin_client.post(f"/usage-events/data/imports/{csv_import.id}/confirm/")
    result = admin_client.get(confirm["Location"])

    assert page.status_code == 200
    assert b"Upload usage file" in page.content
    assert b'href="/usage-events/data/imports/"' in page.content
    assert upload.status_code == 302
    assert upload["Location"] == f"/usage-events/data/imports/{csv_import.id}/mapping/"
    assert mapping_page.status_code == 200
    assert b'<option value="customer_id" selected>' in mapping_page.content  # proposed from the name "customer"
    assert validate["Location"] == f"/usage-events/data/imports/{csv_import.id}/preview/"
    assert b'id="count-valid">2<' in preview.content
    assert b'id="confirm-submit"' in preview.content
    assert b"disabled" not in preview.content.split(b'id="confirm-submit"')[1].split(b">")[0]
    assert confirm["Location"] == f"/usage-events/data/imports/{csv_import.id}/"
    assert result.status_code == 200
    assert b'id="import-result"' in result.content
    assert b'<progress id="import-bar" max="2" value="2">' in result.content
    assert UsageRecord.objects.count() == 2


def test_the_preview_lists_row_numbered_errors_and_disables_confirm(
    admin_client: Client, actor: Actor, compute_hours: UsageEvent
) -> None:
    content = csv_bytes(
        ["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "1"], ["b", iso(NOW), "many"]]
    )
    csv_import, _ = imported(actor, compute_hours, content)

    preview = admin_client.get(f"/usage-events/data/imports/{csv_import.id}/preview/")
    confirm = admin_client.post(f"/usage-events/data/imports/{csv_import.id}/confirm/")

    html = preview.content.decode()
    assert '<tr data-row="3">' in html
    assert "Expected Float64, got string." in html
    assert "disabled" in html.split('id="confirm-submit"')[1].split(">")[0]
    assert confirm.status_code == 302
    assert confirm["Location"].endswith("/preview/")
    assert CsvImport.objects.get().status == CsvImportStatus.VALIDATED
    assert not UsageRecord.objects.exists()


def test_an_upload_with_bad_encoding_shows_the_error_on_the_form(
    admin_client: Client, compute_hours: UsageEvent
) -> None:
    content = "customer_id,timestamp,cpu_usage_hours\ncafé,2026-01-01T00:00:00Z,1\n".encode("latin-1")

    page = admin_client.post(
        "/usage-events/data/imports/", {"usage_event": "compute_hours", "file": io.BytesIO(content)}
    )

    assert page.status_code == 200
    assert "Row 2: the file is not UTF-8 (byte 0xE9 at byte offset 41)" in page.content.decode()
    assert not CsvImport.objects.exists()


def test_the_progress_page_refreshes_itself_while_importing(
    admin_client: Client, actor: Actor, compute_hours: UsageEvent
) -> None:
    content = csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "1"]] * 3)
    csv_import, _ = imported(actor, compute_hours, content)
    CsvImport.objects.filter(id=csv_import.id).update(status=CsvImportStatus.IMPORTING, rows_done=2)

    page = admin_client.get(f"/usage-events/data/imports/{csv_import.id}/")

    html = page.content.decode()
    assert 'data-refresh-seconds="2"' in html
    assert "window.location.reload()" in html
    assert '<progress id="import-bar" max="3" value="2">66%</progress>' in html
    assert "2 of 3 rows (66%)" in html


def test_viewers_are_refused_the_import_pages_but_may_export(
    viewer_client: Client, actor: Actor, compute_hours: UsageEvent
) -> None:
    content = csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "1"]])
    csv_import, _ = imported(actor, compute_hours, content)
    base = f"/usage-events/data/imports/{csv_import.id}"

    statuses = [
        viewer_client.get("/usage-events/data/imports/").status_code,
        viewer_client.post(
            "/usage-events/data/imports/", {"usage_event": "compute_hours", "file": io.BytesIO(content)}
        ).status_code,
        viewer_client.get(f"{base}/mapping/").status_code,
        viewer_client.post(f"{base}/mapping/", {"column_0": "customer_id"}).status_code,
        viewer_client.get(f"{base}/preview/").status_code,
        viewer_client.post(f"{base}/confirm/").status_code,
        viewer_client.get(f"{base}/").status_code,
    ]

    assert statuses == [403] * 7
    assert CsvImport.objects.get().status == CsvImportStatus.VALIDATED
    assert b"Usage data" not in viewer_client.get("/usage-events/").content
    assert viewer_client.get("/usage-events/compute_hours/export.csv").status_code == 200


def test_another_organisations_import_is_not_found(client: Client, actor: Actor, compute_hours: UsageEvent) -> None:
    content = csv_bytes(["customer_id", "timestamp", "cpu_usage_hours"], [["a", iso(NOW), "1"]])
    csv_import, _ = imported(actor, compute_hours, content)
    other = organisation_make(name="Globex")
    client.force_login(organisation_admin(other))
    base = f"/usage-events/data/imports/{csv_import.id}"

    statuses = [
        client.get(f"{base}/mapping/").status_code,
        client.get(f"{base}/preview/").status_code,
        client.post(f"{base}/confirm/").status_code,
        client.get(f"{base}/").status_code,
    ]

    assert statuses == [404] * 4
    assert CsvImport.objects.get().status == CsvImportStatus.VALIDATED
    with pytest.raises(Exception, match="No CSV import"):
        csv_import_validate(actor=system_actor(organisation=other), import_id=csv_import.id, mapping={})


def test_the_export_form_sends_the_browser_to_the_download(admin_client: Client, compute_hours: UsageEvent) -> None:
    response = admin_client.get(
        "/usage-events/data/imports/export/",
        {
            "source": "records:compute_hours",
            "customer": "a b",
            "start": "2026-01-01T00:00",
            "end": "",
            "include_voided": "on",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == (
        "/usage-events/compute_hours/export.csv?customer=a+b&from=2026-01-01T00%3A00%3A00Z&include_voided=true"
    )
